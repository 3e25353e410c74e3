"""The fuzzy kNN graph the layout is fitted to (neighbours from :mod:`timetravel.numerics`).

The graph is umap-learn's fuzzy simplicial set, computed here with vectorised
numpy instead of numba so that importing it costs nothing: each point's
distances to its k nearest neighbours are turned into membership strengths
``exp(-(d - rho) / sigma)`` (``rho`` = distance to the nearest neighbour,
``sigma`` chosen so the strengths sum to ``log2(k)``), and the directed
graph is symmetrised with the fuzzy union ``A + A.T - A * A.T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from timetravel.numerics import NeighbourIndex


@dataclass(frozen=True)
class FuzzyGraph:
    """A symmetric weighted kNN graph in coordinate form.

    Attributes
    ----------
    head, tail : ndarray of shape (E,), int64
        Edge end points; every undirected edge appears in both directions.
    weight : ndarray of shape (E,), float32
        Membership strength in ``(0, 1]``.
    knn : ndarray of shape (N, k), int64
        The directed k nearest neighbours (self excluded) the graph came from.
    """

    head: np.ndarray
    tail: np.ndarray
    weight: np.ndarray
    knn: np.ndarray

    @property
    def n_vertices(self) -> int:
        """Number of points N."""
        return len(self.knn)

    def union(self, other: FuzzyGraph) -> FuzzyGraph:
        """Fuzzy union ``a + b - a * b`` of the edge weights of two graphs on the same points (keeps ``knn``)."""
        from scipy import sparse

        n = self.n_vertices
        a = sparse.csr_matrix((self.weight, (self.head, self.tail)), shape=(n, n))
        b = sparse.csr_matrix((other.weight, (other.head, other.tail)), shape=(n, n))
        return _from_sparse(a + b - a.multiply(b), self.knn)

    def reweighted(self, groups: np.ndarray, factor: float) -> FuzzyGraph:
        """The same graph with the weight of every edge between different ``groups`` multiplied by ``factor``."""
        across = groups[self.head] != groups[self.tail]
        weight = np.where(across, self.weight * np.float32(factor), self.weight).astype(np.float32)
        return FuzzyGraph(self.head, self.tail, weight, self.knn)


def smooth_knn_dist(dist: np.ndarray, *, n_iter: int = 64, bandwidth: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-point ``sigma`` and ``rho`` of umap-learn's smooth kNN distances (vectorised).

    Parameters
    ----------
    dist : ndarray of shape (N, k)
        Distances to each point's k nearest neighbours (self excluded), ascending.

    Returns
    -------
    sigma, rho : ndarray of shape (N,), float64
    """
    dist = np.asarray(dist, dtype=np.float64)
    k = dist.shape[1]
    target = np.log2(k + 1) * bandwidth  # umap counts the point itself among its n_neighbors
    positive = np.where(dist > 0, dist, np.inf)
    rho = positive.min(axis=1)
    rho[~np.isfinite(rho)] = 0.0
    excess = np.maximum(dist - rho[:, None], 0.0)
    lo = np.zeros(len(dist))
    hi = np.full(len(dist), np.inf)
    mid = np.ones(len(dist))
    for _ in range(n_iter):
        psum = np.exp(-excess / mid[:, None]).sum(axis=1)
        too_big = psum > target
        hi = np.where(too_big, mid, hi)
        lo = np.where(too_big, lo, mid)
        mid = np.where(np.isinf(hi), mid * 2, (lo + hi) / 2)
    # umap's floor keeps sigma from collapsing where all neighbours are equidistant
    mean_all = dist.mean()
    mean_row = dist.mean(axis=1)
    floor = np.where(rho > 0, 1e-3 * mean_row, 1e-3 * mean_all)
    return np.maximum(mid, floor), rho


def membership(dist: np.ndarray, sigma: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Fuzzy membership strengths ``exp(-(d - rho) / sigma)`` of kNN edges."""
    w = np.exp(-np.maximum(dist - rho[:, None], 0.0) / sigma[:, None])
    return w.astype(np.float32)


def fuzzy_graph(dist: np.ndarray, index: np.ndarray) -> FuzzyGraph:
    """The symmetric fuzzy simplicial set of a kNN result (umap-learn's ``fuzzy_simplicial_set``).

    Parameters
    ----------
    dist, index : ndarray of shape (N, k)
        Output of :func:`all_knn`.

    Returns
    -------
    FuzzyGraph
    """
    from scipy import sparse

    n, k = index.shape
    sigma, rho = smooth_knn_dist(dist)
    w = membership(dist, sigma, rho)
    rows = np.repeat(np.arange(n), k)
    a = sparse.csr_matrix((w.ravel(), (rows, index.ravel())), shape=(n, n))
    at = a.T.tocsr()
    return _from_sparse(a + at - a.multiply(at), index)


def _from_sparse(matrix, knn: np.ndarray) -> FuzzyGraph:
    coo = matrix.tocoo()
    keep = coo.data > 0
    order = np.lexsort((coo.col[keep], coo.row[keep]))  # canonical order: deterministic sampling
    return FuzzyGraph(
        head=coo.row[keep][order].astype(np.int64),
        tail=coo.col[keep][order].astype(np.int64),
        weight=coo.data[keep][order].astype(np.float32),
        knn=knn.astype(np.int64),
    )


def group_graph(x: np.ndarray, groups: np.ndarray, k: int, *, seed: int = 0) -> FuzzyGraph:
    """Fuzzy kNN graph where each point's k neighbours are searched among the points of its own group only.

    Points of groups with at most ``k`` members get no edges. ``knn`` of the
    result is meaningless (-1).

    Parameters
    ----------
    x : ndarray of shape (N, D)
    groups : ndarray of shape (N,), int
        E.g. the model's prediction per sample.
    k : int
        Neighbours per point within its group.
    seed : int
        Seed of approximate searches on big groups.
    """
    n = len(x)
    dist = np.zeros((n, k), dtype=np.float32)
    index = np.repeat(np.arange(n)[:, None], k, axis=1)  # self-loops for points left without neighbours
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if len(members) <= k:
            continue
        d, i = NeighbourIndex(x[members], seed=seed).query(None, k)
        dist[members], index[members] = d, members[i]
    graph = fuzzy_graph(dist, index)
    loop = graph.head == graph.tail
    return FuzzyGraph(graph.head[~loop], graph.tail[~loop], graph.weight[~loop], np.full((n, k), -1))


def neighbour_overlap(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Fraction of each point's current k neighbours that were also its neighbours before.

    Parameters
    ----------
    previous, current : ndarray of shape (N, k), int

    Returns
    -------
    ndarray of shape (N,), float32, in ``[0, 1]``
    """
    if previous.shape != current.shape:
        raise ValueError(f"neighbour lists differ in shape: {previous.shape} vs {current.shape}")
    hits = np.zeros(len(current), dtype=np.int64)
    for j in range(current.shape[1]):
        hits += (previous == current[:, j : j + 1]).any(axis=1)
    return (hits / current.shape[1]).astype(np.float32)
