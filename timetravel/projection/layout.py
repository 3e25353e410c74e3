"""The 2D layout of one epoch: umap-learn's cross-entropy SGD, warm-started, with springs.

The SGD is umap-learn's (an edge of weight ``w`` is sampled every
``max(w) / w`` epochs, pulling its ends together and pushing its head away
from ``negative_sample_rate`` random points), run by a numba kernel with its
own seeded generator so that it is deterministic.

Temporal consistency comes from two things: the layout of epoch ``e`` starts
from the layout of epoch ``e - 1`` with a small learning rate, and each point
is tied to its previous position by a spring (set by the caller; the
projector makes it strong for a sample whose kNN neighbours stayed the same
and whose embedding barely moved). A sample that did not move stays put; one
that changed neighbourhood is free to move to its new one. What rotation
remains is removed by :func:`align_to`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from timetravel.numerics import principal_axes
from timetravel.projection.graph import FuzzyGraph

logger = logging.getLogger(__name__)


@lru_cache(maxsize=16)
def find_ab_params(spread: float = 1.0, min_dist: float = 0.1) -> tuple[float, float]:
    """umap-learn's ``a, b`` of the low-dimensional similarity ``1 / (1 + a d^(2b))``.

    Fitted, as in umap-learn, to the curve that is 1 up to ``min_dist`` and
    decays as ``exp(-(d - min_dist) / spread)`` after it.
    """
    from scipy.optimize import curve_fit

    xv = np.linspace(0, spread * 3, 300)
    yv = np.where(xv < min_dist, 1.0, np.exp(-(xv - min_dist) / spread))
    params, _ = curve_fit(lambda x, a, b: 1.0 / (1.0 + a * x ** (2 * b)), xv, yv)
    return float(params[0]), float(params[1])


@dataclass(frozen=True)
class LayoutParams:
    """Settings of :func:`optimize_layout` (see :class:`TemporalProjector` for their meaning)."""

    a: float
    b: float
    negative_sample_rate: int = 5


def initial_layout(x: np.ndarray, *, scale: float = 10.0, max_rows: int = 20000) -> np.ndarray:
    """A deterministic starting layout: the first two principal components, scaled to ``[-scale, scale]``.

    The axes are estimated on at most ``max_rows`` evenly spaced rows.
    """
    step = max(1, len(x) // max_rows)
    mean, comps = principal_axes(np.asarray(x[::step], dtype=np.float32), 2)
    y = (np.asarray(x, dtype=np.float32) - mean) @ comps.T
    y = y.astype(np.float64) - y.mean(axis=0)
    y *= scale / max(float(np.abs(y).max()), 1e-12)
    return y.astype(np.float32)


def optimize_layout(
    init: np.ndarray,
    graph: FuzzyGraph,
    params: LayoutParams,
    *,
    n_epochs: int,
    learning_rate: float,
    seed: int,
    anchor: np.ndarray | None = None,
    anchor_strength: np.ndarray | None = None,
) -> np.ndarray:
    """Run umap-style SGD on a fuzzy graph from a starting layout.

    Parameters
    ----------
    init : ndarray of shape (N, 2)
        Starting positions (the previous epoch's layout for a warm start).
    graph : FuzzyGraph
        The epoch's fuzzy kNN graph.
    params : LayoutParams
        ``a``, ``b`` and the negative sampling rate.
    n_epochs : int
        SGD epochs; the learning rate decays linearly to 0 over them.
    learning_rate : float
        Initial learning rate.
    seed : int
        Seed of the negative sampling.
    anchor : ndarray of shape (N, 2), optional
        Positions each point is pulled back towards (its previous layout).
    anchor_strength : ndarray of shape (N,), optional
        Spring constant of each point's pull towards ``anchor``.

    Returns
    -------
    ndarray of shape (N, 2), float32
    """
    from timetravel.projection._kernels import optimize_layout_sgd

    y = np.array(init, dtype=np.float64)
    weight = graph.weight.astype(np.float64)
    # umap's schedule: an edge of weight w is sampled every max(w) / w epochs; edges too weak
    # to be sampled even once in a 200-epoch fit are dropped
    keep = weight >= weight.max() / 200.0
    epochs_per_sample = weight.max() / weight[keep]
    if anchor is None:
        anchor_arr = np.zeros((0, 2))
        spring = np.zeros(0)
    else:
        anchor_arr = np.asarray(anchor, dtype=np.float64)
        spring = np.asarray(anchor_strength, dtype=np.float64)
        if anchor_arr.shape != y.shape or spring.shape != (len(y),):
            raise ValueError(f"anchor {anchor_arr.shape} and anchor_strength {spring.shape} must match {y.shape}")
    optimize_layout_sgd(
        y,
        graph.head[keep],
        graph.tail[keep],
        epochs_per_sample,
        float(params.a),
        float(params.b),
        float(params.negative_sample_rate),
        int(n_epochs),
        float(learning_rate),
        anchor_arr,
        spring,
        int(seed) & 0x7FFFFFFFFFFFFFFF,
    )
    return y.astype(np.float32)


def align_to(previous: np.ndarray, current: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Rotate and translate ``current`` onto ``previous`` (weighted Procrustes, no reflection, no scaling).

    The layout loss is invariant to rigid motions, so any rotation picked up
    during optimisation is removed before the frame is stored.
    """
    w = np.ones(len(current)) if weight is None else np.asarray(weight, dtype=np.float64)
    w = w / max(w.sum(), 1e-12)
    p = np.asarray(previous, dtype=np.float64)
    c = np.asarray(current, dtype=np.float64)
    mp, mc = w @ p, w @ c
    cov = (c - mc).T @ ((p - mp) * w[:, None])
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag([1.0, d]) @ vt
    return ((c - mc) @ rot + mp).astype(np.float32)
