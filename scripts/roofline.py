"""A roofline model of the CUDA kernels at AlexNet's layer shapes, on GPUs never used here.

Every number this prints is *modelled*, not measured: no GPU ran these kernels. For each
kernel launch the model takes three times and keeps the largest:

* DRAM: the bytes the kernel must move (the main job's byte model,
  ``alexnet_kernels.bench.cases.traffic``: every tensor read or written once) over
  the memory bandwidth;
* math: the FLOPs over the peak of the unit that does them (tensor cores for the
  fp16/bf16 and TF32 GEMMs, FMA pipes otherwise); for the convolutions the FLOPs
  their tiles issue, partial tiles' padding included;
* issue: the warp instructions the kernel issues over the SMs' issue rate (4
  schedulers per SM, one warp instruction per clock each). The instructions per
  main-loop iteration are read from the kernel's SASS (``scripts/sass_mix.py``) and
  multiplied by the iterations the launch geometry gives (per-kernel rules below).
  Every instruction of a loop body counts once per iteration whether a branch skips
  it or not (an overestimate where the body holds rarely taken paths), and nothing
  outside the main loop counts (prologue, epilogue: an underestimate).

The op's own floor, the larger of the DRAM and math times of its minimum work (what
cuDNN or any implementation must at least spend), is printed beside it, so each row
reads as "modelled fraction of the floor". Where the GPU's specs come from, and which
are assumptions, is written next to each number in ``SPECS``. ``scripts/gpu_check.sh``
records the model's numbers next to measured ones when a GPU is present, so that the
model can be corrected the first day one is lent.

    python scripts/roofline.py                       # batch 128, bf16 and fp32, A100 + H100
    python scripts/roofline.py --gpu H100-SXM5 --dtype bf16 --markdown docs/roofline.md
    python scripts/roofline.py --json roofline.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))

# Kernel tile constants (csrc/kernels/conv2d_relu.cuh, dropout.cuh, max_pool.cuh, lrn.cuh).
CONV_TILE_M, CONV_TILE_N, CONV_TILE_K, CONV_WARPS = 64, 64, 32, 4
# The pipelined NHWC forward (conv2d_relu_forward_nhwc_kernel, kFprop*): M, N, K, warps.
FPROP_TILE = (128, 128, 32, 8)
FPROP_CHUNK = 8  # (C_in / groups) % 8 == 0 runs it, for fp16 / bf16 in channels_last
DROPOUT_ELEMENTS_PER_THREAD = 4
LRN_VECTOR_BYTES = 16  # (N, C, pixels): one 16-byte vector of pixels per lane


@dataclass(frozen=True)
class GpuSpec:
    """Peak rates of one GPU (vendor datasheet values unless marked as assumed)."""

    name: str
    sms: int
    clock_ghz: float          # boost clock: fp32 peak = sms * 128 (64 on A100) * 2 * clock
    dram_gbs: float           # HBM bandwidth, GB/s
    fp32_tflops: float        # FFMA, dense
    tf32_tflops: float        # tensor cores, dense, through mma.sync
    half_tflops: float        # fp16/bf16 tensor cores with fp32 accumulation, dense, mma.sync
    note: str

    @property
    def issue_per_s(self) -> float:
        """Warp instructions per second: 4 schedulers per SM, 1 per clock each."""
        return self.sms * 4 * self.clock_ghz * 1e9


SPECS: dict[str, GpuSpec] = {
    "A100-SXM4-80GB": GpuSpec("A100-SXM4-80GB", 108, 1.41, 2039.0, 19.5, 156.0, 312.0,
                              "datasheet; mma.sync reaches the full tensor-core rate on sm_80"),
    # The datasheet's dense rates (494.7 TF32, 989.4 fp16/bf16) are wgmma's; the kernels
    # issue mma.sync (HMMA), which public reports put at about half of that on Hopper:
    # an assumption until a GPU measures it.
    "H100-SXM5-80GB": GpuSpec("H100-SXM5-80GB", 132, 1.98, 3350.0, 67.0, 494.7 / 2,
                              989.4 / 2, "datasheet; mma.sync assumed at half the wgmma rate"),
    # The H100's chip with HBM3e: the same rates, 4.8 TB/s.
    "H200-SXM-141GB": GpuSpec("H200-SXM-141GB", 132, 1.98, 4800.0, 67.0, 494.7 / 2, 989.4 / 2,
                              "datasheet; mma.sync assumed at half the wgmma rate"),
}


@dataclass
class Modelled:
    kernel: str
    layer: str
    gpu: str
    dtype: str
    bytes: int
    flops: float
    warp_instructions: float
    dram_us: float
    math_us: float
    issue_us: float
    floor_us: float

    @property
    def time_us(self) -> float:
        return max(self.dram_us, self.math_us, self.issue_us)

    @property
    def bound(self) -> str:
        times = {"DRAM": self.dram_us, "math": self.math_us, "issue": self.issue_us}
        return max(times, key=times.__getitem__)

    @property
    def fraction_of_floor(self) -> float:
        return self.floor_us / self.time_us if self.time_us else 1.0


def model(kernel: str, layer: str, gpu: GpuSpec, dtype: str, bytes_: int, flops: float,
          flop_rate_tflops: float, warp_instructions: float, floor_bytes: int,
          floor_flops: float, floor_rate_tflops: float) -> Modelled:
    """The three times of one launch (microseconds) and the op's floor."""
    def dram(b: float) -> float:
        return b / (gpu.dram_gbs * 1e9) * 1e6

    def math_time(f: float, rate: float) -> float:
        return f / (rate * 1e12) * 1e6 if f else 0.0

    floor = max(dram(floor_bytes), math_time(floor_flops, floor_rate_tflops))
    return Modelled(kernel, layer, gpu.name, dtype, bytes_, flops, warp_instructions,
                    dram(bytes_), math_time(flops, flop_rate_tflops),
                    warp_instructions / gpu.issue_per_s * 1e6, floor)


@dataclass(frozen=True)
class Gemm:
    """An implicit GEMM of the convolution kernels: per group M x N x K."""

    m: int
    n: int
    k: int
    groups: int
    tile: tuple[int, int, int, int] = (CONV_TILE_M, CONV_TILE_N, CONV_TILE_K, CONV_WARPS)

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k * self.groups

    @property
    def issued_flops(self) -> float:
        """The FLOPs the tensor cores execute: M, N and K rounded up to whole tiles (the
        partial tiles' padding is multiplied too)."""
        tile_m, tile_n, tile_k, _ = self.tile
        def whole(size: int, tile: int) -> int:
            return math.ceil(size / tile) * tile
        return 2.0 * whole(self.m, tile_m) * whole(self.n, tile_n) * whole(self.k, tile_k) * \
            self.groups

    def warp_iterations(self) -> int:
        """Main-loop iterations over all warps: one per K tile per warp of each CTA."""
        tile_m, tile_n, tile_k, warps = self.tile
        ctas = math.ceil(self.m / tile_m) * math.ceil(self.n / tile_n) * self.groups
        return ctas * warps * math.ceil(self.k / tile_k)


def conv_gemms(batch: int, channels: int, size: tuple[int, int], conv) -> dict[str, Gemm]:
    """The forward, grad_input and grad_weight GEMMs of one conv2d_relu layer (conv1's
    grad_input does not run in training: the images need no gradient).

    grad_input runs one GEMM per stride phase over only the taps that reach it, so its
    K is about C_out * ceil(kh / s) * ceil(kw / s) summed over the s^2 phases of M / s^2
    rows each; grad_weight's K is the batch's output pixels (split over CTAs and reduced,
    which this model does not count). Layers with (C_in / groups) % 8 == 0 also get the
    pipelined NHWC forward's GEMM (what runs for fp16 / bf16 in channels_last).
    """
    kh = kw = conv.kernel_size
    out = [(n + 2 * conv.padding - kh) // conv.stride + 1 for n in size]
    cin, cout = channels // conv.groups, conv.out_channels // conv.groups
    taps_per_phase = math.ceil(kh / conv.stride) * math.ceil(kw / conv.stride)
    pipelined = {"conv2d_relu_forward_nhwc_kernel": Gemm(batch * out[0] * out[1], cout,
                                                         cin * kh * kw, conv.groups, FPROP_TILE)}
    return {
        "conv2d_relu_forward_kernel": Gemm(batch * out[0] * out[1], cout, cin * kh * kw,
                                           conv.groups),
        **(pipelined if cin % FPROP_CHUNK == 0 else {}),
        "conv2d_relu_grad_input_kernel": Gemm(batch * size[0] * size[1], cin,
                                              cout * taps_per_phase, conv.groups),
        "conv2d_relu_grad_weight_kernel": Gemm(cout, cin * kh * kw, batch * out[0] * out[1],
                                               conv.groups),
    }


def instantiation(kernel: str, dtype: str) -> str:
    """The kernel image the launcher picks for ``dtype`` (fp32 with TF32 allowed)."""
    element = {"bf16": "__nv_bfloat16", "fp16": "__half", "fp32": "float"}[dtype]
    if kernel == "conv2d_relu_forward_nhwc_kernel":
        return f"{kernel}<{element}>"  # fp16 / bf16 only: no fp32 image, no row
    flag = "true" if dtype == "fp32" else "false"
    return f"{kernel}<{element}, {flag}>"


def per_iteration(mix, trips: list[float]) -> float:
    """Warp instructions of one main-loop iteration when its nested loops form a chain
    (each inside the previous) run ``trips[i]`` times per iteration of their parent:
    (main - L1) + t1 * ((L1 - L2) + t2 * (L2 ...))."""
    chain = sorted(mix.inner, key=lambda m: m.loop.start)
    chain = [m for m in chain if all(m.loop.start >= o.loop.start and m.loop.end <= o.loop.end
                                     for o in chain if o.loop.start <= m.loop.start
                                     and o is not m)]
    counts = [mix.main.instructions] + [m.instructions for m in chain[:len(trips)]]
    total = 0.0
    for depth in reversed(range(len(counts))):
        own = counts[depth] - (counts[depth + 1] if depth + 1 < len(counts) else 0)
        total = own + (trips[depth] * total if depth < len(trips) else 0.0)
    return total


# Pooling windows of AlexNet's max-pools (3x3, stride 2): each input element is covered by
# about kernel / stride windows along each axis.
POOL_KERNEL, POOL_STRIDE = 3, 2


def memory_bound(case, batch: int, dtype: str, mixes: dict, arch: int):
    """(kernel, mix, warp instructions, direction) of the memory-bound kernels of ``case``
    that have a rule: LRN (one channel of a warp's 32 vectors of pixels per iteration),
    dropout (one Philox group of 4 elements per thread and iteration), max-pool forward
    (one output per iteration, NCHW staged and channels_last) and backward (one input
    element per iteration, its 2 x 2 covering windows unrolled)."""
    element = _element(dtype)
    elements = batch * math.prod(case.shape)
    found = []
    if case.op == "dropout":
        mix = mixes.get((arch, f"dropout_kernel<{element}, true>"))
        if mix is not None and mix.main is not None:
            warps = math.ceil(elements / DROPOUT_ELEMENTS_PER_THREAD / 32)
            found.append(("dropout_kernel", mix, warps * mix.main.instructions, "forward"))
    elif case.op == "lrn":
        # (N, C, pixels), the layout of these cases: a lane owns one 16-byte vector of
        # pixels and its warp walks all C channels, one main-loop iteration each (the
        # loop of the warps inside a plane; the first and last warp of each plane run
        # a copy with element-wise fallbacks, counted at the same cost). Every
        # instruction of the walk counts, the rarely run re-summing loops included.
        c, h, w = case.shape
        per_warp = 32 * LRN_VECTOR_BYTES // _itemsize(dtype)
        warps = batch * math.ceil(h * w / per_warp)
        for kernel, direction in (("lrn_forward_kernel", "forward"),
                                  ("lrn_backward_kernel", "backward")):
            mix = mixes.get((arch, f"{kernel}<{element}, false, LrnBeta075>"))
            # The channel walk loads and stores; a main loop without loads is a sub-loop
            # of the stores (sass_mix's smallest storing loop), which would undercount.
            if (mix is not None and mix.main is not None
                    and mix.main.classes["global load"] > 0):
                found.append((kernel, mix, warps * c * per_iteration(mix, []), direction))
    elif case.op == "max_pool2d":
        c, h, w = case.shape
        out = [(n - POOL_KERNEL) // POOL_STRIDE + 1 for n in (h, w)]
        outputs = batch * c * out[0] * out[1]
        # (kernel, its AlexNet instantiation, elements): the forwards take one output
        # per main-loop iteration, the backwards one input element; both unroll the 3x3
        # window (its taps, its 2 x 2 covering outputs), so no nested loop remains.
        for kernel, arguments, layout_elements, direction in (
                ("max_pool_forward_staged_kernel", "3", outputs, "forward"),
                ("max_pool_forward_nhwc_kernel", "3", outputs, "forward"),
                ("max_pool_backward_staged_kernel", "3, 2", elements, "backward"),
                ("max_pool_backward_nhwc_kernel", "3, 2", elements, "backward")):
            mix = mixes.get((arch, f"{kernel}<{element}, unsigned char, {arguments}>"))
            if mix is not None and mix.main is not None:
                found.append((kernel, mix, math.ceil(layout_elements / 32)
                              * per_iteration(mix, []), direction))
    return found


def rows(batch: int, dtypes: list[str], gpus: list[GpuSpec], mixes) -> list[Modelled]:
    """The model of the conv2d_relu, LRN, max-pool and dropout kernels at AlexNet's layer
    shapes."""
    from alexnet_kernels.bench.cases import CASES, traffic

    by_name = {(m.arch, m.name): m for m in mixes}
    out: list[Modelled] = []
    for gpu in gpus:
        arch = 80 if gpu.name.startswith("A100") else 90
        for dtype in dtypes:
            itemsize = 2 if dtype in ("bf16", "fp16") else 4
            tensor_rate = gpu.half_tflops if itemsize == 2 else gpu.tf32_tflops
            for case in CASES:
                if case.op == "model":
                    continue
                if case.op == "conv2d_relu":
                    out += _conv_rows(case, batch, dtype, itemsize, tensor_rate, gpu, arch,
                                      by_name, traffic)
                else:
                    t = traffic(case, batch, itemsize, "cuda")
                    for kernel, _, instructions, direction in memory_bound(case, batch, dtype,
                                                                           by_name, arch):
                        moved = t.ours[direction]
                        out.append(model(kernel, case.layer, gpu, dtype, moved, 0.0, 1.0,
                                         instructions, moved, 0.0, 1.0))
    return out


def _itemsize(dtype: str) -> int:
    return 2 if dtype in ("bf16", "fp16") else 4


def _element(dtype: str) -> str:
    return {"bf16": "__nv_bfloat16", "fp16": "__half", "fp32": "float"}[dtype]


def _conv_rows(case, batch, dtype, itemsize, tensor_rate, gpu, arch, by_name, traffic):
    t = traffic(case, batch, itemsize, "cuda")
    gemms = conv_gemms(batch, case.shape[0], case.shape[1:], case.conv)
    found = []
    for kernel, gemm in gemms.items():
        mix = by_name.get((arch, instantiation(kernel, dtype)))
        if mix is None or mix.main is None:
            continue
        direction = "forward" if "forward" in kernel else "backward"
        share = 1.0 if direction == "forward" else 0.5  # grad_x and grad_w split the bytes
        moved = int(t.ours[direction] * share)
        found.append(model(kernel, case.layer, gpu, dtype, moved, gemm.issued_flops,
                           tensor_rate, gemm.warp_iterations() * mix.main.instructions, moved,
                           gemm.flops, tensor_rate))
    return found


HEADER = ["kernel", "layer", "GPU", "dtype", "MB", "GFLOP", "DRAM µs", "math µs", "issue µs",
          "modelled µs", "bound", "floor µs", "floor / modelled"]


def markdown(modelled: list[Modelled]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for m in modelled:
        lines.append("| " + " | ".join([
            m.kernel, m.layer, m.gpu, m.dtype, f"{m.bytes / 1e6:.1f}", f"{m.flops / 1e9:.1f}",
            f"{m.dram_us:.1f}", f"{m.math_us:.1f}", f"{m.issue_us:.1f}", f"{m.time_us:.1f}",
            m.bound, f"{m.floor_us:.1f}", f"{m.fraction_of_floor:.0%}"]) + " |")
    return "\n".join(lines) + "\n"


PREAMBLE = """# Roofline model (modelled, not measured)

Generated by `python scripts/roofline.py --markdown docs/roofline.md` from a build with \
`TORCH_CUDA_ARCH_LIST="8.0;9.0"`. No GPU ran these kernels: each row is the largest of the \
DRAM, math and issue times of one launch at batch {batch}, from the byte model, the FLOPs and \
the SASS main-loop instruction counts (see the script's docstring for the rules and what they \
leave out; GPU specs in its `SPECS`, H100's mma.sync rate assumed at half the datasheet's \
wgmma rate). "floor" is the op's own minimum (its bytes or its FLOPs at the peak rate), which \
no implementation beats.

"""


def main() -> int:
    from resource_report import cuda_tool, library_path
    from sass_mix import read

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), action="append")
    parser.add_argument("--gpu", choices=[n.split("-")[0] + "-" + n.split("-")[1]
                                          for n in SPECS], action="append")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    gpus = [s for n, s in SPECS.items()
            if not args.gpu or any(n.startswith(g) for g in args.gpu)]
    mixes = read(library_path(), cuda_tool("cuobjdump"))
    if not mixes:
        print("no CUDA kernels in the built library (CPU-only build?)")
        return 0
    modelled = rows(args.batch, args.dtype or ["bf16", "fp32"], gpus, mixes)
    text = markdown(modelled)
    print(text, end="")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(PREAMBLE.format(batch=args.batch) + text)
    if args.json:
        args.json.write_text(json.dumps(
            {"specs": {n: asdict(s) for n, s in SPECS.items()},
             "rows": [asdict(m) | {"time_us": m.time_us, "bound": m.bound} for m in modelled]},
            indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
