"""The emulator's efficiency counters on the project's real kernels, and the checks of
scripts/efficiency_report.py.

The counters' own arithmetic is tested on toy kernels in tests/test_cuda_emu.py; here
the expected counts of two real kernels are derived by hand from their access
patterns (in the comments), block sampling is checked to extrapolate exactly where
every block does the same work, and the report's threshold check is run on
synthetic rows.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import emulated_ops

REPO = Path(__file__).resolve().parent.parent


def _report_module():
    spec = importlib.util.spec_from_file_location(
        "efficiency_report", REPO / "scripts" / "efficiency_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


report = _report_module()


def _counted(call, sample_blocks: int = 0) -> list[dict]:
    ops = emulated_ops()
    ops.counters_begin(sample_blocks)
    try:
        call(ops)
    finally:
        launches = json.loads(ops.counters_end())["launches"]
    return launches


def _totals(launch: dict) -> dict[tuple[str, str], tuple[int, ...]]:
    """(space, op) -> (requests, sectors, ideal sectors, wavefronts, ideal wavefronts)."""
    out: dict[tuple[str, str], list[int]] = {}
    for s in launch["sites"]:
        t = out.setdefault((s["space"], s["op"]), [0, 0, 0, 0, 0])
        for i, key in enumerate(("requests", "sectors", "ideal_sectors", "wavefronts",
                                 "ideal_wavefronts")):
            t[i] += s[key]
    return {k: tuple(v) for k, v in out.items()}


def test_counters_end_without_begin_fails() -> None:
    with pytest.raises(RuntimeError, match="without counters_begin"):
        emulated_ops().counters_end()


def test_lrn_forward_counts_derived_by_hand() -> None:
    """LRN forward (size 5) of a contiguous fp32 (1, 32, 1, 32) of ones: one block; its
    warp 0 covers 128 pixels (4 per lane), so lanes 0-7 own the 32 pixels and the other
    7 warps have none. Planes start every 128 bytes of a 64-byte aligned buffer: every
    16-byte chunk is aligned, so each lane access is one 16-byte vector and each warp
    request 8 lanes x 16 bytes = 4 sectors, ideal 4.
      loads per channel walk: the first window directly, channels 0-2 (3); entering
        channels 3-31 (29) and leaving channels 0-28 (29); the centre channel (32); and
        the window re-summed where the running sum's bound trips. With ones the sum is
        5 in the middle and the bound `mag` grows by 6 a channel: from 3 (channel 0)
        it is 18 at channel 3 and first exceeds 16 * 5 = 80 at channel 14 (84), then
        again, from 5, at channel 27 (83): 2 x 5 loads. 103 requests, 412 sectors;
      stores: one per channel, 32 requests, 128 sectors;
      bytes: x and y once each, 4096 + 4096 = the minimum; no barrier, no shared memory."""
    x = torch.ones(1, 32, 1, 32)
    (launch,) = _counted(lambda ops: ops.lrn(x, 5, 1e-4, 0.75, 2.0))
    assert launch["kernel"].startswith(
        "void alexnet_kernels::kernels::lrn_forward_kernel<float, false, "
        "alexnet_kernels::kernels::LrnBeta075>")
    assert _totals(launch) == {("global", "load"): (103, 412, 412, 0, 0),
                               ("global", "store"): (32, 128, 128, 0, 0)}
    assert (launch["barriers"], launch["load_dram_bytes"], launch["store_dram_bytes"]) == (
        0, 4096, 4096)


def test_dropout_counts_derived_by_hand() -> None:
    """Dropout of 1024 aligned fp32: 256 Philox groups = one block of 256 threads, each
    loading and storing one 16-byte Pack4. Per warp 512 bytes = 16 sectors: 8 load
    requests of 128 sectors (128 ideal), the same for the stores; 4096 bytes each way."""
    x = torch.randn(1024)
    seed_offset = torch.tensor([7, 0], dtype=torch.int64)
    (launch,) = _counted(lambda ops: ops.dropout(x, seed_offset, 0.5))
    assert "dropout_kernel<float, true>" in launch["kernel"]
    assert _totals(launch) == {("global", "load"): (8, 128, 128, 0, 0),
                               ("global", "store"): (8, 128, 128, 0, 0)}
    assert (launch["load_dram_bytes"], launch["store_dram_bytes"]) == (4096, 4096)


def test_sampling_extrapolates_uniform_blocks_exactly() -> None:
    """Dropout of 64 blocks that all do the same work: 3 sampled blocks (0, 32, 63),
    scaled by 64 / 3, give the full run's counts."""
    x = torch.randn(64 * 1024)
    seed_offset = torch.tensor([7, 0], dtype=torch.int64)
    (full,) = _counted(lambda ops: ops.dropout(x, seed_offset, 0.5))
    (sampled,) = _counted(lambda ops: ops.dropout(x, seed_offset, 0.5), sample_blocks=3)
    assert (full["blocks_run"], sampled["blocks_run"]) == (64, 3)
    assert sampled["sampled_blocks"] == [0, 32, 63]
    for key in ("load_dram_bytes", "store_dram_bytes"):
        assert sampled[key] * sampled["scale"] == pytest.approx(full[key], rel=1e-12)
    for s_full, s_sampled in zip(full["sites"], sampled["sites"], strict=True):
        assert s_sampled["sectors"] * sampled["scale"] == pytest.approx(s_full["sectors"])


def test_counters_off_by_default_and_after_end() -> None:
    """Outside counters_begin/end nothing is recorded and every block runs: the output
    of a launch right after a sampled session is complete."""
    x = torch.randn(64 * 1024)
    seed_offset = torch.tensor([7, 0], dtype=torch.int64)
    _counted(lambda ops: ops.dropout(x, seed_offset, 0.5), sample_blocks=1)
    y = emulated_ops().dropout(x, seed_offset, 0.5)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] * 2.0, rtol=0, atol=0)
    assert 0.45 < kept.float().mean().item() < 0.55  # every block wrote its part


# ---- the report's check ----------------------------------------------------------------

def _row(kernel: str, case_key: str, coalescing: float, bytes_ratio: float):
    return report.Row(kernel=kernel, case=case_key, case_key=case_key, blocks_run=1,
                      blocks_total=1, instrumented=True, sectors=1000.0,
                      ideal_sectors=1000.0 * coalescing, dram_bytes=100.0 * bytes_ratio,
                      min_bytes=100.0, shared_requests=0.0, wavefronts=0.0,
                      ideal_wavefronts=0.0, mma_macs=0.0, ideal_macs=0.0,
                      barriers_per_block=0.0)


@pytest.fixture
def known(monkeypatch: pytest.MonkeyPatch) -> dict:
    table = {("lrn_forward", "paper:lrn1 fp32"): (0.80, 1.20)}
    monkeypatch.setattr(report, "KNOWN_BELOW", table)
    return table


@pytest.mark.parametrize(
    ("coalescing", "bytes_ratio", "failure"),
    [
        (0.80, 1.20, None),  # as recorded
        (0.79, 1.20, "coalescing got worse"),
        (0.80, 1.21, "bytes_ratio got worse"),
        (0.95, 1.20, "coalescing now passes"),
        (0.80, 1.10, "bytes_ratio now passes"),
    ],
)
def test_check_holds_recorded_kernels_to_their_values(
    known: dict, coalescing: float, bytes_ratio: float, failure: str | None
) -> None:
    rows = [_row("lrn_forward_kernel<float, false>", "paper:lrn1 fp32", coalescing, bytes_ratio)]
    failures, _ = report.check(rows)
    if failure is None:
        assert failures == []
    else:
        assert len(failures) == 1 and failure in failures[0], failures


def test_check_fails_new_kernels_below_threshold_and_notes_improvements(known: dict) -> None:
    rows = [_row("lrn_forward_kernel<float, false>", "paper:lrn1 fp32", 0.85, 1.20),
            _row("dropout_kernel<float, true>", "fc6-in fp32", 0.89, 1.0),
            _row("conv2d_relu_forward_kernel<float, true>", "paper:conv2 fp32", 0.1, 9.0)]
    failures, notes = report.check(rows)
    assert len(failures) == 1 and "dropout" in failures[0] and "not recorded" in failures[0]
    assert len(notes) == 1 and "improved to 0.8500" in notes[0]  # conv: not memory-bound


def test_check_fails_for_a_recorded_kernel_not_measured(known: dict) -> None:
    failures, _ = report.check([])
    assert failures == [f"{('lrn_forward', 'paper:lrn1 fp32')} is in KNOWN_BELOW but was not "
                        "measured"]
