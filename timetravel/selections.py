"""Saved selections of a run (``RUN/selections.json``): the one module that reads and writes them.

A saved selection is a named set of training samples (a box or lasso on the canvas, a
confusion cell, a suggested subgroup) that the app and :mod:`timetravel.groups` treat as
a group. The file is small JSON, rewritten atomically on every change::

    {"format_version": 1, "selections": [{"name": "late pocket of 3s", "indices": [17, 204, ...]}]}
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from timetravel._io import write_json_atomic
from timetravel.errors import StoreError

FORMAT_VERSION = 1
SELECTIONS_FILE = "selections.json"
_LOCK = threading.Lock()  # one writer at a time within a process (sessions of one server)


def _path(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / SELECTIONS_FILE


def read_selections(run_dir: str | os.PathLike, n_samples: int) -> dict[str, np.ndarray]:
    """Saved selections by name (sorted int64 indices), in the order they were saved; {} without any.

    Raises
    ------
    StoreError
        The file is unreadable, of another version, or names samples outside ``[0, n_samples)``.
    """
    path = _path(run_dir)
    if not path.exists():
        return {}
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: cannot be read ({exc}); delete it to start over") from exc
    if not isinstance(obj, dict) or obj.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{path}: format_version {obj.get('format_version') if isinstance(obj, dict) else None!r} "
                         f"is not supported (this timetravel reads {FORMAT_VERSION})")  # fmt: skip
    out = {}
    for entry in obj.get("selections", []):
        indices = np.asarray(entry.get("indices", []), dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= n_samples):
            raise StoreError(f"{path}: selection {entry.get('name')!r} names samples outside [0, {n_samples})")
        out[str(entry["name"])] = np.unique(indices)
    return out


def save_selection(run_dir: str | os.PathLike, name: str, indices, n_samples: int) -> dict[str, np.ndarray]:
    """Save (or replace) the selection ``name``; returns every saved selection.

    Raises
    ------
    StoreError
        Empty name or selection, or samples outside ``[0, n_samples)``.
    """
    name = str(name).strip()
    if not name:
        raise StoreError("a saved selection needs a name")
    indices = np.unique(np.asarray(indices, dtype=np.int64))
    if not indices.size:
        raise StoreError(f"selection {name!r} is empty: select samples on the canvas first")
    if indices.min() < 0 or indices.max() >= n_samples:
        raise StoreError(f"selection {name!r} names samples outside [0, {n_samples})")
    with _LOCK:
        saved = read_selections(run_dir, n_samples)
        saved.pop(name, None)
        saved[name] = indices
        _write(run_dir, saved)
    return saved


def delete_selection(run_dir: str | os.PathLike, name: str, n_samples: int) -> dict[str, np.ndarray]:
    """Forget the selection ``name`` (nothing happens when there is none); returns the rest."""
    with _LOCK:
        saved = read_selections(run_dir, n_samples)
        if saved.pop(name, None) is not None:
            _write(run_dir, saved)
    return saved


def _write(run_dir: str | os.PathLike, saved: dict[str, np.ndarray]) -> None:
    entries = [{"name": name, "indices": idx.tolist()} for name, idx in saved.items()]
    write_json_atomic(_path(run_dir), {"format_version": FORMAT_VERSION, "selections": entries})
