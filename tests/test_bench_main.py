"""The main job's pieces: byte model, accuracy check, outputs, and the environment report."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from alexnet_kernels import bench, env_report, reference
from alexnet_kernels._bench_cases import Case, check_accuracy, make_input, traffic
from alexnet_kernels._bench_timing import time_case


def test_byte_model_max_pool_by_hand() -> None:
    # 2x3x7x7 fp32 -> 2x3x3x3: x 294 floats, y 54 floats, 54 one-byte argmax, 54 int64 indices.
    model = traffic(Case("max_pool2d", "t", (3, 7, 7)), batch=2, itemsize=4, device_type="cpu")
    x, y, argmax, indices = 294 * 4, 54 * 4, 54, 54 * 8
    assert model.ours == {"forward": x + y + argmax, "backward": y + argmax + x}
    assert model.eager == {"forward": x + y + indices, "backward": y + indices + x}


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


LRN_CASE = Case("lrn", "t", (8, 5, 5))
DROPOUT_CASE = Case("dropout", "t", (3000,))


def _input(case: Case) -> torch.Tensor:
    return make_input(case, 2, torch.float32, False, torch.device("cpu"))


def test_accuracy_passes_for_a_correct_implementation() -> None:
    assert check_accuracy(LRN_CASE, LRN_CASE.reference(), "ref", _input(LRN_CASE)).passed
    assert check_accuracy(LRN_CASE, LRN_CASE.ours("native"), "ours", _input(LRN_CASE)).passed
    result = check_accuracy(DROPOUT_CASE, lambda x: F.dropout(x, 0.5), "ref",
                            _input(DROPOUT_CASE))
    assert result.passed and abs(result.keep_fraction - 0.5) < 0.1


@pytest.mark.parametrize("case, wrong", [
    (LRN_CASE, lambda x: reference.lrn(x, 5, 1e-4, 0.75, 1.0)),  # k = 1 instead of 2
    (LRN_CASE, lambda x: reference.lrn(x, 5, 1e-4, 0.75, 2.0) + 1e-3 * x.detach()),  # forward
    (LRN_CASE, lambda x: reference.lrn(x, 5, 1e-4, 0.75, 2.0) + 1e-3 * (x - x.detach())),  # grad
    (DROPOUT_CASE, lambda x: F.dropout(x, 0.5) * 1.01),  # wrong scale
    (DROPOUT_CASE, lambda x: x * 2.0),  # keeps everything
], ids=["lrn-k", "lrn-forward", "lrn-grad", "dropout-scale", "dropout-keep"])
def test_accuracy_fails_for_a_wrong_implementation(case: Case, wrong) -> None:
    assert not check_accuracy(case, wrong, "wrong", _input(case)).passed


def test_quick_run_writes_json_markdown_and_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    code = bench.main(["--quick", "--batch", "1", "--repeats", "2", "--warmup", "0",
                       "--no-compile", "--out", str(tmp_path)])
    assert code == 0
    record = json.loads((tmp_path / "results.json").read_text())
    assert {"machine", "device", "settings", "traffic", "samples", "accuracy",
            "summary"} <= record.keys()
    assert record["settings"]["batch"] == 1 and record["machine"]["build"]["loaded"]
    assert all(len(s["forward_ms"]) == 2 for s in record["samples"])
    assert len(record["summary"]) == 2 * len(record["traffic"]) == 16
    assert "| lrn conv1 96x55x55 | fwd+bwd |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "speedup.png").read_bytes().startswith(b"\x89PNG")


def test_quick_defaults_yield_to_explicit_options() -> None:
    args = bench.parse_args(["--quick", "--repeats", "4"])
    assert (args.batch, args.repeats, args.warmup) == (8, 4, 2)


def test_env_report_json_has_the_keys(capsys) -> None:
    assert env_report.main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"python", "torch", "triton", "numpy", "cuda_runtime", "gpu", "build",
            "cpu_capability", "backends"} <= report.keys()
    assert "torch" in report["backends"]["cpu"]


def test_a_provider_that_cannot_run_is_reported_not_timed() -> None:
    def broken(x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("no kernel for this dtype")

    x, grad = torch.randn(2, 3), torch.randn(2, 3)
    samples, errors = time_case("t", {"eager": broken, "ours": torch.relu}, x, grad,
                                warmup=0, repeats=2, on_round=lambda: None)
    assert [s.provider for s in samples] == ["ours"] and len(samples[0].forward_ms) == 2
    assert errors == {"eager": "NotImplementedError: no kernel for this dtype"}
