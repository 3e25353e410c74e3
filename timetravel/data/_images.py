"""Shared steps of the user-data loaders: the image size option, resizing, and the test split."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from timetravel.data._base import stratified_indices
from timetravel.data._digits import check_fraction
from timetravel.errors import DatasetError

def check_image_size(image_size: object) -> tuple[int, int] | None:
    """Validate ``image_size`` (``None``, a side length, or ``(height, width)``) as ``(height, width)``."""
    if image_size is None:
        return None
    sizes = [image_size, image_size] if isinstance(image_size, (int, np.integer)) else image_size
    if (
        not isinstance(sizes, (list, tuple))
        or len(sizes) != 2
        or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sizes)
    ):
        raise DatasetError(
            f"image_size must be a positive integer or a (height, width) pair of them, got {image_size!r}"
        )
    return int(sizes[0]), int(sizes[1])


def resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 images ``(N, H, W)`` or ``(N, H, W, 3)`` to ``size = (height, width)`` with pillow.

    Bilinear, antialiased when shrinking; the aspect ratio is not kept (no crop).
    """
    from PIL import Image

    if images.shape[1:3] == size:
        return images
    out = np.empty((len(images), *size, *images.shape[3:]), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = resize_one(Image.fromarray(image), size)
    return out


def resize_one(image: Any, size: tuple[int, int]) -> np.ndarray:
    """One pillow ``Image`` resized to ``size = (height, width)``, as a uint8 array."""
    from PIL import Image

    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def split_test(
    images: np.ndarray, labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Split ``(images, labels)`` into stratified train and test parts; the test part holds ``test_fraction``.

    Raises
    ------
    DatasetError
        Fewer than two samples, so one split would be empty.
    """
    test_fraction = check_fraction(test_fraction)
    n = len(labels)
    if n < 2:
        raise DatasetError(f"{n} sample(s) cannot be split into a training and a test set; provide at least 2")
    n_test = min(max(1, round(n * test_fraction)), n - 1)
    test = stratified_indices(labels, n_test, np.random.default_rng(seed))
    train = np.setdiff1d(np.arange(n), test, assume_unique=True)
    return (images[train], labels[train]), (images[test], labels[test])


def class_ids(names: Sequence[str], given: Sequence[str]) -> np.ndarray:
    """The position of each of ``names`` in ``given``: their int64 class ids."""
    lookup = {name: k for k, name in enumerate(given)}
    return np.fromiter((lookup[name] for name in names), dtype=np.int64, count=len(names))
