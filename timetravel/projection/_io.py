"""Reading and writing ``RUN/projection/`` (format in ``docs/run-store.md``).

Every file of an epoch is written atomically into ``projection/EEEE/`` first;
the epoch is then listed in ``manifest.json`` (itself replaced atomically),
so a reader, or a resumed projection, only ever sees finished epochs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from timetravel._io import save_npy_atomic, write_bytes_atomic, write_json_atomic
from timetravel.errors import TimetravelError
from timetravel.store import epoch_dirname

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class ProjectionError(TimetravelError, ValueError):
    """A projection cannot be computed, resumed or read."""


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The projection manifest, or None when no projection was started."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProjectionError(f"{path}: not valid JSON ({exc}); rerun with overwrite to start again") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise ProjectionError(
            f"{path}: unknown projection format {manifest.get('format_version') if isinstance(manifest, dict) else None!r}, "
            f"expected {FORMAT_VERSION}; rerun with overwrite to start again"
        )
    return manifest


def new_manifest(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """An empty manifest for a projection with these settings."""
    return {"format_version": FORMAT_VERSION, "method": method, "params": params, "epochs": {}}


def clear(directory: Path) -> None:
    """Remove a previous projection entirely."""
    if Path(directory).exists():
        shutil.rmtree(directory)


def write_epoch(directory: Path, manifest: dict[str, Any], epoch: int, arrays: dict[str, np.ndarray],
                blobs: dict[str, bytes], entry: dict[str, Any]) -> None:
    """Write one finished epoch's files, then list it in the manifest (atomically, in that order).

    Parameters
    ----------
    directory : Path
        ``RUN/projection``.
    manifest : dict
        The manifest in memory; updated in place and rewritten.
    epoch : int
    arrays : dict of str to ndarray
        ``name -> array`` saved as ``projection/EEEE/name.npy``.
    blobs : dict of str to bytes
        ``name -> bytes`` saved as ``projection/EEEE/name`` (e.g. ``decoder.pt``).
    entry : dict
        The epoch's manifest entry (``extent``, ``grid``, ``metrics``...).
    """
    epoch_dir = Path(directory) / epoch_dirname(epoch)
    epoch_dir.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        save_npy_atomic(epoch_dir / f"{name}.npy", array)
    for name, data in blobs.items():
        write_bytes_atomic(epoch_dir / name, data)
    manifest["epochs"][str(int(epoch))] = entry
    write_json_atomic(Path(directory) / MANIFEST, manifest)


def forget_epochs(directory: Path, manifest: dict[str, Any], epochs: list[int]) -> None:
    """Unlist epochs (they will be recomputed) and rewrite the manifest."""
    for e in epochs:
        manifest["epochs"].pop(str(int(e)), None)
    write_json_atomic(Path(directory) / MANIFEST, manifest)


def read_xy(directory: Path, epoch: int, name: str = "xy") -> np.ndarray:
    """Canvas coordinates of a finished epoch (``xy`` or ``heldout_xy``)."""
    path = Path(directory) / epoch_dirname(epoch) / f"{name}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ProjectionError(f"{path}: cannot be read ({exc}); rerun with overwrite to start again") from None
