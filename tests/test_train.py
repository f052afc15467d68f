"""The training script: every variant and backend trains, resume is exact, checkpoints are
written atomically, and bad data, models, sizes and checkpoints give clear errors."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
from helpers import require_native_cpu
from torch.utils._python_dispatch import TorchDispatchMode

from alexnet_kernels import train as training
from alexnet_kernels.data import (
    IMAGENET_PCA_EIGVAL,
    IMAGENET_PCA_EIGVEC,
    EpochBatchSampler,
    Lighting,
    TrainingSetupError,
)
from alexnet_kernels.train import TrainConfig, TrainState

# The smallest inputs each variant accepts quickly: alexnet's adaptive pool takes 63x63,
# the fixed-size variants only their own sizes.
TINY_IMAGE_SIZES = {"alexnet": 63, "paper": 227, "paper-grouped": 227, "cifar": 32, "bn": 195}


def tiny_config(tmp_path: Path, model: str, **overrides: object) -> TrainConfig:
    """Two steps of batch 2 on synthetic images (the digits for cifar), 3 classes."""
    settings: dict[str, object] = dict(
        model=model, image_size=TINY_IMAGE_SIZES[model], epochs=1, batch_size=2,
        train_limit=4, val_limit=2, synthetic_classes=3, synthetic_size=8, workers=0,
        out=tmp_path / "run", checkpoint=False, progress=False)
    settings.update(overrides)
    return TrainConfig(**settings)


def record_losses(losses: list[float]):
    def on_step(state: TrainState) -> None:
        losses.append(state.last_loss)
    return on_step


@pytest.mark.parametrize("backend", ["ours", "torch"])
@pytest.mark.parametrize("model", list(training.VARIANTS))
def test_two_steps_of_every_model_and_backend(tmp_path: Path, model: str, backend: str) -> None:
    if backend == "ours":
        require_native_cpu()
    losses: list[float] = []
    result = training.train(tiny_config(tmp_path, model, backend=backend),
                            on_step=record_losses(losses))
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses), losses
    assert result.state.step == 2 and not result.interrupted
    (row,) = result.state.history
    assert math.isfinite(row["val_loss"]) and 0 <= row["val_acc"] <= 1


class OpNamespaces(TorchDispatchMode):
    """Records the namespace and name of every op that reaches the dispatcher."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[tuple[str, str]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add((func.namespace, func._opname))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", ["ours", "torch"])
def test_backend_torch_runs_only_pytorch_ops(tmp_path: Path, backend: str) -> None:
    """--backend torch is the same network on PyTorch's ops; --backend ours on the library's."""
    if backend == "ours":
        require_native_cpu()
    with OpNamespaces() as recorded:
        training.train(tiny_config(tmp_path, "cifar", backend=backend, train_limit=2))
    ours = {name for namespace, name in recorded.ops if namespace == "alexnet_kernels"}
    if backend == "torch":
        assert not ours
        # F.dropout reaches the dispatcher as its decomposition (bernoulli_, div_, mul).
        assert {"convolution", "max_pool2d_with_indices", "bernoulli_"} <= {
            name for namespace, name in recorded.ops if namespace == "aten"}
    else:
        assert {"conv2d_relu", "max_pool2d", "dropout"} <= ours, ours


def test_cli_learns_the_bundled_digits(tmp_path: Path) -> None:
    """The command line with the cifar recipe on 32 digits: the epoch's mean training loss
    falls well below the first epochs' (10 classes: about ln 10 = 2.30 at the start);
    log.csv, log.json and curves.png are written."""
    require_native_cpu()
    out = tmp_path / "digits"
    status = training.main(["--model", "cifar", "--epochs", "6", "--batch-size", "16",
                            "--train-limit", "32", "--val-limit", "16", "--workers", "0",
                            "--no-checkpoint", "--no-progress", "--out", str(out)])
    assert status == 0
    history = json.loads((out / "log.json").read_text())
    assert [row["epoch"] for row in history] == list(range(1, 7))
    losses = [row["train_loss"] for row in history]
    assert sum(losses[-3:]) / 3 < 0.95 * sum(losses[:2]) / 2, losses
    assert len((out / "log.csv").read_text().splitlines()) == 7
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_image_folder_with_paper_augmentation(tmp_path: Path) -> None:
    """An ImageFolder of odd-sized RGB files (train/ and val/) trains two steps."""
    require_native_cpu()
    from PIL import Image

    generator = torch.Generator().manual_seed(5)
    for split, count in (("train", 2), ("val", 1)):
        for label in ("cat", "dog"):
            folder = tmp_path / "images" / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = torch.randint(0, 256, (45 + index, 70, 3), generator=generator,
                                       dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{index}.png")
    losses: list[float] = []
    result = training.train(tiny_config(tmp_path, "alexnet", data=tmp_path / "images",
                                         synthetic_classes=10),
                            on_step=record_losses(losses))
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    assert result.model.classifier[-1].out_features == 2  # classes from the folder


def resume_config(tmp_path: Path, name: str) -> TrainConfig:
    """Two epochs of three steps of the cifar network on the digits, checkpointed."""
    return tiny_config(tmp_path, "cifar", epochs=2, batch_size=4, train_limit=12, val_limit=4,
                       out=tmp_path / name, checkpoint=True)


def interrupt_at(step: int):
    """An on_step callback that presses Ctrl-C (sends SIGINT) after optimizer step `step`."""
    def on_step(state: TrainState) -> None:
        if state.step == step:
            os.kill(os.getpid(), signal.SIGINT)
    return on_step


def untimed(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """The log without its wall-clock columns."""
    return [{k: v for k, v in row.items() if k not in ("images_per_s", "epoch_s")}
            for row in history]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> training.TrainResult:
    require_native_cpu()
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    return training.train(dataclasses.replace(resume_config(tmp_path, "run"), checkpoint=False))


@pytest.mark.parametrize(("stop_after_step", "batch_in_epoch"), [(3, 0), (4, 1)],
                         ids=["end-of-epoch", "mid-epoch"])
def test_ctrl_c_then_resume_is_bit_identical(tmp_path: Path, uninterrupted: training.TrainResult,
                                             stop_after_step: int, batch_in_epoch: int) -> None:
    """Ctrl-C after step 3 (the first epoch's last) or 4 (inside the second epoch) saves a
    checkpoint and returns; --resume then reaches the uninterrupted run's weights, optimizer
    state and log exactly."""
    config = resume_config(tmp_path, "run")
    # What the process had (SIG_IGN, not Python's handler, when started in the background).
    handler_before = signal.getsignal(signal.SIGINT)
    stopped = training.train(config, on_step=interrupt_at(stop_after_step))
    assert stopped.interrupted and stopped.state.step == stop_after_step
    checkpoint_path = config.out / training.CHECKPOINT_NAME
    saved = torch.load(checkpoint_path, weights_only=True)
    assert (saved["step"], saved["epoch"], saved["batch_in_epoch"]) == (
        stop_after_step, 1, batch_in_epoch)
    assert signal.getsignal(signal.SIGINT) is handler_before  # the script's handler is gone

    resumed = training.train(dataclasses.replace(config, resume=checkpoint_path))
    assert not resumed.interrupted and resumed.state.step == 6
    expected = uninterrupted.model.state_dict()
    for name, tensor in resumed.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert untimed(resumed.state.history) == untimed(uninterrupted.state.history)


def test_checkpoint_write_failure_keeps_the_previous_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / training.CHECKPOINT_NAME
    previous = {"step": 1, "weights": torch.randn(1000, generator=torch.Generator().manual_seed(1))}
    training.atomic_torch_save(previous, path)
    real_save = torch.save

    def save_half_then_fail(payload: object, stream) -> None:
        real_save(payload, stream)
        stream.truncate(stream.tell() // 2)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        training.atomic_torch_save({"step": 2, "weights": torch.zeros(1000)}, path)
    monkeypatch.undo()
    restored = torch.load(path, weights_only=True)
    assert restored["step"] == 1 and torch.equal(restored["weights"], previous["weights"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [training.CHECKPOINT_NAME]


def test_lighting_adds_the_pca_colour_shift() -> None:
    """Every pixel moves by eigvec @ (alpha * eigval), alpha ~ N(0, 0.1^2) from torch's
    generator, computed here in float64; the eigenvectors are orthonormal columns."""
    eigvec = torch.tensor(IMAGENET_PCA_EIGVEC, dtype=torch.float64)
    torch.testing.assert_close(eigvec.T @ eigvec, torch.eye(3, dtype=torch.float64),
                               atol=2e-3, rtol=0)
    image = torch.rand(3, 7, 5, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(11)
    shifted = Lighting()(image)
    torch.manual_seed(11)
    alpha = torch.randn(3).double() * 0.1
    expected = eigvec @ (alpha * torch.tensor(IMAGENET_PCA_EIGVAL, dtype=torch.float64))
    torch.testing.assert_close((shifted - image).double(),
                               expected.view(3, 1, 1).expand(3, 7, 5), rtol=1e-5, atol=1e-6)


def test_sampler_resumes_inside_an_epoch_and_reshuffles_per_epoch() -> None:
    sampler = EpochBatchSampler(10, 3, seed=4, shuffle=True, drop_last=True)
    sampler.set_epoch(2)
    full = list(sampler)
    assert len(full) == 3 and sorted(i for b in full for _, i in b) != list(range(9))
    sampler.set_epoch(2, start_batch=1)
    assert list(sampler) == full[1:] and len(sampler) == 2
    sampler.set_epoch(3)
    assert [i for b in list(sampler) for _, i in b] != [i for b in full for _, i in b]


def test_augmentation_does_not_depend_on_loader_workers(tmp_path: Path) -> None:
    """Each sample's augmentation is seeded by (seed, epoch, index), so batches are the same
    with worker processes as without."""
    batches = {}
    for workers in (0, 2):
        config = training.with_recipe(tiny_config(tmp_path, "alexnet", workers=workers))
        splits = training.load_splits(config, training.image_spec(config))
        loader, sampler, _ = training.loaders(config, splits, torch.device("cpu"))
        sampler.set_epoch(1)
        batches[workers] = [images for images, _ in loader]
    for single, parallel in zip(batches[0], batches[2], strict=True):
        assert torch.equal(single, parallel)


# --- clear errors -------------------------------------------------------------------------


def make_image_folder(root: Path, classes: dict[str, list[str]]) -> Path:
    """root/<split>/<class>/0.png for each split and its classes (an empty list: no files)."""
    from PIL import Image

    for split, names in classes.items():
        (root / split).mkdir(parents=True)
        for name in names:
            (root / split / name).mkdir()
            Image.new("RGB", (8, 8), (10, 200, 30)).save(root / split / name / "0.png")
    return root


@pytest.mark.parametrize(("layout", "message"), [
    (None, "no such directory"),
    ({"train": ["a", "b"]}, "val is missing; expected the ImageFolder layout"),
    ({"train": ["a", "b"], "val": []}, "val/ is not a usable ImageFolder"),
    ({"train": ["a", "b"], "val": ["a", "c"]}, r"only in train/: \['b'\], only in val/: \['c'\]"),
], ids=["missing", "no-val", "no-classes", "different-classes"])
def test_missing_or_malformed_data_folder(tmp_path: Path, layout: dict | None,
                                          message: str) -> None:
    root = tmp_path / "data"
    if layout is not None:
        make_image_folder(root, layout)
    with pytest.raises(TrainingSetupError, match=message):
        training.train(tiny_config(tmp_path, "alexnet", data=root))


def test_unknown_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(TrainingSetupError, match="unknown model 'vgg'; choose one of alexnet"):
        training.train(dataclasses.replace(tiny_config(tmp_path, "alexnet"), model="vgg"))
    with pytest.raises(SystemExit) as exit_info:
        training.main(["--model", "vgg"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'vgg'" in capsys.readouterr().err


@pytest.mark.parametrize(("model", "size", "message"), [
    ("alexnet", 40, "too small; the minimum input size is 63x63"),
    ("paper", 100, "accepted input sizes are 227x227 to 258x258"),
    ("bn", 300, "classifier needs 5x5; accepted input sizes are 195x195 to 226x226"),
])
def test_image_size_the_model_cannot_take(tmp_path: Path, model: str, size: int,
                                          message: str) -> None:
    with pytest.raises(TrainingSetupError, match=f"--model {model} cannot take.*{message}"):
        training.train(tiny_config(tmp_path, model, image_size=size))


def test_checkpoint_of_another_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_native_cpu()
    config = tiny_config(tmp_path, "cifar", train_limit=2, checkpoint=True)
    training.train(config)
    checkpoint = str(config.out / training.CHECKPOINT_NAME)
    status = training.main(["--model", "paper", "--resume", checkpoint, "--no-progress",
                            "--out", str(tmp_path / "other")])
    assert status == 2
    assert ("the checkpoint is of --model cifar, this run trains --model paper"
            in capsys.readouterr().err)
    with pytest.raises(TrainingSetupError, match="trained on 32-pixel images, this run uses 40"):
        training.train(dataclasses.replace(config, image_size=40, resume=Path(checkpoint)))
    with pytest.raises(TrainingSetupError,
                       match=r"changes options the checkpoint was trained with "
                             r"\(--batch-size 2 -> 3; --lr 0.001 -> 0.5\)"):
        training.train(dataclasses.replace(config, batch_size=3, lr=0.5,
                                           resume=Path(checkpoint)))
    # What may change: a longer run, other workers, no progress output.
    longer = training.train(dataclasses.replace(config, epochs=config.epochs + 1, workers=0,
                                                progress=False, resume=Path(checkpoint)))
    assert longer.state.epoch == config.epochs + 1
    with pytest.raises(TrainingSetupError, match="not a readable checkpoint"):
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        training.train(dataclasses.replace(config, resume=tmp_path / "junk.pt"))
