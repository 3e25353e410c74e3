"""Datasets for timetravel: bundled, synthetic, standard files, and the user's own images or arrays.

``load_dataset(name, ...)`` returns a :class:`DatasetSplits` of two
:class:`Dataset` objects. Available names:

- ``"digits"`` (default): scikit-learn's bundled 1,797 real 8x8 digits, offline.
- ``"synthetic"``: generated Gaussian class clusters rendered as small images,
  any size up to a million samples and beyond.
- ``"mnist"``, ``"fashion-mnist"``: the IDX files, plain or gzip.
- ``"cifar10"``: the binary version (``cifar-10-batches-bin``).
- ``"folder:PATH"``: the user's images in class subfolders, ``PATH/<class>/<file>.png``
  (:func:`load_image_folder`).
- ``"arrays:PATH"``: the user's arrays, an ``.npz`` with ``x`` and ``y`` or a folder
  of ``x.npy`` and ``y.npy`` (:func:`load_arrays`).

File-based datasets are read from ``root`` (default: the checkout's
``datasets/`` folder; see ``datasets/README.md``). Nothing is ever
downloaded: missing files raise :class:`~timetravel.errors.DatasetError`
naming each file and where to put it.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any, Callable

import numpy as np

from timetravel.data._arrays import load_arrays
from timetravel.data._base import Dataset, DatasetSplits
from timetravel.data._cifar import load_cifar10
from timetravel.data._digits import load_digits
from timetravel.data._files import datasets_dir
from timetravel.data._folder import load_image_folder
from timetravel.data._idx import load_fashion_mnist, load_mnist
from timetravel.data._synthetic import load_synthetic
from timetravel.errors import DatasetError

logger = logging.getLogger(__name__)

__all__ = [
    "DATASETS", "Dataset", "DatasetError", "DatasetSplits", "datasets_dir", "load_arrays", "load_dataset",
    "load_image_folder",
]  # fmt: skip

_LOADERS: dict[str, Callable[..., DatasetSplits]] = {
    "digits": load_digits,
    "synthetic": load_synthetic,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "folder": load_image_folder,
    "arrays": load_arrays,
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
}
_COMMON = ("root", "seed", "n_samples", "verbose")
_USER_DATA = ("folder", "arrays")  # named "folder:PATH" / "arrays:PATH"


def _extra_params(loader: Callable[..., DatasetSplits]) -> list[str]:
    return [p for p in inspect.signature(loader).parameters if p not in _COMMON]


def load_dataset(
    name: str = "digits",
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    n_samples: int | None = None,
    verbose: bool = True,
    **kw: Any,
) -> DatasetSplits:
    """Load a dataset as train and test splits.

    Parameters
    ----------
    name : {"digits", "synthetic", "mnist", "fashion-mnist", "cifar10", "folder:PATH", "arrays:PATH"}
        Dataset name (case-insensitive; ``"cifar-10"`` and ``"fashion_mnist"``
        are accepted too). ``"folder:PATH"`` reads images in class subfolders
        of ``PATH`` (:func:`load_image_folder`), ``"arrays:PATH"`` an ``.npz``
        archive or a folder of ``.npy`` files (:func:`load_arrays`).
    root : path-like, optional
        Folder holding the files of ``"mnist"``, ``"fashion-mnist"`` and
        ``"cifar10"``; ``root`` itself and ``root/<name>`` (``root/cifar-10-batches-bin``)
        are searched. Default: ``datasets/<name>`` of the checkout
        (:func:`datasets_dir`). Ignored by ``"digits"`` and ``"synthetic"``.
        For ``"folder"`` and ``"arrays"``, the ``PATH`` (give it one way, not both).
    seed : int, default=0
        Seed of every random choice: the digits train/test split, the
        synthetic data, and subsampling.
    n_samples : int, optional
        Size of the training split. For file-based and bundled datasets a
        stratified random subset (the test split is subsampled in the same
        proportion); for ``"synthetic"`` the number generated (default 2,000).
    verbose : bool, default=True
        Show progress while reading many files (``"folder"``).
    **kw
        Dataset-specific options: ``test_fraction`` (``"digits"``, default 0.2;
        ``"synthetic"``, ``"folder"`` and ``"arrays"`` without a test split of
        their own), for ``"synthetic"`` also ``n_classes`` (10), ``image_size``
        (8) and ``class_sep`` (1.6, smaller = more overlap), for ``"folder"``
        and ``"arrays"`` ``image_size`` (a side length or ``(height, width)``
        to resize every image to; needed by folders of mixed sizes).

    Returns
    -------
    DatasetSplits
        ``train`` and ``test`` :class:`Dataset` objects; ``x`` of both is
        normalised with the training split's per-channel statistics.

    Raises
    ------
    DatasetError
        Unknown name or option, bad parameter values, missing files (each
        named, with where to put it), or malformed files (named, with the problem).

    Examples
    --------
    >>> from timetravel.data import load_dataset
    >>> splits = load_dataset("digits", seed=0)
    >>> splits.train.x.shape, splits.test.x.shape, splits.train.n_classes
    ((1437, 1, 8, 8), (360, 1, 8, 8), 10)
    """
    key, _, path = str(name).strip().partition(":")
    key = _ALIASES.get(key.lower(), key.lower())
    loader = _LOADERS.get(key)
    if loader is None or bool(path) and key not in _USER_DATA:
        raise DatasetError(
            f"unknown dataset {name!r}; available: {', '.join(n for n in DATASETS if n not in _USER_DATA)}, "
            "folder:PATH (images in class subfolders), arrays:PATH (.npz with x and y)"
        )
    if path:
        if root is not None:
            raise DatasetError(f"dataset {name!r} names its path; do not pass root={str(root)!r} as well")
        root = path
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
    accepted = _extra_params(loader)
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise DatasetError(
            f"dataset {key!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(accepted) if accepted else 'no extra options'}"
        )
    if "verbose" in inspect.signature(loader).parameters:
        kw["verbose"] = verbose
    splits = loader(root=root, seed=int(seed), n_samples=n_samples, **kw)
    logger.info(
        "loaded %s: %d training and %d test images of shape %s, %d classes",
        key, len(splits.train), len(splits.test), splits.train.x.shape[1:], splits.train.n_classes,
    )
    return splits
