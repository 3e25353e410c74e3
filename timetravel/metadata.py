"""Per-sample metadata of a run (``RUN/metadata/``): the one module that reads and writes it.

Metadata are columns the user knows about each training sample (source, device, annotator,
image brightness...), given at record time (``RunWriter.create(..., metadata=...)``) or
added later (:func:`write_metadata`). The app and :mod:`timetravel.groups` turn them into
subgroups: each value of a categorical column is a group, numeric columns are binned.

Layout (docs/run-store.md)::

    RUN/metadata/manifest.json   {"format_version": 1, "n_samples": N, "columns": [
                                    {"name": "source", "kind": "categorical", "file": "c000.npy",
                                     "categories": ["scanner", "web"]},
                                    {"name": "brightness", "kind": "numeric", "file": "c001.npy"}]}
    RUN/metadata/c000.npy        (N,) int32 codes into "categories", -1 = missing
    RUN/metadata/c001.npy        (N,) float64, NaN = missing

The folder is written as a whole into a temporary directory and renamed into place, so a
reader sees the old table or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from timetravel._io import fsync_dir, save_npy_atomic, write_json_atomic
from timetravel.errors import StoreError

FORMAT_VERSION = 1
METADATA_DIR = "metadata"
KINDS = ("categorical", "numeric")


@dataclass(frozen=True)
class MetadataColumn:
    """One metadata column.

    Attributes
    ----------
    name : str
    kind : {"categorical", "numeric"}
    values : ndarray of shape (N,)
        int32 codes into ``categories`` (-1 = missing) for a categorical column,
        float64 (NaN = missing) for a numeric one.
    categories : tuple of str
        The category names of a categorical column (empty for a numeric one).
    """

    name: str
    kind: str
    values: np.ndarray
    categories: tuple[str, ...] = ()

    def as_strings(self) -> np.ndarray:
        """The column as an object array of strings (categorical) or floats (numeric); missing is None."""
        if self.kind == "numeric":
            out = self.values.astype(object)
            out[np.isnan(self.values)] = None
            return out
        names = np.array([*self.categories, None], dtype=object)
        return names[np.where(self.values < 0, len(self.categories), self.values)]


class Metadata(Mapping):
    """The metadata table of a run: column name to :class:`MetadataColumn`, in the order given."""

    def __init__(self, columns: list[MetadataColumn], n_samples: int) -> None:
        self._columns = {c.name: c for c in columns}
        self.n_samples = n_samples

    def __getitem__(self, name: str) -> MetadataColumn:
        return self._columns[name]

    def __iter__(self):
        return iter(self._columns)

    def __len__(self) -> int:
        return len(self._columns)

    def __repr__(self) -> str:
        cols = ", ".join(f"{c.name} ({c.kind})" for c in self._columns.values())
        return f"Metadata({self.n_samples} samples: {cols})"


def _column_items(table: Any) -> list[tuple[str, Any]]:
    """(name, values) pairs of a mapping or a DataFrame-like object (``.columns`` and ``[name]``)."""
    if isinstance(table, Mapping):
        return list(table.items())
    columns = getattr(table, "columns", None)
    if columns is None:
        raise StoreError(f"metadata must be a mapping of column name to values or a DataFrame, got {type(table)!r}")
    return [(name, table[name]) for name in columns]


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def as_column(name: Any, values: Any, n_samples: int) -> MetadataColumn:
    """Validate one column: numbers become a numeric column, anything else (str, bool) a categorical one.

    Raises
    ------
    StoreError
        Bad name, wrong length, or values that are neither numbers nor strings.
    """
    if not isinstance(name, str) or not name.strip():
        raise StoreError(f"metadata column names must be non-empty strings, got {name!r}")
    raw = np.asarray(values.to_numpy() if hasattr(values, "to_numpy") else values)
    if raw.ndim != 1 or len(raw) != n_samples:
        raise StoreError(
            f"metadata column {name!r} has shape {raw.shape} but the run has {n_samples} samples; "
            "give one value per training sample, in the loader's order"
        )
    if raw.dtype.kind in "iuf":
        return MetadataColumn(name, "numeric", raw.astype(np.float64))
    if raw.dtype.kind not in "OUSb":
        raise StoreError(f"metadata column {name!r} has values of type {raw.dtype}; use numbers or strings")
    items = raw.tolist()
    present = sorted({str(v) for v in items if not _is_missing(v)})
    lookup = {c: k for k, c in enumerate(present)}
    codes = np.array([-1 if _is_missing(v) else lookup[str(v)] for v in items], dtype=np.int32)
    return MetadataColumn(name, "categorical", codes, tuple(present))


def write_metadata(run_dir: str | os.PathLike, table: Any, n_samples: int | None = None) -> Metadata:
    """Write (or replace) the metadata table of a run.

    Parameters
    ----------
    run_dir : path-like
        The run directory.
    table : mapping of str to array-like, or a DataFrame
        One entry per column, one value per training sample (in the loader's order).
        Numeric columns are stored as float64 (NaN = missing); anything else is
        categorical (None or NaN = missing).
    n_samples : int, optional
        The run's N; read from ``run.json`` when omitted.

    Returns
    -------
    Metadata

    Raises
    ------
    StoreError
        A column is malformed or names repeat (the message names the column).

    Examples
    --------
    >>> write_metadata("runs/mine", {"source": sources, "brightness": brightness})  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    if n_samples is None:
        n_samples = int(json.loads((run_dir / "run.json").read_text())["n_samples"])
    items = _column_items(table)
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        raise StoreError(f"metadata column names repeat: {names}")
    columns = [as_column(name, values, n_samples) for name, values in items]
    tmp = Path(tempfile.mkdtemp(prefix=".metadata.tmp-", dir=run_dir))
    entries = []
    for i, col in enumerate(columns):
        file = f"c{i:03d}.npy"
        save_npy_atomic(tmp / file, col.values)
        entry: dict[str, Any] = {"name": col.name, "kind": col.kind, "file": file}
        if col.kind == "categorical":
            entry["categories"] = list(col.categories)
        entries.append(entry)
    write_json_atomic(tmp / "manifest.json", {"format_version": FORMAT_VERSION, "n_samples": n_samples,
                                              "columns": entries})  # fmt: skip
    target = run_dir / METADATA_DIR
    old = run_dir / f".metadata.old-{os.getpid()}"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_dir(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return Metadata(columns, n_samples)


def read_metadata(run_dir: str | os.PathLike, n_samples: int) -> Metadata | None:
    """The run's metadata table, or None when it has none.

    Raises
    ------
    StoreError
        The table is unreadable, of another format version, or of another run size.
    """
    folder = Path(run_dir) / METADATA_DIR
    path = folder / "manifest.json"
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: cannot be read ({exc}); write the metadata again") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path}: format_version {manifest.get('format_version')!r} is not supported "
            f"(this timetravel reads {FORMAT_VERSION}); write the metadata again"
        )
    if manifest.get("n_samples") != n_samples:
        raise StoreError(f"{path}: written for {manifest.get('n_samples')} samples but the run has {n_samples}")
    columns = []
    for entry in manifest.get("columns", []):
        kind = entry.get("kind")
        if kind not in KINDS:
            raise StoreError(f"{path}: column {entry.get('name')!r} has unknown kind {kind!r}")
        file = folder / str(entry.get("file"))
        try:
            values = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise StoreError(f"{file}: cannot be read ({exc}); write the metadata again") from exc
        expected = np.float64 if kind == "numeric" else np.int32
        if values.shape != (n_samples,) or values.dtype != expected:
            raise StoreError(f"{file}: expected ({n_samples},) {np.dtype(expected)}, got {values.shape} {values.dtype}")
        categories = tuple(str(c) for c in entry.get("categories", ()))
        if kind == "categorical" and len(values) and int(values.max(initial=-1)) >= len(categories):
            raise StoreError(f"{file}: codes beyond the {len(categories)} categories of {entry['name']!r}")
        columns.append(MetadataColumn(str(entry["name"]), kind, np.asarray(values), categories))
    return Metadata(columns, n_samples)
