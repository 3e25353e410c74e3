"""The 2D layout of one epoch: umap-learn's cross-entropy SGD, batched in torch, warm-started.

Each SGD epoch samples every edge of the fuzzy graph with probability
proportional to its weight, pulls its ends together with umap's attractive
gradient, pushes each sampled head away from ``negative_sample_rate`` random
points, and applies all of the epoch's (clipped) gradients at once. Batching
the updates makes the step vectorised (and deterministic under a seed)
instead of umap's per-edge numba loop.

Temporal consistency comes from two things: the layout of epoch ``e`` starts
from the layout of epoch ``e - 1`` with a small learning rate, and each point
is tied to its previous position by a spring whose strength grows with the
fraction of its k nearest neighbours that stayed the same. A point whose
neighbourhood did not change stays put; a point that changed neighbourhood is
free to move to its new one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from timetravel.projection.graph import FuzzyGraph

logger = logging.getLogger(__name__)

CLIP = 4.0  # umap's gradient clip


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
    learning_rate: float = 1.0


def initial_layout(x: np.ndarray, *, scale: float = 10.0) -> np.ndarray:
    """A deterministic starting layout: the first two principal components, scaled to ``[-scale, scale]``.

    Signs are fixed so that the largest-magnitude loading of each component is
    positive, making the result independent of the SVD solver's sign choice.
    """
    import torch

    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    xt = xt - xt.mean(dim=0)
    # a randomised low-rank SVD would be faster but not bit-reproducible across solvers
    _, _, v = torch.linalg.svd(xt[: min(len(xt), 20000)], full_matrices=False)
    comps = v[:2]
    signs = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
    y = (xt @ (comps * signs).T).numpy().astype(np.float64)
    y -= y.mean(axis=0)
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
        Seed of the edge and negative sampling.
    anchor : ndarray of shape (N, 2), optional
        Positions each point is pulled back towards (its previous layout).
    anchor_strength : ndarray of shape (N,), optional
        Spring constant of each point's pull towards ``anchor``.

    Returns
    -------
    ndarray of shape (N, 2), float32
    """
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    y = torch.tensor(np.asarray(init, dtype=np.float32))
    n = len(y)
    head = torch.from_numpy(graph.head)
    tail = torch.from_numpy(graph.tail)
    w = torch.from_numpy(graph.weight)
    # umap drops edges too weak to be sampled even once over a full fit
    keep = w >= w.max() / 200.0
    head, tail, w = head[keep], tail[keep], w[keep]
    prob = w / w.max()
    a, b = params.a, params.b
    neg = params.negative_sample_rate
    if anchor is not None:
        anchor_t = torch.as_tensor(np.asarray(anchor, dtype=np.float32))
        spring = torch.as_tensor(np.asarray(anchor_strength, dtype=np.float32))[:, None]
    for epoch in range(n_epochs):
        alpha = learning_rate * (1.0 - epoch / n_epochs)
        sampled = torch.rand(len(prob), generator=gen) < prob
        h, t = head[sampled], tail[sampled]
        step = torch.zeros_like(y)
        diff = y[h] - y[t]
        d2 = (diff * diff).sum(dim=1)
        coeff = torch.where(
            d2 > 0, -2.0 * a * b * d2.clamp_min(1e-12).pow(b - 1.0) / (a * d2.pow(b) + 1.0), torch.zeros_like(d2)
        )
        grad = (coeff[:, None] * diff).clamp(-CLIP, CLIP)
        step.index_add_(0, h, grad)
        step.index_add_(0, t, -grad)
        if neg:
            nh = h.repeat_interleave(neg)
            nt = torch.randint(0, n, (len(nh),), generator=gen)
            diff = y[nh] - y[nt]
            d2 = (diff * diff).sum(dim=1)
            coeff = 2.0 * b / ((0.001 + d2) * (a * d2.pow(b) + 1.0))
            grad = (coeff[:, None] * diff).clamp(-CLIP, CLIP)
            grad[nh == nt] = 0.0
            step.index_add_(0, nh, grad)
        if anchor is not None:
            step -= spring * (y - anchor_t)
        y += alpha * step
    return y.numpy().astype(np.float32, copy=False)


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
