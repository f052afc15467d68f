"""``backend="auto"`` by measurement: the fastest implementation of each call, per shape.

The first call of a key times every candidate implementation on fresh tensors
of the call's shapes (``_measure``) and keeps the winner in memory and on disk
(``_cache``); every later call of that key, in this process or a later one,
only looks it up.

Key: the op; per tensor argument its shape, dtype, memory format (contiguous,
channels_last, channels_last_3d; other strides count as contiguous, which the
compiled kernels copy them to) and whether it wants a gradient; the op's other
arguments; the device (CPU: the instruction set of our CPU kernels and the
number of torch threads; CUDA: the GPU's name and compute capability, and
whether TF32 convolutions are allowed); whether deterministic algorithms are
required. The disk file is per device and library / torch / CUDA versions.

Candidates: the compiled kernel (``native``) where it exists, Triton on CUDA
tensors when triton is installed, and PyTorch's own implementation (``torch``),
with two exceptions:

* dropout chooses only among implementations that draw the same mask as the
  fixed choice (native and Triton share one Philox convention, PyTorch's own
  dropout draws another), so the choice never changes which elements drop;
* under ``torch.use_deterministic_algorithms(True)``, candidates that are not
  deterministic are removed (:data:`NONDETERMINISTIC`). Our kernels are all
  deterministic (no atomics; fixed-order reductions). PyTorch's convolution
  and max-pool switch to deterministic algorithms themselves; its LRN backward
  on CUDA (``avg_pool3d_backward``) has none and would raise, so it goes.

No timing happens with autotuning off (``ALEXNET_KERNELS_AUTOTUNE=0``, read at
import, or :func:`set_autotune`), for an explicit ``backend=``, or while a CUDA
graph is being captured (the cached decision is used, else the fixed choice).
Under ``torch.compile`` the choice is made while Dynamo traces the op's front
end (on fresh real tensors) and becomes a constant of the graph: no graph
break, and the graph keeps it until it is recompiled. Symbolic sizes (dynamic
shapes) are read by their hints, the sizes they were traced with, as
inductor's own autotuning does.

``python -m alexnet_kernels.autotune show | clear | alexnet`` lists the
decisions on disk, deletes them, or makes and prints them for every AlexNet
layer.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.fx.experimental.symbolic_shapes import optimization_hint

from alexnet_kernels import _extension
from alexnet_kernels.autotune import _cache, _measure
from alexnet_kernels.autotune._cache import cache_dir, cache_files
from alexnet_kernels.ops.layout import output_memory_format

__all__ = ["ENV_ENABLE", "NONDETERMINISTIC", "Choice", "cache_dir", "cache_file",
           "cache_files", "call_key", "candidates", "choose", "clear", "describe_choices",
           "describe_key", "enabled", "key_text", "recording", "set_autotune",
           "stored_entries"]

ENV_ENABLE = "ALEXNET_KERNELS_AUTOTUNE"
_OFF = ("0", "false", "no", "off")
_ON = ("", "1", "true", "yes", "on")

# (op, device type, backend, with a gradient) that torch.use_deterministic_algorithms excludes.
NONDETERMINISTIC = frozenset({("lrn", "cuda", "torch", True)})
# Per op whose candidates must give identical results: backend -> its family.
_SAME_RESULT_FAMILIES = {"dropout": {"native": "philox", "triton": "philox", "torch": "pytorch"}}

Key = tuple  # (op, tensor specs, args, needs a gradient), see call_key
FullKey = tuple  # (Key, device key, deterministic)


def _enabled_from_environment() -> bool:
    value = os.environ.get(ENV_ENABLE, "1").strip().lower()
    if value in _OFF or value in _ON:
        return value not in _OFF
    warnings.warn(f"{ENV_ENABLE}={value!r} is neither on ({'/'.join(_ON[1:])}) nor off "
                  f"({'/'.join(_OFF)}); autotuning stays on", stacklevel=2)
    return True


_enabled = _enabled_from_environment()
# Decisions of this process: full key -> backend.
_memory: dict[FullKey, str] = {}
# Lists that recording() blocks collect choices into.
_recorders: list[list[Choice]] = []
# torch.device -> the part of its key that cannot change (reading device.type is slow).
_device_prefixes: dict[torch.device, tuple] = {}
_CONTIGUOUS = torch.contiguous_format


def enabled() -> bool:
    """Whether ``backend="auto"`` picks by measurement (else the fixed choice)."""
    return _enabled


def set_autotune(on: bool) -> None:
    """Turns autotuning on or off in this process (the default comes from
    ``ALEXNET_KERNELS_AUTOTUNE``). A graph compiled before holds the choices made when
    it was traced, unless Dynamo recompiles it for the change."""
    global _enabled
    _enabled = bool(on)


@dataclass(frozen=True)
class Choice:
    """One resolution of ``backend="auto"``: the op, its full key and the backend."""

    op: str
    key: FullKey
    backend: str


@contextlib.contextmanager
def recording() -> Iterator[list[Choice]]:
    """``with recording() as choices:`` collects every autotuned choice made in the block."""
    choices: list[Choice] = []
    _recorders.append(choices)
    try:
        yield choices
    finally:
        # By identity: list.remove would take the first *equal* list, another block's.
        _recorders[:] = [r for r in _recorders if r is not choices]


def describe_choices(choices: Sequence[Choice]) -> str:
    """What ran, compactly: "native", or per op "conv2d_relu: torch; lrn: native"."""
    by_op: dict[str, set[str]] = {}
    for choice in choices:
        by_op.setdefault(choice.op, set()).add(choice.backend)
    if len(by_op) == 1:
        return "/".join(sorted(next(iter(by_op.values()))))
    return "; ".join(f"{op}: {'/'.join(sorted(b))}" for op, b in by_op.items()) or "-"


def _hint(value: object) -> object:
    """An int argument's value (a symbolic one's hint), tuples element-wise."""
    if isinstance(value, tuple):
        return tuple(_hint(v) for v in value)
    return optimization_hint(value) if type(value) is int else value


def call_key(op: str, tensors: Sequence[torch.Tensor | None], args: tuple) -> Key:
    """The part of a call's key that its arguments give (see the module docstring).

    Cheap (tuples of what the tensors already hold; strings are built only for a
    new key), and traceable by Dynamo, which must see only constants in the
    result: sizes of a traced call are read by their hints.
    """
    grad = torch.is_grad_enabled()
    compiling = torch.compiler.is_compiling()
    specs = []
    needs_grad = False
    for t in tensors:
        if t is None:
            specs.append(None)
            continue
        wants_grad = grad and t.requires_grad
        needs_grad = needs_grad or wants_grad
        # torch.Size is a tuple: equal keys hash alike whichever of the two a key holds.
        shape = tuple(optimization_hint(s) for s in t.shape) if compiling else t.shape
        # Below 4-D every layout counts as contiguous (see output_memory_format).
        memory_format = (_CONTIGUOUS if len(shape) < 4 or t.is_contiguous()
                         else output_memory_format(t))
        specs.append((shape, t.dtype, memory_format, wants_grad))
    return (op, tuple(specs), _hint(args) if compiling else args, needs_grad)


@functools.cache
def _gpu(index: int) -> tuple[str, str]:
    major, minor = torch.cuda.get_device_capability(index)
    return torch.cuda.get_device_name(index), f"sm_{major}{minor}"


def _device_prefix(device: torch.device) -> tuple:
    if device.type != "cuda":
        return (device.type,)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return ("cuda", *_gpu(index))


def _device_key(device: torch.device) -> tuple:
    """What of the device and its settings a decision depends on: the GPU and whether
    TF32 convolutions are allowed; the CPU kernels' instruction set and torch's threads."""
    prefix = _device_prefixes.get(device)
    if prefix is None:
        prefix = _device_prefix(device)
        if device.type != "cuda" or device.index is not None:  # "cuda" follows set_device
            _device_prefixes[device] = prefix
    if prefix[0] == "cuda":
        return (*prefix, torch.backends.cudnn.allow_tf32)
    capability = _extension.cpu_capability() if _extension.is_loaded() else "-"
    return (*prefix, capability, torch.get_num_threads())


def choose(op: str, device: torch.device, fixed: str, implemented: tuple[str, ...],
           native_devices: tuple[str, ...] | None, key: Key) -> str:
    """The backend for a call of ``op`` with key ``key`` (from :func:`call_key`):
    remembered, read from disk, or measured now (see the module docstring).

    ``fixed`` is the choice without autotuning; ``implemented`` and
    ``native_devices`` are the op's, as ``backends.resolve`` takes them. Under
    torch.compile Dynamo runs this eagerly and bakes the result into the graph.
    """
    full = (key, _device_key(device), torch.are_deterministic_algorithms_enabled())
    try:
        backend = _memory.get(full)
    except TypeError:  # symbolic sizes outside torch.compile (fake tensors): use their hints
        return choose(op, device, fixed, implemented, native_devices,
                      (key[0], _hint_specs(key[1]), _hint(key[2]), key[3]))
    if backend is None:
        backend = _decide(op, device, fixed, implemented, native_devices, full)
    for choices in _recorders:
        choices.append(Choice(op, full, backend))
    return backend


# What torch.compiler.assume_constant_result(choose) does (Dynamo calls a marked
# function eagerly and bakes its result into the graph), without importing Dynamo,
# and Triton with it, when alexnet_kernels is imported: that would cost a second at
# every import and fix Triton's mode before TRITON_INTERPRET can be set.
# tests/test_autotune.py checks that the public decorator still sets this attribute.
choose._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _hint_specs(specs: tuple) -> tuple:
    return tuple(None if s is None else (_hint(tuple(s[0])), *s[1:]) for s in specs)


def candidates(op: str, device_type: str, fixed: str, usable: Sequence[str],
               deterministic: bool, needs_grad: bool) -> tuple[str, ...]:
    """The candidates among ``usable`` for one call, simplest first (see the module
    docstring for the dropout and determinism rules)."""
    families = _SAME_RESULT_FAMILIES.get(op)
    found = [b for b in usable
             if (families is None or families[b] == families[fixed])
             and not (deterministic and (op, device_type, b, needs_grad) in NONDETERMINISTIC)]
    return tuple(sorted(found, key=_measure.SIMPLICITY.index))


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _identity(device: torch.device) -> dict[str, str]:
    import alexnet_kernels
    from alexnet_kernels.env_report import cpu_name

    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        name = " ".join(_gpu(index))
    else:
        name = f"{device.type} {cpu_name()}"
    return {"device": name, "alexnet_kernels": alexnet_kernels.__version__,
            "torch": torch.__version__, "cuda": torch.version.cuda or "none"}


def cache_file(device: torch.device | str = "cpu") -> Path:
    """The file that holds the decisions for ``device``."""
    return _cache.file_for(_identity(torch.device(device)))


def stored_entries(device: torch.device | str = "cpu") -> _cache.Entries:
    """The decisions on disk for ``device``: key text (:func:`key_text`) -> entry."""
    device = torch.device(device)
    identity = _identity(device)
    return _cache.load(_cache.file_for(identity), identity)


def _decide(op: str, device: torch.device, fixed: str, implemented: tuple[str, ...],
            native_devices: tuple[str, ...] | None, full: FullKey) -> str:
    """A key seen for the first time in this process: from disk, else measured."""
    from alexnet_kernels import backends

    key, _, deterministic = full
    found = candidates(op, device.type, fixed,
                       backends.usable(device.type, implemented, native_devices),
                       deterministic, key[3])
    if len(found) < 2:
        _memory[full] = found[0] if found else fixed
        return _memory[full]
    identity = _identity(device)
    path, text = _cache.file_for(identity), key_text(full)
    stored = _cache.load(path, identity).get(text)
    if stored is not None and stored["winner"] in found:
        _memory[full] = str(stored["winner"])
        return _memory[full]
    if _capturing(device):  # nothing may run that is not captured: no timing now
        return fixed
    measurement = _measure.measure(_RUNNERS[op], found, key[1], key[2], device, key[3])
    if not measurement.samples_ms:  # nothing ran (the call itself will raise)
        _memory[full] = fixed
        return fixed
    winner, reason = _measure.decide(measurement.samples_ms)
    _memory[full] = winner
    _cache.store(path, identity, {text: _entry(op, full, measurement, winner, reason)})
    return winner


def _entry(op: str, full: FullKey, measurement: _measure.Measurement, winner: str,
           reason: str) -> dict[str, object]:
    samples = measurement.samples_ms
    return {
        "op": op, "key": describe_key(full), "winner": winner, "reason": reason,
        "median_ms": {c: _measure.median(s) for c, s in samples.items()},
        "iqr_ms": {c: _measure.iqr(s) for c, s in samples.items()},
        "samples": {c: len(s) for c, s in samples.items()},
        "calls_per_sample": measurement.calls_per_sample,
        "pruned": measurement.pruned, "errors": measurement.errors,
        "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _spec_text(spec: tuple | None) -> str:
    if spec is None:
        return "none"
    shape, dtype, memory_format, wants_grad = spec
    layout = str(memory_format).removeprefix("torch.").removesuffix("_format")
    return (f"{'x'.join(map(str, shape)) or 'scalar'} {str(dtype).removeprefix('torch.')} "
            f"{layout}{' grad' if wants_grad else ''}")


def key_text(full: FullKey) -> str:
    """The stable text of a full key: its entry's name in the cache file."""
    (op, specs, args, needs_grad), device_key, deterministic = full
    specs = tuple(None if s is None else (tuple(s[0]), *s[1:]) for s in specs)
    return repr(((op, specs, args, needs_grad), device_key, deterministic))


def describe_key(full: FullKey) -> dict[str, object]:
    """A full key as JSON-able fields, for the cache file and ``show``."""
    (op, specs, args, needs_grad), device_key, deterministic = full
    return {"op": op, "inputs": [_spec_text(s) for s in specs], "args": repr(args),
            "direction": "forward+backward" if needs_grad else "forward",
            "device": list(map(str, device_key)), "deterministic": deterministic}


def clear(memory_only: bool = False) -> list[Path]:
    """Forgets this process's decisions and, unless ``memory_only``, deletes the cache
    files in :func:`cache_dir`; returns the files deleted."""
    _memory.clear()
    return [] if memory_only else _cache.clear()


def _run(op: str, backend: str, tensors: list, args: tuple, generator: torch.Generator):
    """Calls op's front end (``alexnet_kernels.ops.<op>``) on ``backend`` with the
    arguments a call key holds; dropout draws from ``generator``, so that timing never
    advances the caller's random stream."""
    from alexnet_kernels import ops

    extra = {"generator": generator} if op == "dropout" else {}
    return getattr(ops, op)(*tensors, *args, backend=backend, **extra)


# How each op's candidates are called while timing (tests replace entries).
_RUNNERS: dict[str, _measure.Runner] = {
    op: functools.partial(_run, op) for op in ("conv2d_relu", "lrn", "max_pool2d", "dropout")}
