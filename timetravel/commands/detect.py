"""``timetravel detect RUN``: trajectory features + abnormality ranking, written to ``RUN/features/``."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "compute trajectory features and the abnormality ranking of a run (writes RUN/features/)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run store directory")
    parser.add_argument("--top", type=int, default=None,
                        help="how many of the most suspicious samples to print (default: 20 in the table, all in --json)")
    parser.add_argument("--neighbors", type=int, default=10, help="k of the nearest-neighbour features")
    parser.add_argument("--method", choices=("cross-view", "consensus", "mean"), default="cross-view",
                        help="how the detector weights the features")
    parser.add_argument("--anchor-share", type=float, default=0.5,
                        help="weight of the early-stopped AUM (runs with a labelled held-out set; 0 = leave it out), "
                             "the other features share the rest")
    parser.add_argument("--json", action="store_true", help="print the ranking as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from timetravel.detection import detect, features_dir
    from timetravel.errors import TimetravelError
    from timetravel.features import describe_early_stop
    from timetravel.store import RunStore

    if args.top is not None and args.top < 1:
        raise TimetravelError(f"--top must be at least 1, got {args.top}")
    store = RunStore(args.run)
    if store.being_written:
        print(f"timetravel detect: note: {store.path} is still being recorded; the features use the "
              f"{len(store.epochs)} epochs committed so far", file=sys.stderr)
    detection = detect(store, n_neighbors=args.neighbors, method=args.method, anchor_share=args.anchor_share,
                       verbose=not (args.json or args.quiet))  # fmt: skip
    names = store.class_names
    table = detection.features
    top = args.top if args.top is not None else (table.n_samples if args.json else 20)
    noisy = store.noise_mask
    rows = []
    for rank, i in enumerate(detection.ranking()[:top], start=1):
        row = {
            "rank": rank,
            "sample": int(i),
            "score": round(float(detection.scores[i]), 4),
            "label": int(table.labels[i]),
            "label_name": names[table.labels[i]],
            "suggested": int(table.suggested[i]),
            "suggested_name": names[table.suggested[i]],
            "reasons": detection.detector.reasons(int(i)),
        }
        if noisy is not None:
            row["noisy"] = bool(noisy[i])  # benchmark runs only: the injected noise, never used by the detector
        rows.append(row)
    canvas = table.meta.get("projection_epochs") or []
    coverage = (f"canvas features from the {len(canvas)} projected epochs {canvas[0]}..{canvas[-1]} of "
                f"{len(table.epochs)}" if canvas else "no canvas features (fewer than 3 projected epochs)")
    if args.json:
        json.dump({"run": str(store.path), "features": table.names, "epochs": table.epochs,
                   "projection_epochs": canvas, "early_stop": table.meta.get("early_stop"), "ranking": rows},
                  sys.stdout, indent=2)
        print()
        return 0
    print(f"{store.path}: {table.n_samples} samples, {len(table.names)} features ({coverage}) -> "
          f"{features_dir(store.path)}")
    print(describe_early_stop(table.meta.get("early_stop")))
    for r in rows:
        print(f"{r['rank']:4d}. sample {r['sample']:>7d}  score {r['score']:+.3f}  "
              f"label {r['label_name']!r}, maybe {r['suggested_name']!r}")
        for reason in r["reasons"]:
            print(f"        - {reason}")
    return 0
