"""The Recorder: embeddings, logits and the head of a model, epoch by epoch, into a run store.

Two ways to record an epoch:

* **eval pass** (the default): :meth:`Recorder.capture` runs one eval-mode,
  no-grad pass over an ordered (or indexed) loader of the training set, and of
  the held-out set when given;
* **train pass** (``train_pass=True``): every sample's embedding and logits
  are taken from the user's own training forward passes, which wrap the
  forward in :meth:`Recorder.batch` with the batch's sample indices. That
  costs only a copy per batch; writing happens on a background thread. Eval
  passes still run every ``eval_every`` epochs and for the last epoch (at
  :meth:`Recorder.close`), when an eval loader is given.

Each epoch in the store says which it was (:meth:`timetravel.RunStore.epoch_pass`).
"""

from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from timetravel.capture._batch import (
    BatchFormat,
    CaptureError,
    PassTracker,
    Selector,
    as_index,
    check_labels,
    is_shuffled,
    own_random_stream,
)
from timetravel.capture._distributed import Ranks, Shard
from timetravel.capture._eval import LOADER_NAMES, EvalPasses, EvalTarget, eval_mode, forward
from timetravel.capture._head import HeadRecorder, linear_weights, resolve_module
from timetravel.capture._probe import OutputSelector, Probe, Rows, to_host
from timetravel.capture._writer import EpochSink, Worker
from timetravel.numerics import label_margins
from timetravel.store import MANIFEST, RunWriter

logger = logging.getLogger("timetravel.capture")

# Training-pass rows are handed to the writer thread this many at a time (a few MB): one hand-off per
# batch would cost more in thread switches, under the GIL, than the copying itself.
HANDOFF_ROWS = 4096


class Recorder:
    """Records embeddings, logits and the head of a model, epoch by epoch.

    Parameters
    ----------
    model : nn.Module
        The model being trained (a ``DistributedDataParallel`` wrapper is
        unwrapped). Its output is the ``(B, K)`` logits, or holds them (a
        tuple, a dict, a Hugging Face ``ModelOutput``: see ``logits``).
    layer : nn.Module, str or None
        The penultimate layer (or its dotted name, e.g. ``"features"``); its
        output, flattened to ``(B, D)``, is the recorded embedding. None: the
        input of the linear head (found as for ``head``).
    store : RunWriter or path-like
        Where to write. A path is opened with :meth:`RunWriter.resume` when it
        holds a run and ``store_kwargs`` is None, otherwise created with
        ``RunWriter.create(path, **store_kwargs)`` (under torch.distributed,
        by rank 0).
    eval_loader : iterable, optional
        The training set for eval passes, following the loader contract
        (dataset order, or batches carrying their indices; see
        :class:`BatchFormat`). Use a large batch size and no augmentation.
        Required unless ``train_pass=True``.
    heldout_loader : iterable, optional
        The same for a held-out set (recorded at eval passes); the store must
        have ``heldout_labels``.
    pool_loader : iterable, optional
        The same for an unlabelled pool (active learning: samples the model
        does not train on, whose predictions are ranked by
        :mod:`timetravel.active`); its batches need no labels (``x``,
        ``(x,)``, or ``(x, None, index)`` when shuffled). The store must be
        created with ``n_pool=``.
    head : nn.Module, str or None
        The classification head: an ``nn.Linear`` from the embedding to the
        logits, or a module holding it (``nn.Sequential(nn.Dropout(),
        nn.Linear(D, K))``). None: the model's last Linear with K outputs and
        D inputs. Its weights are recorded when it reproduces the logits (checked
        on one eval batch); otherwise a least-squares surrogate from the
        embeddings to the logits is fitted each epoch, its R^2 recorded in the
        history (``head_r2``) and a warning logged.
    device : str or torch.device, optional
        Where eval-pass inputs go; default: the device of the model's parameters.
    train_pass : bool, default=False
        Record from the training forward passes wrapped in :meth:`batch`.
    eval_every : int, optional
        With ``train_pass``: also record every ``eval_every``-th epoch
        (epochs ``eval_every - 1``, ``2 * eval_every - 1``, ...) by an eval
        pass. The last epoch is recorded by an eval pass at :meth:`close`
        whenever an ``eval_loader`` is given.
    inputs, target, index : selector, optional
        Where a batch keeps the model inputs, the labels and the sample
        indices (:class:`BatchFormat`): positions, keys or callables. The
        defaults read ``x``, ``(x, y)``, ``(x, y, index)`` and dict batches.
    embedding : selector, optional
        Picks the embedding out of a layer output that is a tuple or dict
        (e.g. ``lambda out: out[1][0][-1]``, an LSTM's last hidden state);
        default: the first tensor with D values per sample.
    logits : selector, optional
        Picks the logits out of a model output; default: ``output.logits``,
        ``output["logits"]`` or the first ``(B, K)`` tensor.
    missing : {"error", "previous"}, default="error"
        A train-pass epoch in which some sample went through no recorded
        training pass (``drop_last=True``, a sampler that skips): raise, or
        keep the sample's row from its previous epoch and mark it in the
        epoch's ``observed.npy``.
    store_kwargs : dict, optional
        Keyword arguments for :meth:`RunWriter.create` when ``store`` is a path.
    background : bool, default=False
        Run each eval pass in the writer thread on a copy of the model taken
        when :meth:`capture` is called, so training continues meanwhile.
        :meth:`capture` then returns None; call :meth:`wait` (or
        :meth:`close`) before reading the store. Forward hooks the user put on
        the model also run on the copy.
    check : bool, default=True
        Check at construction, on the eval loader's first batch: the batch
        layout, the layer's output, the logits, the indices, the labels, the
        head, and whether the loader applies random transforms.
    verbose : bool, default=False
        Show a progress bar during each eval pass.

    Attributes
    ----------
    writer : RunWriter
        The store being written.
    layer_name, head_name : str or None
        Resolved dotted names (``layer_name`` None: the head's input).
    last_capture_ : dict
        Metrics of the latest committed epoch, including computed accuracies.

    Examples
    --------
    >>> from timetravel.models import make_model
    >>> model = make_model("mlp", (1, 4, 4), n_classes=3, embedding_dim=8)
    >>> x, y = torch.randn(30, 1, 4, 4), torch.arange(30) % 3
    >>> rec = Recorder(model, model.embedding_layer, "/tmp/tt-doc-run", tensor_loader(x, y), head=model.head,
    ...                store_kwargs=dict(labels=y.numpy(), n_classes=3, embedding_dim=8, overwrite=True))
    >>> sorted(rec.capture(0))
    ['capture_seconds', 'eval_train_acc']
    """

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module | str | None,
        store: RunWriter | str | os.PathLike,
        eval_loader: Iterable | None = None,
        heldout_loader: Iterable | None = None,
        head: nn.Module | str | None = None,
        device: str | torch.device | None = None,
        *,
        pool_loader: Iterable | None = None,
        train_pass: bool = False,
        eval_every: int | None = None,
        inputs: Selector = None,
        target: Selector = None,
        index: Selector = None,
        embedding: OutputSelector = None,
        logits: OutputSelector = None,
        missing: str = "error",
        store_kwargs: Mapping[str, Any] | None = None,
        background: bool = False,
        check: bool = True,
        verbose: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise CaptureError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        self.model = model
        self.ranks = Ranks()
        self.writer = self._open_store(store, store_kwargs)
        w = self.writer
        self.train_pass = bool(train_pass)
        self.eval_every = self._check_eval_every(eval_every)
        if eval_loader is None and not self.train_pass:
            raise CaptureError("eval_loader is required: the loader of the training set for eval passes "
                               "(or record from the training pass with train_pass=True)")
        if heldout_loader is not None and not w.n_heldout:
            raise CaptureError(f"heldout_loader was given but the store {w.path} has no held-out set; "
                               "create it with heldout_labels=...")
        if pool_loader is not None and not w.n_pool:
            raise CaptureError(f"pool_loader was given but the store {w.path} has no pool; create it with n_pool=...")
        self.eval_loader, self.heldout_loader, self.pool_loader = eval_loader, heldout_loader, pool_loader
        for loader in (eval_loader, heldout_loader, pool_loader):
            own_random_stream(loader)
        self.layer_name, layer_module = resolve_module(model, layer, "layer") if layer is not None else (None, None)
        self._head = HeadRecorder(model, head, n_classes=w.n_classes, embedding_dim=w.embedding_dim,
                                  layer_name=self.layer_name)
        self.head_name = self._head.name
        self.format = BatchFormat(inputs, target, index)
        self._selectors = {"embedding": embedding, "logits": logits}
        self.probe = self._probe(model, layer_module, self._head.linear)
        self.device = torch.device(device) if device is not None else self._model_device()
        self.background = bool(background)
        self.sink = EpochSink(w, self._head, missing=missing)
        self._eval = EvalPasses(w, self.sink, self._head, self.format,
                                {"train": eval_loader, "heldout": heldout_loader, "pool": pool_loader}, self.device,
                                verbose)
        self._worker = Worker()
        self._shadow: EvalTarget | None = None
        self._shard: list[tuple[Any, Rows]] = []  # this rank's rows, under torch.distributed
        self._pending: list[tuple[np.ndarray, Rows, Any]] = []  # batches not yet handed to the writer thread
        self._pending_rows = 0
        self._open_index: np.ndarray | None = None
        self._open_target: Any = None
        self._batches = 0
        self._last: tuple[int, str] | None = None  # (epoch, pass) of the latest capture
        if self.train_pass:
            self.probe.attach()
        if check and eval_loader is not None and self.ranks.is_main:
            self._check_loader(eval_loader, "train")
            if heldout_loader is not None:
                self._check_loader(heldout_loader, "heldout")
            if pool_loader is not None:
                self._check_loader(pool_loader, "pool")

    # -- construction ---------------------------------------------------------------------

    def _open_store(self, store: RunWriter | str | os.PathLike, store_kwargs: Mapping[str, Any] | None) -> RunWriter:
        if isinstance(store, RunWriter):
            if store_kwargs is not None:
                raise CaptureError("store_kwargs only applies when store is a path, not a RunWriter")
            return store
        if not isinstance(store, (str, os.PathLike)):
            raise CaptureError(f"store must be a RunWriter or a path, got {type(store).__name__}")
        if store_kwargs is not None:
            writer = RunWriter.create(store, **store_kwargs) if self.ranks.is_main else None
            self.ranks.barrier()
            return writer or RunWriter.resume(store)
        if not (Path(store) / MANIFEST).exists():
            raise CaptureError(f"store {store} holds no run; pass store_kwargs=dict(labels=..., n_classes=..., "
                               "embedding_dim=...) to create one")
        return RunWriter.resume(store)

    def _check_eval_every(self, eval_every: int | None) -> int | None:
        if eval_every is None:
            return None
        if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 1:
            raise CaptureError(f"eval_every must be a positive integer or None, got {eval_every!r}")
        if not self.train_pass and eval_every != 1:
            raise CaptureError("eval_every only applies with train_pass=True (without it every epoch is an eval pass)")
        return eval_every

    def _probe(self, model: nn.Module, layer: nn.Module | None, head: nn.Module | None) -> Probe:
        w = self.writer
        return Probe(model, layer, head, embedding_dim=w.embedding_dim, n_classes=w.n_classes,
                     embedding_dtype=torch.float16 if w.embedding_dtype == "float16" else torch.float32,
                     layer_name=self.layer_name or self.head_name or "", **self._selectors)

    def _model_device(self) -> torch.device:
        param = next(iter(self.model.parameters()), None)
        return param.device if param is not None else torch.device("cpu")

    def _first_batch(self, loader: Iterable) -> Any:
        try:
            return next(iter(loader))
        except StopIteration:
            raise CaptureError("the eval loader yields no batches") from None

    def _check_loader(self, loader: Iterable, split: str) -> None:
        """One batch through the model now, so a mistake shows before the first epoch trains."""
        name = LOADER_NAMES[split]
        first = self._first_batch(loader)
        b = self.format.split(first)
        if b.index is None and is_shuffled(loader):
            raise CaptureError(f"{name} shuffles its samples (random sampler) but its batches carry no indices; "
                               "use shuffle=False or yield (x, y, index) batches")
        with eval_mode(self._main_target()):
            rows = forward(self._main_target(), b, self.device)
        size = len(rows.logits)
        labels = self.sink.labels.get(split)
        rows_index = PassTracker(loader, self.writer.split_size(split), name, split).rows(b.index, size)
        if labels is not None:
            check_labels(b.target, labels[rows_index], name)
        if split == "train":
            self._head.check(rows)
        self._check_random_transforms(loader, b, name)

    def _check_random_transforms(self, loader: Iterable, first: Any, name: str) -> None:
        again = self.format.split(self._first_batch(loader))
        x1 = next((v for v in (*first.args, *first.kwargs.values()) if isinstance(v, torch.Tensor)), None)
        x2 = next((v for v in (*again.args, *again.kwargs.values()) if isinstance(v, torch.Tensor)), None)
        if x1 is None or x2 is None or not x1.is_floating_point():
            return
        if first.index is not None:
            i1, i2 = np.asarray(first.index), np.asarray(again.index)
            common, a, b = np.intersect1d(i1, i2, return_indices=True)
            if not len(common):
                return
            x1, x2 = x1[torch.from_numpy(a)], x2[torch.from_numpy(b)]
        elif x1.shape != x2.shape:
            return
        if not torch.equal(x1, x2):
            warnings.warn(
                f"{name} gives different inputs for the same samples on two passes: it applies random transforms "
                "(augmentation), so the recorded embeddings would be of augmented inputs; give it the "
                "evaluation transforms", UserWarning, stacklevel=4,
            )

    # -- training passes --------------------------------------------------------------------

    def begin_batch(self, index: Any, target: Any = None) -> None:
        """Start recording the training forward pass(es) of one batch (``train_pass=True``).

        Parameters
        ----------
        index : int tensor or array of shape (B,)
            Dataset positions of the batch's samples (any order; a sample seen
            twice in an epoch keeps its last row).
        target : int tensor of shape (B,), optional
            The batch's labels; checked against the store's.

        See Also
        --------
        batch : the same as a context manager.
        """
        if not self.train_pass:
            raise CaptureError("begin_batch()/batch() record training passes; create the Recorder with "
                               "train_pass=True")
        self._worker.check()  # the writer thread's error, if any, stops training here
        self._open_index = as_index(index, self.writer.n_samples, None, "the training batch")
        self._open_target = target
        self.probe.start()

    def end_batch(self) -> None:
        """Finish the batch begun by :meth:`begin_batch`: hand its rows to the writer thread."""
        if self._open_index is None:
            raise CaptureError("end_batch() without begin_batch()")
        index, target, self._open_index, self._open_target = self._open_index, self._open_target, None, None
        rows = self.probe.take()
        if len(rows.logits) != len(index):
            raise CaptureError(f"the training batch has {len(index)} sample indices but the model saw "
                               f"{len(rows.logits)} rows")
        self._keep(index, rows, target)

    def cancel_batch(self) -> None:
        """Drop the batch begun by :meth:`begin_batch` (e.g. a step skipped after an error)."""
        self.probe.active = False
        self._open_index = self._open_target = None

    @contextmanager
    def batch(self, index: Any, target: Any = None) -> Iterator[None]:
        """Record the training forward pass(es) run inside the block (``train_pass=True``).

        Only the copy of the embedding and logits happens on this thread.

        Examples
        --------
        >>> for x, y, idx in train_loader:           # doctest: +SKIP
        ...     with recorder.batch(idx):
        ...         logits = model(x)
        ...     F.cross_entropy(logits, y).backward()
        """
        self.begin_batch(index, target)
        try:
            yield
        except BaseException:
            self.cancel_batch()
            raise
        self.end_batch()

    def record_batch(self, index: Any, embedding: torch.Tensor | np.ndarray, logits: torch.Tensor | np.ndarray,
                     target: Any = None) -> None:
        """Record rows computed elsewhere (``train_pass=True``): for integrations that hold the outputs.

        Parameters
        ----------
        index : int array of shape (B,)
        embedding : array of shape (B, D)
        logits : array of shape (B, K)
        target : int array of shape (B,), optional
        """
        if not self.train_pass:
            raise CaptureError("record_batch() records training passes; create the Recorder with train_pass=True")
        w = self.writer
        emb, out = torch.as_tensor(embedding), torch.as_tensor(logits)
        if emb.ndim != 2 or emb.shape[1] != w.embedding_dim or out.shape != (len(emb), w.n_classes):
            raise CaptureError(f"record_batch needs embedding (B, {w.embedding_dim}) and logits (B, {w.n_classes}), "
                               f"got {tuple(emb.shape)} and {tuple(out.shape)}")
        index = as_index(index, w.n_samples, len(emb), "record_batch")
        rows = Rows(to_host(emb, self.probe.dtype), to_host(out, torch.float32), None)
        self._keep(index, rows, target)

    def _keep(self, index: np.ndarray, rows: Rows, target: Any) -> None:
        self._batches += 1
        if self.ranks.active:
            self._shard.append((index, rows))
            if target is not None:
                check_labels(target, self.sink.labels["train"][index], "the training batch")
            return
        self._pending.append((index, rows, target))
        self._pending_rows += len(index)
        if self._pending_rows >= HANDOFF_ROWS:
            self._hand_off()

    def _hand_off(self) -> None:
        """Give the batches kept since the last hand-off to the writer thread, in one call."""
        if self._pending:
            batches, self._pending, self._pending_rows = self._pending, [], 0
            self._worker.submit(self.sink.add_batches, batches)

    # -- training-mode margins of eval-pass runs ---------------------------------------------

    def record_train_margins(self, indices: torch.Tensor | np.ndarray, logits: torch.Tensor | np.ndarray,
                             labels: torch.Tensor | np.ndarray) -> None:
        """Accumulate training-mode margins from a forward pass of the user's loop (eval-pass runs).

        Call it with the logits of each training batch (no extra forward pass
        is made; the logits are detached). :meth:`capture` records the mean
        margin of every sample over the epoch. With ``train_pass=True`` the
        margins come from the recorded batches and this is not needed.

        Parameters
        ----------
        indices : int array of shape (B,)
            Dataset positions of the batch's samples.
        logits : array of shape (B, K)
            The model's training-mode logits for the batch.
        labels : int array of shape (B,)
            The labels the model is trained on for these samples.
        """
        n = self.writer.n_samples
        index = torch.as_tensor(indices).detach().cpu().numpy().astype(np.int64, copy=False)
        if index.ndim != 1 or len(index) != len(logits):
            raise CaptureError(f"indices must be 1-d with one entry per logits row, got shape {index.shape}")
        if len(index) and (index.min() < 0 or index.max() >= n):
            raise CaptureError(f"indices must lie in [0, {n}), got range [{index.min()}, {index.max()}]")
        self._run(self.sink.add_margins, index, label_margins(logits, labels))

    # -- epochs ------------------------------------------------------------------------------

    def _threaded(self) -> bool:
        return self.train_pass or self.background

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call on the writer thread when there is one, else here."""
        if self._threaded():
            self._worker.submit(fn, *args)
            return None
        return fn(*args)

    def eval_due(self, epoch: int) -> bool:
        """Whether :meth:`capture` records ``epoch`` by an eval pass."""
        if not self.train_pass:
            return True
        return self.eval_loader is not None and self.eval_every is not None and (int(epoch) + 1) % self.eval_every == 0

    def capture(self, epoch: int, metrics: Mapping[str, float] | None = None, *,
                on_commit: Callable[[], None] | None = None) -> dict[str, float] | None:
        """Record epoch ``epoch`` (call it once per epoch, after the epoch trained).

        Without ``train_pass`` (and at due epochs with it) an eval pass runs
        over the loaders under ``torch.no_grad()`` with the model in eval mode
        (its mode is restored); otherwise the rows of the epoch's recorded
        training batches are committed by the writer thread.

        Parameters
        ----------
        epoch : int
            Epoch number to record (replaces an earlier recording of it).
        metrics : dict, optional
            Scalars for the epoch's history entry (e.g. ``train_loss``). The
            recorder adds ``eval_train_acc`` (eval-pass accuracy on the stored
            labels) or ``train_pass_acc`` (training-pass accuracy),
            ``clean_train_acc`` / ``clean_train_pass_acc`` (against the true
            labels, when the store has them), ``test_acc`` (held-out, eval
            passes), ``head_r2`` (surrogate heads) and ``capture_seconds``; a
            key given in ``metrics`` wins.
        on_commit : callable, optional
            Called without arguments once the epoch is committed (e.g. to save
            a training checkpoint only after the epoch it belongs to is safe).

        Returns
        -------
        dict or None
            The metrics recorded for the epoch when it was committed before
            returning (a synchronous eval pass); else None (see :meth:`wait`).

        Raises
        ------
        CaptureError
            A loader broke the contract, a sample was missing from the
            training pass, the layer output has the wrong width, or the head
            does not fit. An error on the writer thread is raised by the next
            call to :meth:`batch`, :meth:`capture`, :meth:`wait` or :meth:`close`.
        """
        epoch, metrics = int(epoch), dict(metrics or {})
        started = time.perf_counter()
        self._hand_off()
        if self.ranks.active:
            self._gather_shard()
        if self.train_pass and not self.eval_due(epoch):
            if self._batches == 0 and self.ranks.is_main:
                raise CaptureError(f"capture({epoch}): no training batch was recorded this epoch; wrap the "
                                   "training forward pass in `with recorder.batch(index):`")
            self._batches = 0
            self._last = (epoch, "train")
            if self.ranks.is_main:
                head = linear_weights(self._head.linear) if self._head.linear is not None else None
                self._worker.submit(self.sink.commit_train_pass, epoch, head, metrics, on_commit, started)
            return None
        self._batches = 0
        if self.train_pass:
            self._run(self.sink.discard_train_pass)
        return self._capture_eval(epoch, metrics, on_commit, started)

    def _capture_eval(self, epoch: int, metrics: dict[str, float], on_commit: Callable[[], None] | None,
                      started: float) -> dict[str, float] | None:
        self._last = (epoch, "eval")
        if not self.ranks.is_main:
            return None
        if self.background:
            self._worker.flush()  # the copy is free again
            self._worker.submit(self._eval.record, self._snapshot(), epoch, metrics, on_commit, started)
            return None
        self._worker.flush()  # the writer thread is idle: the sink is ours
        return self._eval.record(self._main_target(), epoch, metrics, on_commit, started)

    def _gather_shard(self) -> None:
        """Under torch.distributed: gather every rank's training-pass rows to rank 0's writer."""
        shards, self._shard = self._shard, []
        w = self.writer
        dtype = np.float16 if w.embedding_dtype == "float16" else np.float32
        for _, rows in shards:
            if rows.ready is not None:
                rows.ready.synchronize()
        local = Shard(
            np.concatenate([i for i, _ in shards]) if shards else np.zeros(0, np.int64),
            np.concatenate([r.embedding.numpy() for _, r in shards]) if shards else np.zeros((0, w.embedding_dim), dtype),
            np.concatenate([r.logits.numpy() for _, r in shards]) if shards else np.zeros((0, w.n_classes), np.float32),
        )
        merged = self.ranks.gather(local)
        if merged is not None and len(merged.index):
            rows = Rows(torch.from_numpy(merged.embedding), torch.from_numpy(merged.logits), None)
            self._worker.submit(self.sink.add_batches, [(merged.index, rows, None)])
            self._batches += 1

    def wait(self) -> dict[str, float]:
        """Wait until everything handed to the writer thread is committed; the latest epoch's metrics.

        Raises the writer thread's error, if it failed.
        """
        self._hand_off()
        self._worker.flush()
        return dict(self.sink.last_metrics)

    @property
    def last_capture_(self) -> dict[str, float]:
        """Metrics of the latest committed epoch."""
        return dict(self.sink.last_metrics)

    def close(self) -> None:
        """Finish recording: the last epoch's eval pass (train-pass runs with an eval loader), then stop the thread.

        The last epoch of a train-pass run is recorded again by an eval pass
        (keeping its training margins and metrics), so the final state is
        always clean. Under torch.distributed every rank must call it.
        """
        try:
            self._hand_off()
            if self.train_pass and self._last is not None and self._last[1] == "train" and self.eval_loader is not None:
                epoch = self._last[0]
                self._worker.flush()
                if self.ranks.is_main:
                    previous = {k: v for k, v in self.sink.last_metrics.items() if k not in ("capture_seconds",)}
                    self.sink.reuse_last_margin = True
                    self._capture_eval(epoch, previous, None, time.perf_counter())
            self._worker.close()
        finally:
            if self.train_pass:
                self.probe.detach()
            self.ranks.barrier()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # keep the original error; still do not leave the thread running
            self._worker.close()
        except Exception:  # noqa: BLE001 - the training error is the one to report
            logger.exception("the recorder's writer thread failed too")
        finally:
            self.probe.detach()

    # -- eval passes ----------------------------------------------------------------------------

    def _main_target(self) -> EvalTarget:
        return EvalTarget(self.model, self.probe, self._head.linear)

    def _snapshot(self) -> EvalTarget:
        """A copy of the model with the current weights, for a background pass."""
        if self._shadow is None:
            self.probe.detach()  # hooks must not be copied along
            try:
                model = copy.deepcopy(self.model)
            finally:
                if self.train_pass:
                    self.probe.attach()
            layer = dict(model.named_modules())[self.layer_name] if self.layer_name is not None else None
            head = self._head.in_copy(model)
            self._shadow = EvalTarget(model, self._probe(model, layer, head), head)
        with torch.no_grad():
            for dst, src in zip(self._shadow.model.state_dict().values(), self.model.state_dict().values()):
                dst.copy_(src)
        return self._shadow

    def __repr__(self) -> str:
        mode = ", train_pass=True" if self.train_pass else ""
        mode += f", eval_every={self.eval_every}" if self.eval_every else ""
        mode += ", background=True" if self.background else ""
        return f"Recorder(layer={self.layer_name!r}, head={self.head_name!r}, store={str(self.writer.path)!r}{mode})"
