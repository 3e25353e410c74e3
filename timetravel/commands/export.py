"""``timetravel export RUN``: the accepted samples of a review as CSV or JSON."""

from __future__ import annotations

import argparse
import sys

HELP = "export the accepted samples (index, decision, given, suggested and corrected label) as CSV or JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the run directory (holding run.json and feedback.jsonl)")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="output format (default: csv)")
    parser.add_argument("--out", metavar="FILE", help="write to FILE (atomically) instead of standard output")
    parser.add_argument("--pool", action="store_true",
                        help="export the labels given to the unlabelled pool (active learning) instead")


def run(args: argparse.Namespace) -> int:
    from timetravel.errors import TimetravelError
    from timetravel.export import (accepted_records, detector_suggestions, pool_label_records, render, render_pool,
                                   write_export)
    from timetravel.feedback import FeedbackLog
    from timetravel.store import RunStore

    store = RunStore(args.run)
    state = FeedbackLog(store.path, store.n_samples, store.n_classes, store.n_pool or None).read()
    for message in state.errors:
        print(f"timetravel export: warning: {message}", file=sys.stderr)
    if args.pool:
        if not store.n_pool:
            raise TimetravelError(f"{store.path}: the run has no unlabelled pool; drop --pool to export the "
                                  "accepted training samples")
        records = pool_label_records(store, state)
        text, what = render_pool(records, store, args.format), f"labelled pool samples of {store.n_pool}"
    else:
        records = accepted_records(store, state, suggestions=detector_suggestions(store, state.accepted))
        text, what = render(records, store, args.format), f"accepted samples of {store.n_samples}"
    if args.out:
        path = write_export(args.out, text)
        print(f"wrote {len(records)} {what} to {path}")
    else:
        sys.stdout.write(text)
    return 0
