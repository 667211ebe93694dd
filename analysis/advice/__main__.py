"""``python -m analysis.advice``: ``scale-lab advise`` (``analysis.advice.cli``)."""

from analysis.advice.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
