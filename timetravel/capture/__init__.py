"""Record training dynamics from the user's own PyTorch loop into a run store.

A :class:`Recorder` is added to an existing training loop. It records each
epoch either by an eval-mode pass over the training set after the epoch
(the default), or from the training forward passes themselves
(``train_pass=True``: only a copy per batch, written on a background thread)::

    recorder = Recorder(model, "features", "runs/mine", eval_loader, head="classifier", train_pass=True,
                        store_kwargs=dict(labels=labels, n_classes=10, embedding_dim=128))
    for epoch in range(epochs):
        for x, y, idx in train_loader:           # the user's own loop, shuffled
            with recorder.batch(idx):
                logits = model(x)
            ...
        recorder.capture(epoch, metrics={"train_loss": ...})
    recorder.close()                             # the last epoch again, by an eval pass

Modules, by job: :mod:`~timetravel.capture._batch` (the loader contract:
batch layouts, sample indices, row bookkeeping), :mod:`~timetravel.capture._probe`
(hooks that take embeddings and logits out of a forward pass),
:mod:`~timetravel.capture._head` (the linear head, found by itself, or a fitted
surrogate), :mod:`~timetravel.capture._writer` (the background writer that holds
the labels and commits epochs), :mod:`~timetravel.capture._distributed`
(DDP: rank 0 commits every rank's rows) and :mod:`~timetravel.capture.recorder`.
"""

from timetravel.capture._batch import BatchFormat, CaptureError, tensor_loader
from timetravel.capture._head import resolve_module
from timetravel.numerics import label_margins
from timetravel.capture.recorder import Recorder

__all__ = ["BatchFormat", "CaptureError", "Recorder", "label_margins", "resolve_module", "tensor_loader"]
