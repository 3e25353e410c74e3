"""The ``timetravel`` command line: one entry point, one module per sub-command.

Each sub-command lives in ``timetravel/commands/<name>.py`` and defines ``HELP``
(one line), ``add_arguments(parser)`` and ``run(args) -> int``. Command modules
import only the standard library at module level, so ``timetravel --help``
and the server start stay fast; heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from timetravel.errors import TimetravelError

COMMANDS = ("train", "project", "detect", "serve", "export", "fix", "demo", "bench")


def _available_commands() -> dict[str, object]:
    modules = {}
    for name in COMMANDS:
        try:
            modules[name] = importlib.import_module(f"timetravel.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"timetravel.commands.{name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``timetravel`` command."""
    parser = argparse.ArgumentParser(
        prog="timetravel", description="A time-travelling debugger for deep classifiers."
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only log warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available_commands().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args._run(args) or 0)
    except TimetravelError as exc:
        print(f"timetravel {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"timetravel {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
