"""``python -m embedlab``: the same command line, and what torchrun launches (``torchrun ... -m embedlab movies``)."""

import sys

from embedlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
