"""Corrections: what a review changes in the training set (corrected labels and a keep-mask).

The one owner of what the user's decisions mean for retraining, and of the
``corrections.json`` file of a run made by ``timetravel fix``. Standing
decisions of the feedback log (:mod:`timetravel.feedback`) map to:

========== ==========================================================
``relabel`` the sample's label becomes the event's ``label``; it is kept
``drop``    the sample is left out of training (its label is unchanged)
``flag``    marked only: kept, with its label
``accept``  accepted without a chosen correction: nothing changes
``reject``  nothing changes
========== ==========================================================

A run made by ``timetravel fix`` was trained on corrected labels (its
``labels.npy``) and holds ``corrections.json``: every correction applied since
the run ``timetravel train`` made, so fixing a fixed run accumulates them::

    {"format_version": 1, "source": "/abs/path/of/RUN",
     "relabeled": [[sample, label before, label after], ...],
     "dropped": [sample, ...], "flagged": [sample, ...], "suspects_threshold": 0.5 or null,
     "feedback": {"events": 12, "sha256": "..."}}

``label before`` is the label of the first run of the chain; ``feedback``
identifies the log of ``source`` the corrections were read from.

A review covers the most suspicious samples; :func:`drop_suspects` (``timetravel
fix --drop-suspects``) also leaves out the samples nobody reviewed that either
look like the ones the user accepted (they fall in the suspicious mode of the
feedback recommender's scores, fitted on the review, and of the detector's: a
two-component Gaussian mixture over all samples' scores, the two posteriors'
mean above one half) or whose given
label the model gave less than half of its probability on average over training
(the detector's ``confidence`` feature: the model kept voting against it). Dropping a correct sample costs little; training on a wrong
label costs much more (``timetravel bench fix`` measures both).

Examples
--------
>>> import timetravel                                        # doctest: +SKIP
>>> fix = timetravel.corrections("runs/demo")                # doctest: +SKIP
>>> x_train, y_train = x[fix.keep], fix.labels[fix.keep]     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from timetravel._io import write_json_atomic
from timetravel.errors import TimetravelError
from timetravel.feedback import FEEDBACK_FILE, FeedbackLog, FeedbackState

CORRECTIONS_FILE = "corrections.json"
FORMAT_VERSION = 1
SUSPECT_CONFIDENCE = 0.5


class CorrectionsError(TimetravelError, ValueError):
    """A corrections file or a set of decisions cannot be used."""


@dataclass(frozen=True)
class Corrections:
    """Corrected labels and keep-mask of a training set.

    Attributes
    ----------
    labels : ndarray of int64, shape (N,)
        The labels to train on.
    keep : ndarray of bool, shape (N,)
        False for the samples to leave out of training.
    flagged : ndarray of bool, shape (N,)
        Samples marked by the user, kept with their label.
    base_labels : ndarray of int64, shape (N,)
        The labels of the first run of the chain (``timetravel train``'s, or the
        user's own run), against which ``relabeled`` is measured.
    """

    labels: np.ndarray
    keep: np.ndarray
    flagged: np.ndarray
    base_labels: np.ndarray

    @property
    def relabeled(self) -> np.ndarray:
        """Indices of the samples whose label differs from ``base_labels``."""
        return np.flatnonzero(self.labels != self.base_labels)

    @property
    def dropped(self) -> np.ndarray:
        """Indices of the samples left out of training."""
        return np.flatnonzero(~self.keep)

    def summary(self) -> dict[str, int]:
        """Counts: ``relabeled``, ``dropped``, ``flagged``, ``kept`` (samples trained on)."""
        return {"relabeled": len(self.relabeled), "dropped": len(self.dropped),
                "flagged": int(self.flagged.sum()), "kept": int(self.keep.sum())}

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={v}" for k, v in self.summary().items())
        return f"Corrections(n_samples={len(self.labels)}, {counts})"


def apply_decisions(
    labels: np.ndarray,
    state: FeedbackState,
    *,
    keep: np.ndarray | None = None,
    flagged: np.ndarray | None = None,
    base_labels: np.ndarray | None = None,
) -> Corrections:
    """Apply the standing decisions of a review to a training set's labels.

    Parameters
    ----------
    labels : array of int, shape (N,)
        The labels the reviewed run was trained on.
    state : FeedbackState
        ``FeedbackLog(...).read()`` (only ``standing`` is used).
    keep, flagged : array of bool, shape (N,), optional
        Corrections applied before (a fixed run's); default: keep all, none flagged.
    base_labels : array of int, shape (N,), optional
        Labels of the first run of the chain; default ``labels``.

    Returns
    -------
    Corrections

    Raises
    ------
    CorrectionsError
        A decision names a sample outside ``[0, N)``.

    Examples
    --------
    >>> from timetravel.feedback import FeedbackEvent, FeedbackState
    >>> state = FeedbackState()
    >>> state.apply(FeedbackEvent(1, "relabel", 0.0, label=2))
    >>> state.apply(FeedbackEvent(3, "drop", 0.0))
    >>> fix = apply_decisions(np.array([0, 0, 1, 1]), state)
    >>> fix.labels.tolist(), fix.keep.tolist()
    ([0, 2, 1, 1], [True, True, True, False])
    """
    labels = np.array(labels, dtype=np.int64)
    n = len(labels)
    keep = np.ones(n, dtype=bool) if keep is None else np.array(keep, dtype=bool)
    flagged = np.zeros(n, dtype=bool) if flagged is None else np.array(flagged, dtype=bool)
    base = labels.copy() if base_labels is None else np.array(base_labels, dtype=np.int64)
    for name, array in (("keep", keep), ("flagged", flagged), ("base_labels", base)):
        if array.shape != (n,):
            raise CorrectionsError(f"{name} has shape {array.shape} but labels has {n} entries")
    for sample, event in state.standing.items():
        if not 0 <= sample < n:
            raise CorrectionsError(f"decision on sample {sample} is out of range for {n} samples")
        if event.decision == "relabel":
            labels[sample], keep[sample] = int(event.label), True
        elif event.decision == "drop":
            keep[sample] = False
        elif event.decision == "flag":
            flagged[sample] = True
    return Corrections(labels=labels, keep=keep, flagged=flagged, base_labels=base)


def drop_suspects(
    fix: Corrections,
    state: FeedbackState,
    *,
    confidence: np.ndarray,
    suspicion: np.ndarray | None = None,
    prior: np.ndarray | None = None,
    threshold: float = SUSPECT_CONFIDENCE,
) -> Corrections:
    """Also leave out the unreviewed samples that look mislabelled.

    Once the review has a decision, a sample is a suspect when the mean of two
    posteriors of the suspicious mode (:func:`suspicious_mode`) is above
    ``threshold``: that of the feedback recommender's log-odds, which learned
    from the review, and that of the detector's scores, which no click moves.
    A few mistaken answers swing the first, not the second: on the fix benchmark's
    digits runs with 20% symmetric noise and 10% wrong answers, the recommender's
    mode alone cost 123 of the 1,150 correctly labelled samples after 10 rounds
    (dropped, or relabelled by a wrong accept), the mean 17.

    Parameters
    ----------
    fix : Corrections
        The corrections of the review (:func:`apply_decisions`).
    state : FeedbackState
        The review: samples with a standing decision are left as the user decided.
    confidence : array of float, shape (N,)
        Mean probability of the given label over the epochs (the ``confidence``
        feature of ``timetravel detect``).
    suspicion : array of float, shape (N,), optional
        The feedback recommender's log-odds that the user would accept each
        sample, fitted on ``state`` (used once the review has a decision).
        Their suspicious mode is found by :func:`suspicious_mode`; its own
        probabilities are not used, as they are calibrated on the reviewed
        samples only: after a review that accepted nearly everything it showed,
        they put most of the run above one half.
    prior : array of float, shape (N,), optional
        The detector's suspicion scores (``AbnormalityDetector.scores_``), whose
        suspicious-mode posterior is averaged with that of ``suspicion``;
        without them the latter decides alone.
    threshold : float, default=0.5
        Unreviewed samples with ``confidence < threshold``, or whose (mean)
        posterior of the suspicious mode is above it, are dropped.

    Returns
    -------
    Corrections
    """
    n = len(fix.keep)
    confidence = np.asarray(confidence, dtype=np.float64)
    if confidence.shape != (n,):
        raise CorrectionsError(f"confidence has shape {confidence.shape} but the run has {n} samples")
    suspect = confidence < threshold
    if suspicion is not None and state.decisions:
        posteriors = []
        for name, scores in (("suspicion", suspicion), ("prior", prior)):
            if scores is None:
                continue
            scores = np.asarray(scores, dtype=np.float64)
            if scores.shape != (n,):
                raise CorrectionsError(f"{name} has shape {scores.shape} but the run has {n} samples")
            posteriors.append(suspicious_mode(scores))
        suspect |= np.mean(posteriors, axis=0) > threshold
    reviewed = np.fromiter(state.standing, dtype=np.int64, count=len(state.standing))
    suspect[reviewed] = False
    return Corrections(labels=fix.labels, keep=fix.keep & ~suspect, flagged=fix.flagged, base_labels=fix.base_labels)


def suspicious_mode(scores: np.ndarray, *, random_state: int = 0) -> np.ndarray:
    """Posterior of the higher of two Gaussian modes of ``scores``, per sample.

    Mislabelled samples form a mode of their own in a good suspicion score; a
    two-component mixture over every sample's score says where it ends without
    any threshold fitted to the reviewed samples.

    Parameters
    ----------
    scores : array of float, shape (N,)
        Higher = more suspicious.
    random_state : int

    Returns
    -------
    ndarray of shape (N,)
        Probability that each sample belongs to the higher mode; zeros when
        the scores take fewer than two distinct values.

    Examples
    --------
    >>> scores = np.r_[np.zeros(90), np.full(10, 5.0)] + np.linspace(0, 0.1, 100)
    >>> int((suspicious_mode(scores) > 0.5).sum())
    10
    """
    from sklearn.mixture import GaussianMixture

    x = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    if len(np.unique(x)) < 2:
        return np.zeros(len(x))
    mixture = GaussianMixture(2, random_state=random_state).fit(x)
    return mixture.predict_proba(x)[:, int(np.argmax(mixture.means_[:, 0]))]


def corrections(run: Any, state: FeedbackState | None = None, *, suspects: bool = False) -> Corrections:
    """The corrected labels and keep-mask of a reviewed run.

    Starts from the labels the run was trained on (and, for a run made by
    ``timetravel fix``, the corrections it was trained with) and applies the
    standing decisions of its feedback log.

    Parameters
    ----------
    run : RunStore or path-like
        The reviewed run.
    state : FeedbackState, optional
        Decisions to apply; default: the run's ``feedback.jsonl``.
    suspects : bool, default=False
        Also drop the unreviewed suspects (:func:`drop_suspects`, with the
        feedback recommender of the app fitted on the review); needs the run's
        detection (``timetravel detect RUN``).

    Returns
    -------
    Corrections

    Examples
    --------
    Retrain your own model on the corrected training set::

        import timetravel
        fix = timetravel.corrections("runs/mine")
        train(model, x_train[fix.keep], fix.labels[fix.keep])
    """
    from timetravel.store import RunStore

    store = run if isinstance(run, RunStore) else RunStore(run, verify="headers")
    if state is None:
        state = FeedbackLog(store.path, store.n_samples, store.n_classes).read()
    fix = apply_decisions(store.labels, state, **inherited(store))
    if not suspects:
        return fix
    from timetravel.detection import load_detection

    detection = load_detection(store)
    score = detection.recommender(feedback=state, random_state=0).log_odds()
    return drop_suspects(fix, state, confidence=detection.features.column("confidence"), suspicion=score,
                         prior=detection.scores)


def inherited(store: Any) -> dict[str, np.ndarray]:
    """``keep``, ``flagged`` and ``base_labels`` a fixed run was trained with (empty for other runs)."""
    saved = read_corrections(store.path)
    if saved is None:
        return {}
    n = store.n_samples
    keep, flagged = np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    base = np.array(store.labels, dtype=np.int64)
    try:
        keep[np.asarray(saved["dropped"], dtype=np.int64)] = False
        flagged[np.asarray(saved["flagged"], dtype=np.int64)] = True
        for sample, before, _after in saved["relabeled"]:
            base[int(sample)] = int(before)
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise CorrectionsError(f"{store.path / CORRECTIONS_FILE}: malformed ({exc}); fix the run again") from None
    return {"keep": keep, "flagged": flagged, "base_labels": base}


def read_corrections(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``corrections.json`` of a fixed run, or None for a run that was not fixed."""
    path = Path(run_dir) / CORRECTIONS_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CorrectionsError(f"{path}: cannot be read ({exc}); fix the run again") from None
    if not isinstance(saved, dict) or saved.get("format_version") != FORMAT_VERSION:
        raise CorrectionsError(f"{path}: not a corrections file of format version {FORMAT_VERSION}")
    return saved


def corrections_record(fix: Corrections, source: str | os.PathLike, *, suspects: float | None = None) -> dict[str, Any]:
    """The JSON content of ``corrections.json`` for a run trained with ``fix``, read from run ``source``.

    ``suspects`` is the confidence threshold of :func:`drop_suspects` when it was applied.
    """
    relabeled = fix.relabeled
    log = Path(source) / FEEDBACK_FILE
    raw = log.read_bytes() if log.exists() else b""
    return {
        "format_version": FORMAT_VERSION,
        "source": str(Path(source).resolve()),
        "relabeled": [[int(i), int(fix.base_labels[i]), int(fix.labels[i])] for i in relabeled],
        "dropped": fix.dropped.tolist(),
        "flagged": np.flatnonzero(fix.flagged).tolist(),
        "suspects_threshold": suspects,
        "feedback": {"events": sum(1 for line in raw.splitlines() if line.strip()),
                     "sha256": hashlib.sha256(raw).hexdigest() if raw else None},
    }


def write_corrections(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``corrections.json`` (from :func:`corrections_record`) into a run, atomically."""
    path = Path(run_dir) / CORRECTIONS_FILE
    write_json_atomic(path, record)
    return path
