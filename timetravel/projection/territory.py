"""Decision territories: the classification head evaluated over a grid on the canvas."""

from __future__ import annotations

import numpy as np

from timetravel.store import softmax


def canvas_extent(*layouts: np.ndarray, padding: float = 0.05) -> tuple[float, float, float, float]:
    """``(x_min, x_max, y_min, y_max)`` around all points, padded by a fraction of the range."""
    points = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in layouts])
    lo, hi = points.min(axis=0), points.max(axis=0)
    pad = np.maximum(hi - lo, 1e-6) * padding
    lo, hi = lo - pad, hi + pad
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def grid_centers(extent: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Centres ``(size * size, 2)`` of a ``size x size`` grid, row-major, row 0 at the bottom."""
    x0, x1, y0, y1 = extent
    xs = x0 + (np.arange(size) + 0.5) * (x1 - x0) / size
    ys = y0 + (np.arange(size) + 0.5) * (y1 - y0) / size
    gx, gy = np.meshgrid(xs, ys)  # gy varies along rows: row 0 is y0
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def territory_from_logits(logits: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Class (uint8) and confidence (uint8, softmax x 255) grids from per-cell logits.

    Parameters
    ----------
    logits : ndarray of shape (size * size, K)
        Logits at :func:`grid_centers`, in the same order.
    size : int
        Grid side G.

    Returns
    -------
    classes, confidence : ndarray of shape (G, G), uint8
    """
    if logits.shape[1] > 256:
        raise ValueError(f"territories store classes as uint8, so at most 256 classes, got {logits.shape[1]}")
    prob = softmax(np.asarray(logits, dtype=np.float32))
    classes = prob.argmax(axis=1)
    conf = np.rint(prob[np.arange(len(prob)), classes] * 255.0)
    return classes.astype(np.uint8).reshape(size, size), conf.astype(np.uint8).reshape(size, size)


def territory(inverse_map, head: tuple[np.ndarray, np.ndarray], extent, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decision territories of one epoch.

    Parameters
    ----------
    inverse_map : InverseMap
        The epoch's map from the canvas back to embedding space.
    head : (weight (K, D), bias (K,))
        The epoch's classification head.
    extent : (x_min, x_max, y_min, y_max)
        Canvas area covered by the grid.
    size : int
        Grid side G.

    Returns
    -------
    classes, confidence : ndarray of shape (G, G), uint8
        Row 0 is the bottom of the canvas (``y_min``), column 0 its left (``x_min``).
    """
    logits = inverse_map.logits(grid_centers(extent, size), *head)
    return territory_from_logits(logits, size)
