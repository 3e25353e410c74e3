"""The store side of a recorder: it holds the labels, gathers rows, margins and heads, and commits epochs.

An :class:`EpochSink` owns everything the recorder writes. It runs on one
thread at a time: a :class:`Worker` (the background writer, so the training
thread only copies tensors) or, for synchronous eval passes, the caller's.

Rows recorded from training passes arrive in any order, identified by their
sample indices; they are kept in one ``(N, D)`` / ``(N, K)`` buffer that
always holds each sample's latest training-pass row, so an epoch is written
in one sequential sweep. A sample that no training pass saw in an epoch is an
error (``missing="error"``) or keeps its row from its previous epoch and is
marked in the epoch's ``observed.npy`` (``missing="previous"``); it is never
a silent zero row.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

import numpy as np
import torch

from timetravel.capture._batch import CaptureError, check_labels
from timetravel.capture._head import HeadRecorder, LeastSquares
from timetravel.capture._probe import Rows
from timetravel.numerics import label_margins
from timetravel.store import EpochWriter, RunWriter

logger = logging.getLogger("timetravel.capture")

MISSING = ("error", "previous")


class EpochSink:
    """Everything a recorder writes, and the labels it checks against.

    Parameters
    ----------
    writer : RunWriter
        The store; its ``labels``, ``heldout_labels`` and ``true_labels`` are used.
    head : HeadRecorder
        The head of each train-pass epoch (the model's linear head, or a surrogate fitted to its rows).
    missing : {"error", "previous"}
        What a train-pass epoch does with samples no training pass saw.
    """

    def __init__(self, writer: RunWriter, head: HeadRecorder, *, missing: str = "error") -> None:
        if missing not in MISSING:
            raise CaptureError(f"missing must be one of {MISSING}, got {missing!r}")
        self.writer = writer
        self.missing = missing
        self.labels = {"train": np.asarray(writer.labels, dtype=np.int64)}
        if writer.heldout_labels is not None:
            self.labels["heldout"] = np.asarray(writer.heldout_labels, dtype=np.int64)
        self.true_labels = writer.true_labels
        self.head = head
        n = writer.n_samples
        self._margin_sum = np.zeros(n)
        self._margin_count = np.zeros(n, dtype=np.int64)
        self._emb: np.ndarray | None = None  # latest training-pass row of every sample
        self._logits: np.ndarray | None = None
        self._seen = np.zeros(n, dtype=bool)  # seen by this epoch's training pass
        self._ever = np.zeros(n, dtype=bool)  # seen by some earlier epoch's training pass
        self._fit: LeastSquares | None = None
        self._last_train_margin: np.ndarray | None = None
        self.reuse_last_margin = False  # set for the final eval pass that records a train-pass epoch again
        self.last_metrics: dict[str, float] = {}

    # -- training-mode margins (AUM) ---------------------------------------------------------

    def add_margins(self, index: np.ndarray, margin: np.ndarray) -> None:
        """Add training-mode margins of some samples to this epoch's sums."""
        np.add.at(self._margin_sum, index, margin)  # a sample may appear twice (sampler padding)
        np.add.at(self._margin_count, index, 1)

    def _take_margins(self, fallback: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
        """Mean margin per sample this epoch (``fallback(missing)`` where none), then reset; None if none at all."""
        total, count = self._margin_sum, self._margin_count
        self._margin_sum, self._margin_count = np.zeros_like(total), np.zeros_like(count)
        if not count.any():
            return None
        mean = total / np.maximum(count, 1)
        missing = count == 0
        if missing.any():
            mean[missing] = fallback(missing)
        return mean

    # -- training-pass rows ---------------------------------------------------------------

    def add_batches(self, batches: list[tuple[np.ndarray, Rows, Any]]) -> None:
        """Keep batches of training-pass rows, each ``(index, rows, target)``, in order (a sample's latest row wins).

        The recorder hands batches over a few thousand rows at a time: one call per batch
        would cost more in thread switches and per-call overhead than the copying itself.
        """
        for index, rows, target in batches:
            if rows.ready is not None:
                rows.ready.synchronize()
            check_labels(target, self.labels["train"][index], "the training batch")
        if len(batches) == 1:
            index, emb, logits = batches[0][0], batches[0][1].embedding.numpy(), batches[0][1].logits.numpy()
        else:
            index = np.concatenate([i for i, _, _ in batches])
            emb = torch.cat([r.embedding for _, r, _ in batches]).numpy()
            logits = torch.cat([r.logits for _, r, _ in batches]).numpy()
        labels = self.labels["train"][index]
        if self._emb is None:
            w = self.writer
            self._emb = np.zeros((w.n_samples, w.embedding_dim), dtype=w.embedding_dtype)
            self._logits = np.zeros((w.n_samples, w.n_classes), dtype=np.float32)
        self._emb[index] = emb
        self._logits[index] = logits
        self._seen[index] = True
        self.add_margins(index, label_margins(logits, labels))
        if self._fit is None:
            self._fit = self.head.new_fit()
        if self._fit is not None:
            self._fit.add(emb.astype(np.float32), logits)

    @property
    def has_rows(self) -> bool:
        """Whether any training-pass row arrived since the last committed train-pass epoch."""
        return bool(self._seen.any())

    def _check_seen(self, epoch: int) -> np.ndarray | None:
        """The observed mask when rows are carried over; raises when that is not allowed."""
        missing = ~self._seen
        if not missing.any():
            return None
        never = missing & ~self._ever
        first = int(np.flatnonzero(never if never.any() else missing)[0])
        n, k = self.writer.n_samples, int(missing.sum())
        cause = ("a training loader with drop_last=True, or a sampler that skips samples, leaves them out; "
                 "batches recorded outside recorder.batch() are not seen either")
        if self.missing == "error":
            raise CaptureError(
                f"epoch {epoch}: {k} of {n} training samples went through no recorded training pass (e.g. sample "
                f"{first}): {cause}. Use drop_last=False, or Recorder(missing='previous') to keep their rows from "
                "their previous epoch"
            )
        if never.any():
            raise CaptureError(
                f"epoch {epoch}: {int(never.sum())} of {n} training samples have never gone through a recorded "
                f"training pass (e.g. sample {first}), so there is no earlier row to carry over: {cause}"
            )
        logger.warning("epoch %d: %d of %d samples were not in this epoch's training pass; their rows are "
                       "carried over from their previous epoch (observed.npy marks them)", epoch, k, n)
        return ~missing

    def commit_train_pass(self, epoch: int, head: tuple[np.ndarray, np.ndarray] | None, metrics: dict[str, float],
                          on_commit: Callable[[], None] | None, started: float) -> dict[str, float]:
        """Write this epoch's training-pass rows as epoch ``epoch`` and commit it."""
        observed = self._check_seen(epoch)
        labels = self.labels["train"]
        computed: dict[str, float] = {}
        seen = self._seen
        pred = self._logits.argmax(axis=1)
        computed["train_pass_acc"] = float(np.mean(pred[seen] == labels[seen]))
        if self.true_labels is not None:
            computed["clean_train_pass_acc"] = float(np.mean(pred[seen] == self.true_labels[seen]))
        if head is None:
            head, fit_metrics = self.head.solve(self._fit, epoch)
            computed.update(fit_metrics)
        margin = self._take_margins(lambda m: label_margins(self._logits[m], labels[m]))
        with self.writer.begin_epoch(epoch) as ew:
            ew.write(0, self._emb, self._logits)
            ew.set_head(*head)
            ew.set_train_margin(margin)
            ew.set_pass("train", observed)
            self._last_train_margin = margin
            ew.set_metrics(**{**computed, "capture_seconds": time.perf_counter() - started, **metrics})
            ew.commit()
        self._ever |= self._seen
        self._seen[:] = False
        self._fit = None
        return self._committed(epoch, on_commit)

    def discard_train_pass(self) -> None:
        """Forget this epoch's training-pass rows (they stay as the samples' latest rows); keep the margins."""
        self._ever |= self._seen
        self._seen[:] = False
        self._fit = None

    # -- eval passes -----------------------------------------------------------------------

    def commit_eval_pass(self, ew: EpochWriter, head: tuple[np.ndarray, np.ndarray], computed: dict[str, float],
                         eval_margin: np.ndarray, metrics: dict[str, float], on_commit: Callable[[], None] | None,
                         started: float) -> dict[str, float]:
        """Finish an epoch whose rows an eval pass wrote into ``ew``: head, training margins, metrics, commit."""
        ew.set_head(*head)
        margin = self._take_margins(lambda m: self._missing_margins(m, eval_margin))
        if margin is None and self.reuse_last_margin:
            margin = self._last_train_margin
        self.reuse_last_margin = False
        if margin is not None:
            ew.set_train_margin(margin)
        ew.set_pass("eval")
        ew.set_metrics(**{**computed, "capture_seconds": time.perf_counter() - started, **metrics})
        ew.commit()
        return self._committed(ew.epoch, on_commit)

    @staticmethod
    def _missing_margins(missing: np.ndarray, eval_margin: np.ndarray) -> np.ndarray:
        logger.warning(
            "%d of %d samples had no training forward pass recorded this epoch; their train margin is the "
            "eval-mode margin", int(missing.sum()), len(missing),
        )
        return eval_margin[missing]

    def _committed(self, epoch: int, on_commit: Callable[[], None] | None) -> dict[str, float]:
        if on_commit is not None:
            on_commit()
        entry = next(h for h in self.writer.manifest["history"] if h["epoch"] == epoch)
        self.last_metrics = {k: v for k, v in entry.items() if k != "epoch"}
        return dict(self.last_metrics)


class Worker:
    """One background thread that runs submitted calls in order (the recorder's writer thread).

    The queue is bounded, so a slow disk holds training back instead of
    filling memory. The first error stops the worker; it is raised by the
    next :meth:`submit`, :meth:`flush` or :meth:`close` on the caller's thread.
    """

    def __init__(self, name: str = "timetravel-writer", max_pending: int = 256) -> None:
        self._name = name
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the worker thread after everything submitted before."""
        self._raise()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put((fn, args))

    def flush(self) -> None:
        """Wait until every submitted call has run; raise the first error."""
        if self._thread is not None:
            self._queue.join()
        self._raise()

    def close(self) -> None:
        """Flush, then stop the thread (it is started again by the next submit)."""
        try:
            self.flush()
        finally:
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()
                self._thread = None

    def check(self) -> None:
        """Raise the worker's error now, if it failed (cheap: no waiting)."""
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:  # after a failure the rest of the epoch is dropped
                    item[0](*item[1])
            except BaseException as exc:  # raised again on the training thread
                self._error = exc
            finally:
                self._queue.task_done()
