"""Numba kernels of the projection: the layout SGD and the exact re-ranking of kNN candidates.

Imported only when a projection is computed (numba's import and the first
compile cost seconds; compiled code is cached in ``NUMBA_CACHE_DIR`` or next to
this file). Both kernels are deterministic: the SGD is umap-learn's sequential
per-edge schedule with its own seeded generator, and the re-ranking works on
each query independently. Both run on one thread: the projection runs
several epochs' work at once through joblib instead.
"""

from __future__ import annotations

import numba
import numpy as np

CLIP = 4.0  # umap's gradient clip


@numba.njit(cache=True, inline="always")
def _next_random(state: np.ndarray) -> np.uint64:
    """splitmix64: a small, fast generator whose whole state is one uint64."""
    state[0] += np.uint64(0x9E3779B97F4A7C15)
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _clip(value: float) -> float:
    if value > CLIP:
        return CLIP
    if value < -CLIP:
        return -CLIP
    return value


@numba.njit(cache=True)
def optimize_layout_sgd(
    y: np.ndarray,
    head: np.ndarray,
    tail: np.ndarray,
    epochs_per_sample: np.ndarray,
    a: float,
    b: float,
    negative_sample_rate: float,
    n_epochs: int,
    learning_rate: float,
    anchor: np.ndarray,
    spring: np.ndarray,
    seed: int,
) -> None:
    """umap-learn's ``optimize_layout_euclidean`` (sequential, move_other=True) plus springs, in place.

    Each edge is sampled every ``epochs_per_sample`` epochs; every sample
    pulls its two ends together and pushes the head away from
    ``negative_sample_rate`` random points. After each epoch every point is
    pulled towards ``anchor`` by ``spring`` (scaled by the learning rate).
    ``spring`` may be empty to disable the springs.
    """
    n_vertices = y.shape[0]
    n_edges = head.shape[0]
    state = np.empty(1, dtype=np.uint64)
    state[0] = np.uint64(seed)
    epochs_per_negative = epochs_per_sample / negative_sample_rate
    next_sample = epochs_per_sample.copy()
    next_negative = epochs_per_negative.copy()
    use_springs = spring.shape[0] == n_vertices
    for epoch in range(n_epochs):
        alpha = learning_rate * (1.0 - epoch / n_epochs)
        for i in range(n_edges):
            if next_sample[i] > epoch:
                continue
            j = head[i]
            k = tail[i]
            dx = y[j, 0] - y[k, 0]
            dy = y[j, 1] - y[k, 1]
            d2 = dx * dx + dy * dy
            coeff = 0.0
            if d2 > 0.0:
                coeff = -2.0 * a * b * d2 ** (b - 1.0) / (a * d2**b + 1.0)
            gx = _clip(coeff * dx) * alpha
            gy = _clip(coeff * dy) * alpha
            y[j, 0] += gx
            y[j, 1] += gy
            y[k, 0] -= gx
            y[k, 1] -= gy
            next_sample[i] += epochs_per_sample[i]
            n_neg = int((epoch - next_negative[i]) / epochs_per_negative[i])
            for _ in range(n_neg):
                k = int(_next_random(state) % np.uint64(n_vertices))
                if k == j:
                    continue
                dx = y[j, 0] - y[k, 0]
                dy = y[j, 1] - y[k, 1]
                d2 = dx * dx + dy * dy
                if d2 > 0.0:
                    coeff = 2.0 * b / ((0.001 + d2) * (a * d2**b + 1.0))
                    y[j, 0] += _clip(coeff * dx) * alpha
                    y[j, 1] += _clip(coeff * dy) * alpha
            next_negative[i] += n_neg * epochs_per_negative[i]
        if use_springs:
            for j in range(n_vertices):
                pull = min(alpha * spring[j], 1.0)
                y[j, 0] -= pull * (y[j, 0] - anchor[j, 0])
                y[j, 1] -= pull * (y[j, 1] - anchor[j, 1])


@numba.njit(cache=True)
def rerank(base: np.ndarray, queries: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact squared distances from each query to its candidate rows of ``base``; the k nearest, ascending.

    Negative candidate indices (faiss padding) and repeated candidates are skipped;
    rows with fewer than k valid candidates are padded with index -1.
    """
    n_q, n_c = cand.shape
    dim = base.shape[1]
    out_d = np.full((n_q, k), np.inf, dtype=np.float32)
    out_i = np.full((n_q, k), -1, dtype=np.int64)
    for q in range(n_q):
        dist = np.full(n_c, np.inf, dtype=np.float32)
        for c in range(n_c):
            j = cand[q, c]
            if j < 0:
                continue
            seen = False
            for p in range(c):
                if cand[q, p] == j:
                    seen = True
                    break
            if seen:
                continue
            s = np.float32(0.0)
            for d in range(dim):
                t = base[j, d] - queries[q, d]
                s += t * t
            dist[c] = s
        order = np.argsort(dist, kind="mergesort")
        for r in range(min(k, n_c)):
            c = order[r]
            if dist[c] < np.inf:
                out_d[q, r] = dist[c]
                out_i[q, r] = cand[q, c]
    return out_d, out_i
