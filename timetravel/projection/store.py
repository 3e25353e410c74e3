"""The ``RUN/projection/`` format: the one module that reads and writes it (format in ``docs/run-store.md``).

Every file of an epoch is written atomically into ``projection/EEEE/`` first;
the epoch is then listed in ``manifest.json`` (itself replaced atomically),
so a reader, or a resumed projection, only ever sees finished epochs. Readers
go through :class:`ProjectionReader` (``RunStore.projection``,
``RunStore.territory`` and ``RunStore.projected_epochs`` use it), which
refuses a manifest of another ``format_version``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from timetravel._io import read_manifest as _read_manifest
from timetravel._io import save_npy_atomic, write_bytes_atomic, write_json_atomic
from timetravel.errors import StoreError

if TYPE_CHECKING:
    from timetravel.store import RunStore

FORMAT_VERSION = 1
DIRNAME = "projection"
MANIFEST = "manifest.json"
# Splits placed on the canvas beside the training samples (``<split>_xy.npy``): each row at the
# membership-weighted mean of its training neighbours' positions, for every epoch that holds the split.
PLACED_SPLITS = ("heldout", "pool")


class ProjectionError(StoreError):
    """A projection cannot be computed, resumed or read."""


@dataclass(frozen=True)
class Territory:
    """Decision territories of one epoch on the canvas.

    Attributes
    ----------
    classes : ndarray of shape (G, G), uint8
        Predicted class per grid cell; row 0 is the bottom of the canvas.
    confidence : ndarray of shape (G, G), uint8
        Softmax confidence of that class, scaled to 0..255.
    extent : tuple of float
        ``(x_min, x_max, y_min, y_max)`` of the grid on the canvas.
    """

    classes: np.ndarray
    confidence: np.ndarray
    extent: tuple[float, float, float, float]


def projection_dir(run: str | os.PathLike) -> Path:
    """``RUN/projection``."""
    return Path(run) / DIRNAME


def manifest_stamp(run: str | os.PathLike) -> tuple:
    """A value that changes whenever ``RUN/projection/manifest.json`` is replaced (``()`` when there is none)."""
    try:
        st = os.stat(projection_dir(run) / MANIFEST)
    except FileNotFoundError:
        return ()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _epoch_dirname(epoch: int) -> str:
    from timetravel.store import epoch_dirname

    return epoch_dirname(epoch)


def _again(directory: Path) -> str:
    return f"run `timetravel project {directory.parent} --overwrite` to compute it again"


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The projection manifest, or None when no projection was started.

    Raises
    ------
    ProjectionError
        The manifest is not valid JSON, not an object, or of another ``format_version``.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    manifest = _read_manifest(path, FORMAT_VERSION, fix=_again(directory), error=ProjectionError)
    if manifest is None:
        return None
    if not isinstance(manifest.get("epochs"), dict):
        raise ProjectionError(f"{path}: 'epochs' must be an object of epoch entries; {_again(directory)}")
    return manifest


# --------------------------------------------------------------------------- writing


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
    epoch_dir = Path(directory) / _epoch_dirname(epoch)
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
    """Canvas coordinates of a finished epoch (``xy`` or ``heldout_xy``), for resuming."""
    directory = Path(directory)
    path = directory / _epoch_dirname(epoch) / f"{name}.npy"
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ProjectionError(f"{path}: cannot be read ({exc}); {_again(directory)}") from None


# --------------------------------------------------------------------------- reading


class ProjectionReader:
    """Read access to the projection of one run, checked against the run's shapes.

    The manifest is re-read whenever it changes on disk, so a reader opened
    while ``timetravel project`` runs sees the epochs finished since.

    Parameters
    ----------
    store : RunStore
        The run; its arrays are memory-mapped through ``store.array``.
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.directory = projection_dir(store.path)
        self._stamp: tuple | None = None
        self._manifest: dict[str, Any] | None = None

    def manifest(self) -> dict[str, Any] | None:
        """The manifest (None without a projection); raises :class:`ProjectionError` when it is unusable."""
        stamp = manifest_stamp(self.store.path)
        if stamp != self._stamp:
            self._manifest = read_manifest(self.directory) if stamp else None
            self._stamp = stamp
        return self._manifest

    @property
    def epochs(self) -> list[int]:
        """Epochs with a finished projection (empty when none); raises on an unusable manifest."""
        manifest = self.manifest()
        if manifest is None:
            return []
        try:
            return sorted(int(e) for e in manifest["epochs"])
        except ValueError:
            raise ProjectionError(
                f"{self.directory / MANIFEST}: epoch keys must be integers; {_again(self.directory)}"
            ) from None

    def entry(self, epoch: int) -> dict[str, Any]:
        """The manifest entry of a projected epoch (``extent``, ``grid``, ``decoder``, ``metrics``...)."""
        store = self.store
        store._require_epoch(epoch)
        manifest = self.manifest()
        if manifest is None:
            raise StoreError(f"{store.path}: has no projection yet; run `timetravel project {store.path}` first")
        entry = manifest["epochs"].get(str(int(epoch)))
        if entry is None:
            raise StoreError(f"{store.path}: epoch {epoch} is not projected yet; run `timetravel project {store.path}`")
        if not isinstance(entry, dict):
            raise ProjectionError(f"{self.directory / MANIFEST}: the entry of epoch {epoch} is not an object; "
                                  f"{_again(self.directory)}")
        return entry

    def epoch_dir(self, epoch: int) -> Path:
        """``projection/EEEE/`` of one epoch."""
        return self.directory / _epoch_dirname(epoch)

    def xy(self, epoch: int, split: str = "train") -> np.ndarray:
        """``(N, 2)`` float32 canvas coordinates of one epoch's ``split`` rows, memory-mapped.

        ``split`` is ``"train"`` or one of :data:`PLACED_SPLITS` (see :meth:`has_xy`).
        """
        self.entry(epoch)
        if split != "train" and split not in PLACED_SPLITS:
            raise ValueError(f"split must be 'train' or one of {PLACED_SPLITS}, got {split!r}")
        name = "xy.npy" if split == "train" else f"{split}_xy.npy"
        return self.store.array(self.epoch_dir(epoch) / name, (self.store.split_size(split), 2), "f")

    def has_xy(self, epoch: int, split: str) -> bool:
        """Whether projected ``epoch`` placed its ``split`` rows: the epoch holds them and was projected since
        pool placement existed (an older projection has no ``pool_xy.npy``; ``timetravel project --overwrite``
        adds it)."""
        self.entry(epoch)
        return split == "train" or (self.epoch_dir(epoch) / f"{split}_xy.npy").exists()

    def territory(self, epoch: int) -> Territory:
        """Decision territories of one epoch (see :class:`Territory`)."""
        entry = self.entry(epoch)
        path = self.directory / MANIFEST
        try:
            grid = int(entry["grid"])
            extent = tuple(float(v) for v in entry["extent"])
        except (KeyError, TypeError, ValueError):
            raise ProjectionError(f"{path}: epoch {epoch} lacks a valid 'grid' or 'extent'; "
                                  f"{_again(self.directory)}") from None
        if len(extent) != 4 or not all(np.isfinite(extent)):
            raise ProjectionError(f"{path}: epoch {epoch} has extent {list(extent)}, expected 4 finite numbers; "
                                  f"{_again(self.directory)}")
        d = self.epoch_dir(epoch)
        return Territory(
            classes=np.asarray(self.store.array(d / "territory_class.npy", (grid, grid), "u")),
            confidence=np.asarray(self.store.array(d / "territory_confidence.npy", (grid, grid), "u")),
            extent=extent,
        )
