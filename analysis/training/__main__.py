"""``python -m analysis.training``: the trainer's command line (``analysis.training.cli``)."""

from analysis.training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
