"""Faithfulness of a projection: plain functions over arrays (higher is better except errors).

- :func:`knn_preservation`: fraction of each point's k nearest neighbours in
  embedding space that are also among its k nearest on the canvas.
- :func:`prediction_preservation`: fraction of points whose class, read off
  their inverse-mapped canvas position through the classification head,
  equals the model's prediction.
- :func:`reconstruction_error`: how far the inverse map lands from the
  embedding, relative to the embedding's variance.
- :func:`temporal_consistency`: Spearman rank correlation between how far
  points move in embedding space and how far they move on the canvas from one
  epoch to the next.
"""

from __future__ import annotations

import numpy as np

from timetravel.numerics import knn_of_rows


def _chunked_rows(n: int, chunk: int = 8192):
    for start in range(0, n, chunk):
        yield slice(start, min(start + chunk, n))


def knn_preservation(x: np.ndarray, xy: np.ndarray, rows: np.ndarray | None = None, k: int = 15) -> float:
    """Mean fraction of the k nearest neighbours in embedding space kept on the canvas.

    Parameters
    ----------
    x : ndarray of shape (N, D)
        Embeddings.
    xy : ndarray of shape (N, 2)
        Canvas positions of the same points.
    rows : ndarray of int, optional
        Query points (all by default); neighbours are searched among all N.
    k : int
        Neighbourhood size (at most ``N - 1``).

    Returns
    -------
    float in ``[0, 1]``

    Examples
    --------
    >>> x = np.arange(20, dtype=np.float32).reshape(10, 2)
    >>> knn_preservation(x, x * 3, k=3)
    1.0
    """
    n = len(x)
    if len(xy) != n:
        raise ValueError(f"x has {n} rows but xy has {len(xy)}")
    k = min(k, n - 1)
    rows = np.arange(n) if rows is None else np.asarray(rows)
    high = knn_of_rows(np.asarray(x, dtype=np.float32), rows, k)
    low = knn_of_rows(np.asarray(xy, dtype=np.float32), rows, k)
    hits = np.zeros(len(rows), dtype=np.int64)
    for j in range(k):
        hits += (low == high[:, j : j + 1]).any(axis=1)
    return float(hits.mean() / k)


def prediction_preservation(inverse_pred: np.ndarray, model_pred: np.ndarray) -> float:
    """Fraction of points whose class from the inverse map equals the model's prediction."""
    inverse_pred, model_pred = np.asarray(inverse_pred), np.asarray(model_pred)
    if inverse_pred.shape != model_pred.shape:
        raise ValueError(f"prediction arrays differ in shape: {inverse_pred.shape} vs {model_pred.shape}")
    return float(np.mean(inverse_pred == model_pred)) if len(model_pred) else float("nan")


def reconstruction_error(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Relative squared error ``sum |x - x_hat|^2 / sum |x - mean(x)|^2`` (0 is perfect).

    Both arrays are read in row slices (``x_hat`` may be anything sliceable).
    """
    num = 0.0
    den = 0.0
    mean = np.zeros(x.shape[1])
    for sl in _chunked_rows(len(x)):
        mean += np.asarray(x[sl], dtype=np.float64).sum(axis=0)
    mean /= max(len(x), 1)
    for sl in _chunked_rows(len(x)):
        xs = np.asarray(x[sl], dtype=np.float64)
        num += float(((xs - np.asarray(x_hat[sl], dtype=np.float64)) ** 2).sum())
        den += float(((xs - mean) ** 2).sum())
    return num / den if den > 0 else float("nan")


def displacement(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per-row Euclidean distance between two same-shaped arrays (streamed in chunks)."""
    if before.shape != after.shape:
        raise ValueError(f"arrays differ in shape: {before.shape} vs {after.shape}")
    out = np.empty(len(before), dtype=np.float64)
    for sl in _chunked_rows(len(before)):
        d = np.asarray(after[sl], dtype=np.float32) - np.asarray(before[sl], dtype=np.float32)
        out[sl] = np.sqrt((d.astype(np.float64) ** 2).sum(axis=1))
    return out


def temporal_consistency(x_prev: np.ndarray, x: np.ndarray, xy_prev: np.ndarray, xy: np.ndarray) -> float:
    """Spearman correlation between movement in embedding space and on the canvas.

    Parameters
    ----------
    x_prev, x : ndarray of shape (N, D)
        Embeddings at two consecutive epochs.
    xy_prev, xy : ndarray of shape (N, 2)
        Canvas positions at the same epochs.

    Returns
    -------
    float in ``[-1, 1]``; NaN when either movement is constant.
    """
    from scipy.stats import spearmanr

    moved_high = displacement(x_prev, x)
    moved_low = displacement(xy_prev, xy)
    if np.ptp(moved_high) == 0 or np.ptp(moved_low) == 0:
        return float("nan")
    return float(spearmanr(moved_high, moved_low).statistic)


class _Decoded:
    """Rows of ``inverse_map(xy)`` computed slice by slice, so the whole reconstruction is never held."""

    def __init__(self, inverse_map, xy: np.ndarray) -> None:
        self.inverse_map, self.xy = inverse_map, xy

    def __len__(self) -> int:
        return len(self.xy)

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self.inverse_map(np.asarray(self.xy[rows]))


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 6)


def evaluate_split(
    x: np.ndarray,
    predictions: np.ndarray,
    xy: np.ndarray,
    inverse_map,
    head: tuple[np.ndarray, np.ndarray],
    *,
    rows: np.ndarray | None = None,
    k: int = 15,
    x_prev: np.ndarray | None = None,
    xy_prev: np.ndarray | None = None,
) -> dict[str, float | None]:
    """All faithfulness metrics of one epoch on one set of samples.

    Parameters
    ----------
    x : ndarray of shape (N, D)
        Embeddings.
    predictions : ndarray of shape (N,)
        The model's predicted classes.
    xy : ndarray of shape (N, 2)
        Canvas positions.
    inverse_map : InverseMap
        Canvas -> embedding map of the epoch (anything with ``__call__(xy)``
        and ``logits(xy, weight, bias)``).
    head : (weight, bias)
        The epoch's classification head.
    rows : ndarray of int, optional
        Query samples of the kNN preservation (all by default).
    k : int
        Neighbourhood size of the kNN preservation.
    x_prev, xy_prev : ndarray, optional
        Embeddings and positions at the previous epoch, for the temporal consistency.

    Returns
    -------
    dict
        ``knn_preservation``, ``prediction_preservation``, ``reconstruction_error``,
        ``temporal_consistency``; None where undefined (first epoch, too few samples).
    """
    knn = knn_preservation(x, xy, rows, k) if len(x) > 1 else None
    inverse_pred = inverse_map.logits(xy, *head).argmax(axis=1)
    temporal = None
    if x_prev is not None and xy_prev is not None:
        temporal = temporal_consistency(x_prev, x, xy_prev, xy)
    return {
        "knn_preservation": _finite_or_none(knn),
        "prediction_preservation": _finite_or_none(prediction_preservation(inverse_pred, predictions)),
        "reconstruction_error": _finite_or_none(reconstruction_error(x, _Decoded(inverse_map, xy))),
        "temporal_consistency": _finite_or_none(temporal),
    }
