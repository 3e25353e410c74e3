"""CIFAR-10 from its binary version (``cifar-10-batches-bin``, plain or gzip)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from timetravel.data._base import DatasetSplits, build_splits, subsample
from timetravel.data._files import locate, read_bytes, search_dirs
from timetravel.errors import DatasetError

TRAIN_FILES = [f"data_batch_{k}.bin" for k in range(1, 6)]
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
SUBDIR = "cifar-10-batches-bin"
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
_SIDE = 32
_RECORD = 1 + 3 * _SIDE * _SIDE  # one label byte, then the red, green and blue planes


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch.

    Returns
    -------
    images : ndarray of shape (n, 32, 32, 3), uint8
    labels : ndarray of shape (n,), int64

    Raises
    ------
    DatasetError
        The file is empty, not a whole number of 3073-byte records, or has a
        label outside 0..9.
    """
    data = read_bytes(path)
    if not data or len(data) % _RECORD:
        raise DatasetError(
            f"{path}: {len(data)} bytes is not a whole, non-zero number of {_RECORD}-byte CIFAR-10 records "
            "(truncated or not a CIFAR-10 binary batch)"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        raise DatasetError(f"{path}: labels must be 0..9, found {labels.max()} (is this CIFAR-100?)")
    images = records[:, 1:].reshape(-1, 3, _SIDE, _SIDE).transpose(0, 2, 3, 1)
    return images, labels


def _class_names(path: Path | None) -> list[str]:
    if path is None:
        return list(CIFAR10_CLASSES)
    names = [line.strip() for line in read_bytes(path).decode("utf-8", errors="replace").splitlines()]
    names = [n for n in names if n]
    if len(names) != len(CIFAR10_CLASSES):
        raise DatasetError(f"{path}: expected {len(CIFAR10_CLASSES)} class names, one per line, found {len(names)}")
    return names


def load_cifar10(
    *, root: str | os.PathLike | None = None, seed: int = 0, n_samples: int | None = None
) -> DatasetSplits:
    """CIFAR-10 (50,000 + 10,000 RGB images, 32x32) from the binary batches in ``root``."""
    paths = locate("cifar10", [*TRAIN_FILES, TEST_FILE], search_dirs(root, SUBDIR), optional=[META_FILE])
    batches = [read_cifar_batch(paths[name]) for name in TRAIN_FILES]
    train = (np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]))
    del batches
    test = read_cifar_batch(paths[TEST_FILE])
    train, test = subsample("cifar10", train, test, n_samples, seed)
    return build_splits("cifar10", train, test, _class_names(paths.get(META_FILE)))
