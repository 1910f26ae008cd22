"""``python -m tdmi.gpukit``: the GPU evidence kit (see :mod:`tdmi.gpukit`)."""

import sys

from tdmi.gpukit.cli import main

if __name__ == "__main__":
    sys.exit(main())
