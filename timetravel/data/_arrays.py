"""Images and labels the user already holds as NumPy arrays (``.npz``, or a folder of ``.npy`` files).

``root`` is either an ``.npz`` archive or a folder holding ``<key>.npy``
files, with the keys:

- ``x``: images ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with C = 1 or 3;
  uint8, integers in 0..255, or finite floats (0..1 is read as 0..255 /
  255, any other range is scaled linearly from its minimum and maximum).
- ``y``: ``(N,)`` integer class ids from 0, or class-name strings.
- optional ``x_test`` and ``y_test`` (both or neither): the test split; without
  them ``test_fraction`` of the samples are held out.
- optional ``class_names``: ``(K,)`` strings, the name of each class id (or the
  order of the class-name strings in ``y``).

Everything is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from timetravel.data._base import DatasetSplits, build_splits, subsample
from timetravel.data._images import check_image_size, class_ids, resize, split_test
from timetravel.errors import DatasetError

logger = logging.getLogger(__name__)

KEYS = ("x", "y", "x_test", "y_test", "class_names")


def _read(root: Path) -> dict[str, tuple[str, np.ndarray]]:
    """The arrays present, each with the file it came from (``archive.npz:key`` or ``key.npy``)."""
    if root.is_dir():
        found = {key: root / f"{key}.npy" for key in KEYS if (root / f"{key}.npy").is_file()}
        return {key: (str(path), _load(path, str(path))) for key, path in found.items()}
    if not root.is_file():
        raise DatasetError(f"{root}: no such file or folder; give an .npz archive or a folder holding x.npy and y.npy")
    try:
        loaded = np.load(root, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{root}: cannot be read as an .npz archive of plain arrays ({exc})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DatasetError(
            f"{root}: holds a single array; give an .npz archive with x and y, or a folder with x.npy and y.npy"
        )
    with loaded as archive:
        return {key: (f"{root}:{key}", _load_member(archive, key, root)) for key in KEYS if key in archive.files}


def _load(path: Path, where: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError:  # object arrays need pickle
        raise _objects(where) from None
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{where}: cannot be read as a .npy file ({exc})") from None


def _load_member(archive: np.lib.npyio.NpzFile, key: str, root: Path) -> np.ndarray:
    try:
        return archive[key]
    except ValueError:
        raise _objects(f"{root}:{key}") from None


def _objects(where: str) -> DatasetError:
    return DatasetError(
        f"{where}: holds Python objects, which only pickle can load and timetravel never unpickles; "
        "save plain numeric or string arrays"
    )


def _images(x: np.ndarray, where: str) -> np.ndarray:
    """``x`` as uint8 thumbnails ``(N, H, W)`` or ``(N, H, W, 3)``."""
    if x.ndim == 4 and x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
        x = np.moveaxis(x, 1, -1)  # channels first
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if not (x.ndim == 3 or (x.ndim == 4 and x.shape[-1] == 3)) or 0 in x.shape[1:]:
        raise DatasetError(
            f"{where}: images must have shape (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3, "
            f"got {x.shape}"
        )
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind in "iu":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DatasetError(
                f"{where}: integer pixels must lie in 0..255, got {x.min()}..{x.max()}; scale them or save floats"
            )
        return x.astype(np.uint8)
    if x.dtype.kind != "f":
        raise DatasetError(f"{where}: images must be uint8, integer or float, got dtype {x.dtype}")
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise DatasetError(f"{where}: images hold NaN or infinite values")
    low, high = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    if low < 0 or high > 1:
        logger.warning("%s: float pixels span %.3g..%.3g; scaled linearly to 0..255", where, low, high)
        x = (x - low) / max(high - low, 1e-12)
    return np.round(x * 255).astype(np.uint8)


def _labels(y: np.ndarray, where: str, n: int, names: list[str] | None) -> tuple[np.ndarray, list[str] | None]:
    """int64 class ids, and the class names (``names``, or those the string labels define)."""
    if y.ndim != 1 or len(y) != n:
        raise DatasetError(f"{where}: labels must have shape ({n},), one per image, got {y.shape}")
    if y.dtype.kind == "U":
        given = sorted(set(y.tolist())) if names is None else names
        unknown = sorted(set(y.tolist()) - set(given))
        if unknown:
            raise DatasetError(
                f"{where}: labels {unknown[:5]} are not among the classes ({', '.join(given)}); "
                "add them to class_names (or to the training labels)"
            )
        return class_ids(y.tolist(), given), given
    if y.dtype.kind not in "iu":
        raise DatasetError(
            f"{where}: labels must be integer class ids or class-name strings, got dtype {y.dtype} "
            "(convert with y.astype(int))"
        )
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise DatasetError(f"{where}: class ids must be >= 0, found {y.min()}")
    if names is not None and n and y.max() >= len(names):
        raise DatasetError(f"{where}: class id {y.max()} has no entry in class_names ({len(names)} names)")
    return y, names


def _class_names(arrays: dict[str, tuple[str, np.ndarray]]) -> list[str] | None:
    if "class_names" not in arrays:
        return None
    where, names = arrays["class_names"]
    if names.ndim != 1 or names.dtype.kind != "U" or len(set(names.tolist())) != len(names):
        raise DatasetError(f"{where}: class_names must be a 1-D array of distinct strings, got {names.dtype} {names.shape}")
    return names.tolist()


def load_arrays(
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    n_samples: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    test_fraction: float = 0.2,
) -> DatasetSplits:
    """Images and labels from NumPy arrays in ``root`` (see the module docstring for the keys).

    Parameters
    ----------
    root : path-like
        An ``.npz`` archive, or a folder holding ``x.npy`` and ``y.npy``.
    seed : int, default=0
        Seeds the train/test split and ``n_samples`` subsampling.
    n_samples : int, optional
        Keep a stratified subset of this many training samples.
    image_size : int or (int, int), optional
        Resize every image to this side length or ``(height, width)`` (pillow, bilinear).
    test_fraction : float, default=0.2
        Share held out as the test split when there is no ``x_test``/``y_test``.

    Raises
    ------
    DatasetError
        A missing key or file, a file that is not a NumPy array or needs pickle,
        or arrays of the wrong shape or dtype (each names the file and key).
    """
    if root is None:
        raise DatasetError("dataset 'arrays' needs its file: pass 'arrays:PATH' (--dataset arrays:PATH) or root=PATH")
    root = Path(root).expanduser()
    arrays = _read(root)
    missing = [key for key in ("x", "y") if key not in arrays]
    if missing:
        raise DatasetError(f"{root}: no {' or '.join(missing)} array; it needs x (images) and y (labels)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DatasetError(f"{root}: x_test and y_test come together; give both or neither")
    names = _class_names(arrays)
    splits = {}
    for x_key, y_key in (("x", "y"), ("x_test", "y_test")):
        if x_key in arrays:
            (x_where, x), (y_where, y) = arrays[x_key], arrays[y_key]
            images = _images(x, x_where)
            labels, names = _labels(y, y_where, len(images), names)
            splits[x_key] = (images, labels)
    if "x_test" not in splits:
        train, test = split_test(*splits["x"], test_fraction, seed)
    else:
        train, test = splits["x"], splits["x_test"]
        if train[0].shape[1:] != test[0].shape[1:] and image_size is None:
            raise DatasetError(
                f"{arrays['x_test'][0]}: test images are {test[0].shape[1:]} but training images are "
                f"{train[0].shape[1:]}; pass image_size to resize both"
            )
    train, test = subsample(f"arrays {root}", train, test, n_samples, seed)
    size = check_image_size(image_size)
    if size is not None:
        train, test = (resize(train[0], size), train[1]), (resize(test[0], size), test[1])
    n_classes = int(max(train[1].max(initial=-1), test[1].max(initial=-1))) + 1
    return build_splits(f"arrays:{root}", train, test, names or [str(k) for k in range(n_classes)])
