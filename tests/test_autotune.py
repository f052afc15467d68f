"""backend="auto" by measurement (alexnet_kernels.autotune): the key, the candidates, the
decision rule, the memory and disk caches, the controls, and torch.compile.

The tests of what runs are parametrized over the device: on "cuda" they run
where a GPU is present and skip, saying so, elsewhere.

The suite runs with autotuning off (conftest.py); the `autotuning` fixture turns
it on with an empty cache folder of the test. No test here asserts which real
candidate is faster (that is a timing): where the winner matters, a candidate
is slowed by a wide margin (sleeps of tens of milliseconds against kernels of
a fraction of one) so that the outcome holds on a loaded machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import require_native_cpu, require_native_cuda

import alexnet_kernels as ak
from alexnet_kernels import autotune, backends, reference
from alexnet_kernels.autotune import _cache, _measure
from alexnet_kernels.autotune.__main__ import main as autotune_main
from alexnet_kernels.triton import triton_installed

SLEEP_S = 0.05
LRN_ARGS = (5, 1e-4, 0.75, 2.0)


@pytest.fixture
def autotuning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Autotuning on, an empty cache folder of the test, no decision in memory; a short
    measurement budget (the tests' candidates differ by far more than the noise)."""
    require_native_cpu()
    monkeypatch.setenv(_cache.ENV_DIR, str(tmp_path))
    monkeypatch.setattr(_measure, "BUDGET_MS", 30.0)
    monkeypatch.setattr(_cache, "_warned", set())
    previous = autotune.enabled()
    autotune.clear(memory_only=True)
    autotune.set_autotune(True)
    yield tmp_path
    autotune.set_autotune(previous)
    autotune.clear(memory_only=True)


def _no_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes any measurement fail the test."""
    def fail(*args, **kwargs):
        raise AssertionError("a candidate was timed")
    monkeypatch.setattr(_measure, "measure", fail)


def _slowed(delays: dict[str, tuple[float, float]]):
    """The LRN runner of the real candidates, with ``delays[backend]`` = (seconds added
    to its forward, seconds added to its backward, through an identity autograd node)."""
    real = autotune._RUNNERS["lrn"]

    class SlowBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, y, seconds):
            ctx.seconds = seconds
            return y.view_as(y)

        @staticmethod
        def backward(ctx, grad):
            time.sleep(ctx.seconds)
            return grad, None

    def runner(backend, tensors, args, generator):
        y = real(backend, tensors, args, generator)
        forward_s, backward_s = delays.get(backend, (0.0, 0.0))
        time.sleep(forward_s)
        return SlowBackward.apply(y, backward_s) if backward_s and y.requires_grad else y
    return runner


DEVICES = ["cpu", "cuda"]


def _on(device: str) -> torch.device:
    """The test's device; "cuda" skips (with the reason) unless a GPU and the CUDA
    kernels are present."""
    if device == "cuda":
        require_native_cuda()
    return torch.device(device)


def _candidates_on(device: torch.device) -> set[str]:
    return {"native", "torch"} | ({"triton"} if device.type == "cuda" and triton_installed()
                                  else set())


def _entry(op: str, device: torch.device | str = "cpu") -> dict:
    """The one cache entry of ``op`` (the test made exactly one decision for it)."""
    entries = [e for e in autotune.stored_entries(device).values() if e["op"] == op]
    assert len(entries) == 1, entries
    return entries[0]


# ---- the key -------------------------------------------------------------------------


def test_the_key_tells_apart_what_changes_the_timing() -> None:
    x = torch.randn(2, 8, 9, 9)
    key = autotune.call_key("lrn", (x,), LRN_ARGS)
    assert key == autotune.call_key("lrn", (torch.randn(2, 8, 9, 9),), LRN_ARGS)
    assert key == (("lrn", (((2, 8, 9, 9), torch.float32, torch.contiguous_format, False),),
                    LRN_ARGS, False))
    others = [
        autotune.call_key("lrn", (torch.randn(3, 8, 9, 9),), LRN_ARGS),
        autotune.call_key("lrn", (x.double(),), LRN_ARGS),
        autotune.call_key("lrn", (x.contiguous(memory_format=torch.channels_last),), LRN_ARGS),
        autotune.call_key("lrn", (x.requires_grad_(),), LRN_ARGS),
        autotune.call_key("lrn", (x,), (3, 1e-4, 0.75, 2.0)),
        autotune.call_key("max_pool2d", (x,), LRN_ARGS),
    ]
    assert len({key, *others}) == 1 + len(others)
    assert others[3][3] is True  # a gradient is wanted
    with torch.no_grad():  # no gradient under no_grad, whatever requires_grad says
        assert autotune.call_key("lrn", (x,), LRN_ARGS) == key
    w = torch.randn(4, 8, 3, 3)
    assert autotune.call_key("conv2d_relu", (x, w, None), ())[1][2] is None


def test_a_full_key_has_a_stable_text() -> None:
    x = torch.randn(2, 8, 9, 9)
    full = (autotune.call_key("lrn", (x,), LRN_ARGS), ("cpu", "avx2", 2), False)
    from_tuple = ((("lrn", (((2, 8, 9, 9), *full[0][1][0][1:]),), LRN_ARGS, False)),
                  ("cpu", "avx2", 2), False)
    assert autotune.key_text(full) == autotune.key_text(from_tuple)  # torch.Size or tuple
    assert "torch.Size" not in autotune.key_text(full)
    assert autotune.describe_key(full)["inputs"] == ["2x8x9x9 float32 contiguous"]


# ---- candidates and the decision rule ------------------------------------------------


ALL = ("native", "triton", "torch")


def test_candidates_simplest_first() -> None:
    assert autotune.candidates("lrn", "cuda", "native", ALL, False, True) == (
        "torch", "native", "triton")
    assert autotune.candidates("conv2d_relu", "cpu", "native", ("native", "torch"), False,
                               True) == ("torch", "native")


def test_dropout_chooses_only_among_implementations_with_its_mask() -> None:
    assert autotune.candidates("dropout", "cuda", "native", ALL, False, True) == (
        "native", "triton")
    # Without the compiled kernels the fixed choice is PyTorch's dropout: only it qualifies.
    assert autotune.candidates("dropout", "cuda", "torch", ("triton", "torch"), False,
                               True) == ("torch",)


def test_deterministic_algorithms_remove_the_nondeterministic_candidates() -> None:
    # PyTorch's LRN backward on CUDA (avg_pool3d_backward) has no deterministic algorithm.
    assert autotune.candidates("lrn", "cuda", "native", ALL, True, True) == ("native", "triton")
    assert autotune.candidates("lrn", "cuda", "native", ALL, True, False) == (
        "torch", "native", "triton")
    assert autotune.candidates("conv2d_relu", "cuda", "native", ALL, True, True) == (
        "torch", "native", "triton")


@pytest.mark.parametrize("samples, expected", [
    ({"native": [5.0] * 5, "torch": [10.0] * 5}, "native"),
    ({"native": [10.0] * 5, "torch": [5.0] * 5}, "torch"),
    # 2% apart with no noise: within the 3% floor, so the simpler one.
    ({"native": [10.0] * 5, "torch": [10.2] * 5}, "torch"),
    ({"native": [10.0] * 5, "triton": [9.9] * 5}, "native"),
    # 5% apart, but native's samples spread by 20% (IQR / median): a tie.
    ({"native": [8.0, 9.0, 10.0, 11.0, 12.0], "torch": [10.5] * 5}, "torch"),
    # 10% apart with a 5% spread: native really is faster.
    ({"native": [9.5, 9.75, 10.0, 10.25, 10.5], "torch": [11.0] * 5}, "native"),
])
def test_the_fastest_wins_and_near_ties_go_to_the_simplest(samples, expected) -> None:
    winner, reason = _measure.decide(samples)
    assert winner == expected
    fastest = min(samples, key=lambda c: _measure.median(samples[c]))
    assert (reason == "fastest") == (winner == fastest)


# ---- real CPU candidates -------------------------------------------------------------


CALLS = {
    "lrn": lambda x, backend: ak.lrn(x, *LRN_ARGS, backend=backend),
    "max_pool2d": lambda x, backend: ak.max_pool2d(x, 3, 2, backend=backend),
    "conv2d_relu": lambda x, backend: ak.conv2d_relu(
        x, torch.full((4, 8, 3, 3), 0.1, device=x.device, requires_grad=x.requires_grad),
        None, padding=1, backend=backend),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("grad", [False, True], ids=["forward", "forward-backward"])
@pytest.mark.parametrize("op", list(CALLS))
def test_real_candidates_are_timed_and_the_winner_runs(autotuning: Path, op: str, grad: bool,
                                                       device: str) -> None:
    x = torch.randn(2, 8, 9, 9, device=_on(device), requires_grad=grad)
    with autotune.recording() as choices:
        y = CALLS[op](x, "auto")
    entry = _entry(op, x.device)
    assert set(entry["median_ms"]) | set(entry["errors"]) == _candidates_on(x.device)
    assert entry["key"]["direction"] == ("forward+backward" if grad else "forward")
    assert [c.backend for c in choices] == [entry["winner"]]
    medians = entry["median_ms"]
    fastest = min(medians, key=medians.__getitem__)
    order = _measure.SIMPLICITY
    assert entry["winner"] == fastest or (
        order.index(entry["winner"]) < order.index(fastest) and "noise" in entry["reason"])
    # What ran is the winner itself (bit for bit on the CPU).
    rtol, atol = (0.0, 0.0) if device == "cpu" else reference.TOLERANCES[x.dtype]
    torch.testing.assert_close(y, CALLS[op](x, entry["winner"]), rtol=rtol, atol=atol)


def test_dropout_on_the_cpu_has_one_candidate_and_keeps_its_mask(autotuning: Path,
                                                                  monkeypatch) -> None:
    _no_timing(monkeypatch)
    x = torch.randn(64, 65)
    with autotune.recording() as choices:
        y = ak.dropout(x, 0.5, generator=torch.Generator().manual_seed(3))
    assert [c.backend for c in choices] == ["native"]
    assert torch.equal(y, ak.dropout(x, 0.5, generator=torch.Generator().manual_seed(3),
                                     backend="native"))
    assert not list(autotuning.iterdir())  # nothing measured, nothing stored


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slow", ["native", "torch"])
def test_a_deliberately_slow_candidate_loses(autotuning: Path, monkeypatch, slow: str,
                                             device: str) -> None:
    monkeypatch.setitem(autotune._RUNNERS, "lrn", _slowed({slow: (SLEEP_S, 0.0)}))
    x = torch.randn(2, 8, 9, 9, device=_on(device))
    with autotune.recording() as choices:
        ak.lrn(x, *LRN_ARGS)
    entry = _entry("lrn", x.device)
    assert entry["winner"] != slow and [c.backend for c in choices] == [entry["winner"]]
    assert entry["median_ms"][slow] > 1e3 * SLEEP_S


@pytest.mark.parametrize("device", DEVICES)
def test_with_a_gradient_forward_and_backward_are_timed_together(autotuning: Path,
                                                                 monkeypatch, device) -> None:
    # native: a fast forward, a slow backward; torch: a slower forward; triton: slowest.
    monkeypatch.setitem(autotune._RUNNERS, "lrn", _slowed({
        "native": (0.0, 2 * SLEEP_S), "torch": (SLEEP_S, 0.0),
        "triton": (3 * SLEEP_S, 3 * SLEEP_S)}))
    x = torch.randn(2, 8, 9, 9, device=_on(device), requires_grad=True)
    with torch.no_grad():
        inference = ak.lrn(x, *LRN_ARGS)
    training = ak.lrn(x, *LRN_ARGS)
    decisions = {e["key"]["direction"]: e["winner"]
                 for e in autotune.stored_entries(x.device).values()}
    assert decisions == {"forward": "native", "forward+backward": "torch"}
    assert torch.equal(inference, ak.lrn(x, *LRN_ARGS, backend="native"))
    # The backward of the call comes from the candidate that ran its forward.
    assert type(training.grad_fn).__name__ == "DivBackward0"  # torch's LRN ends in a division
    training.sum().backward()
    expected = x.detach().clone().requires_grad_()
    reference.lrn(expected, *LRN_ARGS).sum().backward()
    assert torch.equal(x.grad, expected.grad)


@pytest.mark.parametrize("device", DEVICES)
def test_a_native_forward_is_differentiated_by_the_native_backward(autotuning: Path,
                                                                   monkeypatch, device) -> None:
    monkeypatch.setitem(autotune._RUNNERS, "lrn", _slowed(
        {"torch": (SLEEP_S, 0.0), "triton": (SLEEP_S, 0.0)}))
    x = torch.randn(2, 8, 9, 9, device=_on(device), requires_grad=True)
    y = ak.lrn(x, *LRN_ARGS)
    assert "alexnet_kernels_lrn" in type(y.grad_fn).__name__
    y.sum().backward()
    expected = x.detach().clone().requires_grad_()
    ak.lrn(expected, *LRN_ARGS, backend="native").sum().backward()
    assert torch.equal(x.grad, expected.grad)


def test_nested_recordings_each_collect(autotuning: Path) -> None:
    x = torch.randn(2, 8, 9, 9)
    with autotune.recording() as outer:
        with autotune.recording() as inner:
            pass
        ak.dropout(x, 0.5)
    assert not inner and [c.op for c in outer] == ["dropout"]


def test_timing_leaves_the_callers_tensors_and_random_stream_alone(autotuning: Path) -> None:
    x = torch.randn(2, 8, 9, 9, requires_grad=True)
    before, state = x.detach().clone(), torch.get_rng_state()
    ak.lrn(x, *LRN_ARGS)
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(x.detach(), before)
    assert x.grad is None


# ---- controls ----------------------------------------------------------------------


def test_autotuning_off_gives_the_fixed_choice(autotuning: Path, monkeypatch) -> None:
    _no_timing(monkeypatch)
    ak.set_autotune(False)
    x = torch.randn(2, 8, 9, 9)
    with autotune.recording() as choices:
        y = ak.lrn(x, *LRN_ARGS)
    assert not choices and not list(autotuning.iterdir())
    assert backends.resolve("auto", x.device, "lrn", ("native", "triton", "torch"),
                            tensors=(x,), args=LRN_ARGS) == "native"
    assert torch.equal(y, ak.lrn(x, *LRN_ARGS, backend="native"))


@pytest.mark.parametrize("value, on", [("0", False), ("off", False), ("False", False),
                                       ("1", True), ("", True), ("yes", True)])
def test_the_environment_switch(monkeypatch, value: str, on: bool) -> None:
    monkeypatch.setenv(autotune.ENV_ENABLE, value)
    assert autotune._enabled_from_environment() is on


def test_an_unknown_environment_value_warns_and_stays_on(monkeypatch) -> None:
    monkeypatch.setenv(autotune.ENV_ENABLE, "sometimes")
    with pytest.warns(UserWarning, match="neither on"):
        assert autotune._enabled_from_environment()


def test_explicit_backends_are_never_overridden(autotuning: Path, monkeypatch) -> None:
    _no_timing(monkeypatch)
    x = torch.randn(2, 8, 9, 9)
    with autotune.recording() as choices:
        native = ak.lrn(x, *LRN_ARGS, backend="native")
        ours_default = ak.nn.LocalResponseNorm(*LRN_ARGS, backend="torch")(x)
        with ak.use_backend("torch"):
            process_default = ak.lrn(x, *LRN_ARGS)
    assert not choices and not list(autotuning.iterdir())
    assert torch.equal(native, torch.ops.alexnet_kernels.lrn(x, *LRN_ARGS))
    assert torch.equal(ours_default, reference.lrn(x, *LRN_ARGS))
    assert torch.equal(process_default, reference.lrn(x, *LRN_ARGS))


def test_no_timing_while_a_cuda_graph_is_captured(autotuning: Path, monkeypatch) -> None:
    # The capture check is per device; here it is made to report a capture on the CPU.
    monkeypatch.setattr(autotune, "_capturing", lambda device: True)
    real_measure = _measure.measure
    _no_timing(monkeypatch)
    x = torch.randn(2, 8, 9, 9)
    with autotune.recording() as choices:
        ak.lrn(x, *LRN_ARGS)
    assert [c.backend for c in choices] == ["native"]  # the fixed choice, not kept
    assert not list(autotuning.iterdir())
    # Once a decision is on disk, a capture uses it.
    monkeypatch.setitem(autotune._RUNNERS, "lrn", _slowed({"native": (SLEEP_S, 0.0)}))
    monkeypatch.setattr(_measure, "measure", real_measure)
    monkeypatch.setattr(autotune, "_capturing", lambda device: False)
    autotune.clear(memory_only=True)
    ak.lrn(x, *LRN_ARGS)
    autotune.clear(memory_only=True)
    monkeypatch.setattr(autotune, "_capturing", lambda device: True)
    _no_timing(monkeypatch)
    with autotune.recording() as choices:
        ak.lrn(x, *LRN_ARGS)
    assert [c.backend for c in choices] == ["torch"]


def test_deterministic_mode_is_part_of_the_key(autotuning: Path) -> None:
    x = torch.randn(2, 8, 9, 9)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        ak.lrn(x, *LRN_ARGS)
    finally:
        torch.use_deterministic_algorithms(previous)
    entry = _entry("lrn")
    # Both CPU candidates are deterministic: both were timed.
    assert entry["key"]["deterministic"] and set(entry["median_ms"]) == {"native", "torch"}


# ---- caches ------------------------------------------------------------------------


def test_decisions_are_kept_in_memory(autotuning: Path, monkeypatch) -> None:
    x = torch.randn(2, 8, 9, 9)
    ak.lrn(x, *LRN_ARGS)
    path = autotune.cache_file()
    assert path.parent == autotuning and path.name.startswith("autotune-cpu")
    path.unlink()
    _no_timing(monkeypatch)
    ak.lrn(x, *LRN_ARGS)  # from memory: neither timed nor read from disk
    assert not path.exists()


def _python(code: str, cache: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter with autotuning on and ``cache`` as its folder."""
    environment = {**os.environ, _cache.ENV_DIR: str(cache), autotune.ENV_ENABLE: "1", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *argv],
                          env=environment, capture_output=True, text=True, timeout=300,
                          check=False)


_DECIDE = """
    import sys, torch
    import alexnet_kernels as ak
    from alexnet_kernels import autotune
    from alexnet_kernels.autotune import _measure
    if sys.argv[-1] == "no-timing":
        def fail(*args, **kwargs):
            raise AssertionError("timed again")
        _measure.measure = fail
    with autotune.recording() as choices:
        ak.lrn(torch.randn(2, 8, 9, 9), 5, 1e-4, 0.75, 2.0)
    print("winner", choices[0].backend)
"""


def test_a_second_process_reuses_the_decision_without_timing(tmp_path: Path) -> None:
    require_native_cpu()
    first = _python(_DECIDE, tmp_path)
    assert first.returncode == 0, first.stderr
    files = _cache.cache_files(tmp_path)
    assert len(files) == 1
    stored = json.loads(files[0].read_text())["entries"]
    assert len(stored) == 1
    second = _python(_DECIDE, tmp_path, "no-timing")
    assert second.returncode == 0, second.stderr
    assert first.stdout.split()[-1] == second.stdout.split()[-1] == next(
        iter(stored.values()))["winner"]


def test_the_environment_switch_off_in_a_process(tmp_path: Path) -> None:
    require_native_cpu()
    result = _python("""
        import torch
        import alexnet_kernels as ak
        from alexnet_kernels import autotune
        ak.lrn(torch.randn(2, 8, 9, 9), 5)
        print(autotune.enabled())
    """, tmp_path, **{autotune.ENV_ENABLE: "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"] and not list(tmp_path.iterdir())


WRITES = 150
_WRITER = """
    import sys, time
    from pathlib import Path
    from alexnet_kernels.autotune import _cache
    name, go, path, writes = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    identity = {"device": "test", "alexnet_kernels": "0", "torch": "0", "cuda": "none"}
    (go.parent / f"ready-{name}").touch()
    while not go.exists():
        time.sleep(0.001)
    for i in range(writes):
        _cache.store(path, identity, {f"{name}-{i}": {"op": "lrn", "winner": "native"}})
"""


def test_two_concurrent_writers_lose_no_entry(tmp_path: Path) -> None:
    go, path = tmp_path / "go", tmp_path / "autotune-test.json"
    script = textwrap.dedent(_WRITER)
    writers = [subprocess.Popen([sys.executable, "-c", script, name, str(go), str(path),
                                 str(WRITES)], stderr=subprocess.PIPE, text=True)
               for name in ("a", "b")]
    deadline = time.monotonic() + 300
    while not all((tmp_path / f"ready-{name}").exists() for name in "ab"):
        assert time.monotonic() < deadline and all(w.poll() is None for w in writers)
        time.sleep(0.01)
    go.touch()  # both write at once from here
    for writer in writers:
        _, stderr = writer.communicate(timeout=300)
        assert writer.returncode == 0, stderr
    entries = json.loads(path.read_text())["entries"]
    assert set(entries) == {f"{name}-{i}" for name in "ab" for i in range(WRITES)}
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize("content, problem", [
    ("{ this is not json", "not valid JSON"),
    (json.dumps({"format": "something else", "entries": {}}), "not an alexnet_kernels"),
    (json.dumps({"format": _cache.FORMAT, "identity": {"device": "another machine"},
                 "entries": {"k": {"winner": "triton"}}}), "written for"),
], ids=["corrupt", "other-format", "foreign"])
def test_an_unusable_file_is_ignored_with_one_warning_and_rewritten(
        autotuning: Path, content: str, problem: str) -> None:
    path = autotune.cache_file()
    path.write_text(content)
    with pytest.warns(UserWarning, match=problem) as caught:
        ak.lrn(torch.randn(2, 8, 9, 9), *LRN_ARGS)
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ak.lrn(torch.randn(3, 8, 9, 9), *LRN_ARGS)  # a second decision: no second warning
    document, unusable = _cache.read_document(path)
    assert unusable is None and len(document["entries"]) == 2
    assert document["identity"] == autotune._identity(torch.device("cpu"))


def test_an_unwritable_cache_keeps_decisions_in_memory(autotuning: Path, monkeypatch) -> None:
    blocked = autotuning / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setenv(_cache.ENV_DIR, str(blocked / "cache"))
    x = torch.randn(2, 8, 9, 9)
    with pytest.warns(UserWarning, match="kept in memory only"):
        ak.lrn(x, *LRN_ARGS)
    _no_timing(monkeypatch)
    ak.lrn(x, *LRN_ARGS)


def test_show_and_clear(autotuning: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(autotune._RUNNERS, "lrn", _slowed({"torch": (SLEEP_S, 0.0)}))
    ak.lrn(torch.randn(2, 8, 9, 9), *LRN_ARGS)
    assert autotune_main(["show"]) == 0
    shown = capsys.readouterr().out
    assert "1 file)" in shown and "lrn" in shown and "2x8x9x9 float32" in shown
    assert "native" in shown and "fastest" in shown
    assert autotune_main(["clear"]) == 0
    assert "deleted 1 file" in capsys.readouterr().out
    assert not autotune.cache_files()
    assert autotune_main(["show"]) == 0 and "(0 files)" in capsys.readouterr().out


# ---- torch.compile --------------------------------------------------------------------


def _small_net(device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        ak.nn.Conv2dReLU(3, 8, 3, padding=1), ak.nn.LocalResponseNorm(*LRN_ARGS),
        ak.nn.MaxPool2d(3, 2), ak.nn.Dropout(0.5)).eval().to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_decides_while_tracing(autotuning: Path, device: str) -> None:
    torch._dynamo.reset()
    net = _small_net(_on(device))
    x = torch.randn(2, 3, 16, 16, device=device, requires_grad=True)
    compiled = torch.compile(net, fullgraph=True)  # fullgraph: a graph break raises
    with autotune.recording() as traced:
        y_compiled = compiled(x)  # first: the decisions are made on fake tensors' shapes
    y_compiled.square().sum().backward()
    compiled_grads = [t.grad.clone() for t in (x, *net.parameters())]
    assert [c.op for c in traced] == ["conv2d_relu", "lrn", "max_pool2d", "dropout"]
    assert {e["op"] for e in autotune.stored_entries(device).values()} == {
        "conv2d_relu", "lrn", "max_pool2d"}
    for t in (x, *net.parameters()):
        t.grad = None
    with autotune.recording() as eager:
        y_eager = net(x)
    y_eager.square().sum().backward()
    assert [c.key for c in eager] == [c.key for c in traced]
    assert [c.backend for c in eager] == [c.backend for c in traced]
    torch.testing.assert_close(y_compiled, y_eager)
    for actual, expected in zip(compiled_grads, (x.grad, *(p.grad for p in net.parameters())),
                                strict=True):
        torch.testing.assert_close(actual, expected)


def test_torch_compile_with_a_dynamic_batch_decides_by_the_traced_size(autotuning: Path
                                                                      ) -> None:
    torch._dynamo.reset()
    # Max pooling specialises the batch size itself, so it is left out here.
    net = torch.nn.Sequential(ak.nn.Conv2dReLU(3, 8, 3, padding=1),
                              ak.nn.LocalResponseNorm(*LRN_ARGS)).eval()
    x = torch.randn(4, 3, 16, 16)
    torch._dynamo.mark_dynamic(x, 0)
    compiled = torch.compile(net, fullgraph=True)
    with torch.no_grad(), autotune.recording() as traced:
        compiled(x)
        y5 = compiled(torch.randn(5, 3, 16, 16))  # the same graph, the same choices
    assert [c.key[0][1][0][0] for c in traced] == [(4, 3, 16, 16), (4, 8, 16, 16)]
    assert y5.shape == (5, 8, 16, 16)


def test_choose_is_marked_as_the_public_decorator_marks() -> None:
    def marked() -> int:
        return 0
    torch.compiler.assume_constant_result(marked)
    assert marked.__dict__ == {"_dynamo_marked_constant": True}
    assert autotune.choose._dynamo_marked_constant is True


def test_importing_the_package_imports_neither_dynamo_nor_triton(tmp_path: Path) -> None:
    result = _python("""
        import sys
        import alexnet_kernels
        print(sorted(m for m in ("torch._dynamo", "triton", "triton.language")
                     if m in sys.modules))
    """, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]"]


# ---- the torch candidate of conv2d_relu ------------------------------------------------


def test_the_torch_convolution_candidate_is_eagers_result() -> None:
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, requires_grad=True)
    b = torch.randn(6, requires_grad=True)
    arguments = ((2, 1), (1, 1), (1, 1), 2)
    y = reference.conv2d_relu_fast(x, w, b, *arguments)
    expected = F.relu(F.conv2d(x, w, b, *arguments))
    assert torch.equal(y, expected)
    grads = torch.autograd.grad(y, (x, w, b), torch.ones_like(y))
    expected_grads = torch.autograd.grad(expected, (x, w, b), torch.ones_like(y))
    for actual, wanted in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(actual, wanted, rtol=0, atol=0)


# ---- CUDA only (run where a GPU is present) -------------------------------------------


def test_cuda_dropout_keeps_the_native_mask(autotuning: Path) -> None:
    x = torch.randn(32, 9216, device=_on("cuda"))
    torch.manual_seed(5)
    ours = ak.dropout(x, 0.5)
    torch.manual_seed(5)
    assert torch.equal(ours, ak.dropout(x, 0.5, backend="native"))


def test_cuda_graph_capture_uses_the_cached_choice(autotuning: Path, monkeypatch) -> None:
    x = torch.randn(8, 96, 27, 27, device=_on("cuda"))
    decided = ak.lrn(x, *LRN_ARGS)  # decides before the capture
    _no_timing(monkeypatch)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = ak.lrn(x, *LRN_ARGS)
        fresh = ak.lrn(x[:4], *LRN_ARGS)  # a new key: the fixed choice, nothing timed
    graph.replay()
    torch.testing.assert_close(captured, decided)
    assert fresh.shape == (4, 96, 27, 27)


def test_cuda_cudnn_fused_forward_matches_eager() -> None:
    x = torch.randn(4, 64, 27, 27, device=_on("cuda"))
    w = torch.randn(192, 64, 5, 5, device="cuda") * 0.05
    b = torch.randn(192, device="cuda")
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        y = reference.conv2d_relu_fast(x, w, b, (1, 1), (2, 2), (1, 1), 1)
        torch.testing.assert_close(y, F.relu(F.conv2d(x, w, b, 1, 2)), rtol=1e-4, atol=1e-4)
