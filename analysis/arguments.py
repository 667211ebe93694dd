"""The command lines' argument parser: one line per error, negative numbers as values.

``argparse`` prints a usage block before its error, and reads ``--lr -1e-3`` as a missing
value followed by an unknown option (its negative-number test does not cover exponents).
``Parser`` prints ``error: <what>; see <prog> --help`` and exits 2, and hands a value that
parses as a number to the option before it, so ``--lr -1e-3`` reaches the lr check.
Imports nothing of ours: every command line of ``analysis`` uses it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def output_file(text: str) -> Path:
    """An argument ``type`` for a file to write: not a directory, in a directory that exists."""
    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a file; give a file path")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"the directory of {text!r} does not exist")
    return path


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` with one-line errors and negative numbers as values."""

    def error(self, message: str):
        print(f"error: {message}; see {self.prog} --help", file=sys.stderr)
        raise SystemExit(2)

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        takes_value = {
            opt
            for action in self._actions
            if action.nargs is None
            and action.option_strings
            and not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
            for opt in action.option_strings
        }
        joined, i = [], 0
        while i < len(args):
            if (
                args[i] in takes_value
                and i + 1 < len(args)
                and args[i + 1].startswith("-")
                and _is_number(args[i + 1])
            ):
                joined.append(f"{args[i]}={args[i + 1]}")
                i += 2
            else:
                joined.append(args[i])
                i += 1
        return super().parse_known_args(joined, namespace)
