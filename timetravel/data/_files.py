"""Finding and reading user-provided dataset files (never downloading them)."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Sequence

from timetravel.errors import DatasetError

_GZIP_MAGIC = b"\x1f\x8b"


def datasets_dir() -> Path:
    """The default folder for dataset files.

    The ``datasets/`` folder of the source checkout timetravel runs from (see
    ``datasets/README.md`` there); where timetravel is not installed from a
    checkout, ``./datasets`` in the current directory.
    """
    checkout = Path(__file__).resolve().parents[2] / "datasets"
    return checkout if checkout.is_dir() else Path.cwd() / "datasets"


def search_dirs(root: str | os.PathLike | None, subdir: str) -> list[Path]:
    """Folders searched for a dataset's files, most specific first.

    With no ``root``: ``datasets_dir()/subdir``. With a ``root``: the root
    itself, then ``root/subdir``, so both ``root="datasets"`` and
    ``root="datasets/mnist"`` work.
    """
    if root is None:
        return [datasets_dir() / subdir]
    root = Path(root).expanduser()
    return [root, root / subdir]


def locate(
    dataset: str, names: Sequence[str], dirs: Sequence[Path], *, optional: Sequence[str] = ()
) -> dict[str, Path]:
    """Find each file ``name`` (or ``name.gz``) in the first folder of ``dirs`` holding it.

    Returns a dict from each name to its path; optional files that are absent
    are left out.

    Raises
    ------
    DatasetError
        Some required files are missing: the message lists every one of them
        and where to put it.
    """
    found: dict[str, Path] = {}
    for name in [*names, *optional]:
        for folder in dirs:
            hit = next((folder / f for f in (name, name + ".gz") if (folder / f).is_file()), None)
            if hit is not None:
                found[name] = hit
                break
    missing = [name for name in names if name not in found]
    if missing:
        places = " or ".join(str(d) for d in dirs)
        listed = "\n".join(f"  - {name} (or {name}.gz)" for name in missing)
        raise DatasetError(
            f"dataset {dataset!r}: {len(missing)} file(s) missing from {places}:\n{listed}\n"
            f"timetravel never downloads data: put these files in {dirs[0]} "
            f"(or pass root=...); see datasets/README.md for where to get them"
        )
    return found


def read_bytes(path: Path) -> bytes:
    """Read a file whole, decompressing it when it is gzip (detected by content, not name).

    Raises
    ------
    DatasetError
        The file cannot be read or is a damaged gzip stream.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    return data
