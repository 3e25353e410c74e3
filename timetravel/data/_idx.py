"""MNIST and Fashion-MNIST from their IDX files (plain or gzip)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from timetravel.data._base import DatasetSplits, build_splits, subsample
from timetravel.data._files import locate, read_bytes, search_dirs
from timetravel.errors import DatasetError

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_CLASSES = [str(k) for k in range(10)]
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
_UBYTE = 0x08


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file with ``ndim`` dimensions.

    The header is two zero bytes, the type code (``0x08`` = unsigned byte),
    the number of dimensions, then each dimension as a big-endian int32; the
    data follow, row-major.

    Raises
    ------
    DatasetError
        Wrong magic number, truncated header or data, or trailing bytes.
    """
    data = read_bytes(path)
    expected_magic = (_UBYTE << 8) | ndim
    if len(data) < 4:
        raise DatasetError(f"{path}: truncated IDX file, only {len(data)} bytes (no header)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DatasetError(
            f"{path}: bad magic number 0x{magic:08X}, expected 0x{expected_magic:08X} "
            f"(an unsigned-byte IDX file with {ndim} dimension(s)); is this the right file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated IDX header, {len(data)} bytes but the header needs {header}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    size = math.prod(shape)  # Python integers: a crafted header cannot overflow it
    if len(data) - header != size:
        problem = "truncated" if len(data) - header < size else "has trailing bytes"
        raise DatasetError(
            f"{path}: {problem}: the header promises {size} data bytes for shape {shape}, "
            f"found {len(data) - header}"
        )
    # copied so the arrays handed out are ordinary writable arrays, not views of a bytes object
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _read_split(paths: dict[str, Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(paths[IDX_FILES[f"{split}_images"]], 3)
    labels = read_idx(paths[IDX_FILES[f"{split}_labels"]], 1)
    if len(images) != len(labels):
        raise DatasetError(
            f"{paths[IDX_FILES[f'{split}_labels']]}: {len(labels)} labels but "
            f"{paths[IDX_FILES[f'{split}_images']]} holds {len(images)} images"
        )
    if len(labels) and labels.max() >= 10:
        raise DatasetError(f"{paths[IDX_FILES[f'{split}_labels']]}: labels must be 0..9, found {labels.max()}")
    return images, labels.astype(np.int64)


def _load_idx_dataset(
    name: str, class_names: list[str], root: str | os.PathLike | None, seed: int, n_samples: int | None
) -> DatasetSplits:
    paths = locate(name, list(IDX_FILES.values()), search_dirs(root, name))
    train = _read_split(paths, "train")
    test = _read_split(paths, "test")
    if train[0].shape[1:] != test[0].shape[1:]:
        raise DatasetError(
            f"dataset {name!r}: training images are {train[0].shape[1:]} but test images are {test[0].shape[1:]}"
        )
    train, test = subsample(name, train, test, n_samples, seed)
    return build_splits(name, train, test, class_names)


def load_mnist(
    *, root: str | os.PathLike | None = None, seed: int = 0, n_samples: int | None = None
) -> DatasetSplits:
    """MNIST handwritten digits (60,000 + 10,000 images, 28x28) from IDX files in ``root``."""
    return _load_idx_dataset("mnist", MNIST_CLASSES, root, seed, n_samples)


def load_fashion_mnist(
    *, root: str | os.PathLike | None = None, seed: int = 0, n_samples: int | None = None
) -> DatasetSplits:
    """Fashion-MNIST clothing images (60,000 + 10,000, 28x28) from IDX files in ``root``."""
    return _load_idx_dataset("fashion-mnist", FASHION_CLASSES, root, seed, n_samples)
