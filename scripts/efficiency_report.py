"""GPU efficiency of the CUDA kernels, measured on the CPU by the emulator's counters.

Runs each CUDA kernel through the CUDA emulator (tests/cuda_emu) with its
efficiency counters on (tests/cuda_emu/emu_counters.h), at AlexNet's real
layer shapes (paper and torchvision variants, fp32 and bf16, contiguous and
channels_last where the kernel supports them), at batch 2 with a sample of
each launch's blocks extrapolated to the whole grid, and reports per
``__global__`` kernel and shape:

* coalescing: ideal / actual 32-byte sectors over all global loads and stores
  (a warp-level request is the k-th execution of one access site by the lanes
  of a warp);
* bytes moved / minimum: per-block distinct sectors of the global loads and
  stores, summed over blocks (reuse across blocks counts again), against the
  op's minimum (every input read once, every output written once);
* shared wavefronts per request, against the conflict-free ideal;
* tensor-core multiply-adds issued / the GEMM's M*N*K (padding waste);
* barriers per block.

    python scripts/efficiency_report.py                      # print the table
    python scripts/efficiency_report.py --check              # memory-bound kernels only,
                                                             # fail below the thresholds
    python scripts/efficiency_report.py --markdown docs/efficiency.md --json eff.json

``--check`` fails when a memory-bound kernel (LRN, max-pool, dropout) is below
90 % coalescing or above 1.15x its minimum bytes, unless KNOWN_BELOW records it
at that value; it also fails when a recorded kernel gets worse or now passes
(so the list is kept honest). Convolutions are only measured by ``--markdown``
and ``--json`` (a few seconds per launch in the emulator) and have no threshold.
``--json`` writes every row's raw numbers, the hook for a roofline model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import emulated  # noqa: E402  (tests/emulated.py)
import torch  # noqa: E402

BATCH = 2
SAMPLE_BLOCKS = 16  # per launch; see emu_counters.h for which blocks
CONV_SAMPLE_BLOCKS = 4
COALESCING_MIN = 0.90
BYTES_RATIO_MAX = 1.15
MEMORY_BOUND = ("lrn_", "max_pool_", "dropout_")
COMMAND = "python scripts/efficiency_report.py --markdown docs/efficiency.md"

# Today's kernels below the thresholds: (kernel family, case key) -> (coalescing,
# bytes / min) as measured when recorded, None for a metric within its threshold.
# --check passes while each stays at (or better than) its value, fails when one gets
# worse, and asks for an entry (or value) to be removed once it passes. Print the
# entries for the current kernels with --known-below after an intended change.
KNOWN_BELOW: dict[tuple[str, str], tuple[float | None, float | None]] = {}


@dataclass(frozen=True)
class Case:
    """One op call: ``op`` at a layer's input shape (N, C, H, W) or (N, features)."""

    op: str
    layer: str
    shape: tuple[int, ...]
    dtype: str
    channels_last: bool = False
    extra: tuple[int, ...] = ()  # conv: (out_channels, kernel, stride, padding)

    @property
    def key(self) -> str:
        """Short id within one kernel family: layer, dtype, ' cl' for channels_last."""
        return f"{self.layer} {self.dtype}{' cl' if self.channels_last else ''}"

    @property
    def label(self) -> str:
        layout = " channels_last" if self.channels_last else ""
        dims = "x".join(str(d) for d in self.shape[1:])
        return f"{self.op} {self.layer} [{dims}] {self.dtype}{layout}"


@dataclass
class Row:
    """The counters of one kernel launch of one case, extrapolated to the whole grid."""

    kernel: str
    case: str
    case_key: str
    blocks_run: int
    blocks_total: int
    instrumented: bool
    sectors: float
    ideal_sectors: float
    dram_bytes: float
    min_bytes: float
    shared_requests: float
    wavefronts: float
    ideal_wavefronts: float
    mma_macs: float
    ideal_macs: float
    barriers_per_block: float
    sites: list[dict] = field(default_factory=list)

    @property
    def coalescing(self) -> float | None:
        return self.ideal_sectors / self.sectors if self.sectors else None

    @property
    def bytes_ratio(self) -> float | None:
        return self.dram_bytes / self.min_bytes if self.min_bytes and self.instrumented else None

    @property
    def family(self) -> str:
        """`lrn_forward` for `lrn_forward_kernel<float, false>`."""
        return self.kernel.split("<")[0].removesuffix("_kernel")

    @property
    def memory_bound(self) -> bool:
        return self.kernel.startswith(MEMORY_BOUND)


# ---- the cases ------------------------------------------------------------------

# Inputs (C, H, W) of the LRN and max-pool layers of AlexNet (paper: alexnet_paper,
# tv: torchvision's alexnet) and the features its dropouts see.
LRN_LAYERS = {"paper:lrn1": (96, 55, 55), "paper:lrn2": (256, 27, 27)}
POOL_LAYERS = {
    "paper:pool1": (96, 55, 55), "paper:pool2": (256, 27, 27), "paper:pool3": (256, 13, 13),
    "tv:pool1": (64, 55, 55), "tv:pool2": (192, 27, 27), "tv:pool3": (256, 13, 13),
}
DROPOUT_LAYERS = {"fc6-in": (9216,), "fc7-in": (4096,)}
# Convolutions, (C, H, W) and (out_channels, kernel, stride, padding): the paper's conv2
# in both dtypes (NCHW), and torchvision's five in bf16 channels_last (NHWC), the layout
# of the tensor-core kernels.
CONV_LAYERS = {"paper:conv2": ((96, 27, 27), (256, 5, 1, 2))}
CONV_NHWC_LAYERS = {
    "tv:conv1": ((3, 224, 224), (64, 11, 4, 2)), "tv:conv2": ((64, 27, 27), (192, 5, 1, 2)),
    "tv:conv3": ((192, 13, 13), (384, 3, 1, 1)), "tv:conv4": ((384, 13, 13), (256, 3, 1, 1)),
    "tv:conv5": ((256, 13, 13), (256, 3, 1, 1)),
}
CONV_OPS = ("conv2d_relu", "conv2d_relu_backward")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def memory_bound_cases() -> list[Case]:
    cases = []
    for dtype in DTYPES:
        for channels_last in (False, True):
            for op in ("lrn", "lrn_backward"):
                cases += [Case(op, layer, (BATCH, *chw), dtype, channels_last)
                          for layer, chw in LRN_LAYERS.items()]
            for op in ("max_pool2d", "max_pool2d_backward"):
                cases += [Case(op, layer, (BATCH, *chw), dtype, channels_last)
                          for layer, chw in POOL_LAYERS.items()]
        cases += [Case("dropout", layer, (BATCH, *f), dtype) for layer, f in DROPOUT_LAYERS.items()]
    return cases


def conv_cases() -> list[Case]:
    nchw = [Case(op, layer, (BATCH, *chw), dtype, extra=conv)
            for dtype in DTYPES for op in CONV_OPS for layer, (chw, conv) in CONV_LAYERS.items()]
    nhwc = [Case(op, layer, (BATCH, *chw), "bf16", channels_last=True, extra=conv)
            for op in CONV_OPS for layer, (chw, conv) in CONV_NHWC_LAYERS.items()]
    return nchw + nhwc


# ---- running one case -----------------------------------------------------------

def _input(case: Case, generator: torch.Generator) -> torch.Tensor:
    x = torch.randn(case.shape, generator=generator).to(DTYPES[case.dtype])
    return x.contiguous(memory_format=torch.channels_last) if case.channels_last else x


def _like(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random values with t's shape, dtype and memory layout (strides)."""
    r = torch.randn(t.shape, generator=generator).to(t.dtype)
    return r if t.is_contiguous() else r.contiguous(memory_format=torch.channels_last)


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


LRN_ARGS = (5, 1e-4, 0.75, 2.0)
POOL_ARGS = ([3, 3], [2, 2], [0, 0], [1, 1], False)


def _conv_tensors(case: Case, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    out_channels, kernel, _, _ = case.extra
    x = _input(case, g)
    w = (torch.randn(out_channels, case.shape[1], kernel, kernel, generator=g) * 0.05).to(x.dtype)
    b = torch.randn(out_channels, generator=g).to(x.dtype)
    return x, w, b


def _conv_macs(x: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> int:
    """M * N * K of the convolution's GEMM: output pixels x Cout x Cin * kh * kw."""
    return y.shape[0] * y.shape[2] * y.shape[3] * w.numel()


def _prepare(ops, case: Case, g: torch.Generator) -> tuple[Callable[[], object], int, int]:
    """The call to count, the op's minimum bytes and its GEMM's multiply-adds (0 if none).

    Inputs of a backward are made by the forward, run before counting starts (by
    PyTorch for the convolutions).
    """
    if case.op in ("lrn", "lrn_backward"):
        x = _input(case, g)
        if case.op == "lrn":
            return lambda: ops.lrn(x, *LRN_ARGS), 2 * _nbytes(x), 0
        y = ops.lrn(x, *LRN_ARGS)
        gy = _like(y, g)
        return lambda: ops.lrn_backward(gy, x, y, *LRN_ARGS), 4 * _nbytes(x), 0
    if case.op in ("max_pool2d", "max_pool2d_backward"):
        x = _input(case, g)
        y, argmax = ops.max_pool2d(x, *POOL_ARGS)
        if case.op == "max_pool2d":
            return lambda: ops.max_pool2d(x, *POOL_ARGS), _nbytes(x, y, argmax), 0
        gy = _like(y, g)
        return (lambda: ops.max_pool2d_backward(gy, argmax, list(x.shape), *POOL_ARGS),
                _nbytes(gy, argmax, x), 0)
    if case.op == "dropout":
        x = _input(case, g)
        seed_offset = torch.tensor([1234, 0], dtype=torch.int64)
        return lambda: ops.dropout(x, seed_offset, 0.5), 2 * _nbytes(x), 0
    x, w, b = _conv_tensors(case, g)
    _, _, stride, padding = case.extra
    conv = ([stride] * 2, [padding] * 2, [1, 1], 1)
    # y from PyTorch (an emulated convolution at full size takes minutes).
    y = torch.relu(torch.nn.functional.conv2d(x.float(), w.float(), b.float(), stride,
                                              padding)).to(x.dtype)
    if case.op == "conv2d_relu":
        return lambda: ops.conv2d_relu(x, w, b, *conv), _nbytes(x, w, b, y), _conv_macs(x, w, y)
    gy = _like(y, g)
    return (lambda: ops.conv2d_relu_backward(gy, x, w, y, *conv, [True, True, True]),
            _nbytes(gy, x, w, y) + _nbytes(x, w, b), _conv_macs(x, w, y))


def short_kernel_name(demangled: str) -> str:
    """`lrn_forward_kernel<float, true>`: no return type, namespace or parameter list."""
    name = demangled.removeprefix("void ").split("(")[0]
    return name.replace("alexnet_kernels::kernels::", "").replace("__nv_bfloat16", "bf16")


def _row(launch: dict, case: Case, min_bytes: int, ideal_macs: int) -> Row:
    scale = launch["scale"]
    sites = launch["sites"]

    def total(space: str, key: str) -> float:
        return scale * sum(s[key] for s in sites if s["space"] == space)

    instrumented = any(s["space"] in ("global", "shared") for s in sites)
    dram = scale * (launch["load_dram_bytes"] + launch["store_dram_bytes"])
    return Row(
        kernel=short_kernel_name(launch["kernel"]), case=case.label, case_key=case.key,
        blocks_run=launch["blocks_run"], blocks_total=launch["blocks_total"],
        instrumented=instrumented,
        sectors=total("global", "sectors"), ideal_sectors=total("global", "ideal_sectors"),
        dram_bytes=dram, min_bytes=min_bytes,
        shared_requests=total("shared", "requests"), wavefronts=total("shared", "wavefronts"),
        ideal_wavefronts=total("shared", "ideal_wavefronts"),
        mma_macs=total("tensor", "mma_macs"), ideal_macs=ideal_macs,
        barriers_per_block=launch["barriers"] / max(launch["blocks_run"], 1), sites=sites)


def measure(ops, case: Case, sample_blocks: int) -> list[Row]:
    """Counts every kernel launch of one op call; one row per launch."""
    generator = torch.Generator().manual_seed(0)
    call, min_bytes, ideal_macs = _prepare(ops, case, generator)
    ops.counters_begin(sample_blocks)
    try:
        call()  # outputs are incomplete when blocks are sampled: never used
    finally:
        launches = json.loads(ops.counters_end())["launches"]
    # A multi-kernel op's minimum bytes and GEMM size belong to the op as a whole: they
    # are shown against each kernel that moves data / multiplies.
    return [_row(launch, case, min_bytes, ideal_macs) for launch in launches]


def measure_all(cases: list[Case], sample_blocks: int) -> Iterator[Row]:
    ops = emulated.load()
    for case in cases:
        yield from measure(ops, case, sample_blocks)


# ---- the check --------------------------------------------------------------------

METRICS = ("coalescing", "bytes_ratio")  # the order of KNOWN_BELOW's values
TOLERANCE = 1e-4  # the counts are deterministic; this absorbs the record's rounding


def _value(row: Row, metric: str) -> float | None:
    return row.coalescing if metric == "coalescing" else row.bytes_ratio


def _passes(metric: str, value: float) -> bool:
    return value >= COALESCING_MIN if metric == "coalescing" else value <= BYTES_RATIO_MAX


def _worse(metric: str, value: float, recorded: float) -> bool:
    if metric == "coalescing":
        return value < recorded - TOLERANCE
    return value > recorded + TOLERANCE


def check(rows: list[Row]) -> tuple[list[str], list[str]]:
    """(failures, notes) of the memory-bound rows against the thresholds and KNOWN_BELOW."""
    failures, notes = [], []
    measured = set()
    for row in rows:
        if not row.memory_bound:
            continue
        key = (row.family, row.case_key)
        if not row.instrumented:
            failures.append(f"{key}: no access is counted (use ak_ld/ak_st)")
            continue
        measured.add(key)
        recorded_values = KNOWN_BELOW.get(key, (None, None))
        for metric, recorded in zip(METRICS, recorded_values, strict=True):
            value = _value(row, metric)
            if value is None:
                continue
            if _passes(metric, value):
                if recorded is not None:
                    failures.append(f"{key} {metric} now passes ({value:.4f}): remove it from "
                                    "KNOWN_BELOW")
            elif recorded is None:
                failures.append(f"{key} {metric} = {value:.4f} is beyond the threshold and not "
                                "recorded in KNOWN_BELOW")
            elif _worse(metric, value, recorded):
                failures.append(f"{key} {metric} got worse: {value:.4f}, recorded {recorded:.4f}")
            elif abs(value - recorded) > TOLERANCE:
                notes.append(f"{key} {metric} improved to {value:.4f} (recorded "
                             f"{recorded:.4f}): update KNOWN_BELOW")
    failures += [f"{key} is in KNOWN_BELOW but was not measured"
                 for key in sorted(set(KNOWN_BELOW) - measured)]
    return failures, notes


def known_below(rows: list[Row]) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """KNOWN_BELOW as it would be for these rows."""
    out = {}
    for row in rows:
        if not (row.memory_bound and row.instrumented):
            continue
        values = tuple(None if v is None or _passes(m, v) else round(v, 4)
                       for m, v in ((m, _value(row, m)) for m in METRICS))
        if values != (None, None):
            out[(row.family, row.case_key)] = values
    return out


def known_below_source(rows: list[Row]) -> str:
    return "\n".join(f"    {key!r}: ({c!r}, {b!r}),".replace("'", '"')
                     for key, (c, b) in known_below(rows).items())


# ---- output -----------------------------------------------------------------------

def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else \
        f"{value:{spec}}{suffix}"


def table(rows: list[Row]) -> list[str]:
    lines = ["| kernel | case | blocks run | coalescing | bytes / min | shared wavefronts / "
             "request (ideal) | MMA issued / ideal | barriers / block |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_request = r.shared_requests or 1.0
        shared = (f"{r.wavefronts / per_request:.2f} ({r.ideal_wavefronts / per_request:.2f})"
                  if r.shared_requests else "—")
        mma = _fmt(r.mma_macs / r.ideal_macs if r.ideal_macs and r.mma_macs else None, ".3f")
        if not r.instrumented:
            coalescing = bytes_ratio = "not instrumented"
        else:
            coalescing = _fmt(100 * r.coalescing if r.coalescing is not None else None, ".1f", " %")
            bytes_ratio = _fmt(r.bytes_ratio, ".3f")
        lines.append(f"| `{r.kernel}` | {r.case} | {r.blocks_run}/{r.blocks_total} | {coalescing} "
                     f"| {bytes_ratio} | {shared} | {mma} | {r.barriers_per_block:g} |")
    return lines


def markdown(rows: list[Row]) -> str:
    below = [f"| `{family}` | {case} | {_fmt(c, '.4f')} | {_fmt(b, '.4f')} |"
             for (family, case), (c, b) in KNOWN_BELOW.items()]
    return "\n".join([
        "# Efficiency measured in the CUDA emulator",
        "",
        f"Generated by `{COMMAND}`; do not edit.",
        "",
        "Counts of the emulator's efficiency counters (tests/cuda_emu/emu_counters.h) for",
        f"AlexNet's layer shapes at batch {BATCH}; launches with more blocks than "
        f"{SAMPLE_BLOCKS} ({CONV_SAMPLE_BLOCKS} for the convolutions) run only a sample of "
        "them (the first, the last and evenly spaced ones), extrapolated linearly by the "
        "block count. These are access-pattern measurements, not timings:",
        "",
        "* **coalescing**: ideal / actual 32-byte sectors of all global loads and stores; a",
        "  warp-level request is the k-th execution of one access site by the lanes of a warp,",
        "  its ideal the fewest sectors holding the distinct bytes they ask for;",
        "* **bytes / min**: per-block distinct sectors loaded plus stored, summed over blocks,",
        "  over the op's minimum (inputs read once, outputs written once; for a backward all",
        "  of its inputs and outputs, for a multi-kernel op the whole op's minimum);",
        "* **shared wavefronts / request**: per warp access, the most distinct 4-byte words one",
        "  of the 32 banks serves, summed over the access's phases (8-byte accesses: 2",
        "  half-warps, 16-byte: 4 quarter-warps); the ideal in brackets (1 for a conflict-free",
        "  4-byte access);",
        "* **MMA issued / ideal**: tensor-core multiply-adds issued over the GEMM's M*N*K;",
        "* **barriers / block**: `__syncthreads` executed per block.",
        "",
        f"Thresholds of `--check` for the memory-bound kernels (LRN, max-pool, dropout): "
        f"coalescing >= {100 * COALESCING_MIN:.0f} %, bytes <= {BYTES_RATIO_MAX}x the minimum. "
        "The convolutions have no threshold here (issue 16 sets theirs); their bytes / min "
        "counts each block's own operand reads, so the re-reads of A and B by the blocks of "
        "other N and M tiles (served by L2 on a GPU) count as DRAM traffic.",
        "",
        *table(rows),
        "",
        "## Known below the thresholds (KNOWN_BELOW in scripts/efficiency_report.py)",
        "",
        "| kernel | case (layer, dtype, cl = channels_last) | coalescing | bytes / min |",
        "|---|---|---|---|",
        *below,
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="memory-bound kernels only; fail below the thresholds")
    parser.add_argument("--markdown", type=Path, help="write the full report (with convolutions)")
    parser.add_argument("--json", type=Path, help="write every row's numbers as JSON")
    parser.add_argument("--known-below", action="store_true",
                        help="print KNOWN_BELOW entries for today's rows beyond a threshold")
    args = parser.parse_args(argv)
    # Fibers: one OS thread per block instead of one per CUDA thread, ~20x faster;
    # races are irrelevant to counting. Read by the emulator at its first launch.
    os.environ.setdefault("AK_EMU_MODE", "fibers")
    start = time.monotonic()
    rows = list(measure_all(memory_bound_cases(), SAMPLE_BLOCKS))
    if args.markdown or args.json:
        rows += list(measure_all(conv_cases(), CONV_SAMPLE_BLOCKS))
    seconds = time.monotonic() - start
    print("\n".join(table(rows)))
    print(f"\n{len(rows)} kernel launches measured in {seconds:.1f} s")
    if args.known_below:
        print(known_below_source(rows))
    if args.json:
        args.json.write_text(json.dumps(
            [{**asdict(r), "coalescing": r.coalescing, "bytes_ratio": r.bytes_ratio} for r in rows],
            indent=1))
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    if args.check:
        failures, notes = check(rows)
        for note in notes:
            print(f"note: {note}")
        for failure in failures:
            print(f"FAIL: {failure}")
        if failures:
            return 1
        print("efficiency check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
