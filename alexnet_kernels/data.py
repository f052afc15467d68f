"""Datasets and augmentation for the training script (needs torchvision: the ``train`` extra).

Every random augmentation of a sample is seeded by (seed, epoch, index) and
batches are drawn in an order fixed by (seed, epoch), so what a run sees does
not depend on the number of loader workers, and a run resumed from a
checkpoint (even in the middle of an epoch) sees exactly what an uninterrupted
one would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler, Subset

try:
    from torchvision import datasets
    from torchvision.transforms import v2
except ImportError as missing:
    raise ImportError("the training script and its datasets need torchvision: "
                      "pip install 'alexnet-kernels[train]'") from missing

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Principal components of ImageNet's RGB pixel values on a [0, 1] scale, for the
# paper's colour ("lighting") augmentation (Krizhevsky et al. 2012, section 4.1).
# The values are those of fb.resnet.torch, datasets/imagenet.lua
# (https://github.com/facebook/fb.resnet.torch/blob/master/datasets/imagenet.lua),
# which the usual PyTorch AlexNet/ResNet recipes copy; eigenvectors are columns.
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))
# The paper draws each component's coefficient from N(0, 0.1^2).
PAPER_LIGHTING_STD = 0.1
# Seed 002's Keras ImageDataGenerator: rotation_range=15 (degrees),
# width/height_shift_range=0.1 (fraction of the side), horizontal_flip=True.
CIFAR_ROTATION_DEGREES = 15.0
CIFAR_SHIFT_FRACTION = 0.1
# Held-out part of scikit-learn's 1797 digits (the rest trains).
DIGITS_VALIDATION_SIZE = 297

Augmentation = Literal["paper", "cifar"]


class TrainingSetupError(ValueError):
    """A problem with the data, model choice, image size or checkpoint a run was given.

    The command line reports it as one message, without a traceback.
    """


@dataclass(frozen=True)
class ImageSpec:
    """How images reach a network: resized to ``resize`` (shorter side), cropped to ``crop``.

    ``augmentation`` names the training recipe: ``"paper"`` (random crop from
    the central resize x resize square, horizontal flip, PCA lighting noise) or
    ``"cifar"`` (seed 002's rotation, shifts and flips at the crop size).
    """

    crop: int
    resize: int
    augmentation: Augmentation


class Lighting(torch.nn.Module):
    """The paper's PCA colour noise on a (3, H, W) float RGB image on a [0, 1] scale.

    Adds ``eigvec @ (alpha * eigval)`` to every pixel, with alpha ~ N(0, std^2)
    drawn once per image from torch's default generator.
    """

    def __init__(self, std: float = PAPER_LIGHTING_STD) -> None:
        super().__init__()
        self.std = std
        self.eigval = torch.tensor(IMAGENET_PCA_EIGVAL)
        self.eigvec = torch.tensor(IMAGENET_PCA_EIGVEC)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.std == 0:
            return image
        alpha = torch.randn(3) * self.std
        shift = self.eigvec @ (alpha * self.eigval)
        return image + shift.to(image.dtype).view(3, 1, 1)


def eval_transform(spec: ImageSpec) -> v2.Compose:
    """PIL image or uint8 (3, H, W) -> normalised float (3, crop, crop): resize, central crop."""
    return v2.Compose([
        v2.ToImage(), v2.Resize(spec.resize, antialias=True), v2.CenterCrop(spec.crop),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def cifar_augmentation() -> v2.Compose:
    """Seed 002's augmentation of a float (3, H, W) image.

    Keras fills the uncovered border with the nearest pixel, torchvision with 0,
    which is the mean of a normalised image.
    """
    return v2.Compose([
        v2.RandomAffine(degrees=CIFAR_ROTATION_DEGREES,
                        translate=(CIFAR_SHIFT_FRACTION, CIFAR_SHIFT_FRACTION)),
        v2.RandomHorizontalFlip()])


def train_transform(spec: ImageSpec) -> v2.Compose:
    """PIL image or uint8 (3, H, W) -> augmented, normalised float (3, crop, crop)."""
    if spec.augmentation == "cifar":
        return v2.Compose([eval_transform(spec), cifar_augmentation()])
    return v2.Compose([
        v2.ToImage(), v2.Resize(spec.resize, antialias=True), v2.CenterCrop(spec.resize),
        v2.RandomCrop(spec.crop), v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True), Lighting(),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for the randomness of sample `index` in `epoch` (index -1: the order)."""
    state = np.random.SeedSequence([seed, epoch + 1, index + 1]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SeededAugmentation(Dataset):
    """``base[index]`` -> (transform(image), label), keyed by ``(epoch, index)``.

    The transform draws from torch's default generator, re-seeded for the
    sample by :func:`sample_seed`; the caller's generator state is restored.
    """

    def __init__(self, base: Dataset, transform: Callable[[Any], torch.Tensor],
                 seed: int) -> None:
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        epoch, index = key
        image, label = self.base[index]
        # Only the CPU generator: torch.manual_seed would also reseed CUDA's,
        # which dropout on the GPU draws from.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(sample_seed(self.seed, epoch, index))
            return self.transform(image), int(label)


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` keys for :class:`SeededAugmentation`.

    With ``shuffle`` the order is a permutation of ``range(size)`` fixed by
    (seed, epoch), else the natural order. :meth:`set_epoch` chooses the epoch
    and how many of its batches to skip (those a resumed run already trained).

    Data parallel (``world_size`` ranks): the order is cut into global batches
    of ``batch_size * world_size`` keys, and rank ``rank`` takes every
    ``world_size``-th key of each, starting at its own (``batch_size`` keys of a
    full batch); so the ranks together see what one process with the global
    batch would, in the same order. A last, incomplete global batch (without
    ``drop_last``) leaves a rank no batch when it has fewer keys than ranks.
    """

    def __init__(self, size: int, batch_size: int, seed: int, shuffle: bool,
                 drop_last: bool, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size {world_size})")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def batches_per_epoch(self) -> int:
        """Global batches per epoch (the same on every rank)."""
        full, rest = divmod(self.size, self.global_batch)
        return full if self.drop_last or rest == 0 else full + 1

    def _rank_batches(self) -> int:
        """Batches of this rank per epoch: one fewer when the last global batch has no key
        for it."""
        full, rest = divmod(self.size, self.global_batch)
        return full if self.drop_last or rest <= self.rank else full + 1

    def __len__(self) -> int:
        return max(self._rank_batches() - self.start_batch, 0)

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, -1))
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self._order().tolist()
        for batch in range(self.start_batch, self._rank_batches()):
            keys = order[batch * self.global_batch:(batch + 1) * self.global_batch]
            yield [(self.epoch, index) for index in keys[self.rank::self.world_size]]

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "start_batch": self.start_batch}


class TensorImages(Dataset):
    """(N, C, H, W) images and (N,) integer labels as a dataset of (image, label)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


class SyntheticImages(Dataset):
    """Learnable images made from their index alone: nothing is read or downloaded.

    Item i is a uint8 (3, side, side) image of class ``i % num_classes``: stripes
    whose orientation and colour belong to the class, shifted in phase and
    covered in noise per image. ``first_index`` keeps splits apart.
    """

    def __init__(self, size: int, num_classes: int, side: int, seed: int,
                 first_index: int = 0) -> None:
        self.size, self.num_classes, self.side = size, num_classes, side
        self.seed, self.first_index = seed, first_index

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        label = index % self.num_classes
        image_rng = torch.Generator().manual_seed(
            sample_seed(self.seed, -1, self.first_index + index))
        angle = torch.pi * label / self.num_classes
        colour = torch.tensor([(label * 97 % 11) / 10, (label * 37 % 7) / 6, (label % 5) / 4])
        coords = torch.arange(self.side, dtype=torch.float32) / self.side
        phase = torch.rand((), generator=image_rng) * 2 * torch.pi
        stripes = torch.sin(8 * torch.pi * (coords.view(-1, 1) * np.sin(angle)
                                            + coords.view(1, -1) * np.cos(angle)) + phase)
        noise = torch.randn((3, self.side, self.side), generator=image_rng)
        image = 128 + 50 * stripes * (2 * colour.view(3, 1, 1) - 1) + 25 * noise
        return image.clamp(0, 255).to(torch.uint8), label


def digits_32x32() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled 8x8 digits (1797 images, no download) as normalised
    (N, 3, 32, 32) float32 images and (N,) int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
    images = (images - images.mean()) / images.std()
    return images.expand(-1, 3, -1, -1).contiguous(), torch.tensor(digits.target)


def evenly_spaced_subset(dataset: Dataset, limit: int | None) -> Dataset:
    """At most `limit` items spread evenly over `dataset` (an image folder lists its
    images class by class, so its first items would all be of one class)."""
    if limit is None or limit >= len(dataset):
        return dataset
    indices = torch.linspace(0, len(dataset) - 1, limit).round().long().tolist()
    return Subset(dataset, indices)


@dataclass
class Splits:
    """Training and validation datasets keyed by ``(epoch, index)``; their class names."""

    train: SeededAugmentation
    val: SeededAugmentation
    classes: list[str]
    description: str

    def limited(self, train_limit: int | None, val_limit: int | None) -> Splits:
        """The same splits cut to at most `train_limit` / `val_limit` images."""
        def cut(split: SeededAugmentation, limit: int | None) -> SeededAugmentation:
            return SeededAugmentation(evenly_spaced_subset(split.base, limit), split.transform,
                                      split.seed)

        return Splits(cut(self.train, train_limit), cut(self.val, val_limit), self.classes,
                      self.description)


def _resize_to(crop: int) -> v2.Transform:
    return v2.Resize((crop, crop), antialias=True)


def digits_splits(spec: ImageSpec, seed: int) -> Splits:
    """The bundled digits at spec.crop x spec.crop: 1500 to train (seed 002's
    augmentation), 297 held out. The split does not depend on `seed`."""
    images, labels = digits_32x32()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    held_out, train = order[:DIGITS_VALIDATION_SIZE], order[DIGITS_VALIDATION_SIZE:]
    resize = [] if spec.crop == images.shape[-1] else [_resize_to(spec.crop)]
    return Splits(
        SeededAugmentation(TensorImages(images[train], labels[train]),
                           v2.Compose([*resize, cifar_augmentation()]), seed),
        SeededAugmentation(TensorImages(images[held_out], labels[held_out]),
                           v2.Compose(resize or [v2.Identity()]), seed),
        [str(d) for d in range(10)],
        f"scikit-learn's digits upscaled to {spec.crop}x{spec.crop}")


def synthetic_splits(spec: ImageSpec, seed: int, num_classes: int, train_size: int,
                     val_size: int) -> Splits:
    """Synthetic images (see :class:`SyntheticImages`) at spec.resize, through the
    same transforms as an image folder's."""
    train = SyntheticImages(train_size, num_classes, spec.resize, seed)
    val = SyntheticImages(val_size, num_classes, spec.resize, seed, first_index=train_size)
    return Splits(SeededAugmentation(train, train_transform(spec), seed),
                  SeededAugmentation(val, eval_transform(spec), seed),
                  [f"synthetic-{c}" for c in range(num_classes)],
                  f"synthetic images, {num_classes} classes")


def _image_folder(root: Path, split: str) -> datasets.ImageFolder:
    folder = root / split
    if not folder.is_dir():
        raise TrainingSetupError(
            f"--data {root}: {folder} is missing; expected the ImageFolder layout "
            f"{root}/train/<class>/<image> and {root}/val/<class>/<image>")
    try:
        return datasets.ImageFolder(str(folder))
    except (FileNotFoundError, RuntimeError) as error:
        raise TrainingSetupError(f"--data {root}: {split}/ is not a usable ImageFolder "
                                 f"(one sub-folder of images per class): {error}") from error


def folder_splits(root: Path, spec: ImageSpec, seed: int) -> Splits:
    """``root/train`` and ``root/val`` in torchvision's ImageFolder layout, same classes."""
    if not root.is_dir():
        raise TrainingSetupError(f"--data {root}: no such directory")
    train, val = _image_folder(root, "train"), _image_folder(root, "val")
    if train.classes != val.classes:
        only_train = sorted(set(train.classes) - set(val.classes))
        only_val = sorted(set(val.classes) - set(train.classes))
        raise TrainingSetupError(
            f"--data {root}: train/ and val/ must have the same class folders; only in "
            f"train/: {only_train or 'none'}, only in val/: {only_val or 'none'}")
    return Splits(SeededAugmentation(train, train_transform(spec), seed),
                  SeededAugmentation(val, eval_transform(spec), seed), train.classes,
                  f"{root}, {len(train.classes)} classes")
