"""What the framework callbacks share: the run store and the train-pass Recorder, set up from the model and data.

A callback knows the model and the training set only once training starts, so
:class:`RunRecording` keeps the user's settings until then and builds the
:class:`~timetravel.capture.Recorder` in :meth:`RunRecording.start`: the
labels come from the dataset, the number of classes and the embedding width
from the classification head, and the loaders of the eval passes (the last
epoch, every ``eval_every``) visit the same dataset in order.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import numpy as np
from torch import nn
from torch.utils.data import DataLoader

from timetravel.capture import CaptureError, Recorder, resolve_module
from timetravel.integrations._indexed import IndexedDataset

logger = logging.getLogger("timetravel.integrations")

_DEFAULT_EVAL_BATCH = 256


def _last_linear(module: nn.Module) -> nn.Linear | None:
    return next((m for m in reversed(list(module.modules())) if isinstance(m, nn.Linear)), None)


def head_shape(model: nn.Module, head: nn.Module | str | None) -> tuple[int, int]:
    """``(n_classes, embedding_dim)`` read off the classification head (default: the model's last ``nn.Linear``)."""
    where = model if head is None else resolve_module(model, head, "head")[1]
    linear = where if isinstance(where, nn.Linear) else _last_linear(where)
    if linear is None:
        raise CaptureError(f"found no nn.Linear classification head in {'the model' if head is None else repr(head)}; "
                           "pass head= (the classifier module) or n_classes= and embedding_dim=")
    return int(linear.out_features), int(linear.in_features)


def ordered_loader(dataset: IndexedDataset, like: Any, batch_size: int | None) -> DataLoader:
    """A loader over ``dataset`` in dataset order, collated like the training loader ``like``."""
    size = batch_size or getattr(like, "batch_size", None) or _DEFAULT_EVAL_BATCH
    collate = getattr(like, "collate_fn", None)
    workers = getattr(like, "num_workers", 0) or 0
    return DataLoader(dataset, batch_size=size, shuffle=False, collate_fn=collate, num_workers=workers)


class RunRecording:
    """Settings shared by the framework callbacks, and the recorder they build when training starts.

    Parameters
    ----------
    out : path-like
        The run store to write (a new directory; see ``overwrite``).
    layer : nn.Module or str, optional
        The embedding layer, as a module or a dotted name inside the model.
        Default: the input of the classification head.
    head : nn.Module or str, optional
        The classification head (an ``nn.Linear``, or a module ending in one).
        Default: the model's last ``nn.Linear``.
    labels : array of shape (N,), optional
        The training labels; default: read from the dataset (its ``targets``,
        or item by item).
    n_classes, embedding_dim : int, optional
        Default: the head's output and input widths.
    class_names : sequence of str, optional
        Display names of the classes.
    thumbs : uint8 array of shape (N, H, W) or (N, H, W, 3), optional
        Images the app's inspector shows for each training sample.
    heldout : map-style dataset, optional
        A held-out set, recorded at each eval pass.
    eval_every : int, optional
        Also record every ``eval_every``-th epoch by an eval pass over the
        training set in dataset order (the other epochs come from the training
        passes for the price of a copy).
    final_eval : bool, default=True
        Record the last epoch again by an eval pass when training ends, so the
        final state is free of dropout and augmentation noise.
    eval_batch_size : int, optional
        Batch size of the eval passes; default: the training loader's.
    inputs, target, index : selector, optional
        Where a batch keeps the model inputs, labels and sample indices, when
        it is not ``(x, y, index)`` or a dict (see
        :class:`~timetravel.capture.BatchFormat`).
    missing : {"error", "previous"}, default="error"
        A sample no training batch held in an epoch (``drop_last``): raise, or
        keep its previous row (see :class:`~timetravel.capture.Recorder`).
    embedding_dtype : {"float16", "float32"}, default="float16"
    dataset_name : str, optional
        Shown by the app; default: the dataset's class name.
    overwrite : bool, default=False
        Replace a run already at ``out``.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        *,
        layer: nn.Module | str | None = None,
        head: nn.Module | str | None = None,
        labels: Any = None,
        n_classes: int | None = None,
        embedding_dim: int | None = None,
        class_names: Any = None,
        thumbs: np.ndarray | None = None,
        heldout: Any = None,
        eval_every: int | None = None,
        final_eval: bool = True,
        eval_batch_size: int | None = None,
        inputs: Any = None,
        target: Any = None,
        index: Any = None,
        missing: str = "error",
        embedding_dtype: str = "float16",
        dataset_name: str | None = None,
        overwrite: bool = False,
    ) -> None:
        self.out = out
        self.layer, self.head = layer, head
        self.labels, self.n_classes, self.embedding_dim = labels, n_classes, embedding_dim
        self.class_names, self.thumbs, self.heldout = class_names, thumbs, heldout
        self.eval_every, self.final_eval, self.eval_batch_size = eval_every, final_eval, eval_batch_size
        self.selectors = {"inputs": inputs, "target": target, "index": index}
        self.missing, self.embedding_dtype = missing, embedding_dtype
        self.dataset_name, self.overwrite = dataset_name, overwrite
        self.recorder: Recorder | None = None

    def start(self, model: nn.Module, dataset: Any, train_loader: Any, *, framework: str) -> Recorder:
        """Create the run store and the train-pass recorder for ``model`` training on ``dataset``."""
        if not isinstance(dataset, IndexedDataset):
            raise CaptureError(
                f"the training dataset is a {type(dataset).__name__}; wrap it as "
                "timetravel.integrations.IndexedDataset(train_set) so every batch carries its samples' indices"
            )
        labels = np.asarray(self.labels, dtype=np.int64) if self.labels is not None else dataset.labels()
        n_classes, embedding_dim = self.n_classes, self.embedding_dim
        if n_classes is None or embedding_dim is None:
            found_k, found_d = head_shape(model, self.head)
            n_classes, embedding_dim = n_classes or found_k, embedding_dim or found_d
        heldout = None
        if self.heldout is not None:
            heldout = self.heldout if isinstance(self.heldout, IndexedDataset) else IndexedDataset(self.heldout)
        store_kwargs: Mapping[str, Any] = dict(
            labels=labels, n_classes=n_classes, embedding_dim=embedding_dim, class_names=self.class_names,
            thumbs=self.thumbs, heldout_labels=heldout.labels() if heldout is not None else None,
            dataset=self.dataset_name or type(dataset.dataset).__name__, embedding_dtype=self.embedding_dtype,
            extra={"recorded_by": framework}, overwrite=self.overwrite,
        )
        eval_loader = None
        if self.final_eval or self.eval_every:
            eval_loader = ordered_loader(dataset, train_loader, self.eval_batch_size)
        self.recorder = Recorder(
            model, self.layer, self.out, eval_loader,
            ordered_loader(heldout, train_loader, self.eval_batch_size) if heldout is not None else None,
            self.head, train_pass=True, eval_every=self.eval_every, missing=self.missing,
            store_kwargs=store_kwargs, **self.selectors,
        )  # fmt: skip
        logger.info("recording %s training of %d samples (%d classes, %d-d embedding) into %s", framework,
                    len(labels), n_classes, embedding_dim, self.out)
        return self.recorder

    def end_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Commit epoch ``epoch`` (from its training passes, or by an eval pass when one is due)."""
        self._require().capture(epoch, metrics=metrics)

    def finish(self) -> None:
        """The last epoch's eval pass (with ``final_eval``), then wait for every write to land."""
        recorder = self._require()
        recorder.close()
        logger.info("timetravel run written to %s", recorder.writer.path)

    def abort(self, exc: BaseException) -> None:
        """Stop the writer thread after a training error, keeping the epochs committed so far."""
        if self.recorder is not None:
            self.recorder.__exit__(type(exc), exc, exc.__traceback__)

    def _require(self) -> Recorder:
        if self.recorder is None:
            raise CaptureError("the timetravel callback was not started: training never began")
        return self.recorder


def scalar_metrics(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``values`` that are single numbers (0-d tensors included), as floats."""
    out = {}
    for key, value in values.items():
        try:
            number = value.item() if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 else value
        except (RuntimeError, ValueError):
            continue
        if isinstance(number, (int, float)) and not isinstance(number, bool) and np.isfinite(number):
            out[str(key)] = float(number)
    return out
