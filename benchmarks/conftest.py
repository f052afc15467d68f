"""The autotuner's decisions of a benchmark session go to a temporary folder: each run
decides on this machine as it is now, and the user's cache is neither read nor written."""

from __future__ import annotations

import os
import tempfile

_SESSION_CACHE = tempfile.TemporaryDirectory(prefix="alexnet-kernels-bench-cache-")
os.environ["ALEXNET_KERNELS_CACHE_DIR"] = _SESSION_CACHE.name
