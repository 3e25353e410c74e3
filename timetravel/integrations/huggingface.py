"""A Hugging Face ``transformers`` callback that records a run from the Trainer's steps (``pip install "timetravel[hf]"``).

In the user's script::

    from timetravel.integrations import IndexedDataset
    from timetravel.integrations.huggingface import TimetravelTrainerCallback

    args = TrainingArguments(..., remove_unused_columns=False)      # keep the "index" entry in each batch
    trainer = Trainer(model=model, args=args, train_dataset=IndexedDataset(train_set),
                      callbacks=[TimetravelTrainerCallback("runs/mine")])

Each batch then holds an ``"index"`` entry next to ``input_ids`` and
``labels``. The callback takes it out before the model sees it (a forward
pre-hook), records the embedding (by default the classifier's input, e.g. the
pooled ``[CLS]`` vector of ``BertForSequenceClassification``) and the logits of
the training forward pass, and commits each epoch; the last epoch is recorded
again by an eval pass over the training set in order.
"""

from __future__ import annotations

from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        'timetravel.integrations.huggingface needs transformers: pip install "timetravel[hf]"'
    ) from exc

from timetravel.capture import CaptureError
from timetravel.integrations._recording import RunRecording


class TimetravelTrainerCallback(RunRecording, TrainerCallback):
    """Records every epoch of a ``transformers.Trainer`` run into a timetravel run store.

    The Trainer's ``train_dataset`` must be an
    :class:`~timetravel.integrations.IndexedDataset` of dict items, and
    ``TrainingArguments(remove_unused_columns=False)`` must keep its
    ``"index"`` entry in the batches (the callback checks both when training
    begins).

    Parameters
    ----------
    out : path-like
        The run store to write.
    **settings
        ``layer``, ``head``, ``labels``, ``class_names``, ``heldout``,
        ``eval_every``, ``final_eval``... as in
        :class:`~timetravel.integrations._recording.RunRecording`.

    Attributes
    ----------
    recorder : timetravel.capture.Recorder or None
        The recorder, once training has begun.
    """

    def __init__(self, out: Any, **settings: Any) -> None:
        RunRecording.__init__(self, out, **settings)
        self._hooks: list[Any] = []
        self._key = "index"
        self._open = False  # a training batch is being recorded

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, train_dataloader: Any = None,
                       **kwargs: Any) -> None:
        if getattr(args, "remove_unused_columns", False):
            raise CaptureError("TimetravelTrainerCallback needs TrainingArguments(remove_unused_columns=False): "
                               "otherwise the Trainer drops the batches' \"index\" entry before the model")
        if model is None or train_dataloader is None:
            raise CaptureError("the Trainer did not pass the model and the training dataloader to the callback")
        dataset = getattr(train_dataloader, "dataset", None)
        self.start(model, dataset, train_dataloader, framework="transformers")
        self._key = dataset.key
        self._hooks = [
            model.register_forward_pre_hook(self._take_index, with_kwargs=True),
            model.register_forward_hook(self._end_batch),  # after the recorder's own hook on the model's output
        ]

    def _take_index(self, module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        index = kwargs.pop(self._key, None)
        if index is not None and module.training:
            self._require().begin_batch(index, kwargs.get("labels"))
            self._open = True
        return args, kwargs

    def _end_batch(self, module: Any, args: tuple, output: Any) -> None:
        if self._open:
            self._open = False
            self._require().end_batch()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
        self.end_epoch(round(state.epoch) - 1, {"train_loss": float(losses[-1])} if losses else {})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self.finish()
