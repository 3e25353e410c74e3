"""Eval passes: one epoch recorded by an eval-mode, no-grad pass over the ordered (or indexed) loaders.

:class:`EvalPasses` runs the training set's loader (and the held-out set's
and the pool's, when given) through the model in eval mode, writes every row
by sample index into an :class:`~timetravel.store.EpochWriter`, and hands the
epoch to the :class:`~timetravel.capture._writer.EpochSink` to commit. The
model is the user's own (synchronous passes) or a copy with the weights of the
moment (passes on the writer thread).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple

import numpy as np
import torch
from torch import nn

from timetravel.capture._batch import Batch, BatchFormat, CaptureError, PassTracker, check_labels, to_device
from timetravel.capture._head import HeadRecorder, LeastSquares, linear_weights
from timetravel.capture._probe import Probe, Rows, describe
from timetravel.capture._writer import EpochSink
from timetravel.numerics import label_margins
from timetravel.store import EpochWriter, RunWriter

LOADER_NAMES = {"train": "eval_loader", "heldout": "heldout_loader", "pool": "pool_loader"}


class EvalTarget(NamedTuple):
    """What one eval pass runs: the model (or its background copy), the probe hooked into it, its linear head."""

    model: nn.Module
    probe: Probe
    head: nn.Linear | None


@contextmanager
def eval_mode(target: EvalTarget) -> Iterator[None]:
    """Eval mode, no gradients and the probe's hooks for the block; the model's mode and hooks restored after."""
    was_training = target.model.training
    attached = bool(target.probe._handles)
    target.probe.attach()
    target.model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        target.probe.active = False
        if not attached:
            target.probe.detach()
        target.model.train(was_training)


def forward(target: EvalTarget, batch: Batch, device: torch.device) -> Rows:
    """The embedding and logits of one batch (inside :func:`eval_mode`)."""
    target.probe.start()
    try:
        target.model(*to_device(batch.args, device), **to_device(batch.kwargs, device))
    except TypeError as exc:  # the batch was taken apart wrongly: say how it was called
        layout = ", ".join([describe(a) for a in batch.args] + [f"{k}={describe(v)}" for k, v in batch.kwargs.items()])
        raise CaptureError(f"calling the model with the batch's inputs failed: model({layout}) raised "
                           f"TypeError: {exc}; describe the batch with inputs=, target= and index=") from exc
    finally:
        target.probe.active = False
    rows = target.probe.take()
    if rows.ready is not None:
        rows.ready.synchronize()
    return rows


class EvalPasses:
    """Records epochs by eval passes over the loaders of each split.

    Parameters
    ----------
    writer : RunWriter
    sink : EpochSink
        Commits the epoch (head, training margins, metrics).
    head : HeadRecorder
        Checked on the first training batch; gives the head or fits a surrogate.
    batch_format : BatchFormat
        How to read the loaders' batches.
    loaders : dict
        ``{"train": loader, "heldout": loader or None, "pool": loader or None}``.
    device : torch.device
        Where inputs go.
    verbose : bool
        Show a progress bar per pass.
    """

    def __init__(self, writer: RunWriter, sink: EpochSink, head: HeadRecorder, batch_format: BatchFormat,
                 loaders: Mapping[str, Iterable | None], device: torch.device, verbose: bool = False) -> None:
        self.writer, self.sink, self.head, self.format = writer, sink, head, batch_format
        self.loaders = {split: loader for split, loader in loaders.items() if loader is not None}
        self.device, self.verbose = device, verbose

    def record(self, target: EvalTarget, epoch: int, metrics: dict[str, float],
               on_commit: Callable[[], None] | None, started: float) -> dict[str, float]:
        """Record epoch ``epoch`` by one eval pass over every loader, and commit it."""
        with eval_mode(target), self.writer.begin_epoch(epoch) as ew:
            train = self._pass(target, "train", ew, self.head.new_fit())
            labels = self.sink.labels["train"]
            computed = {"eval_train_acc": float(np.mean(train["pred"] == labels))}
            if self.sink.true_labels is not None:
                computed["clean_train_acc"] = float(np.mean(train["pred"] == self.sink.true_labels))
            if "heldout" in self.loaders:
                held = self._pass(target, "heldout", ew, None)
                computed["test_acc"] = float(np.mean(held["pred"] == self.sink.labels["heldout"]))
            if "pool" in self.loaders:
                self._pass(target, "pool", ew, None)
            fit = train["fit"]  # also when the first batch ruled the linear head out
            if fit is None:
                weights = linear_weights(target.head)
            else:
                weights, fit_metrics = self.head.solve(fit, epoch)
                computed.update(fit_metrics)
            return self.sink.commit_eval_pass(ew, weights, computed, train["margin"], metrics, on_commit, started)

    def _pass(self, target: EvalTarget, split: str, ew: EpochWriter, fit: LeastSquares | None) -> dict[str, Any]:
        """One eval pass over a split's loader: write rows; return predictions and eval margins."""
        loader = self.loaders[split]
        labels = self.sink.labels.get(split)  # None for the unlabelled pool
        name = LOADER_NAMES[split]
        n = self.writer.split_size(split)
        tracker = PassTracker(loader, n, name, split)
        pred = np.zeros(n, dtype=np.int64)
        margin = np.zeros(n, dtype=np.float32)
        batches = loader
        if self.verbose:
            from tqdm.auto import tqdm

            batches = tqdm(loader, desc=f"capture {split}", leave=False, unit="batch")
        for batch in batches:
            b = self.format.split(batch)
            rows = forward(target, b, self.device)
            index = tracker.rows(b.index, len(rows.logits))
            if labels is not None:
                check_labels(b.target, labels[index], name)
            if split == "train" and not self.head.checked:
                self.head.check(rows)
                fit = fit or self.head.new_fit()
            emb, logits = rows.embedding.numpy(), rows.logits.numpy()
            if fit is not None:
                fit.add(emb.astype(np.float32), logits)
            pred[index] = logits.argmax(axis=1)
            if labels is not None:
                margin[index] = label_margins(logits, labels[index])
            _write_rows(ew, index, emb, logits, split)
        tracker.check_complete()
        return {"pred": pred, "margin": margin, "fit": fit}


def _runs(sorted_index: np.ndarray) -> list[tuple[int, int]]:
    """Split sorted positions into contiguous ``(start_pos, stop_pos)`` runs."""
    breaks = np.flatnonzero(np.diff(sorted_index) != 1) + 1
    bounds = np.concatenate([[0], breaks, [len(sorted_index)]])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _write_rows(ew: EpochWriter, index: np.ndarray, emb: np.ndarray, logits: np.ndarray, split: str) -> None:
    if len(index) and index[-1] - index[0] == len(index) - 1 and np.all(np.diff(index) == 1):
        ew.write(int(index[0]), emb, logits, split=split)
        return
    order = np.argsort(index, kind="stable")
    index, emb, logits = index[order], emb[order], logits[order]
    for a, b in _runs(index):
        ew.write(int(index[a]), emb[a:b], logits[a:b], split=split)
