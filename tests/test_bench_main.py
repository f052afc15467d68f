"""The main job's pieces: byte model, accuracy check, outputs, and the environment report."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F

from alexnet_kernels import autotune, env_report, reference
from alexnet_kernels.bench import job
from alexnet_kernels.bench.cases import (
    CASES,
    Case,
    Conv,
    Program,
    check_accuracy,
    make_input,
    traffic,
)
from alexnet_kernels.bench.timing import time_case


def test_byte_model_max_pool_by_hand() -> None:
    # 2x3x7x7 fp32 -> 2x3x3x3: x 294 floats, y 54 floats, 54 one-byte argmax, 54 int64 indices.
    case = Case("max_pool2d", "t", (3, 7, 7))
    model = traffic(case, batch=2, itemsize=4, device_type="cpu")
    x, y, argmax, indices = 294 * 4, 54 * 4, 54, 54 * 8
    # The CPU's timed forward (no autograd) writes no argmax; CUDA's does.
    assert model.ours == {"forward": x + y, "backward": y + argmax + x}
    assert model.eager == {"forward": x + y + indices, "backward": y + indices + x}
    cuda = traffic(case, batch=2, itemsize=4, device_type="cuda")
    assert cuda.ours == {"forward": x + y + argmax, "backward": y + argmax + x}


def test_byte_model_lrn_by_hand() -> None:
    # 1x4x2x2 fp32: E = 16 floats; the padded square has 4 + 5 - 1 = 8 channels: P = 32 floats.
    model = traffic(Case("lrn", "t", (4, 2, 2)), batch=1, itemsize=4, device_type="cpu")
    e, p = 16 * 4, 32 * 4
    assert model.ours == {"forward": 2 * e, "backward": 4 * e}
    # mul 3E, pad E+P, avg_pool3d P+E, mul/add/pow 2E each, div 3E: 14E + 2P.
    assert model.eager["forward"] == 14 * e + 2 * p
    # 13 elementwise kernels (3E each for binary, 2E unary: 37E), avg_pool3d_backward E+P.
    assert model.eager["backward"] == 38 * e + p


def test_byte_model_dropout_by_hand() -> None:
    case = Case("dropout", "t", (10,))  # 2x10 bf16: 40 bytes, a bool mask of 20 bytes
    cpu = traffic(case, batch=2, itemsize=2, device_type="cpu")
    cuda = traffic(case, batch=2, itemsize=2, device_type="cuda")
    assert cpu.ours == cuda.ours == {"forward": 80, "backward": 80}
    # bernoulli_ writes noise, div_ rewrites it, x * noise; backward g * noise.
    assert cpu.eager == {"forward": 40 + 80 + 120, "backward": 120}
    assert cuda.eager == {"forward": 40 + 40 + 20, "backward": 40 + 20 + 40}


def test_byte_model_conv2d_relu_by_hand() -> None:
    # 1x2x5x5 fp32, 3 filters 3x3 stride 2, no padding -> 1x3x2x2.
    case = Case("conv2d_relu", "t", (2, 5, 5), Conv(3, 3, stride=2))
    x, w, b, y = 50 * 4, 54 * 4, 3 * 4, 12 * 4
    cpu = traffic(case, batch=1, itemsize=4, device_type="cpu")
    # threshold_backward (grad_y, y -> G), convolution_backward (G, x, w -> grads).
    backward = 2 * y + y + (y + x + w) + (x + w + b)
    assert cpu.ours == {"forward": x + w + b + y, "backward": backward}
    assert cpu.eager == {"forward": x + w + b + y + 2 * y, "backward": backward}
    cuda = traffic(case, batch=1, itemsize=4, device_type="cuda")
    assert cuda.ours["backward"] == (2 * y + w + x) + (2 * y + x + w) + (2 * y + b)


def test_no_byte_model_for_networks() -> None:
    assert traffic(Case("model", "alexnet", (3, 224, 224)), 1, 4, "cpu") is None


LRN_CASE = Case("lrn", "t", (8, 5, 5))
CONV_CASE = Case("conv2d_relu", "t", (4, 9, 9), Conv(6, 3, stride=2, padding=1, groups=2))
CPU = torch.device("cpu")
DROPOUT_CASE = Case("dropout", "t", (3000,))


def _input(case: Case, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return make_input(case, 2, dtype, False, CPU)


@pytest.mark.parametrize("case", [LRN_CASE, CONV_CASE], ids=["lrn", "conv2d_relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_accuracy_passes_for_a_correct_implementation(case: Case, dtype: torch.dtype) -> None:
    x = _input(case, dtype)
    if dtype == torch.float32:  # PyTorch has no bfloat16 LRN on the CPU
        assert check_accuracy(case, case.reference(CPU, dtype), "ref", x).passed
    assert check_accuracy(case, case.ours("native", CPU, dtype), "ours", x).passed


def test_accuracy_of_dropout_uses_its_own_mask() -> None:
    result = check_accuracy(DROPOUT_CASE, Program(lambda x: F.dropout(x, 0.5)), "ref",
                            _input(DROPOUT_CASE))
    assert result.passed and abs(result.keep_fraction - 0.5) < 0.1


def _wrong_conv(case: Case, bias_scale: float = 1.0, weight_grad: float = 0.0) -> Program:
    """The case's conv2d+ReLU with its bias scaled, or a wrong weight gradient."""
    right = case.reference(CPU, torch.float32)
    weight, bias = right.params

    def fn(x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.conv2d(x, weight, bias * bias_scale, 2, 1, 1, 2))
        return y + weight_grad * (weight - weight.detach()).sum()
    return Program(fn, right.params)


def test_accuracy_checks_networks_and_weight_gradients() -> None:
    model = Case("model", "alexnet", (3, 70, 70))
    x = _input(model)
    assert check_accuracy(model, model.ours("native", CPU, torch.float32), "ours", x).passed
    assert check_accuracy(CONV_CASE, _wrong_conv(CONV_CASE), "same", _input(CONV_CASE)).passed
    assert not check_accuracy(CONV_CASE, _wrong_conv(CONV_CASE, weight_grad=1e-3), "wrong",
                              _input(CONV_CASE)).passed


@pytest.mark.parametrize("case, wrong", [
    (LRN_CASE, lambda x: reference.lrn(x, 5, 1e-4, 0.75, 1.0)),  # k = 1 instead of 2
    (LRN_CASE, lambda x: reference.lrn(x, 5, 1e-4, 0.75, 2.0) + 1e-3 * x.detach()),  # forward
    (LRN_CASE, lambda x: reference.lrn(x, 5, 1e-4, 0.75, 2.0) + 1e-3 * (x - x.detach())),  # grad
    (DROPOUT_CASE, lambda x: F.dropout(x, 0.5) * 1.01),  # wrong scale
    (DROPOUT_CASE, lambda x: x * 2.0),  # keeps everything
    (CONV_CASE, None),  # bias 1% off
], ids=["lrn-k", "lrn-forward", "lrn-grad", "dropout-scale", "dropout-keep", "conv-bias"])
def test_accuracy_fails_for_a_wrong_implementation(case: Case, wrong) -> None:
    program = _wrong_conv(case, bias_scale=1.01) if wrong is None else Program(wrong)
    assert not check_accuracy(case, program, "wrong", _input(case)).passed


def test_quick_run_writes_json_markdown_and_png(tmp_path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    # "ours" is backend="auto" with autotuning on, deciding into a folder of the test.
    monkeypatch.setenv("ALEXNET_KERNELS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(autotune, "_enabled", True)
    monkeypatch.setattr(autotune, "_memory", {})
    only = ["lrn conv1", "conv2d_relu conv3", "dropout fc7"]
    code = job.main(["--quick", "--batch", "1", "--repeats", "2", "--warmup", "0",
                       "--no-compile", "--out", str(tmp_path), "--only", *only])
    assert code == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert {"machine", "device", "settings", "traffic", "samples", "accuracy",
            "summary"} <= record.keys()
    assert record["settings"]["batch"] == 1 and record["machine"]["build"]["loaded"]
    assert all(len(s["forward_ms"]) == 2 for s in record["samples"])
    assert len(record["summary"]) == 2 * len(record["traffic"]) == 2 * len(only)
    assert {s["case"] for s in record["samples"]} == {
        case.name for case in CASES if any(text in case.name for text in only)}
    assert "| lrn conv1 96x55x55 | fwd+bwd |" in (tmp_path / "results.md").read_text()
    # Each row names what "ours" ran; the hand-written kernel keeps a row of its own.
    assert {s["provider"] for s in record["samples"]} == {"eager", "ours", "native"}
    ran = record["ours_ran"]
    assert ran["dropout fc7-input 4096"] == {"fwd": "native", "fwd+bwd": "native"}
    for case in ("lrn conv1 96x55x55", "conv2d_relu conv3 192x13x13"):
        assert set(ran[case]) == {"fwd", "fwd+bwd"}
        assert set(ran[case].values()) <= {"native", "torch"}
    assert all(row["ours_ran"] == ran[row["case"]][row["direction"]]
               for row in record["summary"])
    assert (tmp_path / "speedup.png").read_bytes().startswith(b"\x89PNG")


def test_networks_run_a_third_of_the_rounds() -> None:
    args = job.parse_args(["--repeats", "15", "--warmup", "4"])
    network = next(case for case in CASES if case.op == "model")
    assert job.rounds(network, args) == (2, 5) and job.rounds(CASES[0], args) == (4, 15)


def test_only_without_a_match_names_the_cases() -> None:
    with pytest.raises(SystemExit, match="no case matches; the cases are: conv2d_relu conv1"):
        job.selected_cases(["nothing"])


def test_quick_defaults_yield_to_explicit_options() -> None:
    args = job.parse_args(["--quick", "--repeats", "4"])
    assert (args.batch, args.repeats, args.warmup) == (8, 4, 2)


def test_env_report_json_has_the_keys(capsys) -> None:
    assert env_report.main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"python", "torch", "triton", "numpy", "cuda_runtime", "gpu", "build",
            "cpu_capability", "backends"} <= report.keys()
    assert "torch" in report["backends"]["cpu"]
    # The suite runs with autotuning off and a cache folder of its own (conftest.py).
    assert report["autotune"] == {"enabled": False,
                                  "cache_dir": os.environ["ALEXNET_KERNELS_CACHE_DIR"],
                                  "cache_files": []}


def test_a_provider_that_cannot_run_is_reported_not_timed() -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("no kernel for this dtype")

    x, grad = torch.randn(2, 3), torch.randn(2, 3)
    samples, errors = time_case("t", {"eager": Program(broken), "ours": Program(torch.relu)},
                                x, grad,
                                warmup=0, repeats=2, on_round=lambda: None)
    assert [s.provider for s in samples] == ["ours"] and len(samples[0].forward_ms) == 2
    assert errors == {"eager": "NotImplementedError: no kernel for this dtype"}
