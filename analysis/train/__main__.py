"""``python -m analysis.train``: the trainer's command line (``analysis.train.cli``)."""

from analysis.train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
