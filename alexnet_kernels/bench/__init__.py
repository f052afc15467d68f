"""The main job (``python -m alexnet_kernels.bench``) and what the benchmark suite in
``benchmarks/`` shares with it.

* ``cases``: the op and network cases at AlexNet's shapes, their inputs, the
  float64 accuracy check and the byte model of each kernel sequence;
* ``timing``: synchronized forward / forward+backward calls, rounds interleaved
  round-robin between providers;
* ``report``: the tables, results.json / results.md and the speed-up plot;
* ``job``: the main job itself (``main``, ``our_backends``).
"""

from alexnet_kernels.bench.job import main, our_backends

__all__ = ["main", "our_backends"]
