"""The detection pipeline and the ``RUN/features/`` format it writes (the one module that reads and writes it).

:func:`detect` extracts the trajectory features of a run
(:mod:`timetravel.features`), fits the :class:`~timetravel.detector.AbnormalityDetector`
and saves both under ``RUN/features/``; :func:`load_detection` reads them back
without recomputing anything (the app and ``timetravel export`` use it). The
format is described in ``docs/run-store.md``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from timetravel._io import read_manifest, save_npy_atomic, write_json_atomic
from timetravel.detector import AbnormalityDetector
from timetravel.errors import StoreError
from timetravel.features import FeatureTable

logger = logging.getLogger(__name__)

FEATURES_DIR = "features"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_MANIFEST_KEYS = frozenset(
    {"format_version", "n_samples", "names", "descriptions", "directions", "has_neighbors", "meta", "epochs",
     "detector"}
)
_ARRAYS = {  # file -> allowed dtype kinds
    "features.npy": "f",
    "scores.npy": "f",
    "reference.npy": "f",
    "suggested.npy": "iu",
    "predicted.npy": "iu",
    "neighbors.npy": "iu",
}


def features_dir(run) -> Path:
    """``RUN/features``."""
    return Path(run) / FEATURES_DIR


def has_detection(store) -> bool:
    """Whether ``timetravel detect`` finished on this run (its manifest is written last)."""
    return (features_dir(store.path) / MANIFEST).exists()


def load_early_stop(store) -> dict | None:
    """The early-stopped AUM's window of the run's detection (``meta.early_stop``), from the manifest alone.

    None when the run has no detection yet or its features have no such window (no labelled
    held-out set). :func:`timetravel.features.describe_early_stop` words it.

    Raises
    ------
    StoreError
        The manifest is not valid JSON or of an unknown format version.
    """
    manifest = read_manifest(features_dir(store.path) / MANIFEST, FORMAT_VERSION,
                             fix=f"run `timetravel detect {store.path}` again")
    meta = manifest.get("meta") if manifest is not None else None
    return meta.get("early_stop") if isinstance(meta, dict) else None


@dataclass
class Detection:
    """Features and detector of a run, as written by ``timetravel detect``.

    Attributes
    ----------
    features : FeatureTable
    detector : AbnormalityDetector
        Fitted; ``reasons(i)`` works without recomputation.
    scores : ndarray of shape (N,)
        Suspicion scores (higher = more suspicious).
    """

    features: FeatureTable
    detector: AbnormalityDetector
    scores: np.ndarray

    def ranking(self) -> np.ndarray:
        """Sample indices, most suspicious first."""
        return np.argsort(-self.scores, kind="stable")

    def recommender(self, feedback=None, **params):
        """A fitted :class:`~timetravel.recommend.FeedbackRecommender` over this run.

        Parameters
        ----------
        feedback : FeedbackState or dict of int to bool, optional
            Decisions to replay (``FeedbackLog(run).read()``).
        **params
            Recommender parameters (``random_state``, ``exploration``...).
        """
        from timetravel.recommend import FeedbackRecommender

        rec = FeedbackRecommender(**params).fit(self.features, self.scores)
        return rec.restore(feedback) if feedback is not None else rec


def detect(store, *, n_neighbors: int = 10, method: str = "cross-view", anchor_share: float = 0.5,
           verbose: bool = True) -> Detection:  # fmt: skip
    """Extract the features of a run, fit the detector and write ``RUN/features/``.

    Parameters
    ----------
    store : RunStore
    n_neighbors : int
        k of the neighbour features and of the saved neighbour lists.
    method : {"cross-view", "consensus", "mean"}
        Detector weighting (see :class:`~timetravel.detector.AbnormalityDetector`).
    anchor_share : float
        Weight of the early-stopped AUM where the run has a labelled held-out set (0 = none).
    verbose : bool
        Progress bars.

    Returns
    -------
    Detection
    """
    from timetravel.features import extract_features

    table = extract_features(store, n_neighbors=n_neighbors, verbose=verbose)
    detector = AbnormalityDetector(method, anchor_share=anchor_share).fit(table)
    detection = Detection(table, detector, detector.scores_)
    save_detection(store, detection)
    return detection


def save_detection(store, detection: Detection) -> None:
    """Write ``RUN/features/`` atomically: arrays first, the manifest (which lists them) last."""
    d = features_dir(store.path)
    d.mkdir(parents=True, exist_ok=True)
    t = detection.features
    save_npy_atomic(d / "features.npy", t.values.astype(np.float32))
    save_npy_atomic(d / "scores.npy", np.asarray(detection.scores, dtype=np.float32))
    save_npy_atomic(d / "reference.npy", detection.detector.reference_)
    save_npy_atomic(d / "suggested.npy", t.suggested.astype(np.int64))
    save_npy_atomic(d / "predicted.npy", t.predicted.astype(np.int64))
    if t.neighbors is not None:
        save_npy_atomic(d / "neighbors.npy", t.neighbors.astype(np.int32))
    write_json_atomic(d / MANIFEST, {
        "format_version": FORMAT_VERSION,
        "n_samples": int(t.n_samples),
        "names": t.names,
        "descriptions": t.descriptions,
        "directions": t.directions.astype(int).tolist(),
        "epochs": [int(e) for e in t.epochs],
        "meta": t.meta,
        "has_neighbors": t.neighbors is not None,
        "detector": detection.detector.to_dict(),
        "created": time.time(),
    })


def load_detection(store) -> Detection:
    """Read ``RUN/features/`` without recomputing anything.

    Raises
    ------
    StoreError
        The run has no features yet (run ``timetravel detect RUN``), or a file
        is missing, of the wrong shape, or of an unknown format version.
    """
    d = features_dir(store.path)
    path = d / MANIFEST
    again = f"run `timetravel detect {store.path}` again"
    manifest = read_manifest(path, FORMAT_VERSION, fix=again)
    if manifest is None:
        raise StoreError(f"{store.path}: has no detection results yet; run `timetravel detect {store.path}` first")
    missing = sorted(_MANIFEST_KEYS - set(manifest))
    if missing:
        raise StoreError(f"{path}: written by another timetravel version (missing {', '.join(missing)}); {again}")
    n, f = store.n_samples, len(manifest["names"])
    if manifest["n_samples"] != n:
        raise StoreError(f"{path}: features are for {manifest['n_samples']} samples but the run has {n}; "
                         f"run `timetravel detect {store.path}` again")
    expected = {"features.npy": (n, f), "scores.npy": (n,), "suggested.npy": (n,), "predicted.npy": (n,)}
    if manifest["has_neighbors"]:
        expected["neighbors.npy"] = (n, int(manifest["meta"]["n_neighbors"]))
    arrays = {name: _load_array(d / name, shape, _ARRAYS[name]) for name, shape in expected.items()}
    bounds = {"neighbors.npy": (n, "sample numbers"), "suggested.npy": (store.n_classes, "classes"),
              "predicted.npy": (store.n_classes, "classes")}
    for name, (limit, what) in bounds.items():
        values = arrays.get(name)
        if values is not None and values.size and (values.min() < 0 or values.max() >= limit):
            raise StoreError(f"{d / name}: holds {what} outside 0..{limit - 1} (found {values.min()}..{values.max()}); "
                             f"{again}")
    reference = _load_array(d / "reference.npy", None, "f")
    if [int(e) for e in manifest["epochs"]] != list(store.epochs):
        logger.warning("%s: features were computed from epochs %s but the run now has %s; "
                       "run `timetravel detect %s` to refresh them", d, manifest["epochs"], store.epochs, store.path)
    table = FeatureTable(
        values=arrays["features.npy"], names=list(manifest["names"]), descriptions=list(manifest["descriptions"]),
        directions=np.asarray(manifest["directions"], dtype=np.int8), labels=np.asarray(store.labels),
        suggested=arrays["suggested.npy"].astype(np.int64), predicted=arrays["predicted.npy"].astype(np.int64),
        neighbors=arrays.get("neighbors.npy"), epochs=list(manifest["epochs"]), meta=dict(manifest["meta"]),
    )
    try:
        detector = AbnormalityDetector.from_saved(manifest["detector"], reference, table.values)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{path}: the saved detector cannot be restored ({exc!r}); {again}") from None
    return Detection(table, detector, arrays["scores.npy"])


def _load_array(path, shape, kinds: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise StoreError(f"{path}: file is missing; run `timetravel detect` on the run again") from None
    except (ValueError, OSError, EOFError) as exc:
        raise StoreError(f"{path}: cannot be read ({exc})") from None
    if (shape is not None and array.shape != shape) or array.dtype.kind not in kinds:
        raise StoreError(f"{path}: expected shape {shape} ({kinds}), got {array.shape} {array.dtype}")
    return array
