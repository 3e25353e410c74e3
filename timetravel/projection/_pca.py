"""Principal axes of a sample, deterministic (covariance eigendecomposition, signs fixed)."""

from __future__ import annotations

import numpy as np


def principal_axes(sample: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and the top ``n_components`` principal directions ``(r, D)`` of ``sample``.

    Computed from the ``D x D`` covariance (cheap for N >> D), with each
    direction's sign chosen so that its largest-magnitude entry is positive,
    so the result does not depend on the eigensolver's sign convention.

    Parameters
    ----------
    sample : ndarray of shape (N, D)
    n_components : int
        At most D.

    Returns
    -------
    mean : ndarray of shape (D,), float32
    components : ndarray of shape (r, D), float32, orthonormal rows
    """
    x = np.asarray(sample, dtype=np.float64)
    mean = x.mean(axis=0)
    xc = x - mean
    _, vecs = np.linalg.eigh(xc.T @ xc)
    comps = vecs[:, ::-1][:, : min(n_components, x.shape[1])].T
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    return mean.astype(np.float32), np.ascontiguousarray(comps, dtype=np.float32)
