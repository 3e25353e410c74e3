"""Train a bundled subject model on a dataset with injected label noise, recording every epoch.

:func:`train_run` is what ``timetravel train`` runs: load the dataset, corrupt
a fraction of the training labels, train deterministically under a seed, and
record every epoch (embeddings, logits, head, training-mode margins, the
held-out set and per-epoch metrics) with :class:`timetravel.capture.Recorder`.

After every committed epoch the model and optimizer state are saved to
``RUN/checkpoint/state.pt`` (atomically), so ``resume=True`` continues a killed
run from the last finished epoch and reproduces the uninterrupted run.

:func:`record_training` is the same with the training labels and a keep-mask
given (``timetravel fix`` trains on corrected labels with it), and
:func:`train_accuracy` trains without recording anything (the fix benchmark).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from timetravel._io import write_bytes_atomic
from timetravel.capture import Recorder, tensor_loader
from timetravel.errors import TimetravelError
from timetravel.models import MODEL_NAMES, inference_batch_size, make_model
from timetravel.store import EMBEDDING_DTYPES, MANIFEST, RunStore, RunWriter, make_run_folder

logger = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoint") / "state.pt"


class TrainError(TimetravelError, ValueError):
    """Training was asked for with bad settings, or a run cannot be resumed."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run; stored in the manifest under ``"train"``.

    See :func:`train_run` for the meaning of each field.
    """

    dataset: str
    noise: str
    epochs: int
    seed: int
    model: str
    embedding_dim: int
    batch_size: int | None
    lr: float
    root: str | None
    n_samples: int | None
    image_size: int | list[int] | None
    heldout: bool
    embedding_dtype: str

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The default of every field: those of :func:`train_run`."""
        params = inspect.signature(train_run).parameters
        return {f.name: params[f.name].default for f in dataclasses.fields(cls)}

    @classmethod
    def from_manifest(cls, settings: dict[str, Any]) -> TrainConfig:
        """The settings stored in a run's manifest (``"train"``); fields added since take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**cls.defaults(), **{k: v for k, v in settings.items() if k in names}})

    def validate(self) -> None:
        """Raise :class:`TrainError` naming the first bad field."""
        for name in ("epochs", "embedding_dim", "batch_size"):
            value = getattr(self, name)
            if name == "batch_size" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise TrainError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.lr, (int, float)) or not 0 < self.lr < math.inf:
            raise TrainError(f"lr must be a positive finite number, got {self.lr!r}")
        if self.model not in ("auto", *MODEL_NAMES):
            raise TrainError(f"model must be 'auto' or one of {MODEL_NAMES}, got {self.model!r}")
        if self.embedding_dtype not in EMBEDDING_DTYPES:
            raise TrainError(f"embedding_dtype must be one of {EMBEDDING_DTYPES}, got {self.embedding_dtype!r}")

    def to_manifest(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- one epoch


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Any,
    *,
    recorder: Recorder | None = None,
    keep: torch.Tensor | None = None,
) -> dict[str, float]:
    """One pass of minibatch training with cross-entropy.

    Parameters
    ----------
    model : nn.Module
    optimizer : torch.optim.Optimizer
    loader : iterable of (x, y, index) batches
        The training set, e.g. :func:`timetravel.capture.tensor_loader` with
        ``shuffle=True, with_index=True``.
    recorder : Recorder, optional
        Given, the training-mode margins of every batch are recorded (AUM).
    keep : bool tensor of shape (N,), optional
        Samples to train on; the others still pass forward (their margins are
        recorded) but get no weight in the loss. The batches stay those of the
        whole set, so the batch order is the one of a run without ``keep``.

    Returns
    -------
    dict
        ``train_loss`` (mean cross-entropy) and ``train_acc`` (training-mode
        accuracy on the labels trained on), over the samples trained on.
    """
    model.train()
    loss_sum, correct, count = 0.0, 0, 0
    for x, y, index in loader:
        logits = model(x)
        if keep is None:
            weight = None
            loss = F.cross_entropy(logits, y)
        else:
            weight = keep[index]
            loss = (F.cross_entropy(logits, y, reduction="none") * weight).sum() / weight.sum().clamp_min(1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if recorder is not None:
            recorder.record_train_margins(index, logits, y)
        hits = logits.argmax(dim=1) == y
        n = len(y) if weight is None else int(weight.sum())
        loss_sum += loss.item() * n
        correct += int(hits.sum() if weight is None else (hits & (weight > 0)).sum())
        count += n
    return {"train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1)}


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Eval-mode accuracy of ``model`` on ``(x, y)``, in batches, restoring the model's mode."""
    was_training = model.training
    model.eval()
    correct = 0
    try:
        with torch.no_grad():
            for xb, yb in tensor_loader(x, y, batch_size=inference_batch_size(model)):
                correct += int((model(xb).argmax(dim=1) == yb).sum())
    finally:
        model.train(was_training)
    return correct / max(len(y), 1)


# --------------------------------------------------------------------------- checkpoints


def _checkpoint_bytes(epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                      generator: torch.Generator) -> bytes:
    """The training state after ``epoch``, serialised now (training goes on while the epoch is recorded)."""
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "shuffle_rng": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise TrainError(f"{path}: checkpoint cannot be read ({exc}); start again with overwrite=True") from None


# --------------------------------------------------------------------------- the run


def auto_batch_size(n_samples: int) -> int:
    """Default minibatch size: a power of two giving about 200 steps per epoch, within [32, 512]."""
    return int(min(512, max(32, 2 ** round(math.log2(max(n_samples, 1) / 200)))))


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise TrainError(f"threads must be a positive integer, got {threads!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or max(1, len(os.sched_getaffinity(0)) - 1))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def default_noise(dataset: str) -> str:
    """The noise injected when none is asked for: none into the user's own data, 20% symmetric otherwise."""
    user_data = str(dataset).strip().split(":", 1)[0].lower() in ("folder", "arrays")
    return "none" if user_data else "symmetric:0.2"


def _prepare_data(config: TrainConfig, verbose: bool = True) -> tuple[Any, Any, Any]:
    from timetravel.data import load_dataset
    from timetravel.noise import class_similarity, inject_noise, parse_noise_spec

    kind, rate = parse_noise_spec(config.noise)
    options = {} if config.image_size is None else {"image_size": config.image_size}
    splits = load_dataset(config.dataset, root=config.root, seed=config.seed, n_samples=config.n_samples,
                          verbose=verbose, **options)
    train = splits.train
    # class-conditional noise flips labels towards the classes that look alike, as annotators do
    similarity = class_similarity(train.x, train.y, train.n_classes) if kind == "matrix" else None
    noisy = inject_noise(train.y, train.n_classes, kind, rate, seed=config.seed, similarity=similarity)
    return splits, noisy, kind


@contextlib.contextmanager
def _removed_if_left_empty(out: Path) -> Iterator[None]:
    """A run folder this call creates is removed again when the call fails before writing to it."""
    fresh = not out.exists()
    try:
        yield
    except BaseException:
        if fresh and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _check_out(out: Path, *, resume: bool, overwrite: bool) -> Path:
    """The run folder ``out`` can take this training: a run to resume, or a folder for a new one."""
    exists = (out / MANIFEST).exists()
    if resume and not exists:
        raise TrainError(f"{out}: there is no run to resume; start one without resume")
    if not resume:
        if exists and not overwrite:
            raise TrainError(f"{out}: a run already exists here; pass overwrite (--overwrite) or resume (--resume)")
        make_run_folder(out)
    return out


def _open_store(out: Path, config: TrainConfig, splits: Any, noisy: Any, kind: str, model: nn.Module,
                labels: np.ndarray, extra: dict[str, Any], *, resume: bool, overwrite: bool) -> RunWriter:
    if resume:
        writer = RunWriter.resume(out)
        stored = writer.manifest.get("train", {})
        changed = {k: (stored.get(k), v) for k, v in config.to_manifest().items() if k != "epochs" and stored.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: run has {a!r}, asked {b!r}" for k, (a, b) in changed.items())
            raise TrainError(f"{out}: cannot resume with different settings ({detail})")
        if not np.array_equal(np.load(out / "labels.npy", allow_pickle=False), labels):
            raise TrainError(f"{out}: the stored labels differ from those the settings produce; cannot resume")
        writer.update_manifest(train=config.to_manifest())
        return writer
    train, test = splits.train, splits.test
    return RunWriter.create(
        out,
        labels=labels,
        n_classes=train.n_classes,
        embedding_dim=config.embedding_dim,
        class_names=train.class_names,
        dataset=train.name,
        true_labels=noisy.true_labels if kind != "none" else None,
        noise=noisy.info if kind != "none" else None,
        thumbs=train.images,
        heldout_labels=test.y if config.heldout else None,
        embedding_dtype=config.embedding_dtype,
        extra={
            "train": config.to_manifest(),
            "seed": config.seed,
            "model": {
                "name": getattr(model, "name", type(model).__name__),
                "embedding_layer": model.embedding_layer,
                "n_parameters": int(sum(p.numel() for p in model.parameters())),
            },
            **extra,
        },
        overwrite=overwrite,
    )


def train_run(
    dataset: str = "digits",
    noise: str | None = None,
    epochs: int = 30,
    out: str | os.PathLike = "runs/digits",
    *,
    seed: int = 0,
    model: str = "auto",
    embedding_dim: int = 64,
    batch_size: int | None = None,
    lr: float = 3e-3,
    root: str | os.PathLike | None = None,
    n_samples: int | None = None,
    image_size: int | tuple[int, int] | None = None,
    heldout: bool = True,
    embedding_dtype: str = "float16",
    overwrite: bool = False,
    resume: bool = False,
    threads: int | None = None,
    background_capture: bool = True,
    verbose: bool = True,
) -> RunStore:
    """Train a bundled model with injected label noise and record every epoch.

    Parameters
    ----------
    dataset : str, default="digits"
        A name accepted by :func:`timetravel.data.load_dataset`, including
        ``"folder:PATH"`` (your images in class subfolders) and ``"arrays:PATH"``
        (your ``.npz`` with ``x`` and ``y``).
    noise : str, optional
        Noise spec for :func:`timetravel.noise.parse_noise_spec` (``"none"`` for
        clean labels). Default: ``"symmetric:0.2"``, or ``"none"`` for the
        user's own data (``"folder:PATH"``, ``"arrays:PATH"``).
    epochs : int, default=30
        Epochs to train; epochs ``0 .. epochs-1`` are recorded (epoch ``e`` is
        the state after ``e + 1`` passes). With ``resume`` it may exceed the
        original count, extending the run.
    out : path-like
        Run store directory.
    seed : int, default=0
        Seeds the data split, the noise, the initial weights and the batch order.
    model : {"auto", "mlp", "cnn", "resnet"}, default="auto"
        Subject model (:func:`timetravel.models.make_model`).
    embedding_dim : int, default=64
        Width of the recorded penultimate embedding.
    batch_size : int, optional
        Training minibatch size; default: about 200 steps per epoch, between
        32 and 512 (32 for digits, 256 for 50,000 samples).
    lr : float, default=3e-3
        Adam learning rate (constant, no weight decay, so the noisy labels are
        memorised late in training, as in real runs).
    root : path-like, optional
        Folder of file-based datasets.
    n_samples : int, optional
        Training-set size (subsample, or number of synthetic samples).
    image_size : int or (int, int), optional
        Resize the images of ``"folder:PATH"`` and ``"arrays:PATH"`` to this
        side length or ``(height, width)`` (the side of ``"synthetic"`` images).
    heldout : bool, default=True
        Record the test split as the held-out set (its accuracy is the clean
        test accuracy in the history either way).
    embedding_dtype : {"float16", "float32"}, default="float16"
        Storage type of the embeddings.
    overwrite : bool, default=False
        Replace an existing run at ``out``.
    resume : bool, default=False
        Continue the run at ``out`` from its last checkpoint; the settings
        (except ``epochs``) must match the stored ones.
    threads : int, optional
        Torch threads while training; default: the available cores minus one
        (left to the background capture), at least 1. Small models train
        fastest on few threads, and too many threads on a busy machine are
        far slower than one.
    background_capture : bool, default=True
        Record each epoch in a worker thread on a copy of the model while the
        next epoch trains (:class:`~timetravel.capture.Recorder` ``background``).
    verbose : bool, default=True
        Show a progress bar over epochs.

    Returns
    -------
    RunStore
        The finished run.

    Raises
    ------
    TrainError
        Bad settings, an existing run without ``overwrite``/``resume``, or a
        resume with different settings.
    DatasetError
        The dataset or noise spec is invalid.

    Examples
    --------
    >>> store = train_run("digits", "symmetric:0.2", epochs=2, out="/tmp/tt-doc-train",
    ...                   n_samples=200, overwrite=True, verbose=False)
    >>> store.epochs
    [0, 1]
    """
    config = TrainConfig(
        dataset=dataset, noise=default_noise(dataset) if noise is None else noise, epochs=epochs, seed=seed, model=model, embedding_dim=embedding_dim,
        batch_size=batch_size, lr=float(lr), root=None if root is None else str(root), n_samples=n_samples,
        image_size=list(image_size) if isinstance(image_size, tuple) else image_size, heldout=heldout,
        embedding_dtype=embedding_dtype,
    )
    config.validate()
    return record_training(config, out, overwrite=overwrite, resume=resume, threads=threads,
                           background_capture=background_capture, verbose=verbose)


def record_training(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    labels: np.ndarray | None = None,
    keep: np.ndarray | None = None,
    expect_labels: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
    on_create: Any = None,
    overwrite: bool = False,
    resume: bool = False,
    threads: int | None = None,
    background_capture: bool = True,
    verbose: bool = True,
) -> RunStore:
    """:func:`train_run` with settings ``config`` and, optionally, the labels and keep-mask to train on.

    Parameters
    ----------
    config : TrainConfig
        Settings (validated by the caller).
    out : path-like
        Run store directory.
    labels : array of int, shape (N,), optional
        Labels to train on and record; default: those the noise settings produce.
    keep : array of bool, shape (N,), optional
        Samples to train on (see :func:`train_epoch`); every sample is recorded.
    expect_labels : array of int, shape (N,), optional
        The labels the settings must produce (checks that the dataset rebuilt
        from ``config`` is the one a run was trained on).
    extra : dict, optional
        More manifest fields.
    on_create : callable, optional
        Called with the new run's path once it is created (not on resume).
    overwrite, resume, threads, background_capture, verbose
        As in :func:`train_run`.

    Returns
    -------
    RunStore

    Raises
    ------
    TrainError
        The rebuilt dataset does not match ``expect_labels``, bad ``labels`` or
        ``keep``, or the errors of :func:`train_run`.
    """
    out = Path(out)
    with _removed_if_left_empty(out), _torch_threads(threads):
        _check_out(out, resume=resume, overwrite=overwrite)  # before minutes of loading and training
        splits, noisy, kind = _prepare_data(config, verbose)
        train, test = splits.train, splits.test
        if expect_labels is not None and not np.array_equal(np.asarray(expect_labels), noisy.labels):
            raise TrainError(
                f"{out}: the dataset rebuilt from the run's settings is not the one the run was trained on (the "
                "labels differ; was the dataset's folder changed?); retrain with your own code on "
                "timetravel.corrections(run)"
            )
        labels, keep_t = _training_labels(noisy.labels, labels, keep)
        if config.batch_size is None:
            config = dataclasses.replace(config, batch_size=auto_batch_size(len(train)))
        net, optimizer, generator = _new_model(config, train)
        writer = _open_store(out, config, splits, noisy, kind, net, labels, extra or {}, resume=resume,
                             overwrite=overwrite)
        if on_create is not None and not resume:
            on_create(out)
        start = _restore(out / CHECKPOINT, net, optimizer, generator) if resume else 0
        x, y = torch.from_numpy(train.x), torch.from_numpy(labels)
        x_test, y_test = torch.from_numpy(test.x), torch.from_numpy(test.y)
        recorder = Recorder(
            net, net.embedding_layer, writer, tensor_loader(x, y, batch_size=inference_batch_size(net)),
            tensor_loader(x_test, y_test, batch_size=inference_batch_size(net)) if config.heldout else None,
            head=net.head,
            background=background_capture,
        )
        loader = tensor_loader(x, y, batch_size=config.batch_size, shuffle=True, generator=generator, with_index=True)
        logger.info(
            "training %s on %s (%d samples, %d classes, noise %s, %.1f%% labels changed) for epochs %d..%d -> %s",
            net.name, train.name, len(train), train.n_classes, config.noise, 100 * float(noisy.mask.mean()),
            start, config.epochs - 1, out,
        )
        _fit(net, optimizer, loader, recorder, generator, range(start, config.epochs), out,
             test=None if config.heldout else (x_test, y_test), keep=keep_t, verbose=verbose)
    store = RunStore(out)
    _log_summary(store)
    return store


def train_accuracy(
    config: TrainConfig,
    labels: np.ndarray | None = None,
    keep: np.ndarray | None = None,
    *,
    threads: int | None = None,
) -> list[float]:
    """Train like :func:`record_training` without recording; the clean test accuracy after each epoch.

    Parameters
    ----------
    config : TrainConfig
        Settings (validated by the caller).
    labels : array of int, shape (N,), optional
        Labels to train on; default: those the noise settings produce.
    keep : array of bool, shape (N,), optional
        Samples to train on.
    threads : int, optional
        Torch threads (as in :func:`train_run`).

    Returns
    -------
    list of float
        Test accuracy after epochs ``0 .. config.epochs - 1``.
    """
    with _torch_threads(threads):
        splits, noisy, _ = _prepare_data(config)
        labels, keep_t = _training_labels(noisy.labels, labels, keep)
        if config.batch_size is None:
            config = dataclasses.replace(config, batch_size=auto_batch_size(len(splits.train)))
        net, optimizer, generator = _new_model(config, splits.train)
        x, y = torch.from_numpy(splits.train.x), torch.from_numpy(labels)
        loader = tensor_loader(x, y, batch_size=config.batch_size, shuffle=True, generator=generator, with_index=True)
        x_test, y_test = torch.from_numpy(splits.test.x), torch.from_numpy(splits.test.y)
        curve = []
        for _ in range(config.epochs):
            train_epoch(net, optimizer, loader, keep=keep_t)
            curve.append(accuracy(net, x_test, y_test))
    return curve


def _new_model(config: TrainConfig, train: Any) -> tuple[nn.Module, torch.optim.Optimizer, torch.Generator]:
    torch.manual_seed(config.seed)
    net = make_model(config.model, train.x.shape[1:], train.n_classes, config.embedding_dim)
    return net, torch.optim.Adam(net.parameters(), lr=config.lr), torch.Generator().manual_seed(config.seed)


def _training_labels(produced: np.ndarray, labels: np.ndarray | None,
                     keep: np.ndarray | None) -> tuple[np.ndarray, torch.Tensor | None]:
    """The labels to train on (default: ``produced``) and the keep-mask as a float tensor, checked."""
    n = len(produced)
    labels = produced if labels is None else np.asarray(labels, dtype=np.int64)
    if labels.shape != (n,):
        raise TrainError(f"labels has shape {labels.shape} but the training set has {n} samples")
    if keep is None:
        return labels, None
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (n,) or not keep.any():
        raise TrainError(f"keep must be a boolean mask of {n} samples keeping at least one, got shape {keep.shape}")
    return labels, torch.from_numpy(keep.astype(np.float32))


def _restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> int:
    if not path.exists():
        logger.warning("%s: no checkpoint yet; starting the run from epoch 0", path)
        return 0
    state = _load_checkpoint(path)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["shuffle_rng"])
    torch.set_rng_state(state["torch_rng"])
    logger.info("resuming after epoch %d from %s", state["epoch"], path)
    return int(state["epoch"]) + 1


def _fit(model: nn.Module, optimizer: torch.optim.Optimizer, loader: Any, recorder: Recorder,
         generator: torch.Generator, epochs: range, out: Path, *, test: tuple[torch.Tensor, torch.Tensor] | None,
         keep: torch.Tensor | None, verbose: bool) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(epochs, desc="train", unit="epoch", disable=not verbose)
    with recorder:  # on an error or interrupt, the epoch being recorded still completes
        for epoch in bar:
            started = time.perf_counter()
            metrics = train_epoch(model, optimizer, loader, recorder=recorder, keep=keep)
            metrics["train_seconds"] = time.perf_counter() - started
            if not math.isfinite(metrics["train_loss"]):
                lr = optimizer.param_groups[0]["lr"]
                raise TrainError(f"training diverged in epoch {epoch}: the training loss is {metrics['train_loss']}; "
                                 f"lower the learning rate (now {lr:g}, --lr) and train again (epochs before it are "
                                 f"kept in {out})")
            if test is not None:
                metrics["test_acc"] = accuracy(model, *test)
            # saved once the epoch is committed: a kill in between re-runs this epoch on resume, deterministically
            checkpoint = _checkpoint_bytes(epoch, model, optimizer, generator)
            recorder.capture(epoch, metrics=metrics, on_commit=partial(write_bytes_atomic, out / CHECKPOINT, checkpoint))
            shown = {**metrics, **{k: v for k, v in recorder.last_capture_.items() if k == "test_acc"}}
            bar.set_postfix({k: f"{shown[k]:.3f}" for k in ("train_loss", "train_acc", "test_acc") if k in shown})
            logger.debug("epoch %d: %s", epoch, metrics)


def _log_summary(store: RunStore) -> None:
    history = [h for h in store.history if "test_acc" in h]
    if not history:
        return
    best = max(history, key=lambda h: h["test_acc"])
    last = history[-1]
    logger.info(
        "clean test accuracy: best %.4f (epoch %d), last %.4f (epoch %d); train accuracy on noisy labels %.4f",
        best["test_acc"], best["epoch"], last["test_acc"], last["epoch"], last.get("train_acc", float("nan")),
    )
