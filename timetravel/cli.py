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

COMMANDS = ("train", "project", "detect", "serve", "export", "check", "fix", "demo", "bench")


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
    parser.add_argument("-q", "--quiet", action="store_true", help="only log warnings and errors, no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    # the same flags after the sub-command (`timetravel detect RUN -q`); SUPPRESS keeps the top level's value
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only log warnings and errors, no progress bars")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _available_commands().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, parents=[common])
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
    except OSError as exc:  # a file the user named cannot be read or written: say which and why
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"timetravel {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"timetravel {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line for the user, the traceback with --debug
        if args.debug:
            raise
        print(f"timetravel {args.command}: internal error ({type(exc).__name__}: {exc}); this is a bug in "
              "timetravel: rerun with --debug for the traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
