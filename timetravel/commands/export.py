"""``timetravel export RUN``: the accepted samples of a review as CSV or JSON."""

from __future__ import annotations

import argparse
import sys

HELP = "export the accepted samples (index, decision, given, suggested and corrected label) as CSV or JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the run directory (holding run.json and feedback.jsonl)")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default: csv)")
    parser.add_argument("--out", metavar="FILE", help="write to FILE (atomically) instead of standard output")


def run(args: argparse.Namespace) -> int:
    from timetravel.export import accepted_records, detector_suggestions, render, write_export
    from timetravel.feedback import FeedbackLog
    from timetravel.store import RunStore

    store = RunStore(args.run)
    state = FeedbackLog(store.path, store.n_samples, store.n_classes).read()
    for message in state.errors:
        print(f"timetravel export: warning: {message}", file=sys.stderr)
    records = accepted_records(store, state, suggestions=detector_suggestions(store, state.accepted))
    text = render(records, store, args.format)
    if args.out:
        path = write_export(args.out, text)
        print(f"wrote {len(records)} accepted samples of {store.n_samples} to {path}")
    else:
        sys.stdout.write(text)
    return 0
