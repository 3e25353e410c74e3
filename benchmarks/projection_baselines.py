"""Baseline projections the benchmark compares against: PCA, independent UMAP, AlignedUMAP per epoch.

Each function takes a run store, the epochs and (optionally) the rows of the
training set to use, and returns ``{epoch: (N, 2) float32}`` plus the wall
time spent per epoch. umap-learn is imported inside the functions (its import
compiles numba code for tens of seconds).
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from timetravel.store import RunStore

BASELINES = ("pca", "umap", "aligned_umap")


def _rows_embedding(store: RunStore, epoch: int, rows: np.ndarray | None) -> np.ndarray:
    x = store.embedding(epoch)
    return np.asarray(x if rows is None else x[rows], dtype=np.float32)


def _per_epoch(
    store: RunStore, epochs: Sequence[int], rows: np.ndarray | None, make: Callable[[], object]
) -> tuple[dict[int, np.ndarray], float]:
    """Fit a fresh ``make()`` reducer to each epoch; the layouts and the mean seconds per epoch."""
    out = {}
    t0 = time.perf_counter()
    for e in epochs:
        out[e] = np.asarray(make().fit_transform(_rows_embedding(store, e, rows)), dtype=np.float32)
    return out, (time.perf_counter() - t0) / max(len(epochs), 1)


def pca_layouts(
    store: RunStore, epochs: Sequence[int], rows: np.ndarray | None = None, **_: object
) -> tuple[dict[int, np.ndarray], float]:
    """First two principal components of each epoch, fitted independently (sklearn ``PCA``)."""
    from sklearn.decomposition import PCA

    return _per_epoch(store, epochs, rows, lambda: PCA(n_components=2))


def umap_layouts(
    store: RunStore,
    epochs: Sequence[int],
    rows: np.ndarray | None = None,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    random_state: int | None = None,
) -> tuple[dict[int, np.ndarray], float]:
    """umap-learn's ``UMAP`` fitted to each epoch independently.

    ``random_state=None`` (the default) lets umap use all cores, as a user would.
    """
    import umap

    return _per_epoch(
        store, epochs, rows, lambda: umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=random_state)
    )


def aligned_umap_layouts(
    store: RunStore,
    epochs: Sequence[int],
    rows: np.ndarray | None = None,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    random_state: int | None = None,
) -> tuple[dict[int, np.ndarray], float]:
    """umap-learn's ``AlignedUMAP`` over all the epochs at once (each sample related to itself).

    It holds every epoch's embeddings in memory, so pass ``rows`` for big runs.
    """
    import umap

    data = [_rows_embedding(store, e, rows) for e in epochs]
    identity = {i: i for i in range(len(data[0]))}
    t0 = time.perf_counter()
    reducer = umap.AlignedUMAP(n_neighbors=n_neighbors, min_dist=min_dist, random_state=random_state)
    reducer.fit(data, relations=[identity] * (len(data) - 1))
    seconds = (time.perf_counter() - t0) / max(len(epochs), 1)
    return {e: np.asarray(y, dtype=np.float32) for e, y in zip(epochs, reducer.embeddings_)}, seconds


def baseline_layouts(name: str, store: RunStore, epochs: Sequence[int], rows: np.ndarray | None = None, **kwargs):
    """Dispatch to :func:`pca_layouts`, :func:`umap_layouts` or :func:`aligned_umap_layouts` by name."""
    functions = {"pca": pca_layouts, "umap": umap_layouts, "aligned_umap": aligned_umap_layouts}
    if name not in functions:
        raise ValueError(f"unknown baseline {name!r}; choose from {BASELINES}")
    return functions[name](store, epochs, rows, **kwargs)
