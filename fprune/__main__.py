"""``python -m fprune``: the same command line as the ``fprune`` console script."""

import sys

from fprune.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
