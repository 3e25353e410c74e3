"""``timetravel check RUN``: verify every file of a run (checksums, NaN/inf, shapes) and its derived folders."""

from __future__ import annotations

import argparse

HELP = "verify a run: every array against its checksum, NaN/inf, shapes; the projection, features and feedback log"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run store directory")


def run(args: argparse.Namespace) -> int:
    from timetravel.check import check_run

    report = check_run(args.run)
    for line in report.lines:
        print(line)
    return 0 if report.ok else 1
