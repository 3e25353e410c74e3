"""Activation patterns: which embedding units set a group of samples apart from a reference, per epoch.

As ActiVis's neuron-activation matrix, but per epoch: for a selection and a reference
(by default the rest of the selection's classes), every embedding unit gets a separation
score (Cohen's d: difference of means over the pooled standard deviation); the most
separating units are shown as a heatmap of standardised means (the selection, the
reference, and a few of the selection's samples), with each unit's value distribution
in both.

The per-class sums behind the reference are computed once per epoch, in chunks, from the
memory-mapped store (:class:`EmbeddingStats`); a pattern then reads only the selection's
rows and a bounded sample of the reference.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from timetravel.errors import TimetravelError

CHUNK_ROWS = 8192
REFERENCE_SAMPLE = 2000  # reference rows read for the value distributions
SELECTION_SAMPLE = 5000  # selection rows read at most
HIST_BINS = 20


@dataclass(frozen=True)
class ClassMoments:
    """Per-class count, sum and sum of squares of every embedding unit at one epoch (float64)."""

    counts: np.ndarray  # (K,)
    sums: np.ndarray  # (K, D)
    squares: np.ndarray  # (K, D)


class EmbeddingStats:
    """Per-epoch class moments of a run's embeddings, computed on first use and kept (thread-safe).

    Parameters
    ----------
    store : RunStore
    """

    def __init__(self, store) -> None:
        self.store = store
        self._moments: dict[int, ClassMoments] = {}
        self._lock = threading.Lock()

    def prefetch(self, epochs: list[int], executor) -> None:
        """Compute the moments of ``epochs`` on ``executor`` (so stepping to them is instant)."""
        with self._lock:
            missing = [e for e in epochs if e not in self._moments]
        for epoch in missing:
            executor.submit(self.moments, epoch)

    def moments(self, epoch: int) -> ClassMoments:
        """The class moments of ``epoch`` (one chunked pass over its embedding the first time)."""
        with self._lock:
            cached = self._moments.get(epoch)
        if cached is not None:
            return cached
        store = self.store
        emb = store.embedding(epoch)
        labels = np.asarray(store.labels)
        k, d = store.n_classes, store.embedding_dim
        sums, squares = np.zeros((k, d)), np.zeros((k, d))
        for start in range(0, store.n_samples, CHUNK_ROWS):
            block = np.asarray(emb[start : start + CHUNK_ROWS], dtype=np.float64)
            _add_by_class(sums, squares, block, labels[start : start + len(block)])
        moments = ClassMoments(np.bincount(labels, minlength=k).astype(np.float64), sums, squares)
        with self._lock:
            self._moments[epoch] = moments
        return moments


def _add_by_class(sums: np.ndarray, squares: np.ndarray, block: np.ndarray, labels: np.ndarray) -> None:
    """Add each row of ``block`` (and its square) to its class's row of ``sums`` (``squares``).

    Sorted by class and summed with ``reduceat``: single-threaded numpy, which keeps steady when the
    cores are busy (a BLAS one-hot product stalls then).
    """
    order = np.argsort(labels, kind="stable")
    ordered = labels[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    rows = block[order]
    classes = ordered[starts]
    sums[classes] += np.add.reduceat(rows, starts, axis=0)
    squares[classes] += np.add.reduceat(rows * rows, starts, axis=0)


@dataclass(frozen=True)
class ActivationPattern:
    """The most separating units of one epoch; see :func:`activation_pattern`.

    Attributes
    ----------
    epoch : int
    reference : str
        What the selection was compared with ("its classes", "the rest of the run", or a group's name).
    units : ndarray of shape (U,)
        Unit numbers, most separating first.
    separation : ndarray of shape (U,)
        Cohen's d of each unit (selection minus reference, in pooled standard deviations).
    rows : ndarray of shape (R, U)
        Heatmap values: unit means standardised by the run's mean and std at this epoch.
    row_names : list of str
        "selection (mean)", "reference (mean)", then "#i" per shown sample.
    edges : ndarray of shape (U, B + 1)
        Histogram bin edges per unit.
    selection_hist, reference_hist : ndarray of shape (U, B)
        Share of the selection's / the reference's values in each bin.
    n_selection, n_reference : int
    """

    epoch: int
    reference: str
    units: np.ndarray
    separation: np.ndarray
    rows: np.ndarray
    row_names: list[str]
    edges: np.ndarray
    selection_hist: np.ndarray
    reference_hist: np.ndarray
    n_selection: int
    n_reference: int


def _read_rows(emb, indices: np.ndarray) -> np.ndarray:
    """Rows ``indices`` (sorted) of a memory-mapped array as float64, in chunks."""
    out = np.empty((len(indices), emb.shape[1]), dtype=np.float64)
    for start in range(0, len(indices), CHUNK_ROWS):
        part = indices[start : start + CHUNK_ROWS]
        out[start : start + len(part)] = emb[part]
    return out


def activation_pattern(
    store,
    epoch: int,
    selection: np.ndarray,
    reference: np.ndarray | None = None,
    *,
    reference_name: str | None = None,
    stats: EmbeddingStats | None = None,
    top: int = 24,
    instances: int = 12,
    random_state: int = 0,
) -> ActivationPattern:
    """The ``top`` embedding units that best separate ``selection`` from a reference at ``epoch``.

    Parameters
    ----------
    store : RunStore
    epoch : int
    selection : array of int
        Sample indices.
    reference : array of int, optional
        Samples to compare with; default: the other samples of the selection's given
        classes (or the rest of the run when the selection is those classes).
    reference_name : str, optional
        How to call ``reference`` in the result.
    stats : EmbeddingStats, optional
        Shared per-epoch class moments (computed here when omitted).
    top : int
        Units to keep.
    instances : int
        Selection samples shown as their own heatmap rows.
    random_state : int
        Seed of the row samples read for the distributions.

    Returns
    -------
    ActivationPattern

    Raises
    ------
    TimetravelError
        The selection or the reference is empty.
    """
    selection = np.unique(np.asarray(selection, dtype=np.int64))
    if not len(selection):
        raise TimetravelError("the selection is empty: select samples first")
    stats = stats or EmbeddingStats(store)
    moments = stats.moments(epoch)
    emb = store.embedding(epoch)
    labels = np.asarray(store.labels)
    rng = np.random.default_rng(random_state)
    shown = selection if len(selection) <= SELECTION_SAMPLE else np.sort(rng.choice(selection, SELECTION_SAMPLE,
                                                                                   replace=False))  # fmt: skip
    sel_rows = _read_rows(emb, shown)
    sel_n = len(shown)
    sel_sum, sel_sq = sel_rows.sum(axis=0), (sel_rows * sel_rows).sum(axis=0)
    total_n = moments.counts.sum()
    total_sum, total_sq = moments.sums.sum(axis=0), moments.squares.sum(axis=0)
    scale_sel = len(selection) / sel_n  # the selection's sums, extrapolated from the rows read
    if reference is None:
        classes = np.unique(labels[selection])
        ref_n = moments.counts[classes].sum() - len(selection)
        ref_sum = moments.sums[classes].sum(axis=0) - scale_sel * sel_sum
        ref_sq = moments.squares[classes].sum(axis=0) - scale_sel * sel_sq
        name = "its classes"
        pool = np.flatnonzero(np.isin(labels, classes))
        if ref_n < 2:
            ref_n, ref_sum, ref_sq = total_n - len(selection), total_sum - scale_sel * sel_sum, total_sq - scale_sel * sel_sq
            name, pool = "the rest of the run", np.arange(store.n_samples)
        pool = np.setdiff1d(pool, selection, assume_unique=True)
        ref_sample = np.sort(rng.choice(pool, min(REFERENCE_SAMPLE, len(pool)), replace=False))
        ref_rows = _read_rows(emb, ref_sample)
    else:
        reference = np.setdiff1d(np.unique(np.asarray(reference, dtype=np.int64)), selection, assume_unique=True)
        if len(reference) < 2:
            raise TimetravelError("the reference group has fewer than 2 samples outside the selection")
        ref_all = _read_rows(emb, reference)
        ref_n, ref_sum, ref_sq = len(reference), ref_all.sum(axis=0), (ref_all * ref_all).sum(axis=0)
        name = reference_name or "the other group"
        keep = rng.choice(len(reference), min(REFERENCE_SAMPLE, len(reference)), replace=False)
        ref_rows = ref_all[np.sort(keep)]
    sel_mean, sel_var = sel_sum / sel_n, np.maximum(sel_sq / sel_n - (sel_sum / sel_n) ** 2, 0)
    ref_mean, ref_var = ref_sum / ref_n, np.maximum(ref_sq / ref_n - (ref_sum / ref_n) ** 2, 0)
    pooled = np.sqrt((sel_var + ref_var) / 2) + 1e-9
    d = (sel_mean - ref_mean) / pooled
    units = np.argsort(-np.abs(d), kind="stable")[:top]
    run_mean = total_sum / total_n
    run_std = np.sqrt(np.maximum(total_sq / total_n - run_mean**2, 0)) + 1e-9
    z = lambda x: (x[..., units] - run_mean[units]) / run_std[units]  # noqa: E731
    picked = sel_rows[: min(instances, sel_n)]
    rows = np.vstack([z(sel_mean)[None], z(ref_mean)[None], z(picked)])
    lo = np.minimum(sel_rows[:, units].min(axis=0), ref_rows[:, units].min(axis=0, initial=np.inf))
    hi = np.maximum(sel_rows[:, units].max(axis=0), ref_rows[:, units].max(axis=0, initial=-np.inf))
    hi = np.where(hi > lo, hi, lo + 1e-6)
    edges = np.linspace(lo, hi, HIST_BINS + 1).T  # (U, B + 1)
    sel_hist = np.stack([np.histogram(sel_rows[:, u], bins=edges[j])[0] for j, u in enumerate(units)]) / sel_n
    ref_hist = np.stack([np.histogram(ref_rows[:, u], bins=edges[j])[0] for j, u in enumerate(units)])
    ref_hist = ref_hist / max(len(ref_rows), 1)
    return ActivationPattern(
        epoch=int(epoch), reference=name, units=units, separation=d[units], rows=rows,
        row_names=["selection (mean)", f"{name} (mean)", *[f"#{i}" for i in shown[: len(picked)].tolist()]],
        edges=edges, selection_hist=sel_hist, reference_hist=ref_hist,
        n_selection=len(selection), n_reference=int(ref_n),
    )  # fmt: skip
