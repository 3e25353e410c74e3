"""Read-only run data for the app, shared by every session of one server process.

The app never trains or projects: it reads the run store, the projection and the
thumbnails. Per-epoch frames (positions, predictions, territory image) are kept in a
small LRU cache bounded in bytes, so a large run holds only the current epoch and a
few neighbours in memory; everything else stays memory-mapped on disk.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from timetravel.groups import GroupAnalysis
from timetravel.server_app.palette import class_palette, territory_image, territory_lut
from timetravel.numerics import cosine_neighbours, label_margins, reduced_embedding
from timetravel.projection.store import manifest_stamp
from timetravel.store import RunStore, softmax

logger = logging.getLogger(__name__)

# Bytes of epoch frames kept in memory; a 200k-sample frame is ~3.3 MB, so a large
# run keeps the current epoch and about four neighbours, a small run keeps them all.
FRAME_CACHE_BYTES = 16 * 2**20
MIN_FRAMES, MAX_FRAMES = 3, 64
NEIGHBOURS = 10  # as the detector's neighbour features (timetravel detect --neighbors)


@dataclass(frozen=True)
class EpochFrame:
    """What the canvas shows at one epoch.

    Attributes
    ----------
    epoch : int
    x, y : ndarray of shape (N,), float32
        Canvas positions.
    pred : ndarray of shape (N,), uint8 or uint16
        The model's predicted class.
    confidence : ndarray of shape (N,), float32
        Softmax probability of the predicted class.
    territory : ndarray of shape (G, G), uint32
        RGBA territory image (class colour, confidence as lightness), row 0 at the bottom.
    extent : tuple of float
        ``(x0, x1, y0, y1)`` of the territory image.
    """

    epoch: int
    x: np.ndarray
    y: np.ndarray
    pred: np.ndarray
    confidence: np.ndarray
    territory: np.ndarray
    extent: tuple[float, float, float, float]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.x, self.y, self.pred, self.confidence, self.territory))


@dataclass(frozen=True)
class PoolFrame:
    """The unlabelled pool on the canvas at one epoch: positions and the model's predicted class."""

    epoch: int
    x: np.ndarray  # (P,) float32
    y: np.ndarray
    pred: np.ndarray  # (P,) uint8 or uint16


@dataclass(frozen=True)
class SampleHistory:
    """One sample across every recorded epoch (for the inspector's curves)."""

    epochs: np.ndarray
    given_prob: np.ndarray
    margin: np.ndarray
    pred: np.ndarray


def _class_dtype(n_classes: int) -> type:
    return np.uint8 if n_classes <= 256 else np.uint16


class RunData:
    """The run as the app sees it: store, palette, epoch frames, per-sample reads.

    Thread-safe: sessions and the background executor share one instance.

    Parameters
    ----------
    path : path-like
        The run directory.
    frame_cache_bytes : int
        Memory budget of the epoch-frame LRU cache.

    Raises
    ------
    StoreError
        The run cannot be opened (the message says why).
    """

    def __init__(self, path: str | Path, *, frame_cache_bytes: int = FRAME_CACHE_BYTES) -> None:
        self.path = Path(path).resolve()
        self.store = RunStore(self.path)
        store = self.store
        self.n_samples = store.n_samples
        self.n_classes = store.n_classes
        self.class_names = store.class_names
        self.labels = store.labels.astype(_class_dtype(self.n_classes))
        self.palette = class_palette(self.n_classes)
        self._lut = territory_lut(self.palette)
        self._frame_cache_bytes = frame_cache_bytes
        self._frames: OrderedDict[int, EpochFrame] = OrderedDict()
        self._pool_frames: OrderedDict[int, PoolFrame | None] = OrderedDict()
        self._pending: dict[int, Future] = {}
        self._lock = threading.RLock()
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="timetravel-app")
        self.analysis = GroupAnalysis(store)  # confusion, subgroups: the numerics notebooks use too
        self._manifest_stamp: tuple | None = None
        self._reduced: tuple[int, np.ndarray] | None = None  # (epoch, reduced embedding) of the inspector
        self.epochs: list[int] = []
        self.bounds = (0.0, 1.0, 0.0, 1.0)
        self.refresh()

    # -- projection manifest ---------------------------------------------------------

    def refresh(self) -> bool:
        """Re-read the projection manifest if it changed on disk; returns whether it did.

        Lets a server started before ``timetravel project`` finished pick up the new
        epochs on the next page load. Cached frames are dropped, as they may be stale.
        """
        stamp = manifest_stamp(self.path)
        with self._lock:
            if stamp == self._manifest_stamp:
                return False
            self._manifest_stamp = stamp
            self._frames.clear()
            self._pool_frames.clear()
            self.epochs = self.store.projected_epochs
            self.bounds = self._union_extent()
        return True

    def _union_extent(self) -> tuple[float, float, float, float]:
        if not self.epochs:
            return (0.0, 1.0, 0.0, 1.0)
        extents = np.array([self.store.territory(e).extent for e in self.epochs])
        return (
            float(extents[:, 0].min()),
            float(extents[:, 1].max()),
            float(extents[:, 2].min()),
            float(extents[:, 3].max()),
        )

    def close(self) -> None:
        """Stop the background executor (the server is shutting down); queued work is dropped."""
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def unprojected_epochs(self) -> list[int]:
        """Recorded epochs without a projection yet."""
        return sorted(set(self.store.epochs) - set(self.epochs))

    # -- epoch frames ------------------------------------------------------------------

    def frame(self, epoch: int) -> EpochFrame:
        """The frame of ``epoch``, from the cache or loaded now (blocking)."""
        with self._lock:
            if epoch in self._frames:
                self._frames.move_to_end(epoch)
                return self._frames[epoch]
            future = self._pending.get(epoch)
            if future is None:
                future = Future()
                self._pending[epoch] = future
                owner = True
            else:
                owner = False
        if not owner:
            return future.result()
        try:
            frame = self._load_frame(epoch)
        except BaseException as exc:
            with self._lock:
                self._pending.pop(epoch, None)
            future.set_exception(exc)
            raise
        with self._lock:
            self._frames[epoch] = frame
            self._evict()
            self._pending.pop(epoch, None)
        future.set_result(frame)
        return frame

    def cached_epochs(self) -> list[int]:
        """Epochs whose frames are in memory now (oldest first)."""
        with self._lock:
            return list(self._frames)

    def max_frames(self) -> int:
        """How many frames the cache keeps for this run."""
        per_frame = self.n_samples * 13 + 4 * 200 * 200
        return int(np.clip(self._frame_cache_bytes // per_frame, MIN_FRAMES, MAX_FRAMES))

    def _evict(self) -> None:
        while len(self._frames) > self.max_frames():
            self._frames.popitem(last=False)

    def prefetch(self, epoch: int) -> None:
        """Load the epochs around ``epoch`` in the background, so stepping is instant."""
        if epoch not in self.epochs:
            return
        pos = self.epochs.index(epoch)
        for offset in (1, -1, 2):
            if 0 <= pos + offset < len(self.epochs):
                neighbour = self.epochs[pos + offset]
                with self._lock:
                    busy = neighbour in self._frames or neighbour in self._pending
                if not busy:
                    self.executor.submit(self._prefetch_one, neighbour)

    def _prefetch_one(self, epoch: int) -> None:
        try:
            self.frame(epoch)
        except Exception:  # noqa: BLE001 - a failed prefetch is retried, and reported, on real use
            logger.debug("prefetch of epoch %d failed", epoch, exc_info=True)

    def _load_frame(self, epoch: int) -> EpochFrame:
        with self._lock:
            xy = self.store.projection(epoch)
            territory = self.store.territory(epoch)
            logits = self.store.logits(epoch)
        xy = np.asarray(xy, dtype=np.float32)
        probs = softmax(np.array(logits, dtype=np.float32))
        pred = probs.argmax(axis=1)
        return EpochFrame(
            epoch=epoch,
            x=np.ascontiguousarray(xy[:, 0]),
            y=np.ascontiguousarray(xy[:, 1]),
            pred=pred.astype(self.labels.dtype),
            confidence=probs[np.arange(len(pred)), pred].astype(np.float32),
            territory=territory_image(territory.classes, territory.confidence, self._lut),
            extent=territory.extent,
        )

    def pool_frame(self, epoch: int) -> PoolFrame | None:
        """The pool's canvas positions at projected ``epoch``, or None when that epoch did not place it.

        An epoch places the pool when it holds pool rows (eval passes only) and was projected
        since pool placement existed (:meth:`pool_unplaced` says which case it is). The last
        few epochs are cached.
        """
        with self._lock:
            if epoch in self._pool_frames:
                return self._pool_frames[epoch]
            frame = None
            if self._holds_pool(epoch) and self.store.has_projection(epoch, "pool"):
                xy = np.asarray(self.store.projection(epoch, "pool"), dtype=np.float32)
                pred = np.asarray(self.store.logits(epoch, "pool")).argmax(axis=1).astype(self.labels.dtype)
                frame = PoolFrame(epoch, np.ascontiguousarray(xy[:, 0]), np.ascontiguousarray(xy[:, 1]), pred)
            self._pool_frames[epoch] = frame
            while len(self._pool_frames) > MIN_FRAMES:
                self._pool_frames.popitem(last=False)
            return frame

    def pool_unplaced(self, epoch: int) -> bool:
        """Whether projected ``epoch`` holds pool rows that its projection did not place (an older projection)."""
        return self._holds_pool(epoch) and not self.store.has_projection(epoch, "pool")

    def _holds_pool(self, epoch: int) -> bool:
        return bool(self.store.n_pool) and self.store.has_split(epoch, "pool")

    # -- per-sample reads --------------------------------------------------------------

    def check_index(self, sample: int) -> int:
        """``sample`` as an int in ``[0, N)``; raises IndexError otherwise."""
        sample = int(sample)
        if not 0 <= sample < self.n_samples:
            raise IndexError(f"sample {sample} is out of range for a run of {self.n_samples} samples")
        return sample

    def sample_history(self, sample: int) -> SampleHistory:
        """Given-label probability, margin and prediction of one sample at every recorded epoch."""
        sample = self.check_index(sample)
        with self._lock:
            rows = np.stack([np.asarray(self.store.logits(e)[sample], dtype=np.float32) for e in self.store.epochs])
        given = int(self.labels[sample])
        probs = softmax(rows.copy())
        return SampleHistory(
            epochs=np.asarray(self.store.epochs, dtype=np.int32),
            given_prob=probs[:, given],
            margin=label_margins(rows, np.full(len(rows), given)),
            pred=probs.argmax(axis=1).astype(np.int32),
        )

    def neighbours(self, sample: int, epoch: int, k: int = NEIGHBOURS) -> np.ndarray:
        """The ``k`` nearest samples to ``sample`` in the embedding space of ``epoch``, nearest first.

        The same search as the detector's neighbour features
        (:func:`timetravel.numerics.embedding_neighbours`), so at the epochs
        those features used, these are the neighbours a reason counted.
        """
        sample = self.check_index(sample)
        with self._lock:
            cached = self._reduced
            emb = self.store.embedding(epoch)
        if cached is None or cached[0] != epoch:
            cached = (epoch, reduced_embedding(emb))
            with self._lock:
                self._reduced = cached
        return cosine_neighbours(cached[1], min(k, self.n_samples - 1), [sample])[0].astype(np.int64)

    def trails(self, samples: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Canvas trajectories of ``samples`` over the projected epochs (xs, ys per sample)."""
        samples = np.asarray(samples, dtype=np.int64)
        if not len(samples) or not self.epochs:
            return [], []
        with self._lock:
            maps = [self.store.projection(e) for e in self.epochs]
        order = np.argsort(samples)
        rows = np.stack([np.asarray(m[samples[order]], dtype=np.float32) for m in maps], axis=1)
        rows = rows[np.argsort(order)]
        return [r[:, 0] for r in rows], [r[:, 1] for r in rows]

    def thumbnail_png(self, sample: int, split: str = "train") -> str | None:
        """The sample's image as a ``data:image/png;base64`` URI, or None without images.

        ``split="pool"``: ``sample`` is a row of the unlabelled pool (``pool_thumbs.npy``).
        """
        if split == "pool":
            thumbs = self.store.pool_thumbs
            if not 0 <= int(sample) < self.store.n_pool:
                raise IndexError(f"pool row {sample} is out of range for a pool of {self.store.n_pool}")
        else:
            thumbs, sample = self.store.thumbs, self.check_index(sample)
        if thumbs is None:
            return None
        return _png_uri(np.asarray(thumbs[int(sample)]))


def _png_uri(image: np.ndarray) -> str:
    """A ``data:image/png;base64`` URI of a uint8 image (H, W) or (H, W, 3)."""
    from PIL import Image  # a dependency of bokeh

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

