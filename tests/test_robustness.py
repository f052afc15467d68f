"""Runtime robustness of the compiled CPU ops: threads, memory, 64-bit sizes, determinism.

* Several Python threads calling the ops at once get exactly the results of
  calling them one after another (no shared scratch state, no races).
* Many forward + backward calls do not grow the process's memory.
* Tensors of more than 2**31 elements (float16, so that they fit in memory) give
  the right values at their far end, where 32-bit offsets would have wrapped.
* Backward passes are bit-identical from run to run, and
  ``torch.use_deterministic_algorithms(True)`` runs them unchanged: no kernel of
  the library uses atomics or a non-deterministic reduction.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from cases.dropout import convention_mask, drawn_seed
from helpers import random_tensor, require_native_cpu

import alexnet_kernels as ak
from alexnet_kernels import models

Step = Callable[[int], list[torch.Tensor]]


def _lrn_step(seed: int) -> list[torch.Tensor]:
    x = random_tensor((2, 24, 13, 11), torch.float32, seed).requires_grad_()
    y = ak.lrn(x, 5, 1e-2, 0.75, 2.0, backend="native")
    y.backward(random_tensor(tuple(y.shape), torch.float32, seed + 1))
    return [y.detach(), x.grad]


def _max_pool_step(seed: int) -> list[torch.Tensor]:
    x = random_tensor((2, 16, 27, 27), torch.float32, seed, channels_last=seed % 2 == 1)
    x.requires_grad_()
    y, indices = ak.max_pool2d(x, 3, 2, return_indices=True, backend="native")
    y.backward(random_tensor(tuple(y.shape), torch.float32, seed + 1))
    return [y.detach(), indices, x.grad]


def _dropout_step(seed: int) -> list[torch.Tensor]:
    x = random_tensor((4, 64, 33), torch.float32, seed).requires_grad_()
    y = ak.dropout(x, 0.4, generator=torch.Generator().manual_seed(seed), backend="native")
    y.backward(random_tensor(tuple(y.shape), torch.float32, seed + 1))
    return [y.detach(), x.grad]


def _conv_step(seed: int) -> list[torch.Tensor]:
    x = random_tensor((2, 8, 15, 13), torch.float32, seed).requires_grad_()
    w = (random_tensor((16, 4, 3, 3), torch.float32, seed + 1) / 6).requires_grad_()
    b = random_tensor((16,), torch.float32, seed + 2).requires_grad_()
    y = ak.conv2d_relu(x, w, b, 1, 1, 1, 2, backend="native")
    y.backward(random_tensor(tuple(y.shape), torch.float32, seed + 3))
    return [y.detach(), x.grad, w.grad, b.grad]


STEPS: dict[str, Step] = {"lrn": _lrn_step, "max_pool2d": _max_pool_step,
                          "dropout": _dropout_step, "conv2d_relu": _conv_step}


def _assert_identical(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert torch.equal(x.contiguous().view(torch.uint8), y.contiguous().view(torch.uint8))


# ---- threads ----------------------------------------------------------------------

@pytest.mark.parametrize("op", list(STEPS))
def test_concurrent_threads_give_the_single_threaded_results(op: str) -> None:
    require_native_cpu()
    step = STEPS[op]
    seeds = list(range(100, 108))
    expected = {seed: step(seed) for seed in seeds}
    results: dict[int, list[torch.Tensor]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(seeds))

    def work(seed: int) -> None:
        try:
            start.wait()
            for _ in range(3):
                results[seed] = step(seed)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for seed in seeds:
        _assert_identical(results[seed], expected[seed])


# ---- memory -----------------------------------------------------------------------

def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
@pytest.mark.parametrize("op", list(STEPS))
def test_many_calls_do_not_grow_memory(op: str) -> None:
    """300 forward + backward calls after a warm-up: leaking one call's tensors (about
    100-300 KB) would grow the process by 30 MB or more; 12 MB allows the allocator's
    own variation."""
    require_native_cpu()
    step = STEPS[op]
    for seed in range(20):
        step(seed)
    gc.collect()
    before = _resident_bytes()
    for seed in range(300):
        step(seed % 7)
    gc.collect()
    grown = _resident_bytes() - before
    assert grown < 12 * 2**20, f"{op}: resident memory grew by {grown / 2**20:.1f} MiB"


# ---- past 2**31 elements -----------------------------------------------------------

# Just over 2**31 elements each; float16 keeps every tensor near 4 GiB.
_LARGE_LRN_SHAPE = (1, 64, 8192, 4097)
_LARGE_POOL_SHAPE = (1, 1, 46341, 46341)
_LARGE_NUMEL = 2**31 + 4099


def _available_memory() -> int:
    """Bytes the kernel can hand out now: free pages and reclaimable cache (MemAvailable);
    free pages alone where /proc/meminfo is missing."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


# The tests past 2**31 elements need 8-10 GiB each: under pytest-xdist (`make test`,
# --dist loadgroup) they share one worker, so they never run at the same time.
LARGE_MEMORY = pytest.mark.xdist_group("large_memory")


def _require_memory(gib: int) -> None:
    available = _available_memory()
    if available < gib * 2**30:
        pytest.skip(f"needs {gib} GiB of free memory, {available / 2**30:.1f} GiB free")


@LARGE_MEMORY
def test_lrn_past_2_31_elements() -> None:
    """The last pixels of an image of more than 2**31 elements: their channels lie at
    offsets c * H * W + p beyond 2**31."""
    require_native_cpu()
    _require_memory(10)
    x = torch.zeros(_LARGE_LRN_SHAPE, dtype=torch.float16)
    assert x.numel() > 2**31
    tail = random_tensor((1, 64, 1, 97), torch.float16, seed=7)
    x[..., -1:, -97:] = tail
    y = ak.lrn(x, 5, 1e-2, 0.75, 2.0, backend="native")
    expected = F.local_response_norm(tail.double(), 5, 1e-2, 0.75, 2.0)
    torch.testing.assert_close(y[..., -1:, -97:].double(), expected, rtol=2e-3, atol=2e-3)


@LARGE_MEMORY
def test_max_pool_past_2_31_elements() -> None:
    """One plane of more than 2**31 elements: its last output rows, values and argmax."""
    require_native_cpu()
    _require_memory(8)
    x = torch.zeros(_LARGE_POOL_SHAPE, dtype=torch.float16)
    assert x.numel() > 2**31
    height, width = _LARGE_POOL_SHAPE[2:]
    tail = random_tensor((1, 1, 5, width), torch.float16, seed=8)
    x[..., -5:, :] = tail
    expected, expected_indices = F.max_pool2d(tail.double(), 3, 2, return_indices=True)
    with torch.no_grad():
        values = ak.max_pool2d(x, 3, 2, backend="native")  # the values-only kernel
    assert torch.equal(values[..., -2:, :].double(), expected)
    del values
    y, argmax = torch.ops.alexnet_kernels.max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], False)
    assert torch.equal(y[..., -2:, :].double(), expected)
    # The tail's argmax as indices into the whole plane (their rows start at height - 5).
    offsets = argmax[..., -2:, :].long()
    rows = torch.arange(2).view(2, 1) * 2 + torch.div(offsets, 3, rounding_mode="floor")
    columns = torch.arange(offsets.shape[-1]) * 2 + offsets % 3
    assert torch.equal(rows * width + columns, expected_indices)
    assert (height - 5) * width + int(expected_indices.max()) > 2**31


@LARGE_MEMORY
def test_dropout_past_2_31_elements() -> None:
    """The mask and values of the last elements of a tensor of more than 2**31."""
    require_native_cpu()
    _require_memory(10)
    x = torch.ones(_LARGE_NUMEL, dtype=torch.float16)
    p, generator_seed = 0.5, 123
    y = ak.dropout(x, p, generator=torch.Generator().manual_seed(generator_seed),
                   backend="native")
    # The mask of the last 4099 elements: the convention's groups from (numel - 4099) / 4.
    mask = convention_mask(_LARGE_NUMEL, drawn_seed(generator_seed), 0, p,
                           first=_LARGE_NUMEL - 4099)
    assert torch.equal(y[-4099:] != 0, mask)
    assert torch.equal(y[-4099:][mask], torch.full((int(mask.sum()),), 2.0, dtype=torch.float16))


# ---- determinism --------------------------------------------------------------------

@pytest.mark.parametrize("op", list(STEPS))
def test_backward_is_bit_identical_across_runs(op: str) -> None:
    require_native_cpu()
    _assert_identical(STEPS[op](5), STEPS[op](5))


def test_deterministic_algorithms_run_unchanged() -> None:
    """With torch.use_deterministic_algorithms(True) every op and a whole network train
    without an error, bit-identically twice, and as without the setting."""
    require_native_cpu()
    free = {op: step(9) for op, step in STEPS.items()}

    def network_step() -> list[torch.Tensor]:
        torch.manual_seed(0)
        net = models.alexnet_paper(num_classes=10, groups=2)
        x = random_tensor((2, 3, 227, 227), torch.float32, seed=10)
        net(x).square().sum().backward()
        return [p.grad for p in net.parameters()]

    free_network = network_step()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for op, step in STEPS.items():
            _assert_identical(step(9), free[op])
        _assert_identical(network_step(), free_network)
        _assert_identical(network_step(), free_network)
    finally:
        torch.use_deterministic_algorithms(previous)
