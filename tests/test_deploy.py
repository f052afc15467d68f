"""Deployment paths: torch.export, AOTInductor in a fresh process, ONNX in ONNX Runtime.

Every program is traced at an example batch of 2 with a dynamic batch dimension
and run at a batch of 3. A network's output is compared with eager's (the native
kernels, which tests/test_models.py compares with PyTorch's) within the network
tolerance of tests/cases/models.py; single ops with the float64 PyTorch reference
within the per-dtype tolerance.
(The installed-wheel smoke test is scripts/wheel_check.py.)
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from cases.models import VARIANTS, assert_net_close
from helpers import assert_close_to_reference, random_tensor, require_native_cpu

import alexnet_kernels as ak
from alexnet_kernels import _extension, models
from alexnet_kernels.export import aoti_compile, export, export_onnx

EXAMPLE_BATCH, RUN_BATCH = 2, 3
DEPLOY_VARIANTS = {
    **VARIANTS,
    "torchvision": (lambda **kw: models.alexnet(10, dropout=0.0, **kw), (1, 3, 67, 67)),
}
# Our ops each variant's exported graph must hold (eval mode, no autograd: the
# CPU max-pool is the values-only op; dropout is not in the graph).
EXPECTED_OPS = {
    "paper": {"conv2d_relu", "lrn", "max_pool2d_values"},
    "paper-grouped": {"conv2d_relu", "lrn", "max_pool2d_values"},
    "paper-no-lrn": {"conv2d_relu", "max_pool2d_values"},
    "cifar": {"conv2d_relu", "max_pool2d_values"},
    "bn": {"max_pool2d_values"},
    "torchvision": {"conv2d_relu", "max_pool2d_values"},
}
# PyTorch ops that would mean one of ours was decomposed (bn's convolutions are nn.Conv2d).
DECOMPOSED = {"aten.max_pool2d", "aten.max_pool2d_with_indices", "aten.avg_pool3d",
              "aten.avg_pool2d", "aten.local_response_norm", "aten.dropout", "aten.bernoulli",
              "aten.conv2d", "aten.convolution"}


def build(variant: str, backend: str = "native") -> torch.nn.Module:
    """A DEPLOY_VARIANTS network in eval mode, the same weights for every backend."""
    constructor, _ = DEPLOY_VARIANTS[variant]
    torch.manual_seed(3)
    return constructor(backend=backend).eval()


def inputs(variant: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(example input at EXAMPLE_BATCH, run input at RUN_BATCH) of a variant."""
    _, shape = DEPLOY_VARIANTS[variant]
    return (random_tensor((EXAMPLE_BATCH, *shape[1:]), torch.float32, seed),
            random_tensor((RUN_BATCH, *shape[1:]), torch.float32, seed + 1))


def graph_ops(program: torch.export.ExportedProgram) -> tuple[set[str], set[str]]:
    """(our op names, PyTorch op packets "aten.<name>") called by an exported graph."""
    targets = [n.target for n in program.graph.nodes if n.op == "call_function"]
    ours = {t._opname for t in targets if isinstance(t, torch._ops.OpOverload)
            and t.namespace == "alexnet_kernels"}
    aten = {f"aten.{t._opname}" for t in targets if isinstance(t, torch._ops.OpOverload)
            and t.namespace == "aten"}
    return ours, aten


def eager(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


# ---- torch.export --------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(DEPLOY_VARIANTS))
def test_export_holds_our_ops_and_matches_eager(variant: str) -> None:
    require_native_cpu()
    model = build(variant)
    example, x = inputs(variant, seed=10)
    program = export(model, example)
    ours, aten = graph_ops(program)
    assert ours == EXPECTED_OPS[variant]
    allowed = {"aten.conv2d"} if variant == "bn" else set()
    assert not (aten & DECOMPOSED) - allowed, f"decomposed ops in the graph: {aten & DECOMPOSED}"
    y = eager(program.module(), x)
    assert y.shape[0] == RUN_BATCH
    assert_net_close(y, eager(model, x))


@pytest.mark.parametrize("backend", ["torch", "triton", "auto"])
def test_export_traces_the_native_ops_whatever_the_backend(backend: str) -> None:
    """A model built for another backend exports with our opaque ops (the Triton ops would
    be traced through, the torch backend is PyTorch's own ops) and keeps its backend."""
    require_native_cpu()
    model = build("cifar", backend)
    example, x = inputs("cifar", seed=20)
    program = export(model, example)
    assert graph_ops(program)[0] == EXPECTED_OPS["cifar"]
    assert {m.backend for m in model.modules() if hasattr(m, "backend")} == {backend}
    assert_net_close(eager(program.module(), x), eager(build("cifar"), x))


def test_export_refuses_training_mode_and_a_batch_of_one() -> None:
    require_native_cpu()
    model = build("cifar")
    example, _ = inputs("cifar", seed=30)
    with pytest.raises(ValueError, match=r"eval mode .*model\.eval\(\)"):
        export(model.train(), example)
    with pytest.raises(ValueError, match="example batch must be at least 2"):
        export(model.eval(), example[:1])
    fixed = export(model, example[:1], dynamic_batch=False)
    assert graph_ops(fixed)[0] == EXPECTED_OPS["cifar"]


# ---- ONNX ----------------------------------------------------------------------------


def onnx_session(path: Path):
    """An ONNX Runtime session (CPU provider) of a checked model file; skips without onnx."""
    onnx = pytest.importorskip("onnx", reason="the export extra (onnx) is not installed")
    ort = pytest.importorskip("onnxruntime",
                              reason="the export extra (onnxruntime) is not installed")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_node_types(path: Path) -> list[tuple[str, str]]:
    """(domain, op type) of every node of an ONNX file's main graph."""
    import onnx

    return [(n.domain, n.op_type) for n in onnx.load(str(path)).graph.node]


def run_onnx(session, *xs: torch.Tensor) -> list[torch.Tensor]:
    feeds = {i.name: x.numpy() for i, x in zip(session.get_inputs(), xs, strict=True)}
    return [torch.from_numpy(y) for y in session.run(None, feeds)]


# Standard ONNX operators our ops are written with, per variant.
ONNX_OPS = {variant: {"Conv", "Relu", "MaxPool"} | ({"LRN"} if "lrn" in ops else set())
            for variant, ops in EXPECTED_OPS.items()}


# Every constructor (paper-no-lrn adds no op or argument to the other variants').
ONNX_VARIANTS = [v for v in DEPLOY_VARIANTS if v != "paper-no-lrn"]


@pytest.mark.parametrize("variant", ONNX_VARIANTS)
def test_onnx_runtime_matches_pytorch(variant: str, tmp_path: Path) -> None:
    require_native_cpu()
    pytest.importorskip("onnxscript", reason="the export extra (onnxscript) is not installed")
    model = build(variant)
    example, x = inputs(variant, seed=40)
    path = export_onnx(model, example, tmp_path / f"{variant}.onnx")
    session = onnx_session(path)
    nodes = onnx_node_types(path)
    assert {domain for domain, _ in nodes} == {""}, "only standard ONNX operators"
    assert ONNX_OPS[variant] <= {op_type for _, op_type in nodes}
    batch = session.get_inputs()[0].shape[0]
    assert isinstance(batch, str), f"the batch dimension is fixed to {batch}"
    (y,) = run_onnx(session, x)
    assert y.shape[0] == RUN_BATCH
    assert_net_close(y, eager(model, x))


def _conv_case(weight_shape: tuple[int, ...], bias: bool, **arguments) -> Callable:
    weight = random_tensor(weight_shape, torch.float32, seed=50)
    b = random_tensor(weight_shape[:1], torch.float32, seed=51) if bias else None

    def case(x: torch.Tensor, backend: str) -> torch.Tensor:
        return ak.conv2d_relu(x, weight.to(x.dtype), None if b is None else b.to(x.dtype),
                              backend=backend, **arguments)
    return case


# name -> (op call (x, backend) -> y, input shape): the translations' argument cases,
# including PyTorch's LRN window for even sizes and ceil mode's dropped last window.
OP_CASES: dict[str, tuple[Callable, tuple[int, ...]]] = {
    "lrn-alexnet": (lambda x, b: ak.lrn(x, 5, 1e-4, 0.75, 2.0, backend=b), (2, 9, 5, 6)),
    "lrn-odd": (lambda x, b: ak.lrn(x, 3, 0.7, 0.6, 1.3, backend=b), (2, 7, 4, 5)),
    "lrn-even": (lambda x, b: ak.lrn(x, 4, 0.9, 0.8, 1.5, backend=b), (2, 7, 4, 5)),
    "lrn-even-3d": (lambda x, b: ak.lrn(x, 2, 0.5, 0.9, 1.0, backend=b), (2, 5, 7)),
    "lrn-odd-5d": (lambda x, b: ak.lrn(x, 3, 0.4, 0.75, 1.0, backend=b), (2, 4, 3, 2, 3)),
    "pool-alexnet": (lambda x, b: ak.max_pool2d(x, 3, 2, backend=b), (2, 3, 13, 13)),
    "pool-ceil": (lambda x, b: ak.max_pool2d(x, 3, 2, ceil_mode=True, backend=b), (2, 3, 8, 10)),
    # Ceil mode whose last window would start in the right padding: PyTorch drops it.
    "pool-ceil-dropped": (lambda x, b: ak.max_pool2d(x, 2, 2, 1, ceil_mode=True, backend=b),
                          (2, 3, 3, 5)),
    "pool-dilated": (lambda x, b: ak.max_pool2d(x, (3, 2), (2, 1), (1, 1), (2, 3), backend=b),
                     (2, 3, 11, 9)),
    "pool-ceil-dilated": (lambda x, b: ak.max_pool2d(x, 3, 3, 1, 2, True, backend=b),
                          (2, 2, 10, 13)),
    "conv-grouped": (_conv_case((6, 2, 3, 2), True, stride=(2, 1), padding=(1, 0),
                                dilation=(1, 2), groups=2), (2, 4, 9, 8)),
    "conv-same": (_conv_case((6, 4, 3, 2), False, padding="same", dilation=(2, 1)),
                  (2, 4, 9, 8)),
    "conv-valid": (_conv_case((5, 3, 2, 3), True, padding="valid", stride=2), (2, 3, 9, 8)),
}


class OpCases(torch.nn.Module):
    """Every OP_CASES call in one module: forward(*xs) -> one output per case."""

    def forward(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(case(x, "auto") for (case, _), x in zip(OP_CASES.values(), xs, strict=True))


def test_onnx_op_translations_match_pytorch(tmp_path: Path) -> None:
    require_native_cpu()
    pytest.importorskip("onnxscript", reason="the export extra (onnxscript) is not installed")
    examples = [random_tensor(shape, torch.float32, seed=60 + i)
                for i, (_, shape) in enumerate(OP_CASES.values())]
    path = export_onnx(OpCases().eval(), (examples,), tmp_path / "ops.onnx")
    session = onnx_session(path)
    nodes = onnx_node_types(path)
    assert {domain for domain, _ in nodes} == {""}
    types = {op_type for _, op_type in nodes}
    assert {"LRN", "MaxPool", "Conv", "Relu", "AveragePool"} <= types
    xs = [random_tensor((RUN_BATCH, *shape[1:]), torch.float32, seed=80 + i)
          for i, (_, shape) in enumerate(OP_CASES.values())]
    outputs = run_onnx(session, *xs)
    for (name, (case, _)), x, y in zip(OP_CASES.items(), xs, outputs, strict=True):
        expected = case(x.double(), "torch")
        assert y.shape == expected.shape, name
        assert_close_to_reference(y, expected)


# ---- AOTInductor ---------------------------------------------------------------------

# Run in a fresh interpreter: load the package after making our ops available
# (argv[1]: "package" imports alexnet_kernels, "library" loads only the compiled
# library, as a C++ deployment does, "nothing" neither) and compare with eager.
AOTI_CHILD = textwrap.dedent("""
    import sys
    import torch
    mode, package, data, *library = sys.argv[1:]
    if mode == "package":
        import alexnet_kernels
    elif mode == "library":
        torch.ops.load_library(library[0])
    x, expected = torch.load(data)
    runner = torch._inductor.aoti_load_package(package)
    with torch.no_grad():
        y = runner(x)
    torch.testing.assert_close(y, expected)
    print("aoti-ok", tuple(y.shape))
""")


def run_child(mode: str, package: Path, data: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", AOTI_CHILD, mode, str(package), str(data),
                           *extra], cwd=package.parent, capture_output=True, text=True,
                          timeout=300)


def test_aoti_package_runs_in_a_fresh_process(tmp_path: Path) -> None:
    """cifar (the smallest variant: each compile is a C++ build of the whole network)."""
    require_native_cpu()
    model = build("cifar")
    example, x = inputs("cifar", seed=90)
    package = aoti_compile(model, example, tmp_path / "cifar.pt2")
    expected = eager(model, x)
    data = tmp_path / "io.pt"
    torch.save((x, expected), data)
    for mode, extra in (("package", ()), ("library", (_extension._LIBRARY.__file__,))):
        child = run_child(mode, package, data, *extra)
        assert child.returncode == 0 and "aoti-ok (3, 10)" in child.stdout, child.stderr[-3000:]
    # Without our library the package cannot run: the ops are real calls into it.
    child = run_child("nothing", package, data)
    assert child.returncode != 0 and "alexnet_kernels" in child.stderr, child.stderr[-3000:]


# ---- installing: the torch a library was built against ---------------------------------
# (The wheel itself is built, installed and smoke-tested by scripts/wheel_check.py.)


def test_undefined_symbol_names_both_torch_versions(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    """A library built for another torch usually fails to load with an undefined symbol;
    the version the build recorded next to it names the mismatch and the fix."""
    recorded = tmp_path / "_C.torch_version"
    recorded.write_text("2.9.0+cu128\n")
    monkeypatch.setattr(_extension, "_TORCH_VERSION_FILE", recorded)

    def fail(name: str):
        raise ImportError(f"{tmp_path}/_C.so: undefined symbol: _ZN3c104impl3cow11cow_deleterEPv")

    monkeypatch.setattr(importlib, "import_module", fail)
    library, error = _extension._load()
    assert library is None
    assert "built against torch 2.9.0+cu128" in error and torch.__version__ in error
    assert "pip install torch==2.9.0" in error and "rebuild" in error
    assert "undefined symbol" in error
    # Without the record the message still says what most likely happened.
    recorded.unlink()
    _, error = _extension._load()
    assert "built against another version of torch" in error


def test_build_recorded_the_running_torch() -> None:
    require_native_cpu()
    assert _extension.built_torch_version() == torch.__version__
