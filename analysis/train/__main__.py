"""``python -m analysis.train``: the old name of ``python -m analysis.training`` (it warns)."""

import sys

from analysis.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
