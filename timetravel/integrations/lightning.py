"""A PyTorch Lightning callback that records a run from the training steps (``pip install "timetravel[lightning]"``).

Three lines in the user's script::

    from timetravel.integrations import IndexedDataset
    from timetravel.integrations.lightning import TimetravelCallback

    train_loader = DataLoader(IndexedDataset(train_set), batch_size=64, shuffle=True)   # batches (x, y, index)
    trainer = L.Trainer(max_epochs=20, callbacks=[TimetravelCallback("runs/mine", layer="backbone")])

and ``training_step`` unpacks the index it does not use: ``x, y, _ = batch``.
Every sample's embedding and logits are copied out of the training step's own
forward pass (``self(x)``, or the sub-module named by ``model``); the last
epoch is recorded again by an eval pass over the training set in order.
"""

from __future__ import annotations

from typing import Any

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'timetravel.integrations.lightning needs PyTorch Lightning: pip install "timetravel[lightning]"'
    ) from exc

from timetravel.capture import CaptureError
from timetravel.integrations._recording import RunRecording, scalar_metrics


class TimetravelCallback(RunRecording, pl.Callback):
    """Records every epoch of a ``lightning.pytorch.Trainer`` fit into a timetravel run store.

    The training dataloader's dataset must be an
    :class:`~timetravel.integrations.IndexedDataset`, so each batch carries
    its samples' indices (``(x, y, index)``, or an ``"index"`` entry of a dict
    batch). Recording starts at ``on_train_start`` and each epoch is committed
    at ``on_train_epoch_end``; under DDP every rank records the samples its
    sampler gives it and rank 0 writes the run.

    Parameters
    ----------
    out : path-like
        The run store to write.
    model : str, optional
        Dotted name of the sub-module of the LightningModule that
        ``training_step`` calls to get the logits (``"net"`` for
        ``self.net(x)``); default: the LightningModule itself (``self(x)``).
    **settings
        ``layer``, ``head``, ``labels``, ``class_names``, ``thumbs``,
        ``heldout``, ``eval_every``, ``final_eval``... as in
        :class:`~timetravel.integrations._recording.RunRecording`.

    Attributes
    ----------
    recorder : timetravel.capture.Recorder or None
        The recorder, once training has started.
    """

    def __init__(self, out: Any, *, model: str | None = None, **settings: Any) -> None:
        RunRecording.__init__(self, out, **settings)
        self.model_name = model
        self._hooks: list[Any] = []
        self._depth = 0  # calls of the recorded module in progress
        self._nested = False  # one of them called the module again

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = pl_module if self.model_name is None else pl_module.get_submodule(self.model_name)
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None:
            raise CaptureError("the trainer's training dataloader has no dataset (one DataLoader over an "
                               "IndexedDataset is needed)")
        self.start(model, dataset, loader, framework="lightning")
        # Under DDP (and other wrapping strategies) Lightning calls the LightningModule itself with its
        # forward redirected to training_step, so the module's hooks also see the step's output (the loss)
        # around the inner self(x). Run before the recorder's hooks and keep it from reading that outer call.
        self._hooks = [
            model.register_forward_pre_hook(self._enter, prepend=True),
            model.register_forward_hook(self._leave, prepend=True),
        ]

    def _enter(self, module: Any, args: Any) -> None:
        self._depth += 1
        self._nested |= self._depth > 1

    def _leave(self, module: Any, args: Any, output: Any) -> None:
        self._depth -= 1
        if self._depth == 0 and self._nested:
            self._nested = False
            self._require().probe.active = False  # the redirected call: its output is not the logits

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        recorder = self._require()
        parts = recorder.format.split(batch)
        if parts.index is None:
            raise CaptureError("the training batch carries no sample indices; build the training DataLoader over "
                               "IndexedDataset(train_set) (or pass index= to say where the batch keeps them)")
        recorder.begin_batch(parts.index, parts.target)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._require().end_batch()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end_epoch(trainer.current_epoch, scalar_metrics(trainer.callback_metrics))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()
        self.finish()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_hooks()
        self.abort(exception)

    def _remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
