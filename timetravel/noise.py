"""Label-noise injection with known ground truth, for benchmarks and demos.

Four kinds, all reproducible from a seed:

- ``"symmetric"``: exactly ``round(rate * N)`` samples, chosen uniformly, get a
  label drawn uniformly from the *other* K - 1 classes.
- ``"pairflip"``: exactly ``round(rate * N)`` samples of class ``c`` become
  ``(c + 1) mod K``.
- ``"matrix"`` (alias ``"class-conditional"``): a K x K row-stochastic
  transition matrix ``T``; of the ``n_c`` samples of class ``c``, exactly
  ``T[c, j] * n_c`` (rounded by largest remainder) get label ``j``. The matrix
  is given by the user or built by :func:`make_transition_matrix`, where each
  class flips to one or two confusable classes.
- ``"none"``: labels unchanged.

Noise is specified on the command line as ``KIND:RATE`` (``"symmetric:0.2"``),
parsed by :func:`parse_noise_spec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from timetravel.data._base import apportion
from timetravel.errors import NoiseError

KINDS = ("none", "symmetric", "pairflip", "matrix")
_ALIASES = {"class-conditional": "matrix", "class_conditional": "matrix"}
_ROW_SUM_TOL = 1e-6


@dataclass(frozen=True)
class NoisyLabels:
    """Labels after noise injection, with the clean labels kept for evaluation.

    Attributes
    ----------
    labels : ndarray of shape (N,), int64
        The noisy labels (what the model is trained on).
    true_labels : ndarray of shape (N,), int64
        The clean labels.
    mask : ndarray of shape (N,), bool
        ``labels != true_labels``.
    info : dict
        JSON-serialisable settings for the run manifest: ``kind``, ``rate``
        (requested), ``rate_actual``, ``n_flipped``, ``seed`` and, for
        ``"matrix"``, ``matrix`` as a list of lists.
    """

    labels: np.ndarray
    true_labels: np.ndarray
    mask: np.ndarray
    info: dict[str, Any]


def _canonical_kind(kind: object) -> str:
    key = str(kind).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in KINDS:
        raise NoiseError(f"unknown noise kind {kind!r}; expected one of {', '.join(KINDS)} (or 'class-conditional')")
    return key


def _check_rate(rate: object, what: str = "rate") -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating, np.integer)):
        raise NoiseError(f"{what} must be a number in [0, 1], got {rate!r}")
    if not 0.0 <= float(rate) <= 1.0:  # also rejects NaN
        raise NoiseError(f"{what} must be in [0, 1], got {rate!r}")
    return float(rate)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise NoiseError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_n_classes(n_classes: object, minimum: int) -> int:
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < minimum:
        raise NoiseError(f"n_classes must be an integer >= {minimum}, got {n_classes!r}")
    return int(n_classes)


def parse_noise_spec(spec: str) -> tuple[str, float]:
    """Parse a ``KIND:RATE`` noise specification.

    Parameters
    ----------
    spec : str
        ``"none"``, or ``"symmetric:R"``, ``"pairflip:R"``, ``"matrix:R"``
        (``"class-conditional:R"``) with ``R`` in [0, 1].

    Returns
    -------
    kind : str
        Canonical kind, one of :data:`KINDS`.
    rate : float
        The requested fraction of changed labels (0.0 for ``"none"``).

    Raises
    ------
    NoiseError
        Unknown kind, missing or non-numeric rate, rate outside [0, 1].

    Examples
    --------
    >>> parse_noise_spec("symmetric:0.2")
    ('symmetric', 0.2)
    >>> parse_noise_spec("none")
    ('none', 0.0)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise NoiseError(f"noise spec must be a string like 'symmetric:0.2' or 'none', got {spec!r}")
    kind_text, sep, rate_text = spec.strip().partition(":")
    kind = _canonical_kind(kind_text)
    if kind == "none":
        if sep and rate_text.strip() not in ("0", "0.0", ""):
            raise NoiseError(f"noise spec {spec!r}: 'none' takes no rate (or rate 0)")
        return "none", 0.0
    if not sep or not rate_text.strip():
        raise NoiseError(f"noise spec {spec!r} has no rate; expected '{kind_text.strip()}:RATE', e.g. '{kind}:0.2'")
    try:
        rate = float(rate_text)
    except ValueError:
        raise NoiseError(f"noise spec {spec!r}: rate {rate_text!r} is not a number") from None
    return kind, _check_rate(rate, f"noise spec {spec!r}: rate")


def validate_transition_matrix(matrix: object, n_classes: int) -> np.ndarray:
    """Check a label transition matrix and return it as a float64 array.

    Parameters
    ----------
    matrix : array-like of shape (K, K)
        ``matrix[c, j]`` is the probability that a sample of class ``c`` gets label ``j``.
    n_classes : int
        K.

    Raises
    ------
    NoiseError
        Not square K x K, not finite, a negative entry, or a row not summing to 1.
    """
    try:
        t = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise NoiseError(f"transition matrix must be a numeric K x K array ({exc})") from None
    if t.ndim != 2 or t.shape[0] != t.shape[1]:
        raise NoiseError(f"transition matrix must be square, got shape {t.shape}")
    if t.shape[0] != n_classes:
        raise NoiseError(f"transition matrix is {t.shape[0]} x {t.shape[1]} but n_classes is {n_classes}")
    if not np.isfinite(t).all():
        raise NoiseError("transition matrix contains NaN or inf")
    if (t < 0).any():
        row, col = np.argwhere(t < 0)[0]
        raise NoiseError(f"transition matrix must be non-negative, got {t[row, col]} at row {row}, column {col}")
    sums = t.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_TOL)
    if len(bad):
        raise NoiseError(f"each row of the transition matrix must sum to 1; row {bad[0]} sums to {sums[bad[0]]:.6g}")
    return t


def class_similarity(x: np.ndarray, y: np.ndarray, n_classes: int, *, chunk: int = 65536) -> np.ndarray:
    """Similarity of classes: minus the Euclidean distance between class centroids.

    Feed it to :func:`make_transition_matrix` so that classes flip to the
    classes they look most like (4 and 9, 3 and 5, shirt and T-shirt).

    Parameters
    ----------
    x : array of shape (N, ...)
        Features or images (flattened per sample).
    y : array of shape (N,)
        Integer labels in ``[0, n_classes)``.
    n_classes : int
        K.

    Returns
    -------
    ndarray of shape (K, K)
        Higher = more alike; the diagonal is ``-inf`` and so is any pair with
        a class that has no samples.
    """
    y = _as_labels(y, n_classes)
    x = np.asarray(x).reshape(len(x), -1)
    if len(x) != len(y):
        raise NoiseError(f"x has {len(x)} samples but y has {len(y)}")
    sums = np.zeros((n_classes, x.shape[1]))
    for start in range(0, len(y), chunk):
        np.add.at(sums, y[start : start + chunk], x[start : start + chunk].astype(np.float64))
    counts = np.bincount(y, minlength=n_classes)
    centroids = sums / np.maximum(counts, 1)[:, None]
    sq = np.square(centroids).sum(axis=1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * centroids @ centroids.T, 0.0))
    similarity = -dist
    empty = counts == 0
    similarity[empty, :] = -np.inf
    similarity[:, empty] = -np.inf
    np.fill_diagonal(similarity, -np.inf)
    return similarity


def make_transition_matrix(
    n_classes: int,
    rate: float,
    *,
    seed: int = 0,
    n_targets: int = 2,
    similarity: np.ndarray | None = None,
) -> np.ndarray:
    """Build a realistic class-conditional transition matrix.

    Each class ``c`` keeps its label with probability ``1 - r_c`` and
    otherwise flips to one of ``n_targets`` confusable classes, the first
    taking twice the share of the second (and so on). The per-class rates
    ``r_c`` vary by up to half of ``min(rate, 1 - rate)`` around ``rate``
    and average to exactly ``rate``.

    Parameters
    ----------
    n_classes : int
        K >= 2.
    rate : float
        Average flip rate over classes, in [0, 1].
    seed : int, default=0
        Seed of the per-class rates and, without ``similarity``, of the targets.
    n_targets : int, default=2
        Number of classes each class flips to, in ``[1, K - 1]``.
    similarity : array of shape (K, K), optional
        Higher = more confusable (see :func:`class_similarity`); each class
        flips to its ``n_targets`` most similar classes. Without it the
        targets are drawn at random.

    Returns
    -------
    ndarray of shape (K, K)
        Row-stochastic matrix.

    Examples
    --------
    >>> t = make_transition_matrix(4, 0.2, seed=0, n_targets=1)
    >>> t.shape, bool(abs(1 - t.diagonal().mean() - 0.2) < 1e-12)
    ((4, 4), True)
    """
    n_classes = _check_n_classes(n_classes, 2)
    rate = _check_rate(rate)
    rng = np.random.default_rng(_check_seed(seed))
    if isinstance(n_targets, bool) or not isinstance(n_targets, (int, np.integer)) or not 1 <= n_targets < n_classes:
        raise NoiseError(f"n_targets must be an integer in [1, {n_classes - 1}], got {n_targets!r}")
    spread = rng.uniform(-1.0, 1.0, size=n_classes)
    spread -= spread.mean()
    spread /= max(np.abs(spread).max(), 1e-12)
    rates = np.clip(rate + 0.5 * min(rate, 1.0 - rate) * spread, 0.0, 1.0)
    weights = 0.5 ** np.arange(n_targets)
    weights /= weights.sum()
    if similarity is not None:
        similarity = np.array(similarity, dtype=np.float64)
        if similarity.shape != (n_classes, n_classes):
            raise NoiseError(f"similarity must have shape ({n_classes}, {n_classes}), got {similarity.shape}")
        np.fill_diagonal(similarity, -np.inf)
    matrix = np.zeros((n_classes, n_classes))
    for c in range(n_classes):
        if similarity is None:
            targets = rng.choice(np.delete(np.arange(n_classes), c), size=n_targets, replace=False)
        else:
            targets = np.argsort(-similarity[c], kind="stable")[:n_targets]
        matrix[c, c] = 1.0 - rates[c]
        matrix[c, targets] += rates[c] * weights
    return matrix


def _as_labels(labels: object, n_classes: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) and y.dtype != np.bool_):
        raise NoiseError(f"labels must be a 1-D integer array, got {y.dtype} array of shape {y.shape}")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise NoiseError(f"labels must lie in [0, {n_classes}), got values from {y.min()} to {y.max()}")
    return y.astype(np.int64)


def _n_to_flip(rate: float, n: int) -> int:
    # round half up, so e.g. rate 0.25 of 10 samples flips 3, not Python's banker's 2
    return min(n, int(math.floor(rate * n + 0.5)))


def _flip_symmetric(y: np.ndarray, n_classes: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    noisy = y.copy()
    chosen = rng.choice(len(y), size=_n_to_flip(rate, len(y)), replace=False)
    noisy[chosen] = (y[chosen] + rng.integers(1, n_classes, size=len(chosen))) % n_classes
    return noisy


def _flip_pair(y: np.ndarray, n_classes: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    noisy = y.copy()
    chosen = rng.choice(len(y), size=_n_to_flip(rate, len(y)), replace=False)
    noisy[chosen] = (y[chosen] + 1) % n_classes
    return noisy


def _flip_matrix(y: np.ndarray, matrix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noisy = y.copy()
    for c in range(len(matrix)):
        members = rng.permutation(np.flatnonzero(y == c))
        counts = apportion(matrix[c], len(members), rng)
        noisy[members] = np.repeat(np.arange(len(matrix)), counts)
    return noisy


def inject_noise(
    labels: np.ndarray,
    n_classes: int,
    kind: str,
    rate: float | None,
    *,
    seed: int,
    matrix: np.ndarray | None = None,
    similarity: np.ndarray | None = None,
) -> NoisyLabels:
    """Corrupt labels with a known, reproducible kind and amount of noise.

    Parameters
    ----------
    labels : array of shape (N,)
        Clean integer labels in ``[0, n_classes)``.
    n_classes : int
        K (>= 2 for every kind but ``"none"``).
    kind : {"none", "symmetric", "pairflip", "matrix", "class-conditional"}
        Noise model (see the module docstring).
    rate : float or None
        Fraction of labels to change, in [0, 1]. For ``"symmetric"`` and
        ``"pairflip"`` exactly ``round(rate * N)`` labels change (half rounds
        up). For ``"matrix"`` without ``matrix``, the average flip rate of the
        matrix built by :func:`make_transition_matrix` (with ``seed`` and
        ``similarity``); with ``matrix`` it must be None. For ``"none"``, None or 0.
    seed : int
        Seed of every random choice; the same seed gives the same labels.
    matrix : array of shape (K, K), optional
        Row-stochastic transition matrix for ``kind="matrix"``.
    similarity : array of shape (K, K), optional
        For ``kind="matrix"`` without ``matrix``: class similarities (see
        :func:`class_similarity`), so classes flip to the classes they
        resemble; without it the confusable classes are drawn at random.

    Returns
    -------
    NoisyLabels

    Raises
    ------
    NoiseError
        Unknown kind, a rate outside [0, 1] or inconsistent with the kind,
        labels out of range, or an invalid matrix.

    Examples
    --------
    >>> import numpy as np
    >>> noisy = inject_noise(np.arange(10) % 2, 2, "symmetric", 0.3, seed=0)
    >>> int(noisy.mask.sum()), noisy.info["rate_actual"]
    (3, 0.3)
    """
    kind = _canonical_kind(kind)
    seed = _check_seed(seed)
    n_classes = _check_n_classes(n_classes, 1 if kind == "none" else 2)
    y = _as_labels(labels, n_classes)
    if (matrix is not None or similarity is not None) and kind != "matrix":
        raise NoiseError(f"matrix and similarity are only used with kind 'matrix', not {kind!r}")
    rng = np.random.default_rng(seed)
    info: dict[str, Any] = {"kind": kind, "seed": seed}
    if kind == "none":
        if rate not in (None, 0, 0.0):
            raise NoiseError(f"kind 'none' takes rate None or 0, got {rate!r}")
        noisy, info["rate"] = y.copy(), 0.0
    elif kind == "matrix":
        if matrix is None:
            if rate is None:
                raise NoiseError("kind 'matrix' needs a rate (to build a transition matrix) or a matrix")
            info["rate"] = _check_rate(rate)
            matrix = make_transition_matrix(n_classes, info["rate"], seed=seed, similarity=similarity)
        elif rate is not None or similarity is not None:
            raise NoiseError(
                "kind 'matrix' takes either a rate (and optional similarity) or a matrix, not both; "
                "pass rate=None with a matrix"
            )
        matrix = validate_transition_matrix(matrix, n_classes)
        if "rate" not in info:  # the rate the matrix implies for these labels
            freq = np.bincount(y, minlength=n_classes) / max(len(y), 1)
            info["rate"] = float(freq @ (1.0 - matrix.diagonal()))
        info["matrix"] = matrix.tolist()
        noisy = _flip_matrix(y, matrix, rng)
    else:
        if rate is None:
            raise NoiseError(f"kind {kind!r} needs a rate in [0, 1], got None")
        info["rate"] = _check_rate(rate)
        flip = _flip_symmetric if kind == "symmetric" else _flip_pair
        noisy = flip(y, n_classes, info["rate"], rng)
    mask = noisy != y
    info["n_flipped"] = int(mask.sum())
    info["rate_actual"] = float(mask.mean()) if len(y) else 0.0
    return NoisyLabels(labels=noisy, true_labels=y, mask=mask, info=info)
