"""``dynface`` command line: one sub-command module per job, registered here.

Each module in ``COMMANDS`` exposes ``register(subparsers)``, which adds its parser and sets
``func`` (a callable ``args -> int`` exit code). Heavy imports happen inside those functions, so
``dynface --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = [
    "dynface.commands.restore",
    "dynface.commands.report",
    "dynface.commands.degrade",
    "dynface.commands.evaluate",
    "dynface.commands.train",
    "dynface.commands.dsst",
    "dynface.commands.sample",
    "dynface.commands.serve",
]


class _Parser(argparse.ArgumentParser):
    """A usage error is its reason and where the options are, not the whole usage first: ``restore``'s is 27 lines,
    with the reason below them (failure audit). Sub-command parsers are of this class too."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n(all options: {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dynface", description="DynFaceRestore: diffusion-guided blind face restoration (offline).")
    p.add_argument("--version", action="version", version=f"%(prog)s {importlib.import_module('dynface').__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMANDS:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a command whose module is not there yet
            if e.name == mod:
                continue
            raise
        m.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for the records (evaluate's JSON)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    rc = None
    try:
        rc = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is caught below
        return rc
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dynface report OUT | head`: the reader left early; no traceback (as `ls | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor an error from Python's flush at exit
        return 1 if rc is None else rc


if __name__ == "__main__":
    sys.exit(main())
