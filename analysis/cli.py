"""The ``scale-lab`` command: one subcommand per module, each also runnable as ``python -m``.

scale-lab train      -> python -m analysis.training
scale-lab reproduce  -> python -m analysis.reproduce
scale-lab figures    -> python -m analysis.results.figures
scale-lab memory     -> python -m analysis.results.memory
scale-lab advise     -> python -m analysis.advice
scale-lab bench      -> python -m analysis.bench
scale-lab notebooks  -> python -m analysis.notebooks
scale-lab setup      -> python -m toy_models.corpus (builds the offline corpus, says where)
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": "analysis.training",
    "reproduce": "analysis.reproduce",
    "figures": "analysis.results.figures",
    "memory": "analysis.results.memory",
    "advise": "analysis.advice.cli",
    "bench": "analysis.bench",
    "notebooks": "analysis.notebooks",
    "setup": "toy_models.corpus",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``scale-lab <command> ...`` to the command's module ``main``; its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: scale-lab {" + ",".join(COMMANDS) + "} [options]\n\n" + __doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command])
    return module.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
