"""The roofline model (scripts/roofline.py): its arithmetic on cases computed by hand."""

from __future__ import annotations

import pytest
import roofline  # scripts/roofline.py
import sass_mix

# 1 SM at 1 GHz: 4e9 warp instructions per second; 1000 GB/s; 1 TFLOP/s everywhere.
TOY = roofline.GpuSpec("toy", sms=1, clock_ghz=1.0, dram_gbs=1000.0, fp32_tflops=1.0,
                       tf32_tflops=1.0, half_tflops=1.0, note="test")


def test_the_largest_time_bounds_and_the_floor_is_the_ops_minimum() -> None:
    # 2e6 bytes / 1e12 B/s = 2 µs; 3e6 FLOP / 1e12 = 3 µs; 4e6 instructions / 4e9 = 1000 µs
    m = roofline.model("k", "layer", TOY, "bf16", 2_000_000, 3e6, 1.0, 4e6, 1_000_000, 3e6, 1.0)
    assert (m.dram_us, m.math_us, m.issue_us) == pytest.approx((2.0, 3.0, 1000.0))
    assert m.bound == "issue" and m.time_us == pytest.approx(1000.0)
    assert m.floor_us == pytest.approx(3.0)  # max(1 µs of bytes, 3 µs of FLOPs)
    assert m.fraction_of_floor == pytest.approx(0.003)


def test_gemm_iterations_count_k_tiles_of_every_warp() -> None:
    # M 130 -> 3 row tiles of 64, N 64 -> 1, 2 groups: 6 CTAs of 4 warps; K 33 -> 2 K tiles.
    gemm = roofline.Gemm(m=130, n=64, k=33, groups=2)
    assert gemm.warp_iterations() == 6 * 4 * 2
    assert gemm.flops == 2 * 130 * 64 * 33 * 2
    assert gemm.issued_flops == 2 * 192 * 64 * 64 * 2  # M, K padded to the 64 x 32 tiles


def test_conv_gemm_shapes_of_a_strided_layer() -> None:
    conv = type("Conv", (), {"kernel_size": 11, "stride": 4, "padding": 2, "groups": 1,
                             "out_channels": 64})()
    gemms = roofline.conv_gemms(2, 3, (224, 224), conv)
    # output 55 x 55 per image; K = 3 * 11 * 11; grad_input: ceil(11/4)^2 = 9 taps per phase
    assert gemms["conv2d_relu_forward_kernel"] == roofline.Gemm(2 * 55 * 55, 64, 363, 1)
    assert gemms["conv2d_relu_grad_input_kernel"] == roofline.Gemm(2 * 224 * 224, 3, 64 * 9, 1)
    assert gemms["conv2d_relu_grad_weight_kernel"] == roofline.Gemm(64, 363, 2 * 55 * 55, 1)


def test_the_pipelined_forward_is_modelled_only_for_whole_channel_vectors() -> None:
    conv = type("Conv", (), {"kernel_size": 3, "stride": 1, "padding": 1, "groups": 2,
                             "out_channels": 384})()
    # 16 channels per group: the NHWC kernel's 128 x 128 x 32 tiles of 8 warps
    gemm = roofline.conv_gemms(2, 32, (13, 13), conv)["conv2d_relu_forward_nhwc_kernel"]
    assert gemm == roofline.Gemm(2 * 13 * 13, 192, 16 * 9, 2, roofline.FPROP_TILE)
    assert gemm.warp_iterations() == 3 * 2 * 2 * 8 * 5  # M 338 / 128, N 192 / 128, K 144 / 32
    assert "conv2d_relu_forward_nhwc_kernel" not in roofline.conv_gemms(2, 3, (224, 224), conv)
    assert roofline.instantiation("conv2d_relu_forward_nhwc_kernel", "bf16") == \
        "conv2d_relu_forward_nhwc_kernel<__nv_bfloat16>"


def _mix(main: int, nested: list[tuple[int, int, int]]):
    loop = sass_mix.Loop(0, 10_000)
    inner = [sass_mix.LoopMix(sass_mix.Loop(start, end), instructions=n)
             for start, end, n in nested]
    return sass_mix.KernelMix(80, "k<float>", sass_mix.LoopMix(loop, instructions=main), inner,
                              4, False, 0)


def test_nested_loops_multiply_by_their_trip_counts() -> None:
    # main 100 holds L1 (40) which holds L2 (10): 60 + 3 * (30 + 2 * 10) = 210
    mix = _mix(100, [(100, 900, 40), (200, 300, 10)])
    assert roofline.per_iteration(mix, [3, 2]) == pytest.approx(210.0)
    assert roofline.per_iteration(mix, []) == pytest.approx(100.0)


def test_lrn_rule_counts_one_iteration_per_channel_of_each_warp() -> None:
    # conv1's LRN (96 x 55 x 55) at batch 2 in bf16: a warp covers 32 x 8 = 256 pixels,
    # ceil(3025 / 256) = 12 warps per image, 24 in all, each walking 96 channels.
    from alexnet_kernels.bench.cases import CASES

    case = next(c for c in CASES if c.op == "lrn" and c.layer == "conv1")
    mixes = {(90, f"{k}<__nv_bfloat16, false, LrnBeta075>"): _mix(n, [])
             for k, n in (("lrn_forward_kernel", 150), ("lrn_backward_kernel", 400))}
    for mix in mixes.values():
        mix.main.classes["global load"] = 1
    found = roofline.memory_bound(case, 2, "bf16", mixes, 90)
    assert [(k, n, d) for k, _, n, d in found] == [
        ("lrn_forward_kernel", 24 * 96 * 150, "forward"),
        ("lrn_backward_kernel", 24 * 96 * 400, "backward")]
    # A main loop that only stores is not the channel walk: no row rather than too few.
    mixes[(90, "lrn_forward_kernel<__nv_bfloat16, false, LrnBeta075>")].main.classes.clear()
    assert [k for k, *_ in roofline.memory_bound(case, 2, "bf16", mixes, 90)] == [
        "lrn_backward_kernel"]
