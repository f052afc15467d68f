"""The autotuner's decisions from the command line.

    python -m alexnet_kernels.autotune show      # every decision in the cache folder
    python -m alexnet_kernels.autotune clear     # delete them (the next calls measure again)
    python -m alexnet_kernels.autotune alexnet [--batch N] [--dtype fp32|bf16]
                                               [--channels-last] [--device cpu|cuda]

``alexnet`` runs a training step (forward and backward) and an inference
forward of the ``alexnet`` and ``alexnet_paper`` networks with autotuning on,
which makes (or reads) the decision for every layer, and prints them in layer
order with each candidate's time.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

import torch
from rich.console import Console
from rich.table import Table

from alexnet_kernels import autotune
from alexnet_kernels.autotune import _cache

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_INPUT_SIDE = {"alexnet": 224, "alexnet_paper": 227}


def _times(entry: dict) -> str:
    """"native 7.97 ±0.08 ms, torch 80.0 ms (pruned)" from one cache entry."""
    medians, spreads = entry.get("median_ms", {}), entry.get("iqr_ms", {})
    pruned = set(entry.get("pruned", []))
    parts = [f"{c} {m:#.3g} ±{spreads.get(c, 0.0):.2g} ms" + (" (pruned)" if c in pruned else "")
             for c, m in sorted(medians.items(), key=lambda item: item[1])]
    parts += [f"{c}: {error}" for c, error in entry.get("errors", {}).items()]
    return ", ".join(parts)


def _entry_row(entry: dict) -> list[str]:
    key = entry.get("key", {})
    return [str(entry.get("op", "?")), str(key.get("direction", "?")),
            "; ".join(key.get("inputs", [])), str(key.get("args", "")),
            " ".join(key.get("device", [])) + (" deterministic" if key.get("deterministic")
                                               else ""),
            _times(entry), str(entry["winner"]), str(entry.get("reason", ""))]


_COLUMNS = ("op", "direction", "inputs", "args", "device", "candidates (median ±IQR)",
            "winner", "why")


def show(console: Console) -> int:
    """Prints every decision of every cache file in the cache folder."""
    files = _cache.cache_files()
    console.print(f"autotuning {'on' if autotune.enabled() else 'off'}; cache folder "
                  f"{_cache.cache_dir()} ({len(files)} file{'s' * (len(files) != 1)})")
    for path in files:
        document, problem = _cache.read_document(path)
        if document is None:
            console.print(f"{path}: unusable ({problem}); rewritten at the next decision")
            continue
        table = Table(title=f"{path.name}: {json.dumps(document.get('identity'))}")
        for column in _COLUMNS:
            table.add_column(column)
        for entry in document["entries"].values():
            table.add_row(*_entry_row(entry))
        console.print(table)
    return 0


def clear(console: Console) -> int:
    removed = autotune.clear()
    console.print(f"deleted {len(removed)} file{'s' * (len(removed) != 1)} from "
                  f"{_cache.cache_dir()}")
    return 0


def _network_calls(name: str, device: torch.device, dtype: torch.dtype, batch: int,
                   channels_last: bool) -> list[autotune.Choice]:
    """The choices of one training step and one inference forward of network ``name``."""
    from alexnet_kernels import models

    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = getattr(models, name)().to(device=device, dtype=dtype, memory_format=memory_format)
    side = _INPUT_SIDE[name]
    images = torch.randn(batch, 3, side, side, device=device, dtype=dtype).contiguous(
        memory_format=memory_format)
    with autotune.recording() as choices:
        net.train()(images).float().square().mean().backward()
        with torch.no_grad():
            net.eval()(images)
    return choices


def alexnet(console: Console, device: torch.device, dtype: torch.dtype, batch: int,
            channels_last: bool) -> int:
    """Makes (or reads) the decision of every AlexNet layer and prints them in order."""
    autotune.set_autotune(True)
    for name in _INPUT_SIDE:
        table = Table(title=f"{name}, batch {batch}, {dtype}, "
                            f"{'channels_last' if channels_last else 'contiguous'}, {device}")
        for column in ("call", *_COLUMNS):
            table.add_column(column)
        choices = _network_calls(name, device, dtype, batch, channels_last)
        entries = autotune.stored_entries(device)
        for index, choice in enumerate(choices, 1):
            entry = entries.get(autotune.key_text(choice.key))
            if entry is None:  # a single candidate: nothing was measured
                entry = {"op": choice.op, "key": autotune.describe_key(choice.key),
                         "winner": choice.backend, "reason": "the only candidate"}
            table.add_row(str(index), *_entry_row(entry))
        console.print(table)
    console.print(f"decisions in {autotune.cache_file(device)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alexnet_kernels.autotune",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("show", help="print every cached decision")
    commands.add_parser("clear", help="delete the cached decisions")
    tune = commands.add_parser("alexnet", help="decide and print every AlexNet layer's choice")
    tune.add_argument("--batch", type=int, default=32)
    tune.add_argument("--dtype", choices=sorted(_DTYPES), default="fp32")
    tune.add_argument("--channels-last", action="store_true")
    tune.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    console = Console(width=None if Console().is_terminal else 200)
    if args.command == "show":
        return show(console)
    if args.command == "clear":
        return clear(console)
    return alexnet(console, torch.device(args.device), _DTYPES[args.dtype], args.batch,
                   args.channels_last)


if __name__ == "__main__":
    raise SystemExit(main())
