"""``timetravel project RUN``: temporally consistent 2D projection, inverse maps, territories, metrics.

Writes ``RUN/projection/`` and prints the faithfulness metrics per epoch.
Resumes an interrupted projection; ``--backend dask --scheduler ADDR`` runs
the per-epoch work on a Dask cluster (the run must be on storage the workers
can read).
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "project every epoch of a run to 2D with inverse maps and decision territories (writes RUN/projection/)"

_METRICS = ("knn_preservation", "prediction_preservation", "reconstruction_error", "temporal_consistency")
_SHORT = {"knn_preservation": "kNN", "prediction_preservation": "pred", "reconstruction_error": "recon",
          "temporal_consistency": "temporal"}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run store directory")
    parser.add_argument("--n-jobs", type=int, default=-1,
                        help="parallel jobs for the per-epoch work (default -1: all cores)")
    parser.add_argument("--backend", choices=("loky", "threading", "dask"), default=None,
                        help="joblib backend (default loky; dask needs --scheduler)")
    parser.add_argument("--scheduler", metavar="ADDR", default=None,
                        help="Dask scheduler address, e.g. tcp://127.0.0.1:8786 (with --backend dask)")
    parser.add_argument("--grid-size", type=int, default=200, help="side of the territory grid (default 200)")
    parser.add_argument("--n-neighbors", type=int, default=15, help="neighbours of the kNN graph (default 15)")
    parser.add_argument("--decoder-steps", type=int, default=None,
                        help="training steps of each epoch's inverse map (default 1000, 500 above 10,000 samples)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--until", type=int, default=None, metavar="EPOCH",
                        help="project only the epochs up to this one")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard an existing projection (needed when the settings changed)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    parser.add_argument("--align-to", metavar="RUN", default=None,
                        help="a projected run of the same samples (e.g. the run `timetravel fix` retrained): start "
                             "each epoch from its layout so the same sample sits in about the same place")


def _connect(args: argparse.Namespace):
    from timetravel.errors import TimetravelError

    if args.backend != "dask":
        if args.scheduler:
            raise TimetravelError("--scheduler is only used with --backend dask")
        return None
    if not args.scheduler:
        raise TimetravelError("--backend dask needs --scheduler ADDR (the address of a running Dask scheduler)")
    try:
        from distributed import Client
    except ImportError:
        raise TimetravelError("--backend dask needs dask[distributed]: pip install 'timetravel[dask]'") from None
    try:
        return Client(args.scheduler, timeout=30)
    except (OSError, TimeoutError) as exc:
        raise TimetravelError(f"cannot reach the Dask scheduler at {args.scheduler}: {exc}") from None


def _format(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.3f}"


def _table(metrics: dict[int, dict]) -> list[str]:
    splits = [s for s in ("train", "heldout") if any(s in m for m in metrics.values())]
    header = "epoch " + " ".join(f"{split + ' ' + _SHORT[name]:>14s}" for split in splits for name in _METRICS)
    lines = [header]
    for epoch in sorted(metrics):
        cells = [_format(metrics[epoch].get(split, {}).get(name)) for split in splits for name in _METRICS]
        lines.append(f"{epoch:5d} " + " ".join(f"{c:>14s}" for c in cells))
    means = []
    for split in splits:
        for name in _METRICS:
            values = [m[split][name] for m in metrics.values() if split in m and m[split][name] is not None]
            means.append(_format(sum(values) / len(values) if values else None))
    lines.append(" mean " + " ".join(f"{c:>14s}" for c in means))
    return lines


def run(args: argparse.Namespace) -> int:
    from timetravel.errors import TimetravelError
    from timetravel.projection import TemporalProjector
    from timetravel.store import RunStore

    store = RunStore(args.run)
    if args.until is not None and (not store.epochs or args.until < store.epochs[0]):
        shown = f"{store.epochs[0]}..{store.epochs[-1]}" if store.epochs else "none yet"
        raise TimetravelError(f"--until {args.until} is before every recorded epoch of {store.path} "
                              f"(recorded: {shown}); give one of them")
    if store.being_written:
        print(f"timetravel project: note: {store.path} is still being recorded; projecting the "
              f"{len(store.epochs)} epochs committed so far (run this again later for the rest)", file=sys.stderr)
    client = _connect(args)
    try:
        projector = TemporalProjector(
            n_neighbors=args.n_neighbors,
            grid_size=args.grid_size,
            decoder_steps=args.decoder_steps,
            random_state=args.seed,
            n_jobs=args.n_jobs,
            backend=args.backend,
            verbose=not (args.json or getattr(args, "quiet", False)),
        ).fit(store, overwrite=args.overwrite, until=args.until, reference=args.align_to)
    finally:
        if client is not None:
            client.close()
    if args.json:
        json.dump({"run": str(store.path), "projection": str(projector.path_),
                   "metrics": {str(e): m for e, m in sorted(projector.metrics_.items())}}, sys.stdout, indent=2)
        print()
        return 0
    print(f"{store.path}: {len(projector.epochs_)} epochs projected -> {projector.path_}")
    print("\n".join(_table(projector.metrics_)))
    return 0
