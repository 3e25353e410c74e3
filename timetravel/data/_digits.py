"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images; offline)."""

from __future__ import annotations

import os

import numpy as np

from timetravel.data._base import DatasetSplits, build_splits, subsample
from timetravel.errors import DatasetError

_MAX_PIXEL = 16.0  # the bundled digits are 17 grey levels, 0..16


def check_fraction(test_fraction: object) -> float:
    """Validate a test fraction (a number strictly between 0 and 1) and return it."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise DatasetError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}")
    return float(test_fraction)


def load_digits(
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    n_samples: int | None = None,
    test_fraction: float = 0.2,
) -> DatasetSplits:
    """The bundled 8x8 digits, split into stratified train and test sets.

    ``root`` is not used (the data ship with scikit-learn); ``seed`` fixes the
    split and any subsampling.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    test_fraction = check_fraction(test_fraction)
    bunch = sklearn_digits()
    images = np.round(bunch.images * (255.0 / _MAX_PIXEL)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    train, test = subsample("digits", (x_train, y_train), (x_test, y_test), n_samples, seed)
    return build_splits("digits", train, test, [str(k) for k in range(10)])
