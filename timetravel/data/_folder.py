"""A folder of images in class subfolders (the ``ImageFolder`` layout), read with pillow.

Two layouts are recognised::

    root/<class>/<file>.png|jpg|...            split into train and test by test_fraction
    root/train/<class>/<file>                  the given split: root/test/ (or val/, valid/,
    root/test/<class>/<file>                   validation/) holds the test images

Classes are the subfolder names in sorted order. Files with other extensions
and hidden files are skipped. Every image is converted to grey levels when all
of them are grey (``L``, ``1``, ``I``...), to RGB otherwise, turned upright as
its EXIF orientation says (camera photos), and resized to ``image_size`` when
given; without it every image must have the same size.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from timetravel.data._base import DatasetSplits, build_splits, subsample
from timetravel.data._images import check_image_size, class_ids, resize_one, split_test
from timetravel.errors import DatasetError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TEST_DIRS = ("test", "val", "valid", "validation")
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F"}
_EXIF_ORIENTATION = 0x0112
_TURNED = (5, 6, 7, 8)  # EXIF orientations that show the image turned by 90 degrees


def _header(path: str) -> tuple[str, tuple[int, int]]:
    """The image's mode and ``(width, height)`` as shown (camera photos record their rotation in EXIF)."""
    try:
        with _open(path) as image:
            width, height = image.size
            turned = image.getexif().get(_EXIF_ORIENTATION) in _TURNED
            return image.mode, ((height, width) if turned else (width, height))
    except OSError as exc:  # a damaged file can fail while its metadata is read
        raise _unreadable(path, exc) from None


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_dirs(root: Path) -> tuple[Path, Path | None]:
    """``(train folder, test folder or None)``: the split layout when ``root`` holds only train/ and test/ (or val/)."""
    names = {p.name.lower(): p for p in _visible_dirs(root)}
    tests = [names[n] for n in TEST_DIRS if n in names]
    if "train" in names and len(tests) == 1 and set(names) <= {"train", *TEST_DIRS}:
        return names["train"], tests[0]
    return root, None


def _list_images(folder: Path, classes: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Image paths under ``folder/<class>/`` (one array of str) and the class name of each."""
    class_dirs = _visible_dirs(folder)
    if not class_dirs:
        raise DatasetError(
            f"{folder}: no class subfolders; put the images in {folder}/<class name>/<file>.png (or .jpg)"
        )
    paths: list[str] = []
    names: list[str] = []
    for class_dir in class_dirs:
        if classes is not None and class_dir.name not in classes:
            raise DatasetError(
                f"{class_dir}: class {class_dir.name!r} has no folder among the training classes "
                f"({', '.join(classes)}); add it there or remove it here"
            )
        files = sorted(
            str(f) for f in class_dir.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
        )
        if not files:
            raise DatasetError(
                f"{class_dir}: class folder holds no images (looked for {', '.join(IMAGE_SUFFIXES)}); "
                "add images or remove the folder"
            )
        paths += files
        names += [class_dir.name] * len(files)
    return np.array(paths), names


def _open(path: str):  # -> PIL.Image.Image (pillow is imported lazily)
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: str, exc: Exception) -> DatasetError:
    return DatasetError(f"{path}: cannot be read as an image ({exc}); remove or replace the file")


def _common_format(paths: np.ndarray, size: tuple[int, int] | None) -> tuple[str, tuple[int, int]]:
    """The pillow mode every image is converted to, and the ``(height, width)`` they end up with.

    Reads only the file headers.
    """
    grey = True
    first: tuple[str, tuple[int, int]] | None = None
    for path in sorted(paths):  # in folder order, so the file named first is the one a user looks at first
        mode, shown = _header(path)
        grey &= mode in _GREY_MODES
        if size is None and first is None:
            first = (path, shown)
        elif size is None and shown != first[1]:
            (w0, h0), (w, h) = first[1], shown
            raise DatasetError(
                f"{path}: image is {w}x{h} pixels but {first[0]} is {w0}x{h0}; pass image_size "
                "(--image-size) to resize every image to one size"
            )
    if size is None:
        width, height = first[1]
        size = (height, width)
    return ("L" if grey else "RGB"), size


def _decode(paths: np.ndarray, mode: str, size: tuple[int, int], verbose: bool) -> np.ndarray:
    from PIL import ImageOps
    from tqdm.auto import tqdm

    images = np.empty((len(paths), *size, *((3,) if mode == "RGB" else ())), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc="read images", unit="image", disable=not verbose)):
        try:
            with _open(path) as image:
                images[i] = resize_one(ImageOps.exif_transpose(image).convert(mode), size)
        except OSError as exc:  # a truncated or damaged file fails only when decoded
            raise DatasetError(f"{path}: cannot be decoded ({exc}); remove or replace the file") from None
    return images


def load_image_folder(
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    n_samples: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    test_fraction: float = 0.2,
    verbose: bool = True,
) -> DatasetSplits:
    """Images in class subfolders of ``root`` (``root/<class>/<file>``), read with pillow.

    Parameters
    ----------
    root : path-like
        The folder (see the module docstring for the two layouts).
    seed : int, default=0
        Seeds the train/test split and ``n_samples`` subsampling.
    n_samples : int, optional
        Keep a stratified subset of this many training images (only those are read).
    image_size : int or (int, int), optional
        Resize every image to this side length or ``(height, width)``; needed
        when the images differ in size.
    test_fraction : float, default=0.2
        Share of the images held out as the test split, when ``root`` has no
        test folder of its own.
    verbose : bool, default=True
        Show a progress bar while decoding.

    Raises
    ------
    DatasetError
        No folder given or found, a class folder without images, a test class
        the training folder lacks, an unreadable image, or images of different
        sizes without ``image_size`` (each names the file or folder).
    """
    if root is None:
        raise DatasetError("dataset 'folder' needs its folder: pass 'folder:PATH' (--dataset folder:PATH) or root=PATH")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder of class subfolders")
    size = check_image_size(image_size)
    train_dir, test_dir = _split_dirs(root)
    paths, names = _list_images(train_dir)
    classes = sorted(set(names))
    train = (paths, class_ids(names, classes))
    if test_dir is None:
        train, test = split_test(*train, test_fraction, seed)
    else:
        test_paths, test_names = _list_images(test_dir, classes)
        test = (test_paths, class_ids(test_names, classes))
    train, test = subsample(f"folder {root}", train, test, n_samples, seed)
    mode, size = _common_format(np.concatenate([train[0], test[0]]), size)
    logger.info("reading %d images of %d classes from %s as %s %dx%d", len(train[0]) + len(test[0]),
                len(classes), root, mode, size[1], size[0])
    return build_splits(
        f"folder:{root}",
        (_decode(train[0], mode, size, verbose), train[1]),
        (_decode(test[0], mode, size, verbose), test[1]),
        classes,
    )
