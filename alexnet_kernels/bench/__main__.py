"""``python -m alexnet_kernels.bench``: the main job (see alexnet_kernels.bench.job)."""

from alexnet_kernels.bench.job import main

raise SystemExit(main())
