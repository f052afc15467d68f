"""Train an AlexNet variant on the library's kernels: ``python -m alexnet_kernels.train``.

An ordinary PyTorch training loop (SGD, cross-entropy, a DataLoader) whose
only library-specific line is the model constructor, so ``--backend torch``
(the same network on PyTorch's own ops) and ``--backend ours`` time the same
code. Defaults follow the 2012 paper: SGD with momentum 0.9, weight decay
5e-4, learning rate 0.01 divided by 10 when the validation error stops
improving, batch 128, random crops, flips and PCA lighting noise (seed 002's
rotation, shifts and flips for ``--model cifar``).

Checkpoints (``<out>/checkpoint.pt``, written atomically) hold the model,
optimizer, scheduler, epoch, step, the position inside the epoch, the running
metrics and every RNG state, so ``--resume`` continues exactly: on the CPU
with a fixed seed a resumed run reaches the same weights, bit for bit, as an
uninterrupted one, whether it stopped at the end of an epoch or in the middle
of one (Ctrl-C finishes the current step, saves and exits; a second Ctrl-C
aborts at once). Needs torchvision: the ``train`` extra,
``pip install --no-build-isolation ".[train]"``.

Under ``torchrun`` (see ``alexnet_kernels.distributed``) the same script trains
data parallel: ``--batch-size`` images per process, each rank its shard of
every global batch, DistributedDataParallel around the model, dropout drawn
from a stream per rank, metrics summed over the ranks; rank 0 alone prints,
logs and writes the checkpoint, which holds every rank's RNG state. Ctrl-C or
SIGTERM on the launcher or on any rank stops every rank after the same step.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from alexnet_kernels import distributed, models
from alexnet_kernels._files import write_atomically
from alexnet_kernels.data import (  # first: says how to install the train extra
    EpochBatchSampler,
    ImageSpec,
    SeededAugmentation,
    Splits,
    TrainingSetupError,
    digits_splits,
    folder_splits,
    synthetic_splits,
)

try:
    from tqdm import tqdm
except ImportError as missing:
    raise ImportError("the training script's progress bar needs tqdm: "
                      "pip install 'alexnet-kernels[train]'") from missing

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1
# --backend -> the backend every library op of the model is built with.
MODEL_BACKENDS = {"ours": "auto", "torch": "torch"}


@dataclass(frozen=True)
class Recipe:
    """Optimizer defaults of a variant (each can be overridden on the command line)."""

    optimizer: str
    lr: float
    batch_size: int
    weight_decay: float


# The 2012 paper: SGD, momentum 0.9 (--momentum), weight decay 5e-4, lr 0.01, batch 128.
PAPER_RECIPE = Recipe("sgd", 0.01, 128, 5e-4)
# Seed 002 (the CIFAR network): Keras' Adam() (lr 1e-3, no weight decay), batch 64. The
# paper's SGD barely leaves the initial loss in the first hundreds of steps of this
# network, which is all a short run on the bundled digits has.
SEED_002_RECIPE = Recipe("adam", 1e-3, 64, 0.0)
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class Variant:
    """A trainable network: ``build(num_classes, backend, image_size)``, its input, its recipe."""

    build: Callable[[int, str, int], nn.Module]
    spec: ImageSpec
    recipe: Recipe = PAPER_RECIPE


VARIANTS: dict[str, Variant] = {
    "alexnet": Variant(lambda n, backend, _: models.alexnet(n, backend=backend),
                       ImageSpec(224, 256, "paper")),
    "paper": Variant(lambda n, backend, _: models.alexnet_paper(n, groups=1, backend=backend),
                     ImageSpec(227, 256, "paper")),
    "paper-grouped": Variant(
        lambda n, backend, _: models.alexnet_paper(n, groups=2, backend=backend),
        ImageSpec(227, 256, "paper")),
    "cifar": Variant(
        lambda n, backend, size: models.alexnet_cifar(n, input_size=size, backend=backend),
        ImageSpec(32, 32, "cifar"), SEED_002_RECIPE),
    "bn": Variant(lambda n, backend, _: models.alexnet_bn(n, backend=backend),
                  ImageSpec(224, 256, "paper")),
}


@dataclass
class TrainConfig:
    """Every setting of a run; the command line's options map one to one onto these."""

    model: str = "alexnet"
    backend: str = "ours"
    data: Path | None = None
    epochs: int = 90
    # None: the variant's recipe (see Recipe).
    optimizer: str | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    lr_patience: int = 2
    image_size: int | None = None
    resize: int | None = None
    synthetic_classes: int = 10
    synthetic_size: int = 1280
    train_limit: int | None = None
    val_limit: int | None = None
    workers: int = 2
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    dist_timeout: float = 600.0
    device: str | None = None
    seed: int = 0
    out: Path = Path("runs/train")
    resume: Path | None = None
    checkpoint: bool = True
    progress: bool = True


@dataclass
class EpochMetrics:
    """Sums over the batches trained so far in one epoch."""

    loss_sum: float = 0.0
    correct: int = 0
    images: int = 0
    seconds: float = 0.0

    def add(self, loss: float, correct: int, images: int, seconds: float) -> None:
        self.loss_sum += loss * images
        self.correct += correct
        self.images += images
        self.seconds += seconds

    @property
    def loss(self) -> float:
        return self.loss_sum / self.images if self.images else math.nan

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else math.nan

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else math.nan


@dataclass
class TrainState:
    """Where a run is: completed epochs, optimizer steps, batches done in the current epoch."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    running: EpochMetrics = field(default_factory=EpochMetrics)
    history: list[dict[str, float]] = field(default_factory=list)
    last_loss: float = math.nan


@dataclass
class TrainResult:
    """The trained model (not compiled), its state, and whether Ctrl-C stopped the run."""

    model: nn.Module
    state: TrainState
    interrupted: bool


def image_spec(config: TrainConfig) -> ImageSpec:
    """The variant's input, with ``--image-size`` (and ``--resize``) applied.

    Without ``--resize`` a custom crop keeps the variant's resize-to-crop ratio.
    """
    default = VARIANTS[config.model].spec
    crop = config.image_size or default.crop
    resize = config.resize or round(crop * default.resize / default.crop)
    if resize < crop:
        raise TrainingSetupError(f"--resize {resize} is smaller than the crop {crop}")
    return ImageSpec(crop, resize, default.augmentation)


def check_variant(config: TrainConfig) -> None:
    """Unknown model names and backends, and image sizes the network cannot take."""
    if config.model not in VARIANTS:
        raise TrainingSetupError(f"unknown model {config.model!r}; choose one of "
                                 f"{', '.join(VARIANTS)}")
    if config.backend not in MODEL_BACKENDS:
        raise TrainingSetupError(f"unknown backend {config.backend!r}; choose one of "
                                 f"{', '.join(MODEL_BACKENDS)}")
    if config.optimizer is not None and config.optimizer not in OPTIMIZERS:
        raise TrainingSetupError(f"unknown optimizer {config.optimizer!r}; choose one of "
                                 f"{', '.join(OPTIMIZERS)}")
    crop = image_spec(config).crop
    try:
        # Built on the meta device: only the layer arithmetic runs, no weights.
        with torch.device("meta"):
            probe = VARIANTS[config.model].build(2, "torch", crop)
        probe.check_input(torch.empty(1, 3, crop, crop, device="meta"))
    except ValueError as error:
        raise TrainingSetupError(f"--model {config.model} cannot take {crop}x{crop} images "
                                 f"(--image-size): {error}") from error


def with_recipe(config: TrainConfig) -> TrainConfig:
    """`config` with the settings left at None taken from the variant's recipe."""
    recipe = VARIANTS[config.model].recipe
    return dataclasses.replace(config, **{
        name: getattr(recipe, name) for name in ("optimizer", "lr", "batch_size", "weight_decay")
        if getattr(config, name) is None})


def make_optimizer(config: TrainConfig, parameters: Iterator[nn.Parameter]
                   ) -> torch.optim.Optimizer:
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def load_splits(config: TrainConfig, spec: ImageSpec,
                world: distributed.World = distributed.SINGLE) -> Splits:
    """The image folder given by ``--data``, else the bundled digits for ``cifar``,
    else synthetic images; cut to ``--train-limit`` / ``--val-limit``. Every rank
    loads the whole splits; its sampler picks its shard."""
    if config.data is not None:
        splits = folder_splits(config.data, spec, config.seed)
    elif config.model == "cifar":
        splits = digits_splits(spec, config.seed)
    else:
        splits = synthetic_splits(spec, config.seed, config.synthetic_classes,
                                  config.synthetic_size, max(config.synthetic_size // 5, 1))
    splits = splits.limited(config.train_limit, config.val_limit)
    if len(splits.train) < config.batch_size * world.size:
        batch = (f"{config.batch_size}" if world.size == 1 else
                 f"{world.size} processes x {config.batch_size} = "
                 f"{config.batch_size * world.size}")
        raise TrainingSetupError(
            f"the training set has {len(splits.train)} images, fewer than one batch "
            f"({batch}); lower --batch-size")
    if len(splits.val) == 0:
        raise TrainingSetupError("the validation set is empty")
    return splits


def _ignore_interrupt(worker_id: int) -> None:
    """Loader workers leave Ctrl-C (sent to the whole process group) to the main process,
    which finishes its step and saves; a worker that exited on it would fail the loader."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def loaders(config: TrainConfig, splits: Splits, device: torch.device,
            world: distributed.World = distributed.SINGLE
            ) -> tuple[DataLoader, EpochBatchSampler, DataLoader]:
    """Shuffled training batches (incomplete last batch dropped: BatchNorm needs > 1
    image) and validation batches in order: this rank's shard of each."""
    train_sampler = EpochBatchSampler(len(splits.train), config.batch_size, config.seed,
                                      shuffle=True, drop_last=True, rank=world.rank,
                                      world_size=world.size)
    val_sampler = EpochBatchSampler(len(splits.val), config.batch_size, config.seed,
                                    shuffle=False, drop_last=False, rank=world.rank,
                                    world_size=world.size)

    def loader(dataset: SeededAugmentation, sampler: EpochBatchSampler) -> DataLoader:
        # Its own generator: a DataLoader otherwise draws its worker seed from the
        # global RNG at every epoch, which a mid-epoch resume would replay once more.
        return DataLoader(dataset, batch_sampler=sampler, num_workers=config.workers,
                          pin_memory=device.type == "cuda", worker_init_fn=_ignore_interrupt,
                          generator=torch.Generator().manual_seed(config.seed))

    return loader(splits.train, train_sampler), train_sampler, loader(splits.val, val_sampler)


def resolve_device(name: str | None) -> torch.device:
    return distributed.device_for(distributed.SINGLE, name)


def autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``--amp``, on the CPU as well (``torch.autocast("cpu")``).

    PyTorch's ops on its autocast list (linear layers) and the library's fused
    conv+ReLU (which casts as autocast casts ``F.conv2d``) then run in bf16; LRN,
    max-pool and dropout run in the dtype they receive, as PyTorch's do.
    """
    if not config.amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states() -> dict[str, Any]:
    """Every global RNG state, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "position": int(position), "has_gauss": int(has_gauss),
                  "cached_gauss": float(cached_gauss)},
        "python": random.getstate(),
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state = states["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32),
                         numpy_state["position"], numpy_state["has_gauss"],
                         numpy_state["cached_gauss"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


def atomic_torch_save(payload: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file next to `path`, then rename it over `path`.

    A failure or a crash while writing leaves the previous file as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda stream: torch.save(payload, stream), binary=True)


def checkpoint_payload(config: TrainConfig, num_classes: int, model: nn.Module,
                       optimizer: torch.optim.Optimizer, scheduler: Any,
                       sampler: EpochBatchSampler, state: TrainState,
                       rank_rngs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What ``--resume`` needs. `rank_rngs`: every rank's RNG states, in rank order, for a
    data-parallel run (its ``rng`` is then rank 0's); None: this process's alone."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_name": config.model,
        "num_classes": num_classes,
        "image_size": image_spec(config).crop,
        "config": {k: str(v) if isinstance(v, Path) else v
                   for k, v in dataclasses.asdict(config).items()},
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "batch_in_epoch": state.batch_in_epoch,
        "running": dataclasses.asdict(state.running),
        "history": state.history,
        "sampler": sampler.state_dict(),
        "rng": rank_rngs[0] if rank_rngs else rng_states(),
        "world_size": len(rank_rngs) if rank_rngs else 1,
    }
    if rank_rngs:
        payload["rank_rng"] = rank_rngs
    return payload


# Options that define what a run computes: a resumed run must keep them, or it would
# silently mix two recipes (the optimizer's saved state, for one, overrides --lr).
# The rest (--epochs, --workers, --device, --backend, --amp, --channels-last,
# --compile, the output options) may change between the parts of a run.
RUN_DEFINING_OPTIONS = ("data", "seed", "optimizer", "batch_size", "lr", "momentum",
                        "weight_decay", "lr_patience", "resize", "synthetic_classes",
                        "synthetic_size", "train_limit", "val_limit")


def _option_value(name: str, value: object) -> object:
    """A config value as compared between a checkpoint and a run (paths made absolute)."""
    if name == "data" and value is not None:
        return str(Path(value).expanduser().resolve())
    return value


def run_option_changes(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """'--option saved -> now' for every run-defining option `config` changes."""
    current = dataclasses.asdict(config)
    changes = []
    for name in RUN_DEFINING_OPTIONS:
        before, now = _option_value(name, saved.get(name)), _option_value(name, current[name])
        if before != now:
            changes.append(f"--{name.replace('_', '-')} {before} -> {now}")
    return changes


def read_checkpoint(path: Path, config: TrainConfig,
                    world: distributed.World = distributed.SINGLE) -> dict[str, Any]:
    """The checkpoint at `path`, after checking it was written by this script for this model
    and as many processes."""
    if not path.is_file():
        raise TrainingSetupError(f"--resume {path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise TrainingSetupError(f"--resume {path}: not a readable checkpoint ({error})") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise TrainingSetupError(f"--resume {path}: not a checkpoint of alexnet_kernels.train")
    if checkpoint["model_name"] != config.model:
        raise TrainingSetupError(
            f"--resume {path}: the checkpoint is of --model {checkpoint['model_name']}, "
            f"this run trains --model {config.model}")
    crop = image_spec(config).crop
    if checkpoint["image_size"] != crop:
        raise TrainingSetupError(
            f"--resume {path}: the checkpoint was trained on {checkpoint['image_size']}-pixel "
            f"images, this run uses {crop} (--image-size)")
    changes = run_option_changes(checkpoint["config"], config)
    if changes:
        raise TrainingSetupError(
            f"--resume {path}: this run changes options the checkpoint was trained with "
            f"({'; '.join(changes)}); resume with the same options (only --epochs, --workers, "
            "--device, --backend, --amp, --channels-last, --compile and the output options "
            "may differ)")
    saved_world = checkpoint.get("world_size", 1)
    if saved_world != world.size:
        raise TrainingSetupError(
            f"--resume {path}: the checkpoint was trained by {saved_world} "
            f"process{'es' if saved_world != 1 else ''}, this run has {world.size}; resume "
            f"with {saved_world} (torchrun --nnodes x --nproc_per_node) to continue it exactly "
            "(the global batch, the shards and the dropout streams depend on it)")
    return checkpoint


def restore(checkpoint: dict[str, Any], num_classes: int, model: nn.Module,
            optimizer: torch.optim.Optimizer, scheduler: Any, rank: int = 0) -> TrainState:
    """Loads `checkpoint` into the run's objects and rank `rank`'s RNGs; the state to
    continue from."""
    if checkpoint["num_classes"] != num_classes:
        raise TrainingSetupError(
            f"the checkpoint has {checkpoint['num_classes']} classes, the data {num_classes}")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    restore_rng_states(checkpoint["rank_rng"][rank] if "rank_rng" in checkpoint
                       else checkpoint["rng"])
    return TrainState(epoch=checkpoint["epoch"], step=checkpoint["step"],
                      batch_in_epoch=checkpoint["batch_in_epoch"],
                      running=EpochMetrics(**checkpoint["running"]),
                      history=list(checkpoint["history"]))


class InterruptRequest:
    """While active, the first Ctrl-C (SIGINT, or one of `signals`) only sets
    :attr:`requested`; a second aborts. `announce`: say so on stderr."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGINT,),
                 announce: bool = True) -> None:
        self.requested = False
        self.signals, self.announce = signals, announce
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print("\ninterrupted: finishing this step, then saving a checkpoint "
                  "(Ctrl-C again to abort without saving)", file=sys.stderr)

    def __enter__(self) -> InterruptRequest:
        # Signal handlers can only be installed from the main thread.
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, previous in self._previous.items():
            if previous is not None:  # None: a handler not installed from Python
                signal.signal(signum, previous)
        self._previous = {}


def to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images = images.to(device, non_blocking=True, memory_format=memory_format)
    return images, labels.to(device, non_blocking=True)


def train_step(network: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               labels: torch.Tensor, amp: contextlib.AbstractContextManager
               ) -> tuple[float, int]:
    """One SGD step on a batch; its mean loss and number of correct predictions."""
    optimizer.zero_grad(set_to_none=True)
    with amp:
        logits = network(images)
        loss = F.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    return loss.item(), int((logits.argmax(1) == labels).sum())


@torch.no_grad()
def evaluate(network: nn.Module, loader: DataLoader, device: torch.device,
             config: TrainConfig) -> EpochMetrics:
    """Loss and accuracy over the validation set in eval mode."""
    network.eval()
    metrics = EpochMetrics()
    start = time.perf_counter()
    for images, labels in loader:
        images, labels = to_device(images, labels, device, config.channels_last)
        with autocast(config, device):
            logits = network(images)
        loss = F.cross_entropy(logits.float(), labels)
        metrics.add(loss.item(), int((logits.argmax(1) == labels).sum()), len(labels), 0.0)
    metrics.seconds = time.perf_counter() - start
    network.train()
    return metrics


def progress_bar(enabled: bool, epoch: str, total: int, done: int) -> tqdm:
    """One bar per epoch: batches done; running loss, accuracy and images/s as its postfix."""
    return tqdm(total=total, initial=done, desc=f"epoch {epoch}", unit="batch",
                disable=not enabled, dynamic_ncols=True)


def show_running(bar: tqdm, metrics: EpochMetrics) -> None:
    bar.set_postfix_str(f"loss {metrics.loss:.4f}  acc {metrics.accuracy:6.2%}  "
                        f"{metrics.images_per_second:7.1f} img/s", refresh=False)


def epoch_record(epoch: int, step: int, lr: float, train: EpochMetrics,
                 val: EpochMetrics) -> dict[str, float]:
    return {"epoch": epoch + 1, "step": step, "lr": lr,
            "train_loss": train.loss, "train_acc": train.accuracy,
            "val_loss": val.loss, "val_acc": val.accuracy,
            "images_per_s": train.images_per_second, "epoch_s": train.seconds + val.seconds}


def summary_line(record: dict[str, float], epochs: int) -> str:
    return (f"epoch {int(record['epoch'])}/{epochs}  "
            f"train loss {record['train_loss']:.4f} acc {record['train_acc']:.2%}  "
            f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.2%}  "
            f"lr {record['lr']:.2g}  {record['images_per_s']:.1f} img/s  "
            f"{record['epoch_s']:.1f} s")


def write_logs(out: Path, history: list[dict[str, float]]) -> None:
    """``log.csv`` and ``log.json``: one row per finished epoch."""
    if not history:
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "log.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    (out / "log.json").write_text(json.dumps(history, indent=1) + "\n")


def plot_curves(out: Path, history: list[dict[str, float]]) -> Path | None:
    """``curves.png``: training and validation loss and accuracy per epoch."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (loss_axes, acc_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val"):
        loss_axes.plot(epochs, [row[f"{split}_loss"] for row in history], "o-", label=split)
        acc_axes.plot(epochs, [row[f"{split}_acc"] for row in history], "o-", label=split)
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    acc_axes.set(xlabel="epoch", ylabel="top-1 accuracy", title="accuracy")
    for axes in (loss_axes, acc_axes):
        axes.legend()
        axes.grid(alpha=0.3)
    figure.tight_layout()
    path = out / "curves.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


@dataclass
class Run:
    """The objects of a run that a checkpoint captures, and the ranks it runs on."""

    config: TrainConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: EpochBatchSampler
    num_classes: int
    state: TrainState
    world: distributed.World = distributed.SINGLE

    def save(self) -> None:
        """The checkpoint, written by rank 0 with every rank's RNG states (a collective:
        every rank calls it)."""
        if not self.config.checkpoint:
            return
        rank_rngs = distributed.gather(self.world, rng_states()) if self.world.parallel else None
        if self.world.is_main:
            atomic_torch_save(checkpoint_payload(
                self.config, self.num_classes, self.model, self.optimizer, self.scheduler,
                self.sampler, self.state, rank_rngs), self.config.out / CHECKPOINT_NAME)


def build_run(config: TrainConfig, splits: Splits, sampler: EpochBatchSampler,
              device: torch.device, checkpoint: dict[str, Any] | None,
              world: distributed.World = distributed.SINGLE) -> Run:
    """Model, optimizer, ReduceLROnPlateau (on validation error, as the paper) and the state.

    Every rank initialises the model from ``--seed``; then rank r > 0 switches to its own
    random stream (``distributed.rank_seed``) for dropout, while rank 0 goes on with the
    stream a plain run has. A checkpoint restores each rank's own RNG states.
    """
    num_classes = len(splits.classes)
    model = VARIANTS[config.model].build(num_classes, MODEL_BACKENDS[config.backend],
                                         image_spec(config).crop)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = make_optimizer(config, model.parameters())
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.1, patience=config.lr_patience)
    if world.rank > 0:
        seed_everything(distributed.rank_seed(config.seed, world.rank))
    state = TrainState()
    if checkpoint is not None:
        state = restore(checkpoint, num_classes, model, optimizer, scheduler, world.rank)
    return Run(config, model, optimizer, scheduler, sampler, num_classes, state, world)


def step_totals(world: distributed.World, device: torch.device, loss: float, correct: int,
                images: int, stop: bool) -> tuple[float, int, int, bool]:
    """(mean loss, correct, images, stop) of a step over every rank: this rank's own alone.

    One all-reduce of four numbers per step; `stop` is True on every rank when one asked.
    """
    if not world.parallel:
        return loss, correct, images, stop
    loss_sum, correct_sum, image_sum, stops = distributed.sum_over_ranks(
        world, [loss * images, correct, images, float(stop)], device)
    return loss_sum / image_sum, int(correct_sum), int(image_sum), stops > 0


def train_epoch(run: Run, network: nn.Module, loader: DataLoader, device: torch.device,
                interrupt: InterruptRequest, on_step: Callable[[TrainState], None] | None
                ) -> bool:
    """Trains the rest of the current epoch; False when Ctrl-C (on any rank) stopped it
    early. Running metrics are those of the global batches."""
    config, state = run.config, run.state
    amp = autocast(config, device)
    network.train()
    run.sampler.set_epoch(state.epoch, state.batch_in_epoch)
    total = run.sampler.batches_per_epoch()
    with progress_bar(config.progress and run.world.is_main,
                      f"{state.epoch + 1}/{config.epochs}", total, state.batch_in_epoch) as bar:
        show_running(bar, state.running)
        start = time.perf_counter()
        for images, labels in loader:
            images, labels = to_device(images, labels, device, config.channels_last)
            loss, correct = train_step(network, run.optimizer, images, labels, amp)
            loss, correct, count, stop = step_totals(run.world, device, loss, correct,
                                                     len(labels), interrupt.requested)
            now = time.perf_counter()
            state.running.add(loss, correct, count, now - start)
            start = now
            state.step += 1
            state.batch_in_epoch += 1
            state.last_loss = loss
            show_running(bar, state.running)
            bar.update(1)
            if on_step is not None:
                on_step(state)
            # Alone: the request as it stands now; under torchrun: what every rank agreed on
            # in this step's all-reduce (a later signal stops the ranks after the next step).
            if not run.world.parallel:
                stop = interrupt.requested
            if stop and state.batch_in_epoch < total:
                return False
    return True


def reduced(world: distributed.World, device: torch.device, metrics: EpochMetrics
            ) -> EpochMetrics:
    """`metrics` summed over every rank (seconds: this rank's)."""
    if not world.parallel:
        return metrics
    loss_sum, correct, images = distributed.sum_over_ranks(
        world, [metrics.loss_sum, metrics.correct, metrics.images], device)
    return EpochMetrics(loss_sum, int(correct), int(images), metrics.seconds)


def finish_epoch(run: Run, network: nn.Module, val_loader: DataLoader,
                 device: torch.device) -> dict[str, float]:
    """Validation (each rank its shard, metrics summed), the learning-rate schedule, the
    log row; starts the next epoch."""
    state = run.state
    val = reduced(run.world, device, evaluate(network, val_loader, device, run.config))
    record = epoch_record(state.epoch, state.step, run.optimizer.param_groups[0]["lr"],
                          state.running, val)
    run.scheduler.step(1.0 - val.accuracy)
    state.history.append(record)
    state.epoch += 1
    state.batch_in_epoch = 0
    state.running = EpochMetrics()
    return record


def networks(run: Run, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """What trains (DDP around the model under torchrun; compiled with ``--compile``) and
    what evaluates: under torchrun the model without DDP, whose forward would otherwise
    broadcast buffers in a collective that ranks with fewer validation batches skip."""
    config, world = run.config, run.world
    trained = distributed.data_parallel(run.model, world, device)
    network = torch.compile(trained) if config.compile else trained
    if not world.parallel:
        return network, network
    return network, torch.compile(run.model) if config.compile else run.model


def train(config: TrainConfig, on_step: Callable[[TrainState], None] | None = None
          ) -> TrainResult:
    """Runs (or, with ``config.resume``, continues) a training run; see the module doc.

    Under torchrun this process is one rank of a data-parallel run (it joins the
    process group here and leaves it on return). `on_step` is called after every
    optimizer step with the run's state (on every rank). Raises TrainingSetupError for
    unusable data, model names, sizes, checkpoints or launcher settings.
    """
    world = distributed.from_environment()
    check_variant(config)
    config = with_recipe(config)
    checkpoint = read_checkpoint(config.resume, config, world) if config.resume else None
    device = distributed.device_for(world, config.device)
    if config.sync_bn:
        distributed.check_sync_bn(world, device)
    distributed.start(world, device, config.dist_timeout)
    try:
        return train_on(config, world, device, checkpoint, on_step)
    finally:
        distributed.stop(world)


def train_on(config: TrainConfig, world: distributed.World, device: torch.device,
             checkpoint: dict[str, Any] | None,
             on_step: Callable[[TrainState], None] | None) -> TrainResult:
    """The training loop of :func:`train`, in this rank's process group if any."""
    spec = image_spec(config)
    seed_everything(config.seed)
    splits = load_splits(config, spec, world)
    train_loader, sampler, val_loader = loaders(config, splits, device, world)
    run = build_run(config, splits, sampler, device, checkpoint, world)
    network, eval_network = networks(run, device)
    say = print if config.progress and world.is_main else (lambda *_: None)
    say(f"{config.model} ({config.backend} backend) on {device}, {spec.crop}x{spec.crop} "
        f"inputs, {splits.description} ({len(splits.train)} train, {len(splits.val)} val images)")
    if world.parallel:
        say(f"data parallel: {world.size} processes ({distributed.backend_name()}), batch "
            f"{config.batch_size} per process, global batch {config.batch_size * world.size}")
    if checkpoint is not None:
        say(f"resumed from {config.resume}: epoch {run.state.epoch + 1}, "
            f"batch {run.state.batch_in_epoch}, step {run.state.step}")
    signals = (signal.SIGINT, signal.SIGTERM) if world.parallel else (signal.SIGINT,)
    interrupted = False
    with InterruptRequest(signals, announce=world.is_main) as interrupt:
        while run.state.epoch < config.epochs and not interrupted:
            completed = train_epoch(run, network, train_loader, device, interrupt, on_step)
            if completed:
                say(summary_line(finish_epoch(run, eval_network, val_loader, device),
                                 config.epochs))
                if world.is_main:
                    write_logs(config.out, run.state.history)
            run.save()
            interrupted = (distributed.any_rank(world, interrupt.requested, device)
                           and run.state.epoch < config.epochs)
    if interrupted:
        say(f"stopped at epoch {run.state.epoch + 1}, batch {run.state.batch_in_epoch}"
            + (f"; resume with --resume {config.out / CHECKPOINT_NAME}"
               if config.checkpoint else " (no checkpoint: --no-checkpoint)"))
    plot = plot_curves(config.out, run.state.history) if world.is_main else None
    if plot is not None:
        say(f"curves: {plot}; log: {config.out / 'log.csv'}")
    return TrainResult(run.model, run.state, interrupted)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python -m alexnet_kernels.train",
        description="Train an AlexNet variant on alexnet-kernels (or, with --backend torch, "
                    "the same network on PyTorch's ops) with the 2012 paper's recipe.")
    p.add_argument("--model", choices=list(VARIANTS), default=defaults.model,
                   help="alexnet: torchvision's; paper/paper-grouped: the 2012 paper at 227, "
                        "paper-grouped with the two-GPU groups; cifar: seed 002's 32x32 "
                        "network; bn: the BatchNorm variant")
    p.add_argument("--backend", choices=list(MODEL_BACKENDS), default=defaults.backend,
                   help="ours: the library's kernels; torch: the same network on PyTorch's ops")
    p.add_argument("--data", type=Path, help="ImageFolder root with train/ and val/; default: "
                   "scikit-learn's bundled digits for cifar, synthetic images otherwise")
    p.add_argument("--epochs", type=_positive, default=defaults.epochs)
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="default: sgd (the paper), adam for cifar (seed 002)")
    p.add_argument("--batch-size", type=_positive,
                   help="images per process and step (default: 128, 64 for cifar); under "
                        "torchrun the global batch is this times the number of processes")
    p.add_argument("--lr", type=float, help="initial learning rate; default: 0.01 (sgd), "
                   "0.001 (adam)")
    p.add_argument("--momentum", type=float, default=defaults.momentum, help="SGD only")
    p.add_argument("--weight-decay", type=float, help="default: 5e-4, 0 for cifar")
    p.add_argument("--lr-patience", type=int, default=defaults.lr_patience,
                   help="epochs without a lower validation error before the lr is divided by 10")
    p.add_argument("--image-size", type=_positive,
                   help="network input side (default: 224, 227 for paper*, 32 for cifar)")
    p.add_argument("--resize", type=_positive,
                   help="side images are resized to before cropping (default: the variant's "
                        "ratio, 256 for 224/227)")
    p.add_argument("--synthetic-classes", type=_positive, default=defaults.synthetic_classes)
    p.add_argument("--synthetic-size", type=_positive, default=defaults.synthetic_size,
                   help="synthetic training images (a fifth as many for validation)")
    p.add_argument("--train-limit", type=_positive, help="use at most this many training images")
    p.add_argument("--val-limit", type=_positive, help="use at most this many validation images")
    p.add_argument("--workers", type=int, default=defaults.workers, help="DataLoader workers")
    p.add_argument("--amp", action="store_true",
                   help="bf16 autocast (on CUDA; on the CPU, PyTorch's CPU bf16 autocast)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun on GPUs: BatchNorm layers (--model bn) normalise over "
                        "the global batch (SyncBatchNorm)")
    p.add_argument("--dist-timeout", type=_seconds, default=defaults.dist_timeout,
                   help="under torchrun: seconds a collective waits for the other processes "
                        "before the run fails (a process that died)")
    p.add_argument("--device", help="default: cuda when available, else cpu")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--out", type=Path, default=defaults.out,
                   help="checkpoint.pt, log.csv, log.json, curves.png go here")
    p.add_argument("--resume", type=Path, help="checkpoint to continue from")
    p.add_argument("--no-checkpoint", dest="checkpoint", action="store_false",
                   help="write no checkpoint (e.g. when timing)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar or summary lines")
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    return TrainConfig(**vars(parser().parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 on success (also after Ctrl-C saved a checkpoint), 2 on bad setup."""
    config = parse_args(argv)
    try:
        train(config)
    except TrainingSetupError as error:
        world = os.environ.get("RANK")
        print(f"error{f' (rank {world})' if world is not None else ''}: {error}",
              file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
