"""``timetravel fix RUN --out RUN2``: retrain a reviewed run on its corrected labels, recording RUN2."""

from __future__ import annotations

import argparse
import time

HELP = "retrain a run made by `timetravel train` on the labels corrected in review (relabel / drop), recording RUN2"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="the reviewed run (made by `timetravel train`, with its feedback.jsonl)")
    parser.add_argument("--out", required=True, help="directory of the fixed run to write")
    parser.add_argument("--drop-suspects", action="store_true",
                        help="also leave out the unreviewed samples that look like the accepted ones (the upper "
                             "mode of the feedback recommender's scores and of the detector's, their posteriors "
                             "averaged) or whose label the model gave < 50%% probability on average over training "
                             "(needs `timetravel detect RUN`)")
    parser.add_argument("--no-project", action="store_true",
                        help="only train: do not project RUN2 (aligned with RUN) and detect, as `serve --compare` needs")
    parser.add_argument("--threads", type=int, help="torch threads for training (default: cores - 1, at least 1)")
    parser.add_argument("--sync-capture", action="store_true",
                        help="record each epoch in the training thread instead of alongside the next epoch")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run at --out")
    mode.add_argument("--resume", action="store_true", help="continue an interrupted fix at --out")


def run(args: argparse.Namespace) -> int:
    from timetravel.commands.train import _print_summary
    from timetravel.fix import fix_run
    from timetravel.store import RunStore

    started = time.perf_counter()
    fixed = fix_run(args.run, args.out, suspects=args.drop_suspects, overwrite=args.overwrite, resume=args.resume, threads=args.threads,
                    background_capture=not args.sync_capture, verbose=not args.quiet)
    _print_summary(fixed, time.perf_counter() - started)
    counts = fixed.manifest["fixed_from"]["corrections"]
    print(f"fixed:      {counts['relabeled']} relabelled, {counts['dropped']} dropped (trained on {counts['kept']} of "
          f"{fixed.n_samples}), {counts['flagged']} flagged")
    before, after = _last_test(RunStore(args.run, verify="headers")), _last_test(fixed)
    if before is not None and after is not None:
        print(f"clean test at the last epoch: {before:.4f} -> {after:.4f} ({after - before:+.4f})")
    reviewed = RunStore(args.run, verify="headers")
    if not args.no_project and reviewed.projected_epochs:
        _project_and_detect(fixed, reviewed, verbose=not args.quiet)
        print(f"compare:    timetravel serve {args.run} --compare {args.out}")
    return 0


def _project_and_detect(fixed, reviewed, *, verbose: bool) -> None:
    """What `serve --compare` shows: RUN2's projection (RUN's settings, aligned with RUN's) and its detection."""
    import inspect
    import json

    from timetravel.detect import detect
    from timetravel.projection import TemporalProjector

    manifest = json.loads((reviewed.derived_dir("projection") / "manifest.json").read_text(encoding="utf-8"))
    accepted = inspect.signature(TemporalProjector).parameters
    params = {k: v for k, v in manifest.get("params", {}).items() if k in accepted}
    TemporalProjector(**params, verbose=verbose).fit(fixed, reference=reviewed)
    detect(fixed, verbose=verbose)


def _last_test(store) -> float | None:
    with_test = [h["test_acc"] for h in store.history if "test_acc" in h]
    return with_test[-1] if with_test else None
