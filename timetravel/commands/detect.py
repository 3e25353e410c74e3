"""``timetravel detect RUN``: trajectory features + abnormality ranking, written to ``RUN/features/``."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "compute trajectory features and the abnormality ranking of a run (writes RUN/features/)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run store directory")
    parser.add_argument("--top", type=int, default=20, help="how many of the most suspicious samples to print")
    parser.add_argument("--neighbors", type=int, default=10, help="k of the nearest-neighbour features")
    parser.add_argument("--method", choices=("cross-view", "consensus", "mean"), default="cross-view",
                        help="how the detector weights the features")
    parser.add_argument("--json", action="store_true", help="print the ranking as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from timetravel.detection import detect, features_dir
    from timetravel.errors import TimetravelError
    from timetravel.store import RunStore

    if args.top < 0:
        raise TimetravelError(f"--top must be >= 0, got {args.top}")
    store = RunStore(args.run)
    detection = detect(store, n_neighbors=args.neighbors, method=args.method, verbose=not args.json)
    names = store.class_names
    table = detection.features
    rows = []
    for rank, i in enumerate(detection.ranking()[: args.top], start=1):
        rows.append({
            "rank": rank,
            "sample": int(i),
            "score": round(float(detection.scores[i]), 4),
            "label": names[table.labels[i]],
            "suggested": names[table.suggested[i]],
            "reasons": detection.detector.reasons(int(i)),
        })
    if args.json:
        json.dump({"run": str(store.path), "features": table.names, "ranking": rows}, sys.stdout, indent=2)
        print()
        return 0
    print(f"{store.path}: {table.n_samples} samples, {len(table.names)} features -> "
          f"{features_dir(store.path)}")
    for r in rows:
        print(f"{r['rank']:4d}. sample {r['sample']:>7d}  score {r['score']:+.3f}  "
              f"label {r['label']!r}, maybe {r['suggested']!r}")
        for reason in r["reasons"]:
            print(f"        - {reason}")
    return 0
