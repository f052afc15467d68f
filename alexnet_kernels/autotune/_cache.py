"""The autotuner's decisions on disk: one JSON file per device and software versions.

Location: ``$ALEXNET_KERNELS_CACHE_DIR``, default ``~/.cache/alexnet_kernels``;
file ``autotune-<device>-ak<version>-torch<version>-cuda<version>.json``::

    {"format": "alexnet_kernels.autotune/1",
     "identity": {"device": ..., "alexnet_kernels": ..., "torch": ..., "cuda": ...},
     "entries": {"<key>": {"op": ..., "winner": ..., "median_ms": {...}, ...}}}

Several processes may share a file (DDP ranks, DataLoader workers, runs one
after another): a write takes an exclusive lock on ``<file>.lock`` (where the
OS has ``fcntl``), merges its entries into what is on disk and replaces the file
atomically (a temporary file in the same folder, then ``os.replace``), so a
reader sees the old file or the new one, never half of one, and no writer
drops another's entries. A file that is not valid JSON, or written for another
format, device or version ("foreign"), is ignored with one warning per process
and rewritten at the next decision.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from alexnet_kernels._files import write_atomically

FORMAT = "alexnet_kernels.autotune/1"
ENV_DIR = "ALEXNET_KERNELS_CACHE_DIR"
FILE_PREFIX = "autotune-"

Entries = dict[str, dict[str, object]]

# Files this process has warned about (one warning each).
_warned: set[str] = set()


def cache_dir() -> Path:
    """``$ALEXNET_KERNELS_CACHE_DIR``, else ``~/.cache/alexnet_kernels``."""
    configured = os.environ.get(ENV_DIR)
    return Path(configured).expanduser() if configured else (
        Path.home() / ".cache" / "alexnet_kernels")


def file_for(identity: dict[str, str]) -> Path:
    """The cache file of one device and software versions, in :func:`cache_dir`."""
    parts = [identity["device"], f"ak{identity['alexnet_kernels']}",
             f"torch{identity['torch']}", f"cuda{identity['cuda']}"]
    name = "-".join(re.sub(r"[^A-Za-z0-9.+]+", "_", part).strip("_") for part in parts)
    return cache_dir() / f"{FILE_PREFIX}{name}.json"


def cache_files(directory: Path | None = None) -> list[Path]:
    """The autotune cache files in ``directory`` (default :func:`cache_dir`), sorted."""
    directory = directory or cache_dir()
    return sorted(directory.glob(f"{FILE_PREFIX}*.json")) if directory.is_dir() else []


def _warn_once(path: Path, message: str) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        warnings.warn(f"alexnet_kernels autotune cache {path}: {message}", stacklevel=4)


def read_document(path: Path) -> tuple[dict | None, str | None]:
    """(the file's JSON document, None), or (None, why it is unusable); (None, None) when
    the file does not exist."""
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as error:
        return None, f"unreadable ({error})"
    try:
        document = json.loads(text)
    except ValueError as error:
        return None, f"not valid JSON ({error})"
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return None, f"not an {FORMAT} file"
    entries = document.get("entries")
    if not isinstance(entries, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("winner"), str) for e in entries.values()):
        return None, "malformed entries"
    return document, None


def load(path: Path, identity: dict[str, str]) -> Entries:
    """The entries of ``path`` when it is a valid file for ``identity``, else {} (with one
    warning per file and process when the file exists but is corrupt or foreign)."""
    document, problem = read_document(path)
    if document is not None and document.get("identity") != identity:
        document, problem = None, (f"written for {document.get('identity')}, "
                                   f"not {identity}")
    if problem is not None:
        _warn_once(path, f"ignored: {problem}; it is rewritten at the next decision")
    return document["entries"] if document is not None else {}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created if needed) for the block, where the OS has
    fcntl; elsewhere no lock (the atomic replace still keeps the file whole)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _dump(document: dict, stream: IO) -> None:
    json.dump(document, stream, indent=1, sort_keys=True)
    stream.write("\n")


def store(path: Path, identity: dict[str, str], entries: Entries) -> None:
    """Adds ``entries`` to the file (see the module docstring); on an OS error (a
    read-only home, a full disk) warns once and keeps the decisions in memory only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_suffix(".lock")):
            merged = {**load(path, identity), **entries}
            write_atomically(path, functools.partial(
                _dump, {"format": FORMAT, "identity": identity, "entries": merged}))
    except OSError as error:
        _warn_once(path, f"not written ({error}); decisions are kept in memory only")


def clear(directory: Path | None = None) -> list[Path]:
    """Deletes the autotune cache files (and their lock files); returns the files deleted."""
    removed = []
    for path in cache_files(directory):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
        with contextlib.suppress(FileNotFoundError):
            path.with_suffix(".lock").unlink()
    return removed
