"""Export the accepted samples of a review: index, decision, given, suggested and corrected label.

Shared by the app's export buttons and ``timetravel export RUN``. The suggested
label is the detector's suggestion when the run has one (``timetravel detect``:
the most likely other class over training), otherwise the model's prediction at
the last recorded epoch or, when that agrees with the given label, the
runner-up class (the best alternative the model offers). ``decision`` is the
standing decision (``accept``, ``relabel``, ``drop`` or ``flag``, see
:mod:`timetravel.feedback`); ``corrected_label`` is the label retraining uses
(:mod:`timetravel.correction`): the new label of a relabel, the given label
otherwise, and empty for a dropped sample.

Labels the user gave to the run's unlabelled pool (active learning) are
exported by :func:`pool_label_records` (``timetravel export RUN --pool``): pool
row, the label given, and the final model's prediction it corrects.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from timetravel._io import write_bytes_atomic
from timetravel.errors import TimetravelError
from timetravel.feedback import FeedbackLog, FeedbackState
from timetravel.store import RunStore

FORMATS = ("csv", "json")
SOURCE_PREDICTION = "last-epoch prediction"
SOURCE_RUNNER_UP = "runner-up at the last epoch (the model agrees with the given label)"
SOURCE_RECOMMENDER = "detector (most likely other class over training)"


@dataclass(frozen=True)
class ExportRecord:
    """One accepted sample as exported."""

    index: int
    given_label: int
    given_name: str
    suggested_label: int
    suggested_name: str
    suggested_probability: float
    suggestion_source: str
    decision: str = "accept"
    corrected_label: int | str = ""
    corrected_name: str = ""


FIELDS = tuple(ExportRecord.__dataclass_fields__)


def suggest_labels(store: RunStore, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Suggested label, its last-epoch probability and the suggestion's source for each sample.

    Parameters
    ----------
    store : RunStore
    samples : array of int
        Sample indices.

    Returns
    -------
    labels : ndarray of int
    probabilities : ndarray of float
    sources : list of str

    Raises
    ------
    TimetravelError
        The run has no recorded epoch.
    """
    samples = np.asarray(samples, dtype=np.int64)
    if not store.epochs:
        raise TimetravelError(f"{store.path}: the run has no recorded epoch, so there is no prediction to suggest")
    logits = np.asarray(store.logits(store.epochs[-1])[np.sort(samples)], dtype=np.float32)
    logits = logits[np.argsort(np.argsort(samples))]
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = z / z.sum(axis=1, keepdims=True)
    order = np.argsort(-probs, axis=1)
    given = store.labels[samples]
    agrees = order[:, 0] == given
    runner_up = order[:, 1] if store.n_classes > 1 else order[:, 0]
    labels = np.where(agrees, runner_up, order[:, 0])
    sources = [SOURCE_RUNNER_UP if a else SOURCE_PREDICTION for a in agrees]
    return labels, probs[np.arange(len(samples)), labels], sources


def detector_suggestions(store: RunStore, samples: list[int]) -> dict[int, int] | None:
    """The detector's suggested label (``RUN/features/``) for ``samples``, or None before ``timetravel detect``."""
    from timetravel.detection import has_detection, load_detection

    if not has_detection(store):
        return None
    suggested = load_detection(store).features.suggested
    return {int(i): int(suggested[i]) for i in samples}


def accepted_records(
    store: RunStore,
    state: FeedbackState | None = None,
    *,
    suggestions: Mapping[int, int] | None = None,
) -> list[ExportRecord]:
    """The accepted samples of a run, in decision order, with their suggested labels.

    Parameters
    ----------
    store : RunStore
    state : FeedbackState, optional
        Decisions to export; read from the run's ``feedback.jsonl`` when omitted.
    suggestions : mapping of int to int, optional
        Suggested label per sample (e.g. :func:`detector_suggestions`); overrides the model's prediction.

    Returns
    -------
    list of ExportRecord
    """
    if state is None:
        state = FeedbackLog(store.path, store.n_samples, store.n_classes).read()
    samples = np.asarray(state.accepted, dtype=np.int64)
    if not len(samples):
        return []
    labels, probs, sources = suggest_labels(store, samples)
    if suggestions:
        last = store.probabilities(store.epochs[-1])
        for pos, i in enumerate(samples.tolist()):
            if i in suggestions:
                labels[pos], sources[pos] = int(suggestions[i]), SOURCE_RECOMMENDER
                probs[pos] = last[i, labels[pos]]
    names = store.class_names
    records = []
    for i, label, prob, source in zip(samples.tolist(), labels.tolist(), probs.tolist(), sources):
        given = int(store.labels[i])
        event = state.standing.get(i)
        decision = event.decision if event is not None else "accept"
        corrected: int | str = "" if decision == "drop" else int(event.label) if decision == "relabel" else given
        records.append(
            ExportRecord(i, given, names[given], int(label), names[int(label)], round(float(prob), 6), source,
                         decision, corrected, "" if corrected == "" else names[int(corrected)])
        )
    return records


def to_csv(records: list[ExportRecord]) -> str:
    """CSV text with a header row (see :data:`FIELDS`)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in records)
    return buf.getvalue()


def to_json(records: list[ExportRecord], store: RunStore) -> str:
    """JSON text: the run, the counts and one object per accepted sample."""
    payload = {
        "run": str(store.path),
        "dataset": store.manifest.get("dataset", ""),
        "n_samples": store.n_samples,
        "n_accepted": len(records),
        "n_by_decision": {d: sum(r.decision == d for r in records) for d in ("accept", "relabel", "drop", "flag")},
        "fields": list(FIELDS),
        "accepted": [asdict(r) for r in records],
    }
    return json.dumps(payload, indent=2) + "\n"


def render(records: list[ExportRecord], store: RunStore, fmt: str) -> str:
    """Text of an export in ``fmt`` (``"csv"`` or ``"json"``)."""
    if fmt not in FORMATS:
        raise TimetravelError(f"export format must be one of {FORMATS}, got {fmt!r}")
    return to_csv(records) if fmt == "csv" else to_json(records, store)


def write_export(path: str | Path, text: str) -> Path:
    """Write an export atomically; returns the path written.

    Raises
    ------
    TimetravelError
        The target is not a regular file (a device, a symbolic link, a
        directory: never replaced) or cannot be written (no such folder, a
        path under a file, a read-only filesystem); nothing was written.
    """
    path = Path(path)
    try:
        write_bytes_atomic(path, text.encode("utf-8"))
    except OSError as exc:
        where = exc.filename or path
        raise TimetravelError(f"cannot write the export to {path}: {where}: {exc.strerror or exc}; "
                              "choose a regular file in a writable folder") from None
    return path


@dataclass(frozen=True)
class PoolLabelRecord:
    """One pool sample the user labelled."""

    pool_index: int
    label: int
    label_name: str
    predicted_label: int
    predicted_name: str
    model_was_wrong: bool


POOL_FIELDS = tuple(PoolLabelRecord.__dataclass_fields__)


def pool_label_records(store: RunStore, state: FeedbackState | None = None) -> list[PoolLabelRecord]:
    """The pool samples labelled in the app, in decision order, with the final model's prediction."""
    if state is None:
        state = FeedbackLog(store.path, store.n_samples, store.n_classes, store.n_pool).read()
    if not state.pool_labels:
        return []
    rows = np.asarray(list(state.pool_labels), dtype=np.int64)
    from timetravel.active import split_epochs

    final = split_epochs(store, "pool")  # the last epoch holding the pool is the final model (as in the app)
    if not final:
        raise TimetravelError(f"{store.path}: no recorded epoch holds the pool's rows")
    predicted = np.asarray(store.logits(final[-1], "pool")[rows]).argmax(axis=1)
    names = store.class_names
    return [PoolLabelRecord(int(i), int(label), names[int(label)], int(p), names[int(p)], int(p) != int(label))
            for (i, label), p in zip(state.pool_labels.items(), predicted.tolist())]


def render_pool(records: list[PoolLabelRecord], store: RunStore, fmt: str) -> str:
    """Text of a pool-label export in ``fmt`` (``"csv"`` or ``"json"``)."""
    if fmt not in FORMATS:
        raise TimetravelError(f"export format must be one of {FORMATS}, got {fmt!r}")
    rows = [asdict(r) for r in records]
    if fmt == "json":
        payload = {"run": str(store.path), "n_pool": store.n_pool, "n_labelled": len(rows),
                   "n_model_wrong": sum(r.model_was_wrong for r in records), "fields": list(POOL_FIELDS),
                   "labelled": rows}
        return json.dumps(payload, indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=POOL_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
