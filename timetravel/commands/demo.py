"""``timetravel demo``: train, project and rank the bundled digits run, then serve the app.

Each step reuses what a previous demo already wrote (the recorder, the
projection and the detector all resume), so a second ``timetravel demo``
starts the app in seconds.
"""

from __future__ import annotations

import argparse

HELP = "train a model on the bundled digits with injected label noise, project, rank, and open the debugger app"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    parser.add_argument("--dataset", default="digits", help="dataset (default digits, bundled with scikit-learn)")
    parser.add_argument("--noise", default="symmetric:0.2", help="injected label noise (default symmetric:0.2)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--port", type=int, default=5006, help="app port (default 5006)")
    parser.add_argument("--host", default="127.0.0.1", help="address the app binds (default 127.0.0.1)")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    parser.add_argument("--no-serve", action="store_true", help="stop after writing the run (for scripts and CI)")


def _trained(out: str, args: argparse.Namespace) -> bool:
    """Whether ``out`` already holds a finished run made with these settings."""
    from timetravel.errors import StoreError
    from timetravel.store import RunStore

    try:
        store = RunStore(out, verify="headers")
    except StoreError:
        return False
    config = store.manifest.get("train", {})
    same = (config.get("dataset"), config.get("noise"), config.get("seed")) == (args.dataset, args.noise, args.seed)
    return same and len(store.epochs) >= args.epochs


def run(args: argparse.Namespace) -> int:
    import logging

    from timetravel.commands import serve
    from timetravel.detection import detect
    from timetravel.projection import ProjectionError, TemporalProjector
    from timetravel.store import RunStore
    from timetravel.train import train_run

    log = logging.getLogger("timetravel.demo")
    if _trained(args.out, args):
        log.info("reusing the trained run in %s", args.out)
        store = RunStore(args.out)
    else:
        store = train_run(args.dataset, args.noise, args.epochs, args.out, seed=args.seed, overwrite=True)
    log.info("projecting %d epochs (resumes where a previous demo stopped)", len(store.epochs))
    projector = TemporalProjector(random_state=args.seed)
    try:
        projector.fit(store)
    except ProjectionError as exc:  # typically a projection made by another timetravel version
        log.warning("%s; projecting again with this version's settings", exc)
        projector.fit(store, overwrite=True)
    log.info("ranking suspicious samples")
    detection = detect(store)
    top = detection.ranking()[:5]
    log.info("most suspicious samples: %s", ", ".join(str(int(i)) for i in top))
    fixed = store.path.with_name(store.path.name + "-fixed")
    next_step = (f"after reviewing (relabel / drop), retrain and compare: timetravel fix {store.path} --out {fixed} "
                 f"--drop-suspects && timetravel serve {store.path} --compare {fixed}")
    if args.no_serve:
        print(f"demo run ready in {store.path}; serve it with: timetravel serve {store.path}")
        print(next_step)
        return 0
    print(next_step, flush=True)
    serve_parser = argparse.ArgumentParser(prog="timetravel serve")
    serve.add_arguments(serve_parser)  # the serve command's own defaults for everything else
    serve_argv = [str(store.path), "--port", str(args.port), "--host", args.host]
    status = serve.run(serve_parser.parse_args(serve_argv + (["--no-browser"] if args.no_browser else [])))
    print(next_step)
    return status
