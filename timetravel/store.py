"""The run store: one directory per training run, plain ``.npy`` files.

Layout (see ``docs/run-store.md`` for the full description)::

    RUN/
      run.json                     manifest, rewritten atomically after every epoch
      labels.npy                   (N,) int64, the labels the model was trained on
      true_labels.npy, noise_mask.npy   optional, clean labels when noise was injected
      thumbs.npy                   optional (N, H, W) or (N, H, W, 3) uint8
      heldout_labels.npy           optional (M,) int64
      epochs/EEEE/embedding.npy    (N, D) float16 (or float32)
      epochs/EEEE/logits.npy       (N, K) float32
      epochs/EEEE/head_weight.npy, head_bias.npy   (K, D), (K,) float32: the linear head
      epochs/EEEE/train_margin.npy optional (N,) float32, training-mode margins
      epochs/EEEE/observed.npy     optional (N,) bool, train-pass epochs only: False where a row was
                                   carried over from the sample's previous epoch
      epochs/EEEE/heldout_embedding.npy, heldout_logits.npy   optional
      pool_true_labels.npy, pool_thumbs.npy   optional: an unlabelled pool (active learning)
      epochs/EEEE/pool_embedding.npy, pool_logits.npy   optional: the pool's rows
      projection/ features/ ...    derived data, each with its own manifest
      feedback.jsonl               append-only log of user decisions

An epoch is written into a hidden temporary directory, renamed into place and
only then listed in ``run.json``; readers trust the manifest, so a process
killed mid-epoch leaves a store that opens with the epochs completed so far.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import shutil
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from timetravel._io import file_crc32, fsync_dir, fsync_file, read_manifest, save_npy_atomic, write_json_atomic
from timetravel._validation import check_int, check_labels
from timetravel.errors import StoreError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "run.json"
CHECKSUMS = "checksums.json"  # per epoch: {"format_version": 1, "algorithm": "crc32", "files": {name: crc}}
CHECKSUM_VERSION = 1
WRITER_LOCK = ".writer.lock"  # held (flock, shared) by every live RunWriter: readers can tell a run is growing
# run-level arrays written by RunWriter.create, checksummed in run.json
_RUN_ARRAYS = ("labels.npy", "true_labels.npy", "noise_mask.npy", "thumbs.npy", "heldout_labels.npy",
               "pool_true_labels.npy", "pool_thumbs.npy")
EMBEDDING_DTYPES = ("float16", "float32")
SPLITS = ("train", "heldout", "pool")
_PREFIX = {"train": "", "heldout": "heldout_", "pool": "pool_"}  # file-name prefix of each split's arrays
# How an epoch's rows were recorded: an eval-mode pass after the epoch, or the epoch's own training forward passes.
PASSES = ("eval", "train")
# Stores below this size are checked for NaN/inf in full when opened; larger
# ones are checked epoch by epoch on first access, so opening stays instant.
FULL_VERIFY_BYTES = 256 * 2**20
_FSYNC_POOL: ThreadPoolExecutor | None = None


def _fsync_pool() -> ThreadPoolExecutor:
    """The threads that checksum and fsync a committing epoch's files, made once per process.

    Starting eight threads per commit costs more than a small epoch's writes (~15 ms).
    """
    global _FSYNC_POOL
    if _FSYNC_POOL is None:
        _FSYNC_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="timetravel-fsync")
    return _FSYNC_POOL


def epoch_dirname(epoch: int) -> str:
    """Directory name of an epoch inside ``epochs/`` (zero-padded to 4 digits)."""
    return f"{int(epoch):04d}"


# --------------------------------------------------------------------------- reading


_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Read the shape and dtype of a ``.npy`` file and check it is complete."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = _HEADER_READERS.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            shape, _, dtype = read_header(fh)
            data_start = fh.tell()
    except FileNotFoundError:
        raise StoreError(f"{path}: file is missing") from None
    except (ValueError, EOFError, OSError) as exc:
        raise StoreError(f"{path}: not a readable .npy file ({exc})") from None
    if dtype.hasobject:
        raise StoreError(f"{path}: holds Python objects, which would need pickle; refusing to read it")
    expected = data_start + math.prod(shape) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise StoreError(f"{path}: truncated, {actual} bytes on disk but the header promises {expected}")
    if actual > expected:
        raise StoreError(f"{path}: {actual - expected} unexpected bytes after the array's data (the header promises "
                         f"{expected} bytes in all); the file is corrupt")
    return tuple(shape), dtype


def _crc_and_fsync(path: Path) -> int:
    crc = file_crc32(path)
    fsync_file(path)
    return crc


def _checksum_record(files: dict[str, int]) -> dict[str, Any]:
    return {"format_version": CHECKSUM_VERSION, "algorithm": "crc32", "files": files}


def _recorded_crcs(files: Any, path: Path) -> dict[str, int]:
    if files is None:
        return {}
    if isinstance(files, dict) and "files" in files:  # run.json's "checksums" holds a whole record
        files = files["files"]
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and "/" not in k and isinstance(v, int) and not isinstance(v, bool) for k, v in files.items()
    ):
        raise StoreError(f"{path}: checksums must map file names to CRC32 integers, got {files!r}")
    return files


def _check_crc(path: Path, expected: int) -> None:
    try:
        actual = file_crc32(path)
    except FileNotFoundError:
        raise StoreError(f"{path}: file is missing (it has a recorded checksum)") from None
    except OSError as exc:
        raise StoreError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if actual != expected:
        raise StoreError(f"{path}: checksum mismatch (CRC32 {actual:08x}, recorded {expected:08x} when it was "
                         "written): the file changed or is corrupt")


def _hold_writer_lock(path: Path) -> int | None:
    """Open ``RUN/.writer.lock`` and hold a shared lock on it while this process writes the run (None: no flock)."""
    try:
        fd = os.open(path / WRITER_LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError:
        return None  # a read-only copy of a run: nothing to announce
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def being_written(path: str | os.PathLike) -> bool:
    """Whether a live process holds a :class:`RunWriter` on the run at ``path`` (the lock dies with it)."""
    try:
        fd = os.open(Path(path) / WRITER_LOCK, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's lock
    return False


def _field_error(path: Path, key: str, expected: str, value: Any) -> StoreError:
    return StoreError(f"{path}: field {key!r} must be {expected}, got {value!r}")


def validate_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Check the type and range of every field of ``run.json`` this timetravel reads.

    Raises
    ------
    StoreError
        Naming ``run.json``, the field, what it must be and what it is.
    """
    for key in ("n_samples", "n_classes", "embedding_dim", "epochs", "embedding_dtype"):
        if key not in manifest:
            raise StoreError(f"{path}: required field {key!r} is missing")
    for key, minimum in (("n_samples", 1), ("n_classes", 1), ("embedding_dim", 1), ("n_heldout", 0), ("n_pool", 0)):
        if key in manifest:
            check_int(manifest[key], f"{path}: field {key!r}", minimum=minimum, error=StoreError)
    if manifest["embedding_dtype"] not in EMBEDDING_DTYPES:
        raise _field_error(path, "embedding_dtype", f"one of {EMBEDDING_DTYPES}", manifest["embedding_dtype"])
    epochs = manifest["epochs"]
    if not isinstance(epochs, list) or not all(
        isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in epochs
    ):
        raise _field_error(path, "epochs", "a list of epoch numbers (integers >= 0)", epochs)
    if len(set(epochs)) != len(epochs):
        raise _field_error(path, "epochs", "a list without repeats", epochs)
    names = manifest.get("class_names")
    if names is not None and (
        not isinstance(names, list) or len(names) != manifest["n_classes"] or not all(isinstance(n, str) for n in names)
    ):
        raise _field_error(path, "class_names", f"a list of n_classes = {manifest['n_classes']} strings", names)
    for key in ("has_true_labels", "has_pool_true_labels"):
        if key in manifest and not isinstance(manifest[key], bool):
            raise _field_error(path, key, "true or false", manifest[key])
    history = manifest.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise _field_error(path, "history", "a list of per-epoch objects", history)
    for key in ("epoch_passes", "checksums", "noise"):
        if manifest.get(key) is not None and not isinstance(manifest[key], dict):
            raise _field_error(path, key, "an object", manifest[key])
    if "dataset" in manifest and not isinstance(manifest["dataset"], str):
        raise _field_error(path, "dataset", "a string", manifest["dataset"])


def _check_finite(array: np.ndarray, path: Path, chunk_rows: int = 65536) -> None:
    for start in range(0, max(len(array), 1), chunk_rows):
        block = np.asarray(array[start : start + chunk_rows])
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            bad = start + int(np.argwhere(~np.isfinite(block))[0][0])
            raise StoreError(f"{path}: contains NaN or inf values (first at row {bad})")


def make_run_folder(path: str | os.PathLike) -> Path:
    """Create the folder of a new run (and its parents), or say in one sentence why it cannot be.

    Parameters
    ----------
    path : path-like
        The run's folder; it may exist already (empty, or holding a run to replace).

    Returns
    -------
    Path

    Raises
    ------
    StoreError
        ``path`` is a file, a folder on the way is a file, or the folder cannot be made or
        written (a read-only or pseudo file system such as /proc).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path}: a file is there, and a run is a folder; give a new path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(f"{parent}: is a file, not a folder; give a run path whose folders can be made")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StoreError(f"cannot make the run folder {path}: {exc.strerror or exc}; give a path in a folder "
                         "you can write to") from None
    return path


class RunStore:
    """Read-only view of a run store directory.

    Arrays are memory-mapped, so a run much larger than memory can be used;
    nothing is loaded until asked for.

    Parameters
    ----------
    path : str or Path
        The run directory (the one holding ``run.json``).
    verify : {"auto", "full", "headers"}, default="auto"
        How much to check when opening. Shapes, dtypes, file sizes and label
        ranges are always checked. ``"full"`` also scans every array for
        NaN/inf; ``"auto"`` does so for stores under 256 MiB and otherwise
        checks each epoch the first time it is read; ``"headers"`` only checks
        each epoch on first read.

    Raises
    ------
    StoreError
        The directory is not a run store, or a file is missing, truncated,
        of the wrong shape, holds NaN/inf or has an unknown format version.
        The message names the file and the problem.

    Examples
    --------
    >>> store = RunStore("runs/digits")  # doctest: +SKIP
    >>> store.n_samples, store.n_classes, store.epochs[-1]  # doctest: +SKIP
    (1797, 10, 29)
    """

    def __init__(self, path: str | os.PathLike, *, verify: str = "auto") -> None:
        if verify not in ("auto", "full", "headers"):
            raise ValueError(f"verify must be 'auto', 'full' or 'headers', got {verify!r}")
        self.path = Path(path)
        self.manifest = self._read_manifest()
        m = self.manifest
        self.n_samples: int = int(m["n_samples"])
        self.n_classes: int = int(m["n_classes"])
        self.embedding_dim: int = int(m["embedding_dim"])
        self.n_heldout: int = int(m.get("n_heldout", 0))
        self.n_pool: int = int(m.get("n_pool", 0))
        self.class_names: list[str] = list(m.get("class_names") or [str(k) for k in range(self.n_classes)])
        self.epochs: list[int] = sorted(int(e) for e in m["epochs"])
        self._checked: set[Path] = set()
        self._cache: OrderedDict[Path, np.ndarray] = OrderedDict()
        self._projection_reader = None
        self.labels = self._load_labels("labels.npy", self.n_samples)
        self.true_labels = self._load_labels("true_labels.npy", self.n_samples) if m.get("has_true_labels") else None
        self.noise_mask = self._load_optional_mask() if m.get("has_true_labels") else None
        self.heldout_labels = (
            self._load_labels("heldout_labels.npy", self.n_heldout) if self.n_heldout else None
        )
        self.pool_true_labels = (
            self._load_labels("pool_true_labels.npy", self.n_pool) if m.get("has_pool_true_labels") else None
        )
        self._check_recorded_files()
        self._check_thumbs()
        self._check_epochs()
        full = verify == "full" or (verify == "auto" and self._epoch_bytes() <= FULL_VERIFY_BYTES)
        if full:
            self.verify()

    # -- manifest and static arrays ---------------------------------------------------

    def _read_manifest(self) -> dict[str, Any]:
        path = self.path / MANIFEST
        if not self.path.is_dir():
            raise StoreError(f"{self.path}: no such run directory")
        manifest = read_manifest(path, FORMAT_VERSION)
        if manifest is None:
            raise StoreError(f"{path}: file is missing; {self.path} is not a timetravel run store")
        validate_manifest(manifest, path)
        return manifest

    def _header(self, path: Path, shape: tuple[int, ...], kinds: str) -> np.dtype:
        actual, dtype = _npy_header(path)
        if actual != shape:
            raise StoreError(f"{path}: shape {actual} does not match the manifest, expected {shape}")
        if dtype.kind not in kinds:
            raise StoreError(f"{path}: dtype {dtype} is not allowed here")
        return dtype

    def _mmap(self, path: Path) -> np.ndarray:
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise StoreError(f"{path}: cannot be read ({exc})") from None
        if path not in self._checked:
            _check_finite(array, path)
            self._checked.add(path)
        self._cache[path] = array
        if len(self._cache) > 64:  # bounded number of open maps for long runs
            self._cache.popitem(last=False)
        return array

    def _load_labels(self, name: str, n: int) -> np.ndarray:
        path = self.path / name
        self._header(path, (n,), "iu")
        labels = np.load(path, allow_pickle=False).astype(np.int64, copy=False)
        if n and (labels.min() < 0 or labels.max() >= self.n_classes):
            raise StoreError(
                f"{path}: labels must lie in [0, {self.n_classes}), found range [{labels.min()}, {labels.max()}]"
            )
        return labels

    def _load_optional_mask(self) -> np.ndarray:
        path = self.path / "noise_mask.npy"
        self._header(path, (self.n_samples,), "b")
        mask = np.load(path, allow_pickle=False)
        if not np.array_equal(mask, self.labels != self.true_labels):
            raise StoreError(f"{path}: does not match labels.npy != true_labels.npy")
        return mask

    def _epoch_files(self, epoch: int) -> dict[Path, tuple[tuple[int, ...], str]]:
        d = self.epoch_dir(epoch)
        n, k, dim = self.n_samples, self.n_classes, self.embedding_dim
        files = {
            d / "embedding.npy": ((n, dim), "f"),
            d / "logits.npy": ((n, k), "f"),
            d / "head_weight.npy": ((k, dim), "f"),
            d / "head_bias.npy": ((k,), "f"),
        }
        optional = {
            d / "train_margin.npy": ((n,), "f"),
            d / "observed.npy": ((n,), "b"),
            d / "heldout_embedding.npy": ((self.n_heldout, dim), "f"),
            d / "heldout_logits.npy": ((self.n_heldout, k), "f"),
            d / "pool_embedding.npy": ((self.n_pool, dim), "f"),
            d / "pool_logits.npy": ((self.n_pool, k), "f"),
        }
        files.update({p: spec for p, spec in optional.items() if p.exists()})
        return files

    def _check_recorded_files(self) -> None:
        """Every run-level file run.json's checksums record is still there, unless its part is gone."""
        recorded = _recorded_crcs(self.manifest.get("checksums"), self.path / MANIFEST)
        m = self.manifest
        optional = {"true_labels.npy": m.get("has_true_labels"), "noise_mask.npy": m.get("has_true_labels"),
                    "pool_true_labels.npy": m.get("has_pool_true_labels"), "pool_thumbs.npy": m.get("n_pool")}
        missing = sorted(name for name in recorded  # a part the manifest now says the run lacks may go
                         if optional.get(name, True) and not (self.path / name).exists())
        if missing:  # optional files (thumbnails) are recorded only when written: one gone is damage
            raise StoreError(f"{self.path / missing[0]}: file is missing (run.json records it); restore it from a "
                             "copy of the run")

    def _check_thumbs(self) -> None:
        path = self.path / "thumbs.npy"
        if path.exists():
            shape, dtype = _npy_header(path)
            if len(shape) not in (3, 4) or shape[0] != self.n_samples or dtype != np.uint8 or (
                len(shape) == 4 and shape[3] not in (1, 3, 4)
            ):
                raise StoreError(f"{path}: expected ({self.n_samples}, H, W[, C]) uint8 images, got {shape} {dtype}; "
                                 "rewrite it as uint8 (values 0..255) or remove it")

    def _check_epochs(self) -> None:
        for epoch in self.epochs:
            for path, (shape, kinds) in self._epoch_files(epoch).items():
                self._header(path, shape, kinds)

    def _epoch_bytes(self) -> int:
        per_epoch = sum(p.stat().st_size for p in self._epoch_files(self.epochs[0])) if self.epochs else 0
        return per_epoch * len(self.epochs)

    def verify(self) -> None:
        """Check every recorded array against its checksum and scan it for NaN/inf; raise on the first problem.

        Stores written before checksums existed have none to check; they are
        still scanned for NaN/inf.
        """
        self.verify_run_files()
        for epoch in self.epochs:
            self.verify_epoch(epoch)

    def verify_run_files(self) -> int:
        """Check the run-level arrays (labels, thumbnails...) against ``run.json``'s checksums; returns how many."""
        recorded = _recorded_crcs(self.manifest.get("checksums"), self.path / MANIFEST)
        # only the files still there: which ones a run needs is the manifest's business (checked on open)
        present = {name: crc for name, crc in recorded.items() if (self.path / name).exists()}
        for name, crc in present.items():
            _check_crc(self.path / name, crc)
        return len(present)

    def verify_epoch(self, epoch: int) -> int:
        """Check one epoch's arrays against ``checksums.json`` and scan them for NaN/inf; returns files checksummed."""
        self._require_epoch(epoch)
        d = self.epoch_dir(epoch)
        recorded = {}
        path = d / CHECKSUMS
        if path.exists():
            record = read_manifest(path, CHECKSUM_VERSION)
            recorded = _recorded_crcs(record.get("files"), path)
        for array in self._epoch_files(epoch):  # NaN/inf first: the more telling message
            self._mmap(array)
        for name, crc in recorded.items():
            _check_crc(d / name, crc)
        return len(recorded)

    # -- per-epoch arrays ---------------------------------------------------------------

    def epoch_dir(self, epoch: int) -> Path:
        """Directory holding one epoch's arrays."""
        return self.path / "epochs" / epoch_dirname(epoch)

    def _require_epoch(self, epoch: int) -> None:
        if epoch not in self.epochs:
            shown = f"{self.epochs[0]}..{self.epochs[-1]}" if self.epochs else "none"
            raise StoreError(f"{self.path}: epoch {epoch} is not recorded (recorded epochs: {shown})")

    def has_heldout(self, epoch: int) -> bool:
        """Whether an epoch holds held-out rows (train-pass epochs do not: no eval pass ran)."""
        return self.has_split(epoch, "heldout")

    def has_split(self, epoch: int, split: str) -> bool:
        """Whether an epoch holds rows of ``split`` (``"train"`` always; held-out and pool rows only in eval passes)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self._require_epoch(epoch)
        if split == "train":
            return True
        return bool(self.split_size(split)) and (self.epoch_dir(epoch) / f"{_PREFIX[split]}embedding.npy").exists()

    def split_size(self, split: str) -> int:
        """Number of samples of a split (0 when the run has none)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return {"train": self.n_samples, "heldout": self.n_heldout, "pool": self.n_pool}[split]

    def _split_file(self, epoch: int, name: str, split: str) -> Path:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self._require_epoch(epoch)
        if split != "train":
            what = {"heldout": "held-out set", "pool": "unlabelled pool"}[split]
            if not self.split_size(split):
                raise StoreError(f"{self.path}: the run has no {what}")
            if not self.has_split(epoch, split):
                raise StoreError(f"{self.path}: epoch {epoch} was recorded by a {self.epoch_pass(epoch)} pass "
                                 f"without the {what} (see RunStore.has_split)")
        return self.epoch_dir(epoch) / f"{_PREFIX[split]}{name}.npy"

    def embedding(self, epoch: int, split: str = "train") -> np.ndarray:
        """Memory-mapped ``(N, D)`` penultimate-layer embeddings of one epoch."""
        return self._mmap(self._split_file(epoch, "embedding", split))

    def logits(self, epoch: int, split: str = "train") -> np.ndarray:
        """Memory-mapped ``(N, K)`` eval-mode logits of one epoch."""
        return self._mmap(self._split_file(epoch, "logits", split))

    def probabilities(self, epoch: int, split: str = "train") -> np.ndarray:
        """Softmax of :meth:`logits`, as a float32 array in memory."""
        return softmax(np.asarray(self.logits(epoch, split), dtype=np.float32))

    def head(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The linear classification head ``(weight (K, D), bias (K,))`` of one epoch."""
        self._require_epoch(epoch)
        d = self.epoch_dir(epoch)
        return np.asarray(self._mmap(d / "head_weight.npy")), np.asarray(self._mmap(d / "head_bias.npy"))

    def epoch_pass(self, epoch: int) -> str:
        """How an epoch was recorded: ``"eval"`` (an eval-mode pass after it) or ``"train"`` (its training pass)."""
        self._require_epoch(epoch)
        return str(self.manifest.get("epoch_passes", {}).get(str(epoch), "eval"))

    def observed(self, epoch: int) -> np.ndarray | None:
        """Of a train-pass epoch with carried rows: which samples its training pass saw; else None (all)."""
        self._require_epoch(epoch)
        path = self.epoch_dir(epoch) / "observed.npy"
        return np.asarray(self._mmap(path)) if path.exists() else None

    def train_margin(self, epoch: int) -> np.ndarray | None:
        """Training-mode margins of one epoch (for AUM), or None when not recorded."""
        self._require_epoch(epoch)
        path = self.epoch_dir(epoch) / "train_margin.npy"
        return self._mmap(path) if path.exists() else None

    @property
    def thumbs(self) -> np.ndarray | None:
        """Memory-mapped uint8 thumbnails ``(N, H, W[, 3])``, or None."""
        path = self.path / "thumbs.npy"
        if not path.exists():
            return None
        array = self._mmap(path)
        if array.shape[0] != self.n_samples or array.dtype != np.uint8:
            raise StoreError(f"{path}: expected ({self.n_samples}, H, W[, 3]) uint8, got {array.shape} {array.dtype}")
        return array

    @property
    def pool_thumbs(self) -> np.ndarray | None:
        """Memory-mapped uint8 thumbnails of the pool ``(M, H, W[, 3])``, or None."""
        path = self.path / "pool_thumbs.npy"
        if not path.exists():
            return None
        array = self._mmap(path)
        if array.shape[0] != self.n_pool or array.dtype != np.uint8:
            raise StoreError(f"{path}: expected ({self.n_pool}, H, W[, 3]) uint8, got {array.shape} {array.dtype}")
        return array

    @property
    def metadata(self):
        """The per-sample metadata table (:class:`timetravel.metadata.Metadata`), or None without one."""
        from timetravel.metadata import read_metadata

        return read_metadata(self.path, self.n_samples)

    @property
    def being_written(self) -> bool:
        """Whether a live process is still recording this run (it holds a :class:`RunWriter` on it)."""
        return being_written(self.path)

    @property
    def history(self) -> list[dict[str, Any]]:
        """Per-epoch training metrics recorded with each epoch (loss, accuracies)."""
        return list(self.manifest.get("history", []))

    # -- derived data ------------------------------------------------------------------

    def derived_dir(self, name: str) -> Path:
        """Directory of a derived product (``projection``, ``features``...)."""
        return self.path / name

    def array(self, path: str | os.PathLike, shape: tuple[int, ...], kinds: str) -> np.ndarray:
        """Memory-map a ``.npy`` file of this run after checking its size, shape and dtype kind.

        The owners of derived formats (``timetravel.projection.store``) read their
        arrays through this, so every array of a run is checked, cached and
        scanned for NaN/inf the same way.
        """
        path = Path(path)
        self._header(path, tuple(shape), kinds)
        return self._mmap(path)

    @property
    def _projection(self):
        if self._projection_reader is None:
            from timetravel.projection.store import ProjectionReader

            self._projection_reader = ProjectionReader(self)
        return self._projection_reader

    @property
    def projected_epochs(self) -> list[int]:
        """Epochs with a finished projection (empty when none; see :mod:`timetravel.projection.store`)."""
        return self._projection.epochs

    def projection(self, epoch: int, split: str = "train") -> np.ndarray:
        """``(N, 2)`` float32 canvas coordinates of one epoch (of its held-out or pool rows with ``split``)."""
        return self._projection.xy(epoch, split)

    def has_projection(self, epoch: int, split: str = "train") -> bool:
        """Whether projected ``epoch`` placed its ``split`` rows on the canvas (see ``ProjectionReader.has_xy``)."""
        return self._projection.has_xy(epoch, split)

    def territory(self, epoch: int):
        """Decision territories of one epoch (a :class:`timetravel.projection.store.Territory`)."""
        return self._projection.territory(epoch)

    def __repr__(self) -> str:
        return (
            f"RunStore({str(self.path)!r}: {self.n_samples} samples, {self.n_classes} classes, "
            f"D={self.embedding_dim}, {len(self.epochs)} epochs)"
        )


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


# --------------------------------------------------------------------------- writing


class EpochWriter:
    """Fills one epoch's arrays, possibly batch by batch, then commits them.

    Obtained from :meth:`RunWriter.begin_epoch`; use as a context manager so an
    exception discards the partial epoch. Nothing is visible to readers
    until :meth:`commit` returns.
    """

    def __init__(self, writer: RunWriter, epoch: int) -> None:
        self._writer = writer
        self.epoch = int(epoch)
        epochs_dir = writer.path / "epochs"
        epochs_dir.mkdir(exist_ok=True)
        self._tmp = epochs_dir / f".{epoch_dirname(epoch)}.tmp-{uuid.uuid4().hex[:8]}"
        self._tmp.mkdir()
        self._arrays: dict[str, np.ndarray] = {}
        self._filled: dict[str, int] = {}
        self._metrics: dict[str, float] = {}
        self._pass = "eval"
        self._done = False

    def _array(self, name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        if name not in self._arrays:
            self._arrays[name] = np.lib.format.open_memmap(
                self._tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape
            )
            self._filled[name] = 0
        return self._arrays[name]

    def write(
        self,
        start: int,
        embedding: np.ndarray,
        logits: np.ndarray,
        *,
        split: str = "train",
    ) -> None:
        """Write rows ``start : start + len(embedding)`` of the embedding and logits."""
        w = self._writer
        n = w.split_size(split)
        if not n:
            raise StoreError(f"cannot write split {split!r}: the run has no such split")
        embedding = np.asarray(embedding)
        logits = np.asarray(logits)
        stop = start + len(embedding)
        if len(logits) != len(embedding):
            raise StoreError(f"embedding has {len(embedding)} rows but logits has {len(logits)}")
        if start < 0 or stop > n:
            raise StoreError(f"rows {start}:{stop} fall outside the {split} set of {n} samples")
        if embedding.shape[1:] != (w.embedding_dim,):
            raise StoreError(f"embedding rows have shape {embedding.shape[1:]}, expected ({w.embedding_dim},)")
        if logits.shape[1:] != (w.n_classes,):
            raise StoreError(f"logits rows have shape {logits.shape[1:]}, expected ({w.n_classes},)")
        prefix = _PREFIX[split]
        emb = self._array(prefix + "embedding", (n, w.embedding_dim), w.embedding_dtype)
        log = self._array(prefix + "logits", (n, w.n_classes), "float32")
        emb[start:stop] = embedding
        log[start:stop] = logits
        self._filled[prefix + "embedding"] += stop - start
        self._filled[prefix + "logits"] += stop - start

    def set_head(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Record the linear head ``logits = embedding @ weight.T + bias``."""
        w = self._writer
        weight = np.asarray(weight, dtype=np.float32)
        bias = np.asarray(bias, dtype=np.float32)
        if weight.shape != (w.n_classes, w.embedding_dim) or bias.shape != (w.n_classes,):
            raise StoreError(
                f"head has weight {weight.shape} and bias {bias.shape}, "
                f"expected ({w.n_classes}, {w.embedding_dim}) and ({w.n_classes},)"
            )
        self._array("head_weight", weight.shape, "float32")[:] = weight
        self._array("head_bias", bias.shape, "float32")[:] = bias
        self._filled["head_weight"] = self._filled["head_bias"] = -1

    def set_train_margin(self, margin: np.ndarray) -> None:
        """Record training-mode margins (given-label logit minus largest other) of this epoch."""
        margin = np.asarray(margin, dtype=np.float32)
        if margin.shape != (self._writer.n_samples,):
            raise StoreError(f"train_margin has shape {margin.shape}, expected ({self._writer.n_samples},)")
        self._array("train_margin", margin.shape, "float32")[:] = margin
        self._filled["train_margin"] = -1

    def set_pass(self, kind: str, observed: np.ndarray | None = None) -> None:
        """Say how the epoch was recorded (one of :data:`PASSES`), and for a train pass which rows it saw.

        ``observed`` (bool, one per sample) is stored only when some rows were
        carried over from an earlier epoch (False there).
        """
        if kind not in PASSES:
            raise StoreError(f"pass must be one of {PASSES}, got {kind!r}")
        self._pass = kind
        if observed is not None:
            observed = np.asarray(observed, dtype=bool)
            if observed.shape != (self._writer.n_samples,):
                raise StoreError(f"observed has shape {observed.shape}, expected ({self._writer.n_samples},)")
            if not observed.all():
                self._array("observed", observed.shape, "bool")[:] = observed
                self._filled["observed"] = -1

    def set_metrics(self, **metrics: float) -> None:
        """Attach scalar training metrics (loss, accuracies) to this epoch's history entry."""
        self._metrics.update({k: float(v) for k, v in metrics.items()})

    def commit(self) -> None:
        """Check the epoch is complete and finite, move it into place and list it in the manifest."""
        w = self._writer
        for split in SPLITS:
            n, prefix = w.split_size(split), _PREFIX[split]
            for name in (prefix + "embedding", prefix + "logits"):
                if prefix and name not in self._arrays:
                    continue
                if self._filled.get(name, 0) != n:
                    raise StoreError(
                        f"epoch {self.epoch}: {name} has {self._filled.get(name, 0)} of {n} rows written"
                    )
        if "head_weight" not in self._arrays:
            raise StoreError(f"epoch {self.epoch}: the classification head was not recorded (set_head)")
        for name, array in self._arrays.items():
            try:
                _check_finite(array, self._tmp / f"{name}.npy")
            except StoreError as exc:
                row = str(exc).rsplit("(", 1)[1].rstrip(")")
                raise StoreError(f"epoch {self.epoch}: the {name.replace('_', ' ')} recorded holds NaN or inf values "
                                 f"({row}), so the epoch was not written: did training diverge (a lower learning "
                                 "rate)? Epochs before it are kept") from None
        self._arrays.clear()  # drop the maps before the rename; fsync writes their dirty pages
        # Concurrent fsyncs share the filesystem's journal commits: about half
        # the time of one after another, which matters for small, fast epochs.
        files = sorted(self._tmp.glob("*.npy"))
        crcs = list(_fsync_pool().map(_crc_and_fsync, files))
        write_json_atomic(self._tmp / CHECKSUMS, _checksum_record(dict(zip((f.name for f in files), crcs))))
        fsync_dir(self._tmp)
        final = w.path / "epochs" / epoch_dirname(self.epoch)
        if final.exists():  # an earlier, unlisted or replaced attempt at this epoch
            shutil.rmtree(final)
        os.replace(self._tmp, final)
        fsync_dir(final.parent)
        w._epoch_committed(self.epoch, self._metrics, self._pass)
        self._done = True

    def abort(self) -> None:
        """Discard the partial epoch."""
        self._arrays.clear()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._done = True

    def __enter__(self) -> EpochWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._done:
            self.abort()


class RunWriter:
    """Creates a run store and appends epochs to it.

    Use :meth:`create` for a new run and :meth:`resume` to continue one.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], *, labels: np.ndarray,
                 heldout_labels: np.ndarray | None = None, true_labels: np.ndarray | None = None,
                 pool_true_labels: np.ndarray | None = None) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.labels = labels
        self.heldout_labels = heldout_labels
        self.true_labels = true_labels
        self.pool_true_labels = pool_true_labels
        self.n_samples = int(manifest["n_samples"])
        self.n_classes = int(manifest["n_classes"])
        self.embedding_dim = int(manifest["embedding_dim"])
        self.n_heldout = int(manifest.get("n_heldout", 0))
        self.n_pool = int(manifest.get("n_pool", 0))
        self.embedding_dtype = manifest["embedding_dtype"]
        self._lock_fd = _hold_writer_lock(self.path)
        if self._lock_fd is not None:
            weakref.finalize(self, os.close, self._lock_fd)

    def _remove_leftovers(self) -> None:
        """Delete the hidden ``epochs/.EEEE.tmp-*`` directories of killed writers, when no other writer is active."""
        leftovers = sorted((self.path / "epochs").glob(".*.tmp-*"))
        if not leftovers or self._lock_fd is None:
            return
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # alone on the run: nobody is filling them
        except BlockingIOError:
            logger.warning("%s: another process is writing this run; its temporary epochs are left alone", self.path)
            return
        try:
            for leftover in leftovers:
                shutil.rmtree(leftover, ignore_errors=True)
            logger.info("%s: removed %d unfinished epoch(s) left by an interrupted writer", self.path, len(leftovers))
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)

    def split_size(self, split: str) -> int:
        """Number of samples of a split (0 when the run has none)."""
        if split not in SPLITS:
            raise StoreError(f"split must be one of {SPLITS}, got {split!r}")
        return {"train": self.n_samples, "heldout": self.n_heldout, "pool": self.n_pool}[split]

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        labels: np.ndarray,
        n_classes: int,
        embedding_dim: int,
        class_names: Sequence[str] | None = None,
        dataset: str = "",
        true_labels: np.ndarray | None = None,
        noise: dict[str, Any] | None = None,
        thumbs: np.ndarray | None = None,
        heldout_labels: np.ndarray | None = None,
        n_pool: int = 0,
        pool_true_labels: np.ndarray | None = None,
        pool_thumbs: np.ndarray | None = None,
        metadata: Any = None,
        embedding_dtype: str = "float16",
        extra: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> RunWriter:
        """Create a new, empty run store at ``path``.

        Parameters
        ----------
        path : path-like
            Directory to create. It must not hold a run unless ``overwrite``.
        labels : array of shape (N,)
            Labels the model is trained on (after any injected noise).
        n_classes, embedding_dim : int
            Number of classes K and embedding width D.
        class_names : sequence of str, optional
            K display names; defaults to ``"0".."K-1"``.
        dataset : str
            Name of the dataset, for display.
        true_labels : array of shape (N,), optional
            Clean labels, when noise was injected (benchmarks only).
        noise : dict, optional
            Noise settings (kind, rate, seed, ...) recorded in the manifest.
        thumbs : uint8 array of shape (N, H, W) or (N, H, W, 3), optional
            Images shown in the inspector.
        heldout_labels : array of shape (M,), optional
            Labels of a held-out set recorded alongside the training set.
        n_pool : int
            Size M of an unlabelled pool recorded beside the training set
            (active learning: the model never trains on it; the Recorder's
            ``pool_loader`` records its rows in every eval pass).
        pool_true_labels : array of shape (M,), optional
            The pool's labels, for benchmarks only (the app never shows them).
        pool_thumbs : uint8 array of shape (M, H, W) or (M, H, W, 3), optional
            The pool's images for the inspector.
        metadata : mapping of str to array of shape (N,), or a DataFrame, optional
            Per-sample columns (source, device, annotator...) for subgroup questions;
            numbers are numeric columns, anything else categorical. Stored in
            ``metadata/`` by :func:`timetravel.metadata.write_metadata`.
        embedding_dtype : {"float16", "float32"}
            Storage type of embeddings; float16 halves the size.
        extra : dict, optional
            More manifest fields (capture settings, seed, model name).
        overwrite : bool
            Replace an existing run at ``path``.

        Returns
        -------
        RunWriter
        """
        path = Path(path)
        if (path / MANIFEST).exists():
            if not overwrite:
                raise StoreError(f"{path}: a run already exists here; pass overwrite=True to replace it")
            shutil.rmtree(path)
        if embedding_dtype not in EMBEDDING_DTYPES:
            raise StoreError(f"embedding_dtype must be one of {EMBEDDING_DTYPES}, got {embedding_dtype!r}")
        labels = _as_labels(labels, "labels", n_classes)
        n = len(labels)
        class_names = list(class_names) if class_names is not None else [str(k) for k in range(n_classes)]
        if len(class_names) != n_classes:
            raise StoreError(f"class_names has {len(class_names)} entries but n_classes is {n_classes}")
        make_run_folder(path)
        save_npy_atomic(path / "labels.npy", labels)
        if true_labels is not None:
            true_labels = _as_labels(true_labels, "true_labels", n_classes)
            if len(true_labels) != n:
                raise StoreError(f"true_labels has {len(true_labels)} entries but labels has {n}")
            save_npy_atomic(path / "true_labels.npy", true_labels)
            save_npy_atomic(path / "noise_mask.npy", labels != true_labels)
        if thumbs is not None:
            save_npy_atomic(path / "thumbs.npy", _as_thumbs(thumbs, n))
        n_heldout = 0
        if heldout_labels is not None:
            heldout_labels = _as_labels(heldout_labels, "heldout_labels", n_classes)
            n_heldout = len(heldout_labels)
            save_npy_atomic(path / "heldout_labels.npy", heldout_labels)
        if isinstance(n_pool, bool) or not isinstance(n_pool, (int, np.integer)) or n_pool < 0:
            raise StoreError(f"n_pool must be a non-negative integer, got {n_pool!r}")
        if pool_true_labels is not None:
            pool_true_labels = _as_labels(pool_true_labels, "pool_true_labels", n_classes)
            if len(pool_true_labels) != n_pool:
                raise StoreError(f"pool_true_labels has {len(pool_true_labels)} entries but n_pool is {n_pool}")
            save_npy_atomic(path / "pool_true_labels.npy", pool_true_labels)
        if pool_thumbs is not None:
            save_npy_atomic(path / "pool_thumbs.npy", _as_thumbs(pool_thumbs, int(n_pool)))
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "dataset": dataset,
            "n_samples": n,
            "n_classes": int(n_classes),
            "embedding_dim": int(embedding_dim),
            "n_heldout": n_heldout,
            "n_pool": int(n_pool),
            "has_pool_true_labels": pool_true_labels is not None,
            "class_names": class_names,
            "embedding_dtype": embedding_dtype,
            "has_true_labels": true_labels is not None,
            "noise": noise,
            "epochs": [],
            "history": [],
            **(extra or {}),
        }
        if true_labels is not None:
            manifest["noise_rate_actual"] = float(np.mean(labels != true_labels))
        written = [name for name in _RUN_ARRAYS if (path / name).exists()]
        manifest["checksums"] = _checksum_record({name: file_crc32(path / name) for name in written})
        if metadata is not None:
            from timetravel.metadata import write_metadata

            write_metadata(path, metadata, n)
        write_json_atomic(path / MANIFEST, manifest)
        return cls(path, manifest, labels=labels, heldout_labels=heldout_labels, true_labels=true_labels,
                   pool_true_labels=pool_true_labels)

    @classmethod
    def resume(cls, path: str | os.PathLike) -> RunWriter:
        """Open an existing run to append more epochs (the store is validated first)."""
        store = RunStore(path, verify="headers")
        writer = cls(store.path, store.manifest, labels=store.labels, heldout_labels=store.heldout_labels,
                     true_labels=store.true_labels, pool_true_labels=store.pool_true_labels)
        writer._remove_leftovers()
        return writer

    @property
    def epochs(self) -> list[int]:
        """Epochs committed so far."""
        return list(self.manifest["epochs"])

    def begin_epoch(self, epoch: int) -> EpochWriter:
        """Start writing an epoch; see :class:`EpochWriter`."""
        if int(epoch) < 0:
            raise StoreError(f"epoch must be >= 0, got {epoch}")
        return EpochWriter(self, epoch)

    def write_epoch(
        self,
        epoch: int,
        embedding: np.ndarray,
        logits: np.ndarray,
        *,
        head: tuple[np.ndarray, np.ndarray],
        train_margin: np.ndarray | None = None,
        heldout: tuple[np.ndarray, np.ndarray] | None = None,
        metrics: dict[str, float] | None = None,
        pool: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Write a whole epoch held in memory and commit it (``heldout``, ``pool``: those splits' embedding, logits)."""
        with self.begin_epoch(epoch) as ew:
            ew.write(0, embedding, logits)
            if heldout is not None:
                ew.write(0, heldout[0], heldout[1], split="heldout")
            if pool is not None:
                ew.write(0, pool[0], pool[1], split="pool")
            ew.set_head(*head)
            if train_margin is not None:
                ew.set_train_margin(train_margin)
            ew.set_metrics(**(metrics or {}))
            ew.commit()

    def update_manifest(self, **fields: Any) -> None:
        """Set extra manifest fields and rewrite ``run.json`` atomically."""
        reserved = {"format_version", "n_samples", "n_classes", "embedding_dim", "epochs", "history", "epoch_passes",
                    "checksums"}
        if reserved & fields.keys():
            raise StoreError(f"cannot overwrite manifest fields {sorted(reserved & fields.keys())}")
        self.manifest.update(fields)
        write_json_atomic(self.path / MANIFEST, self.manifest)

    def _epoch_committed(self, epoch: int, metrics: dict[str, float], kind: str = "eval") -> None:
        passes = self.manifest.get("epoch_passes", {})
        if kind != "eval" or passes:  # runs recorded only by eval passes keep their old manifest
            passes = {**passes, str(epoch): kind}
            self.manifest["epoch_passes"] = dict(sorted(passes.items(), key=lambda kv: int(kv[0])))
        epochs = [e for e in self.manifest["epochs"] if e != epoch]
        self.manifest["epochs"] = sorted(epochs + [epoch])
        history = [h for h in self.manifest["history"] if h.get("epoch") != epoch]
        self.manifest["history"] = sorted(history + [{"epoch": epoch, **metrics}], key=lambda h: h["epoch"])
        write_json_atomic(self.path / MANIFEST, self.manifest)


def _as_thumbs(thumbs: np.ndarray, n: int) -> np.ndarray:
    """Thumbnails as ``(N, H, W)`` or ``(N, H, W, 3)`` uint8; channels-first ``(N, C, H, W)`` is transposed."""
    thumbs = np.asarray(thumbs)
    if thumbs.ndim == 4 and thumbs.shape[1] in (1, 3) and thumbs.shape[3] not in (1, 3):
        thumbs = np.ascontiguousarray(thumbs.transpose(0, 2, 3, 1))  # PyTorch's (N, C, H, W) layout
    if thumbs.ndim == 4 and thumbs.shape[3] == 1:
        thumbs = thumbs[..., 0]
    if thumbs.dtype != np.uint8 or thumbs.ndim not in (3, 4) or len(thumbs) != n or (
            thumbs.ndim == 4 and thumbs.shape[3] != 3):
        raise StoreError(f"thumbs must be ({n}, H, W) or ({n}, H, W, 3) uint8 (or channels-first ({n}, 3, H, W)), "
                         f"got {thumbs.shape} {thumbs.dtype}")
    return thumbs


def _as_labels(labels: Iterable[int], name: str, n_classes: int) -> np.ndarray:
    return check_labels(labels, name, n_classes, error=StoreError)
