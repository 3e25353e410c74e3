"""Record training dynamics from the user's own PyTorch loop into a run store.

A :class:`Recorder` is added to an existing training loop; once per epoch,
:meth:`Recorder.capture` runs one eval-mode pass over the training set (and
an optional held-out set), takes every sample's penultimate embedding with a
forward hook, plus its logits, and commits them as one epoch of the run store::

    recorder = Recorder(model, "features", writer, eval_loader, head="head")
    for epoch in range(epochs):
        for x, y, idx in train_loader:          # the user's own loop
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            ...
            recorder.record_train_margins(idx, logits, y)   # optional, for AUM
        recorder.capture(epoch, metrics={"train_loss": ...})

Loader contract
---------------
Rows of the store are sample indices, so the loaders given to the recorder
must say which sample each row is. A batch is ``x``, ``(x,)``, ``(x, y)`` or
``(x, y, index)``:

* with ``index`` (an integer tensor of dataset positions) the loader may visit
  samples in any order, e.g. shuffled;
* without it the loader must visit samples in dataset order: a ``DataLoader``
  whose sampler is random (``shuffle=True``) is refused.

Either way every sample must appear exactly once per pass, and when ``y`` is a
1-d integer tensor it must equal the labels stored in the run (which catches a
loader whose order silently differs from the store's). :func:`tensor_loader`
builds a fast loader of either kind from in-memory tensors.

With ``background=True`` each capture runs in a worker thread on a copy of the
weights taken at :meth:`Recorder.capture`, so the next epoch trains meanwhile;
call :meth:`Recorder.close` (or use the recorder as a context manager) at the
end of training.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    TensorDataset,
    WeightedRandomSampler,
)

from timetravel.errors import TimetravelError
from timetravel.store import MANIFEST, EpochWriter, RunWriter

logger = logging.getLogger(__name__)

_RANDOM_SAMPLERS = (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)
# A linear head must reproduce the model's logits to this relative tolerance,
# otherwise something sits between head and output and a surrogate is fitted.
_HEAD_RTOL = 1e-3
# Below this R^2 a fitted surrogate head is a poor stand-in for the model.
_SURROGATE_WARN_R2 = 0.99


class CaptureError(TimetravelError, ValueError):
    """The recorder was set up wrongly or a loader broke the loader contract."""


# --------------------------------------------------------------------------- helpers


def tensor_loader(
    *tensors: torch.Tensor,
    batch_size: int = 1024,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    with_index: bool = False,
) -> DataLoader:
    """A loader over in-memory tensors that fetches whole batches at once.

    Much faster than a per-sample ``DataLoader`` for small samples: each batch
    is one fancy-indexing operation.

    Parameters
    ----------
    *tensors : torch.Tensor
        Tensors with the same first dimension (e.g. ``x, y``).
    batch_size : int, default=1024
        Samples per batch.
    shuffle : bool, default=False
        Visit samples in a random order drawn from ``generator``.
    generator : torch.Generator, optional
        Source of the shuffling order (seed it for reproducible runs).
    with_index : bool, default=False
        Append the sample positions (int64) to every batch, so the loader
        satisfies the recorder's contract even when shuffled.

    Returns
    -------
    DataLoader
        Yielding tuples ``(t0[idx], t1[idx], ...[, idx])``.

    Examples
    --------
    >>> x, y = torch.zeros(10, 1, 2, 2), torch.arange(10)
    >>> [len(b[0]) for b in tensor_loader(x, y, batch_size=4)]
    [4, 4, 2]
    """
    if not tensors:
        raise CaptureError("tensor_loader needs at least one tensor")
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise CaptureError(f"tensors have different lengths {[len(t) for t in tensors]}")
    if with_index:
        tensors = (*tensors, torch.arange(n))
    dataset = TensorDataset(*tensors)
    sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(dataset, sampler=BatchSampler(sampler, int(batch_size), drop_last=False), batch_size=None)


def resolve_module(model: nn.Module, layer: nn.Module | str, argument: str = "layer") -> tuple[str, nn.Module]:
    """Find a sub-module of ``model`` given as a module or a dotted name.

    Returns
    -------
    name : str
        Its dotted name inside ``model`` (``""`` for the model itself).
    module : nn.Module

    Raises
    ------
    CaptureError
        The name does not exist, or the module is not part of ``model``.
    """
    named = dict(model.named_modules())
    if isinstance(layer, str):
        if layer not in named:
            candidates = [n for n in named if n][:20]
            raise CaptureError(
                f"{argument}={layer!r} is not a module of {type(model).__name__}; "
                f"known names include: {', '.join(candidates)}"
            )
        return layer, named[layer]
    if isinstance(layer, nn.Module):
        for name, module in named.items():
            if module is layer:
                return name, module
        raise CaptureError(f"{argument} is a {type(layer).__name__} that is not part of the model")
    raise CaptureError(f"{argument} must be an nn.Module or a dotted module name, got {type(layer).__name__}")


def label_margins(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Margin of each row: logit of the given label minus the largest other logit.

    This is the per-pass quantity whose average over training is the Area
    Under the Margin (AUM, Pleiss et al. 2020); negative means the model
    prefers another class.

    Parameters
    ----------
    logits : array of shape (B, K)
    labels : int array of shape (B,)

    Returns
    -------
    ndarray of shape (B,), float32

    Examples
    --------
    >>> label_margins(np.array([[2.0, 0.5, 1.0]]), np.array([2])).tolist()
    [-1.0]
    """
    if isinstance(logits, np.ndarray):  # may be a read-only memory map
        logits = np.array(logits, dtype=np.float32)
    if isinstance(labels, np.ndarray):
        labels = np.array(labels, dtype=np.int64)
    logits = torch.as_tensor(logits).detach().to("cpu", torch.float32)
    labels = torch.as_tensor(labels).detach().to("cpu", torch.int64)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise CaptureError(f"logits must be (B, K) and labels (B,), got {tuple(logits.shape)} and {tuple(labels.shape)}")
    given = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return (given - others.max(dim=1).values).numpy()


def _is_shuffled(loader: Iterable) -> bool:
    for attr in ("sampler", "batch_sampler"):
        sampler = getattr(loader, attr, None)
        while sampler is not None:
            if isinstance(sampler, _RANDOM_SAMPLERS):
                return True
            sampler = getattr(sampler, "sampler", None)
    return False


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3:
        items = list(batch) + [None] * (3 - len(batch))
        return items[0], items[1], items[2]
    raise CaptureError(
        f"a loader batch must be x, (x,), (x, y) or (x, y, index), got {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    )


def _runs(sorted_index: np.ndarray) -> list[tuple[int, int]]:
    """Split sorted positions into contiguous ``(start_pos, stop_pos)`` runs."""
    breaks = np.flatnonzero(np.diff(sorted_index) != 1) + 1
    bounds = np.concatenate([[0], breaks, [len(sorted_index)]])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


class _LeastSquares:
    """Streaming least squares ``Y ~ [X, 1] @ B`` with its R^2, from sufficient statistics."""

    def __init__(self, d: int, k: int) -> None:
        self.xtx = np.zeros((d + 1, d + 1))
        self.xty = np.zeros((d + 1, k))
        self.y_sum = np.zeros(k)
        self.y_sq = 0.0
        self.n = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        xa = np.empty((len(x), x.shape[1] + 1))
        xa[:, :-1] = x
        xa[:, -1] = 1.0
        y = y.astype(np.float64)
        self.xtx += xa.T @ xa
        self.xty += xa.T @ y
        self.y_sum += y.sum(axis=0)
        self.y_sq += float((y * y).sum())
        self.n += len(x)

    def solve(self) -> tuple[np.ndarray, np.ndarray]:
        # a tiny ridge keeps rank-deficient embeddings (dead ReLUs) solvable
        ridge = 1e-8 * max(np.trace(self.xtx), 1.0) / len(self.xtx)
        beta = np.linalg.solve(self.xtx + ridge * np.eye(len(self.xtx)), self.xty)
        return beta[:-1].T, beta[-1]

    def r2(self, weight: np.ndarray, bias: np.ndarray) -> float:
        beta = np.vstack([weight.T, bias[None, :]])
        sse = self.y_sq - 2.0 * float((beta * self.xty).sum()) + float((beta * (self.xtx @ beta)).sum())
        sst = self.y_sq - float((self.y_sum**2).sum()) / max(self.n, 1)
        return 1.0 - max(sse, 0.0) / sst if sst > 0 else 1.0


# --------------------------------------------------------------------------- recorder


class _Target(NamedTuple):
    """The modules one capture pass runs: the model (or its background copy), its layer and head."""

    model: nn.Module
    layer: nn.Module
    head: nn.Module | None


class Recorder:
    """Records embeddings, logits and the head of a model, epoch by epoch.

    Parameters
    ----------
    model : nn.Module
        The model being trained. Its forward must return a ``(B, K)`` logits tensor.
    layer : nn.Module or str
        The penultimate layer (or its dotted name, e.g. ``"features"``); its
        output, flattened to ``(B, D)``, is the recorded embedding.
    store : RunWriter or path-like
        Where to write. A path is opened with :meth:`RunWriter.resume` when it
        holds a run and ``store_kwargs`` is None, otherwise created with
        ``RunWriter.create(path, **store_kwargs)``.
    train_loader : iterable
        Yields the training set once per pass, following the loader contract
        of this module (dataset order, or batches carrying their indices).
        Use a large batch size: it only runs inference.
    heldout_loader : iterable, optional
        The same for a held-out set; the store must have ``heldout_labels``.
    head : nn.Module or str, optional
        The classification head. If it is an ``nn.Linear`` that maps the
        embedding to the logits, its weight and bias are recorded. Otherwise
        (or when None) a least-squares linear surrogate from the embeddings to
        the logits is fitted each epoch; its R^2 is recorded in the epoch's
        history entry (``head_r2``) and a warning is logged.
    device : str or torch.device, default="cpu"
        Device the capture pass runs on (inputs are moved there).
    store_kwargs : dict, optional
        Keyword arguments for :meth:`RunWriter.create` when ``store`` is a path.
    background : bool, default=False
        Run each capture pass in a worker thread on a copy of the model taken
        when :meth:`capture` is called, so training continues meanwhile (on a
        spare core or accelerator). :meth:`capture` then returns None; call
        :meth:`wait` (or :meth:`close`) before reading the store. Forward
        hooks the user put on the model also run on the copy.
    verbose : bool, default=False
        Show a progress bar during each capture pass.

    Attributes
    ----------
    writer : RunWriter
        The store being written.
    layer_name, head_name : str
        Resolved dotted names (``head_name`` is None without a head).
    last_capture_ : dict
        Metrics of the latest finished capture, including computed accuracies.

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
        layer: nn.Module | str,
        store: RunWriter | str | os.PathLike,
        train_loader: Iterable,
        heldout_loader: Iterable | None = None,
        head: nn.Module | str | None = None,
        device: str | torch.device = "cpu",
        *,
        store_kwargs: Mapping[str, Any] | None = None,
        background: bool = False,
        verbose: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise CaptureError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.layer_name, layer_module = resolve_module(model, layer, "layer")
        self.head_name, head_module = resolve_module(model, head, "head") if head is not None else (None, None)
        self._target = _Target(model, layer_module, head_module)
        self.writer = self._open_store(store, store_kwargs)
        self.train_loader = train_loader
        self.heldout_loader = heldout_loader
        if heldout_loader is not None and not self.writer.n_heldout:
            raise CaptureError(
                f"heldout_loader was given but the store {self.writer.path} has no held-out set; "
                "create it with heldout_labels=..."
            )
        self.device = torch.device(device)
        self.background = bool(background)
        self.verbose = verbose
        path = self.writer.path
        self._labels = {"train": np.load(path / "labels.npy", allow_pickle=False)}
        if self.writer.n_heldout:
            self._labels["heldout"] = np.load(path / "heldout_labels.npy", allow_pickle=False)
        true_path = path / "true_labels.npy"
        self._true_labels = np.load(true_path, allow_pickle=False) if true_path.exists() else None
        n = self.writer.n_samples
        self._margin_sum = np.zeros(n)
        self._margin_count = np.zeros(n, dtype=np.int64)
        self._head_warned = False
        self._shadow: _Target | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        self.last_capture_: dict[str, float] = {}

    @staticmethod
    def _open_store(store: RunWriter | str | os.PathLike, store_kwargs: Mapping[str, Any] | None) -> RunWriter:
        if isinstance(store, RunWriter):
            if store_kwargs is not None:
                raise CaptureError("store_kwargs only applies when store is a path, not a RunWriter")
            return store
        if not isinstance(store, (str, os.PathLike)):
            raise CaptureError(f"store must be a RunWriter or a path, got {type(store).__name__}")
        if store_kwargs is not None:
            return RunWriter.create(store, **store_kwargs)
        if not (Path(store) / MANIFEST).exists():
            raise CaptureError(
                f"store {store} holds no run; pass store_kwargs=dict(labels=..., n_classes=..., embedding_dim=...) "
                "to create one"
            )
        return RunWriter.resume(store)

    # -- training-mode margins ----------------------------------------------------------

    def record_train_margins(
        self,
        indices: torch.Tensor | np.ndarray,
        logits: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray,
    ) -> None:
        """Accumulate training-mode margins from a forward pass of the user's loop.

        Call it with the logits of each training batch (no extra forward pass
        is made; the logits are detached). :meth:`capture` records the mean
        margin of every sample over the epoch and starts a new epoch.

        Parameters
        ----------
        indices : int array of shape (B,)
            Dataset positions of the batch's samples.
        logits : array of shape (B, K)
            The model's training-mode logits for the batch.
        labels : int array of shape (B,)
            The labels the model is trained on for these samples.
        """
        index = torch.as_tensor(indices).detach().cpu().numpy().astype(np.int64, copy=False)
        n = self.writer.n_samples
        if index.ndim != 1 or len(index) != len(logits):
            raise CaptureError(f"indices must be 1-d with one entry per logits row, got shape {index.shape}")
        if len(index) and (index.min() < 0 or index.max() >= n):
            raise CaptureError(f"indices must lie in [0, {n}), got range [{index.min()}, {index.max()}]")
        margin = label_margins(logits, labels)
        self._margin_sum += np.bincount(index, weights=margin, minlength=n)
        self._margin_count += np.bincount(index, minlength=n)

    # -- capturing ----------------------------------------------------------------------

    def capture(
        self,
        epoch: int,
        metrics: Mapping[str, float] | None = None,
        *,
        on_commit: Callable[[], None] | None = None,
    ) -> dict[str, float] | None:
        """Record one epoch: an eval-mode pass over the loaders, then commit.

        The pass runs under ``torch.no_grad()`` with the model in eval mode and
        returns it to its previous mode; the hook is only attached during it.

        Parameters
        ----------
        epoch : int
            Epoch number to record (replaces an earlier recording of it).
        metrics : dict, optional
            Scalars for the epoch's history entry (e.g. ``train_loss``).
            The recorder adds ``eval_train_acc`` (eval-mode accuracy on the
            stored labels), ``clean_train_acc`` (against the true labels, when
            the store has them), ``test_acc`` (held-out accuracy), ``head_r2``
            (surrogate heads only) and ``capture_seconds``; a key given in
            ``metrics`` wins.
        on_commit : callable, optional
            Called without arguments once the epoch is committed (e.g. to save
            a training checkpoint only after the epoch it belongs to is safe).

        Returns
        -------
        dict or None
            The metrics recorded for the epoch; None with ``background=True``
            (see :meth:`wait`).

        Raises
        ------
        CaptureError
            A loader broke the contract, the layer output has the wrong width,
            or the head does not fit the embedding and logits. With
            ``background=True`` an error of a capture is raised by the next
            call to :meth:`capture`, :meth:`wait` or :meth:`close`.
        """
        margins = (self._margin_sum, self._margin_count)
        self._margin_sum = np.zeros_like(self._margin_sum)
        self._margin_count = np.zeros_like(self._margin_count)
        args = (int(epoch), dict(metrics or {}), margins, on_commit)
        if not self.background:
            return self._capture(self._target, *args)
        self.wait()
        shadow = self._snapshot()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="timetravel-capture")
        self._pending = self._executor.submit(self._capture, shadow, *args)
        return None

    def wait(self) -> dict[str, float]:
        """Wait for a background capture to finish; returns the latest capture's metrics.

        Raises the capture's error, if it failed.
        """
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()
        return dict(self.last_capture_)

    def close(self) -> None:
        """Finish any background capture and stop the worker thread."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._executor is not None:  # keep the original error; still do not leave the thread running
            self._executor.shutdown(wait=True)
            self._executor = None

    def _snapshot(self) -> _Target:
        """A copy of the model with the current weights, for a background pass."""
        if self._shadow is None:
            model = copy.deepcopy(self.model)
            named = dict(model.named_modules())
            self._shadow = _Target(model, named[self.layer_name], named.get(self.head_name) if self.head_name else None)
        with torch.no_grad():
            for dst, src in zip(self._shadow.model.state_dict().values(), self.model.state_dict().values()):
                dst.copy_(src)
        return self._shadow

    def _capture(
        self,
        target: _Target,
        epoch: int,
        metrics: dict[str, float],
        margins: tuple[np.ndarray, np.ndarray],
        on_commit: Callable[[], None] | None,
    ) -> dict[str, float]:
        started = time.perf_counter()
        was_training = target.model.training
        captured: list[torch.Tensor] = []
        handle = target.layer.register_forward_hook(partial(self._hook, captured))
        target.model.eval()
        try:
            with torch.no_grad(), self.writer.begin_epoch(epoch) as ew:
                computed = self._record(target, captured, ew, margins)
                ew.set_metrics(**{**computed, "capture_seconds": time.perf_counter() - started, **metrics})
                ew.commit()
        finally:
            handle.remove()
            target.model.train(was_training)
        if on_commit is not None:
            on_commit()
        entry = next(h for h in self.writer.manifest["history"] if h["epoch"] == epoch)
        self.last_capture_ = {k: v for k, v in entry.items() if k != "epoch"}
        return dict(self.last_capture_)

    def _hook(self, captured: list[torch.Tensor], module: nn.Module, inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise CaptureError(
                f"layer {self.layer_name!r} returns {type(output).__name__}, not a tensor; hook a layer whose output "
                "is the embedding tensor"
            )
        captured.append(output)

    def _record(
        self,
        target: _Target,
        captured: list[torch.Tensor],
        ew: EpochWriter,
        margins: tuple[np.ndarray, np.ndarray],
    ) -> dict[str, float]:
        linear = self._linear_head(target.head)
        surrogate = None if linear is not None else self._new_surrogate()
        run = partial(self._pass, target, captured)
        train = run(self.train_loader, ew, "train", surrogate, linear)
        computed = {"eval_train_acc": float(np.mean(train["pred"] == self._labels["train"]))}
        if self._true_labels is not None:
            computed["clean_train_acc"] = float(np.mean(train["pred"] == self._true_labels))
        if self.heldout_loader is not None:
            held = run(self.heldout_loader, ew, "heldout", None, None)
            computed["test_acc"] = float(np.mean(held["pred"] == self._labels["heldout"]))
        if linear is not None and not train["head_matches"]:
            logger.warning(
                "head %r does not reproduce the model's logits from the embedding of layer %r; "
                "recording a least-squares surrogate head instead",
                self.head_name,
                self.layer_name,
            )
            surrogate = self._new_surrogate()
            run(self.train_loader, None, "train", surrogate, None)
        if surrogate is None:
            weight, bias = linear
        else:
            weight, bias = surrogate.solve()
            computed["head_r2"] = r2 = surrogate.r2(weight, bias)
            self._warn_surrogate(ew.epoch, r2)
        ew.set_head(weight, bias)
        if margins[1].any():
            ew.set_train_margin(self._mean_margins(*margins, train["margin"]))
        return computed

    def _linear_head(self, head: nn.Module | None) -> tuple[np.ndarray, np.ndarray] | None:
        if not isinstance(head, nn.Linear):
            return None
        d, k = self.writer.embedding_dim, self.writer.n_classes
        if (head.out_features, head.in_features) != (k, d):
            raise CaptureError(
                f"head {self.head_name!r} is Linear({head.in_features}, {head.out_features}) but the store expects "
                f"embedding_dim={d} and n_classes={k}"
            )
        weight = head.weight.detach().to("cpu", torch.float32).numpy().copy()
        bias = head.bias.detach().to("cpu", torch.float32).numpy().copy() if head.bias is not None else np.zeros(k, np.float32)
        return weight, bias

    def _new_surrogate(self) -> _LeastSquares:
        return _LeastSquares(self.writer.embedding_dim, self.writer.n_classes)

    def _warn_surrogate(self, epoch: int, r2: float) -> None:
        if not self._head_warned or r2 < _SURROGATE_WARN_R2:
            logger.warning(
                "epoch %d: no linear head recorded from the model (head=%r); fitted a least-squares surrogate "
                "from layer %r to the logits with R^2 = %.4f (stored as head_r2 in the history)",
                epoch,
                self.head_name,
                self.layer_name,
                r2,
            )
            self._head_warned = True

    @staticmethod
    def _mean_margins(total: np.ndarray, count: np.ndarray, eval_margin: np.ndarray) -> np.ndarray:
        missing = count == 0
        mean = total / np.maximum(count, 1)
        if missing.any():
            logger.warning(
                "%d of %d samples had no training forward pass recorded this epoch; their train margin is the "
                "eval-mode margin",
                int(missing.sum()),
                len(count),
            )
            mean[missing] = eval_margin[missing]
        return mean

    def _forward(self, target: _Target, captured: list[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        captured.clear()
        logits = target.model(x.to(self.device, non_blocking=True))
        if len(captured) != 1:
            raise CaptureError(
                f"layer {self.layer_name!r} ran {len(captured)} times in one forward pass; hook a layer "
                "that runs exactly once"
            )
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise CaptureError(
                f"the model must return a (B, K) logits tensor, got {getattr(logits, 'shape', type(logits).__name__)}"
            )
        emb = captured[0].flatten(1)
        d, k = self.writer.embedding_dim, self.writer.n_classes
        if emb.shape[1] != d:
            raise CaptureError(f"layer {self.layer_name!r} outputs {emb.shape[1]} features per sample, the store expects {d}")
        if logits.shape[1] != k:
            raise CaptureError(f"the model returns {logits.shape[1]} logits per sample, the store expects {k}")
        return emb.to("cpu", torch.float32), logits.to("cpu", torch.float32)

    @staticmethod
    def _batch_index(loader: Iterable, index: Any, position: int, size: int, n: int, name: str) -> np.ndarray:
        if index is None:
            if position == 0 and _is_shuffled(loader):
                raise CaptureError(
                    f"{name} shuffles its samples (random sampler) but its batches carry no indices; "
                    "use shuffle=False or yield (x, y, index) batches"
                )
            if position + size > n:
                raise CaptureError(f"{name} yielded more than the {n} samples of the store")
            return np.arange(position, position + size)
        index = torch.as_tensor(index).cpu().numpy().astype(np.int64, copy=False)
        if index.shape != (size,):
            raise CaptureError(f"{name} yielded {index.shape} indices for a batch of {size} samples")
        if size and (index.min() < 0 or index.max() >= n):
            raise CaptureError(f"{name} yielded sample index {index.max()} but the store has {n} samples")
        return index

    def _pass(
        self,
        target: _Target,
        captured: list[torch.Tensor],
        loader: Iterable,
        ew: EpochWriter | None,
        split: str,
        surrogate: _LeastSquares | None,
        head: tuple[np.ndarray, np.ndarray] | None,
    ) -> dict[str, Any]:
        """One eval pass over a loader: write rows; return predictions, eval margins, head fidelity."""
        labels = self._labels[split]
        n = len(labels)
        name = f"{split}_loader"
        seen = np.zeros(n, dtype=np.int64)
        pred = np.zeros(n, dtype=np.int64)
        margin = np.zeros(n, dtype=np.float32)
        head_matches = True
        store_dtype = torch.float16 if self.writer.embedding_dtype == "float16" else torch.float32
        position = 0
        batches = loader
        if self.verbose:
            from tqdm.auto import tqdm

            batches = tqdm(loader, desc=f"capture {split}", leave=False, unit="batch")
        for batch in batches:
            x, y, given_index = _split_batch(batch)
            index = self._batch_index(loader, given_index, position, len(x), n, name)
            position += len(x)
            if given_index is None:
                seen[index] += 1  # a fresh range: no repeats inside the batch
            else:
                np.add.at(seen, index, 1)
            if seen[index].max(initial=0) > 1:
                raise CaptureError(f"{name} yielded sample {int(index[np.argmax(seen[index] > 1)])} twice in one pass")
            self._check_labels(y, labels[index], name)
            emb, logits = self._forward(target, captured, x)
            if head is not None and position == len(x):  # a property of the model: check the first batch
                expected = emb @ torch.from_numpy(head[0]).T + torch.from_numpy(head[1])
                tol = _HEAD_RTOL * (1 + float(logits.abs().max()))
                head_matches = bool(torch.allclose(expected, logits, rtol=_HEAD_RTOL, atol=tol))
            if surrogate is not None:
                surrogate.add(emb.numpy(), logits.numpy())
            pred[index] = logits.argmax(dim=1).numpy()
            margin[index] = label_margins(logits, labels[index])
            if ew is not None:
                self._write_rows(ew, index, emb.to(store_dtype).numpy(), logits.numpy(), split)
        if not seen.all():
            raise CaptureError(
                f"{name} covered {int((seen > 0).sum())} of the {n} {split} samples; it must yield every sample once "
                "per pass (no drop_last, no subset)"
            )
        return {"pred": pred, "margin": margin, "head_matches": head_matches}

    @staticmethod
    def _check_labels(y: Any, stored: np.ndarray, name: str) -> None:
        if not isinstance(y, torch.Tensor) or y.ndim != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
            return
        given = y.cpu().numpy()
        if len(given) != len(stored) or not np.array_equal(given, stored):
            raise CaptureError(
                f"{name} yields labels that differ from the store's labels for the same samples "
                f"(e.g. {given[:5].tolist()} vs {stored[:5].tolist()}); the loader must follow the store's sample "
                "order or yield (x, y, index) batches"
            )

    @staticmethod
    def _write_rows(ew: EpochWriter, index: np.ndarray, emb: np.ndarray, logits: np.ndarray, split: str) -> None:
        if len(index) and index[-1] - index[0] == len(index) - 1 and np.all(np.diff(index) == 1):
            ew.write(int(index[0]), emb, logits, split=split)
            return
        order = np.argsort(index, kind="stable")
        index, emb, logits = index[order], emb[order], logits[order]
        for a, b in _runs(index):
            ew.write(int(index[a]), emb[a:b], logits[a:b], split=split)

    def __repr__(self) -> str:
        mode = ", background=True" if self.background else ""
        return f"Recorder(layer={self.layer_name!r}, head={self.head_name!r}, store={str(self.writer.path)!r}{mode})"
