"""The in-memory data model shared by every dataset loader.

A loader produces uint8 thumbnails and int64 labels for a train and a test
split; :func:`build_splits` turns them into :class:`Dataset` objects whose
``x`` is derived from the thumbnails (so the model trains on exactly what the
app shows), normalised per channel with statistics of the training split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from timetravel.errors import DatasetError

# Rows converted at a time when normalising, so a 1M-image dataset never needs
# a float64 copy of itself.
_CHUNK = 65536


@dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous
class Dataset:
    """One split of a labelled image dataset.

    Attributes
    ----------
    name : str
        Dataset name (``"digits"``, ``"mnist"``, ...).
    x : ndarray of shape (N, C, H, W), float32
        Images normalised for training (per-channel mean 0 and standard
        deviation 1 over the training split).
    y : ndarray of shape (N,), int64
        Labels in ``[0, n_classes)``.
    images : ndarray of shape (N, H, W) or (N, H, W, 3), uint8
        The same images as thumbnails for display (grayscale or RGB).
    class_names : list of str
        One display name per class.

    Raises
    ------
    DatasetError
        The arrays disagree in length or shape, have the wrong dtype, or a
        label is out of range.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    images: np.ndarray
    class_names: list[str]

    def __post_init__(self) -> None:
        x, y, images = self.x, self.y, self.images
        where = f"dataset {self.name!r}"
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
            raise DatasetError(f"{where}: x must be a float32 array of shape (N, C, H, W), got {_describe(x)}")
        if not isinstance(y, np.ndarray) or y.dtype != np.int64 or y.ndim != 1:
            raise DatasetError(f"{where}: y must be an int64 array of shape (N,), got {_describe(y)}")
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim not in (3, 4):
            raise DatasetError(
                f"{where}: images must be a uint8 array of shape (N, H, W) or (N, H, W, 3), got {_describe(images)}"
            )
        n, channels, height, width = x.shape
        expected = (n, height, width) if channels == 1 else (n, height, width, channels)
        if channels not in (1, 3) or images.shape != expected:
            raise DatasetError(
                f"{where}: x of shape {x.shape} needs images of shape {expected} "
                f"(1 or 3 channels), got {images.shape}"
            )
        if len(y) != n:
            raise DatasetError(f"{where}: y has {len(y)} entries but x has {n} images")
        if len(self.class_names) < 1:
            raise DatasetError(f"{where}: class_names must not be empty")
        if n and (y.min() < 0 or y.max() >= len(self.class_names)):
            raise DatasetError(
                f"{where}: labels must lie in [0, {len(self.class_names)}), "
                f"got values from {y.min()} to {y.max()}"
            )

    @property
    def n_classes(self) -> int:
        """Number of classes K (the length of ``class_names``)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """The train and test splits returned by :func:`timetravel.data.load_dataset`."""

    train: Dataset
    test: Dataset


def _describe(array: object) -> str:
    if isinstance(array, np.ndarray):
        return f"{array.dtype} array of shape {array.shape}"
    return type(array).__name__


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 images, on the 0..1 scale.

    Computed in chunks with float64 accumulators; a constant channel gets a
    standard deviation of 1 so normalising never divides by zero.
    """
    channels = 1 if images.ndim == 3 else images.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for start in range(0, len(images), _CHUNK):
        block = images[start : start + _CHUNK].reshape(-1, channels).astype(np.float64) / 255.0
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
        count += len(block)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 0.0))
    std[std < 1e-8] = 1.0
    return mean, std


def normalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Convert uint8 thumbnails to a normalised float32 ``(N, C, H, W)`` array, chunk by chunk."""
    rgb = images.ndim == 4
    n, height, width = images.shape[:3]
    channels = images.shape[-1] if rgb else 1
    x = np.empty((n, channels, height, width), dtype=np.float32)
    scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(1, channels, 1, 1)
    shift = (mean / std).astype(np.float32).reshape(1, channels, 1, 1)
    for start in range(0, n, _CHUNK):
        block = images[start : start + _CHUNK]
        block = block.transpose(0, 3, 1, 2) if rgb else block[:, None]
        x[start : start + len(block)] = block.astype(np.float32) * scale - shift
    return x


def build_splits(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    class_names: Sequence[str],
) -> DatasetSplits:
    """Make the two :class:`Dataset` splits from ``(images, labels)`` pairs.

    Both splits are normalised with the training split's channel statistics.

    Raises
    ------
    DatasetError
        A split without samples.
    """
    for split, (images, _) in (("training", train), ("test", test)):
        if len(images) == 0:
            raise DatasetError(f"dataset {name!r}: the {split} split holds no samples; check the files it was "
                               "read from (a run needs training samples, and records the test split as its "
                               "held-out set)")
    mean, std = channel_stats(train[0])

    def make(images: np.ndarray, labels: np.ndarray) -> Dataset:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        labels = np.asarray(labels, dtype=np.int64)
        return Dataset(name, normalise(images, mean, std), labels, images, list(class_names))

    return DatasetSplits(train=make(*train), test=make(*test))


def stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a stratified random subset of exactly ``n`` samples.

    Each class keeps its share of ``n``, rounded by largest remainder so the
    total is exact.
    """
    classes, counts = np.unique(labels, return_counts=True)
    take = apportion(counts, n, rng)
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, take) if k
    ]
    return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)


def apportion(weights: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Split the integer ``total`` in proportion to non-negative ``weights``.

    Largest-remainder rounding: every share is its exact quota rounded down or
    up and the shares sum to ``total``; ties between equal remainders are
    broken at random (with ``rng``) so no index is favoured.
    """
    weights = np.asarray(weights, dtype=np.float64)
    quota = weights * (total / weights.sum()) if weights.sum() > 0 else np.zeros_like(weights)
    share = np.floor(quota + 1e-9).astype(np.int64)
    remainder = quota - share
    order = np.lexsort((rng.random(len(weights)), -remainder))
    share[order[: max(total - int(share.sum()), 0)]] += 1
    return share


def subsample(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    n_samples: int | None,
    seed: int,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Keep ``n_samples`` training samples and the same fraction of the test split.

    Both subsets are stratified and drawn with ``seed``; ``None`` keeps everything.
    """
    if n_samples is None:
        return train, test
    available = len(train[1])
    check_n_samples(n_samples, maximum=available, what=f"{name} has {available} training samples")
    if n_samples == available:
        return train, test
    rng = np.random.default_rng(seed)
    idx = stratified_indices(train[1], n_samples, rng)
    n_test = max(1, round(len(test[1]) * n_samples / available))
    test_idx = stratified_indices(test[1], n_test, rng)
    return (train[0][idx], train[1][idx]), (test[0][test_idx], test[1][test_idx])


def check_n_samples(n_samples: object, *, maximum: int | None = None, what: str = "") -> int:
    """Validate ``n_samples`` (a positive int, at most ``maximum``) and return it."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise DatasetError(f"n_samples must be a positive integer or None, got {n_samples!r}")
    if maximum is not None and n_samples > maximum:
        raise DatasetError(f"n_samples={n_samples} is too large: {what}")
    return int(n_samples)
