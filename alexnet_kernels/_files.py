"""Writing a file so that readers see the old version or the new one, never a part."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomically(path: Path, write: Callable[[IO], object], binary: bool = False) -> None:
    """Calls ``write(stream)`` on a temporary file next to ``path``, forces it to disk and
    renames it over ``path``. A failure or a crash while writing leaves the previous file
    as it was, and no temporary file behind (short of a crash)."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                         dir=path.parent)
    try:
        with os.fdopen(handle, "wb" if binary else "w") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
