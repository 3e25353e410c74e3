"""Activation patterns: which embedding units set a group of samples apart from a reference, per epoch.

As ActiVis's neuron-activation matrix, but per epoch: for a selection and a reference
(by default the rest of the selection's classes), every embedding unit gets a separation
score (Cohen's d: difference of means over the pooled standard deviation); the most
separating units are shown as a heatmap of standardised means (the selection, the
reference, and a few of the selection's samples), with each unit's value distribution
in both.

Every statistic comes from rows read from the memory-mapped store in chunks: the selection
(at most :data:`SAMPLE_ROWS` of it), the same number of the reference and of the whole run
(for the colour scale), each a fixed-seed random sample when larger. A pattern therefore
costs the same at 50k or 5M samples, whichever epoch the slider is on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from timetravel.errors import TimetravelError

CHUNK_ROWS = 8192
SAMPLE_ROWS = 2000  # rows read at most per group (selection, reference, whole run): SE of a mean <= 0.023 SD
HIST_BINS = 20


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
    """Rows ``indices`` (sorted) of a memory-mapped array as float32, in chunks."""
    out = np.empty((len(indices), emb.shape[1]), dtype=np.float32)
    for start in range(0, len(indices), CHUNK_ROWS):
        part = indices[start : start + CHUNK_ROWS]
        out[start : start + len(part)] = emb[part]
    return out


def prefetch_embeddings(store, epochs) -> None:
    """Ask the kernel to read the embeddings of ``epochs`` into the page cache, in the background.

    A pattern at an epoch not read for a while is bound by the disk; an app stepping through
    the epochs calls this for the neighbours of the current one (``posix_fadvise(WILLNEED)``,
    which returns at once; a no-op where the platform lacks it).
    """
    if not hasattr(os, "posix_fadvise"):
        return
    for epoch in epochs:
        path = store.epoch_dir(epoch) / "embedding.npy"
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        finally:
            os.close(fd)


def _sample(pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``pool`` (sorted indices), or a sorted random subset of :data:`SAMPLE_ROWS` of it."""
    return pool if len(pool) <= SAMPLE_ROWS else np.sort(rng.choice(pool, SAMPLE_ROWS, replace=False))


def activation_pattern(
    store,
    epoch: int,
    selection: np.ndarray,
    reference: np.ndarray | None = None,
    *,
    reference_name: str | None = None,
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
    top : int
        Units to keep.
    instances : int
        Selection samples shown as their own heatmap rows.
    random_state : int
        Seed of the row samples.

    Returns
    -------
    ActivationPattern

    Raises
    ------
    TimetravelError
        The selection is empty, or the reference has fewer than 2 samples outside it.
    """
    selection = np.unique(np.asarray(selection, dtype=np.int64))
    if not len(selection):
        raise TimetravelError("the selection is empty: select samples first")
    emb = store.embedding(epoch)
    labels = np.asarray(store.labels)
    rng = np.random.default_rng(random_state)
    if reference is None:
        name = "its classes"
        pool = np.setdiff1d(np.flatnonzero(np.isin(labels, np.unique(labels[selection]))), selection,
                            assume_unique=True)  # fmt: skip
        if len(pool) < 2:
            name, pool = "the rest of the run", np.setdiff1d(np.arange(store.n_samples), selection, assume_unique=True)
    else:
        name = reference_name or "the other group"
        pool = np.setdiff1d(np.unique(np.asarray(reference, dtype=np.int64)), selection, assume_unique=True)
    if len(pool) < 2:
        raise TimetravelError(f"{name} has fewer than 2 samples outside the selection")
    shown = _sample(selection, rng)
    sel_rows = _read_rows(emb, shown)
    ref_rows = _read_rows(emb, _sample(pool, rng))
    run_rows = _read_rows(emb, _sample(np.arange(store.n_samples), rng))
    sel_mean, ref_mean = sel_rows.mean(axis=0), ref_rows.mean(axis=0)
    pooled = np.sqrt((sel_rows.var(axis=0) + ref_rows.var(axis=0)) / 2) + 1e-9
    d = (sel_mean - ref_mean) / pooled
    units = np.argsort(-np.abs(d), kind="stable")[:top]
    run_mean, run_std = run_rows.mean(axis=0), run_rows.std(axis=0) + 1e-9
    z = lambda x: (x[..., units] - run_mean[units]) / run_std[units]  # noqa: E731
    picked = sel_rows[: min(instances, len(sel_rows))]
    rows = np.vstack([z(sel_mean)[None], z(ref_mean)[None], z(picked)])
    lo = np.minimum(sel_rows[:, units].min(axis=0), ref_rows[:, units].min(axis=0))
    hi = np.maximum(sel_rows[:, units].max(axis=0), ref_rows[:, units].max(axis=0))
    hi = np.where(hi > lo, hi, lo + 1e-6)
    edges = np.linspace(lo, hi, HIST_BINS + 1).T  # (U, B + 1)
    sel_hist = np.stack([np.histogram(sel_rows[:, u], bins=edges[j])[0] for j, u in enumerate(units)])
    ref_hist = np.stack([np.histogram(ref_rows[:, u], bins=edges[j])[0] for j, u in enumerate(units)])
    return ActivationPattern(
        epoch=int(epoch), reference=name, units=units, separation=d[units], rows=rows,
        row_names=["selection (mean)", f"{name} (mean)", *[f"#{i}" for i in shown[: len(picked)].tolist()]],
        edges=edges, selection_hist=sel_hist / len(sel_rows), reference_hist=ref_hist / len(ref_rows),
        n_selection=len(selection), n_reference=len(pool),
    )  # fmt: skip
