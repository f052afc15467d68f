"""Train AlexNet on alexnet-kernels: the same as ``python -m alexnet_kernels.train``.

    python examples/train.py --model cifar --epochs 5            # bundled digits, no download
    python examples/train.py --model paper --data /path/to/imagenet --backend torch

See ``--help`` and the README's *Training* section.
"""

import sys

from alexnet_kernels.train import main

if __name__ == "__main__":
    sys.exit(main())
