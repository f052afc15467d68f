"""Dropout's mask convention and cases shared by its tests: Philox4x32-10's known
answers, the convention computed independently (in Python, and vectorised in numpy
for whole tensors), the (seed, offset) tensor, and the inputs of the mask tests."""

from __future__ import annotations

import math

import numpy as np
import torch
from helpers import random_tensor

# Random123's kat_vectors for Philox4x32-10: (counter, key, output).
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]
MASK32 = 0xFFFFFFFF


def philox_py(counter, key) -> list[int]:
    """An independent Philox4x32-10 in Python, to check the kernels' convention."""
    c, k = list(counter), list(key)
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k[0]) & MASK32, p1 & MASK32,
             ((p0 >> 32) ^ c[3] ^ k[1]) & MASK32, p0 & MASK32]
        k = [(k[0] + 0x9E3779B9) & MASK32, (k[1] + 0xBB67AE85) & MASK32]
    return c


def threshold(p: float) -> int:
    return min(math.floor((1.0 - p) * 2**32), 2**32 - 1)


def seed_offset(seed: int, offset: int) -> torch.Tensor:
    """The op's (seed, offset) tensor for unsigned 64-bit values."""
    signed = [v - 2**64 if v >= 2**63 else v for v in (seed, offset)]
    return torch.tensor(signed, dtype=torch.int64)


_M32 = np.uint64(0xFFFFFFFF)


def philox_words(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Philox4x32-10 of counters (G, 4) uint64 (32-bit values) under one key: (G, 4)."""
    c = counters.astype(np.uint64).T.copy()
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        c = np.stack([((p1 >> np.uint64(32)) ^ c[1] ^ k0) & _M32, p1 & _M32,
                      ((p0 >> np.uint64(32)) ^ c[3] ^ k1) & _M32, p0 & _M32])
        k0 = (k0 + np.uint64(0x9E3779B9)) & _M32
        k1 = (k1 + np.uint64(0xBB67AE85)) & _M32
    return c.T


def convention_mask(numel: int, seed: int, offset: int, p: float, first: int = 0) -> torch.Tensor:
    """The keep mask of elements [first, numel) in memory order (bool, 1-D)."""
    groups = np.arange(first // 4, (numel + 3) // 4, dtype=np.uint64)
    call = offset // 4
    counters = np.stack([np.full_like(groups, call & 0xFFFFFFFF), np.full_like(groups, call >> 32),
                         groups & _M32, groups >> np.uint64(32)], axis=1)
    words = philox_words(counters, (seed & 0xFFFFFFFF, seed >> 32)).reshape(-1)
    words = words[first % 4:numel - first // 4 * 4]
    return torch.from_numpy(words < np.uint64(threshold(p)))


def drawn_seed(generator_seed: int) -> int:
    """The 64-bit seed a CPU call draws from a generator seeded with ``generator_seed``."""
    generator = torch.Generator().manual_seed(generator_seed)
    value = torch.randint(-(2**63), 2**63 - 1, (1,), dtype=torch.int64, generator=generator)
    return int(value) % 2**64


# Sizes not a multiple of 4, odd shapes, channels_last, an offset view (not
# aligned for vector loads) and a non-dense input.
MASK_CASES = {
    "1": lambda: random_tensor((1,), torch.float64, 1),
    "3": lambda: random_tensor((3,), torch.float64, 2),
    "5x7x3": lambda: random_tensor((5, 7, 3), torch.float64, 3),
    "1031": lambda: random_tensor((1031,), torch.float64, 4),
    "channels_last": lambda: random_tensor((2, 5, 3, 7), torch.float64, 5, channels_last=True),
    "offset_view": lambda: random_tensor((1 + 515,), torch.float64, 6)[1:],
    "strided": lambda: random_tensor((6, 10), torch.float64, 7)[:, ::3],
}
