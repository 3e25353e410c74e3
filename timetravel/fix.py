"""Retrain a reviewed run on its corrected labels: what ``timetravel fix RUN --out RUN2`` runs.

RUN must have been made by ``timetravel train`` (its manifest holds the
``"train"`` settings): RUN2 is trained with the same settings and seed, on the
labels and keep-mask of :func:`timetravel.corrections` (dropped samples are
left out of the loss but recorded every epoch, so the two runs show the same
samples), and records ``fixed_from`` in its ``run.json`` and the corrections
applied in its ``corrections.json`` (:mod:`timetravel.correction`). Training is
resumable like ``timetravel train``.
"""

from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path

from timetravel.correction import (
    SUSPECT_CONFIDENCE,
    corrections,
    corrections_record,
    inherited,
    read_corrections,
    write_corrections,
)
from timetravel.errors import TimetravelError
from timetravel.feedback import FeedbackLog
from timetravel.store import RunStore

logger = logging.getLogger(__name__)


class FixError(TimetravelError, ValueError):
    """A run cannot be fixed (not retrainable, nothing to correct, or a bad output)."""


def fix_run(
    run: str | os.PathLike,
    out: str | os.PathLike,
    *,
    suspects: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    threads: int | None = None,
    background_capture: bool = True,
    verbose: bool = True,
) -> RunStore:
    """Retrain ``run`` on its corrected labels, recording a new run at ``out``.

    Parameters
    ----------
    run : path-like
        A run made by ``timetravel train`` (or by ``fix``), reviewed in the app.
    out : path-like
        The new run's directory.
    suspects : bool, default=False
        Also leave out the unreviewed samples the model doubted throughout
        training (:func:`timetravel.correction.drop_suspects`); needs ``timetravel detect RUN``.
    overwrite : bool, default=False
        Replace an existing run at ``out``.
    resume : bool, default=False
        Continue an interrupted fix at ``out``; the corrections must not have
        changed since it started.
    threads, background_capture, verbose
        As in :func:`timetravel.train.train_run`.

    Returns
    -------
    RunStore
        The new run.

    Raises
    ------
    FixError
        ``run`` was not made by ``timetravel train``, its review has no
        correction, ``out`` is ``run``, or the corrections changed since an
        interrupted fix started.
    """
    from timetravel.train import TrainConfig, record_training

    store = RunStore(run, verify="headers")
    settings = store.manifest.get("train")
    if not isinstance(settings, dict):
        raise FixError(
            f"{store.path}: this run was not made by `timetravel train`, so timetravel cannot retrain its model; "
            "get the corrected labels and keep-mask with timetravel.corrections(run) and retrain with your code"
        )
    if Path(out).resolve() == store.path.resolve():
        raise FixError(f"--out {out} is the reviewed run itself; write the fixed run to a new directory")
    config = TrainConfig.from_manifest(settings)
    config.validate()
    state = FeedbackLog(store.path, store.n_samples, store.n_classes).read()
    fix = corrections(store, state, suspects=suspects)
    before = inherited(store)
    unchanged_keep = (fix.keep == before["keep"]).all() if before else fix.keep.all()
    if (fix.labels == store.labels).all() and unchanged_keep:
        plain = sum(e.decision in ("accept", "flag") for e in state.standing.values())
        hint = f" ({plain} accepted samples have no relabel or drop chosen)" if plain else ""
        raise FixError(
            f"{store.path}: the review has no correction to apply{hint}; relabel or drop samples in "
            f"`timetravel serve {store.path}` first"
        )
    record = corrections_record(fix, store.path, suspects=SUSPECT_CONFIDENCE if suspects else None)
    if resume:
        _check_resume(Path(out), record)
    summary = fix.summary()
    logger.info("fixing %s -> %s: %s", store.path, out, ", ".join(f"{v} {k}" for k, v in summary.items()))
    return record_training(
        config, out, labels=fix.labels, keep=fix.keep, expect_labels=fix.base_labels,
        extra={"fixed_from": {"run": str(store.path.resolve()), "corrections": summary}},
        on_create=partial(write_corrections, record=record), overwrite=overwrite, resume=resume,
        threads=threads, background_capture=background_capture, verbose=verbose,
    )


def _check_resume(out: Path, record: dict) -> None:
    saved = read_corrections(out)
    if saved is None:
        raise FixError(f"{out}: there is no fixed run to resume; start it without --resume")
    keys = ("relabeled", "dropped")
    if any(saved.get(k) != record[k] for k in keys):
        raise FixError(
            f"{out}: the corrections of {record['source']} changed since this fix started; "
            "start it again with --overwrite"
        )
