"""The loader contract: what a batch holds, which samples it is, and whether a pass covered each once.

Rows of the run store are sample indices, so every batch the recorder sees
must say which samples it holds: either it carries their dataset positions
(``index``), or the loader visits the samples in dataset order. A
:class:`BatchFormat` says where the model's inputs, the labels and the
indices sit in a batch; the default understands the common layouts:

* ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, index)`` (tuples or lists);
* a dict (e.g. a Hugging Face batch): ``index``/``idx``/``indices`` for the
  positions, ``labels``/``label``/``target``/``targets``/``y`` for the labels,
  and every other key passed to the model as a keyword argument.

Anything else is described by selectors: an ``int`` (position in a tuple
batch), a ``str`` (key of a dict batch), a sequence of them (several model
inputs, passed positionally) or a callable taking the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence, Union

import numpy as np
import torch
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

Selector = Union[int, str, Sequence[Union[int, str]], Callable[[Any], Any], None]

INDEX_KEYS = ("index", "idx", "indices")
TARGET_KEYS = ("labels", "label", "target", "targets", "y")
_RANDOM_SAMPLERS = (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)


class CaptureError(TimetravelError, ValueError):
    """The recorder was set up wrongly or a loader broke the loader contract."""


class Batch(NamedTuple):
    """One batch taken apart: the model's positional and keyword inputs, labels and sample indices."""

    args: tuple
    kwargs: dict
    target: Any
    index: Any


def _pick(batch: Any, selector: int | str, role: str) -> Any:
    try:
        return batch[selector]
    except (KeyError, IndexError, TypeError):
        kind = type(batch).__name__
        keys = f" (keys: {', '.join(map(str, batch))})" if isinstance(batch, Mapping) else ""
        raise CaptureError(f"{role}={selector!r} does not select anything in a {kind} batch{keys}") from None


@dataclass(frozen=True)
class BatchFormat:
    """Where a batch keeps the model inputs, the labels and the sample indices.

    Parameters
    ----------
    inputs : int, str, sequence of them, or callable, optional
        The model's inputs: a position or key (one input), a sequence
        (several inputs, passed positionally: ``model(batch["tokens"],
        batch["offsets"])``), or a callable ``batch -> tensor | tuple | dict``
        (a tuple is passed positionally, a dict as keyword arguments).
        Default: see the module docstring.
    target : int, str or callable, optional
        The labels (a 1-d integer tensor), checked against the store's labels.
    index : int, str or callable, optional
        The sample indices (a 1-d integer tensor of dataset positions).

    Examples
    --------
    >>> fmt = BatchFormat(inputs=("tokens", "offsets"), target="label")
    >>> b = fmt.split({"tokens": torch.arange(6), "offsets": torch.tensor([0, 4]), "label": torch.tensor([1, 0])})
    >>> len(b.args), b.target.tolist(), b.index
    (2, [1, 0], None)
    """

    inputs: Selector = None
    target: Selector = None
    index: Selector = None

    def split(self, batch: Any) -> Batch:
        """Take a batch apart; raises :class:`CaptureError` naming the layout it cannot read."""
        if self.inputs is None and self.target is None and self.index is None:
            return _default_split(batch)
        return Batch(*self._inputs(batch), self._select(batch, self.target, "target"),
                     self._select(batch, self.index, "index"))

    def _inputs(self, batch: Any) -> tuple[tuple, dict]:
        if self.inputs is None:
            default = _default_split(batch)
            return default.args, default.kwargs
        if callable(self.inputs):
            value = self.inputs(batch)
        elif isinstance(self.inputs, (int, str)):
            value = _pick(batch, self.inputs, "inputs")
        else:
            value = tuple(_pick(batch, s, "inputs") for s in self.inputs)
        if isinstance(value, Mapping):
            return (), dict(value)
        return (value if isinstance(value, tuple) else (value,)), {}

    @staticmethod
    def _select(batch: Any, selector: Selector, role: str) -> Any:
        if selector is None:
            if isinstance(batch, Mapping):
                return next((batch[k] for k in (INDEX_KEYS if role == "index" else TARGET_KEYS) if k in batch), None)
            return None
        if callable(selector):
            return selector(batch)
        if not isinstance(selector, (int, str)):
            raise CaptureError(f"{role} must be a position, a key or a callable, got {type(selector).__name__}")
        return _pick(batch, selector, role)


def _default_split(batch: Any) -> Batch:
    if isinstance(batch, torch.Tensor):
        return Batch((batch,), {}, None, None)
    if isinstance(batch, Mapping):
        index_key = next((k for k in INDEX_KEYS if k in batch), None)
        target_key = next((k for k in TARGET_KEYS if k in batch), None)
        kwargs = {k: v for k, v in batch.items() if k not in (index_key, target_key)}
        if not kwargs:
            raise CaptureError(f"a dict batch with keys {list(batch)} holds no model inputs")
        return Batch((), kwargs, batch.get(target_key), batch.get(index_key))
    if isinstance(batch, (tuple, list)) and 1 <= len(batch) <= 3:
        items = list(batch) + [None] * (3 - len(batch))
        return Batch((items[0],), {}, items[1], items[2])
    raise CaptureError(
        f"cannot read a batch of type {type(batch).__name__}"
        + (f" with {len(batch)} items" if isinstance(batch, (tuple, list)) else "")
        + "; the default layouts are x, (x, y), (x, y, index) or a dict; describe yours with "
        "inputs=, target= and index= (positions, keys or callables)"
    )


def to_device(value: Any, device: torch.device | None) -> Any:
    """Move every tensor inside ``value`` (tuples, lists, dicts) to ``device``."""
    if device is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value


def as_index(index: Any, n: int, size: int | None, name: str) -> np.ndarray:
    """Sample indices as int64, checked to be 1-d, ``size`` long and inside ``[0, n)``."""
    array = torch.as_tensor(index).detach().cpu().numpy() if not isinstance(index, np.ndarray) else index
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise CaptureError(f"{name}: sample indices must be a 1-d integer tensor, got shape {array.shape} "
                           f"dtype {array.dtype}")
    if size is not None and len(array) != size:
        raise CaptureError(f"{name}: {len(array)} sample indices for a batch of {size} rows")
    if len(array) and (array.min() < 0 or array.max() >= n):
        raise CaptureError(f"{name}: sample index {int(array.max() if array.max() >= n else array.min())} is "
                           f"outside the store's {n} samples")
    return array.astype(np.int64, copy=False)


def check_labels(target: Any, stored: np.ndarray, name: str) -> None:
    """Raise when a batch's integer labels differ from the store's labels of the same samples."""
    if not isinstance(target, torch.Tensor) or target.ndim != 1 or target.dtype.is_floating_point \
            or target.dtype == torch.bool:
        return
    given = target.detach().cpu().numpy()
    if len(given) != len(stored) or not np.array_equal(given, stored):
        raise CaptureError(
            f"{name} yields labels that differ from the store's labels for the same samples "
            f"(e.g. {given[:5].tolist()} vs {stored[:5].tolist()}); the loader must follow the store's sample "
            "order or yield (x, y, index) batches"
        )


def is_shuffled(loader: Iterable) -> bool:
    """Whether a DataLoader (or anything with a ``sampler``) draws its samples at random."""
    for attr in ("sampler", "batch_sampler"):
        sampler = getattr(loader, attr, None)
        while sampler is not None:
            if isinstance(sampler, _RANDOM_SAMPLERS) or getattr(sampler, "shuffle", False) is True:
                return True
            sampler = getattr(sampler, "sampler", None)
    return False


def own_random_stream(loader: Iterable) -> None:
    """Give a DataLoader its own generator, so iterating it never draws from torch's global random stream.

    A ``DataLoader`` without a generator takes one number from the global
    stream each time it is iterated (its workers' base seed). The recorder's
    passes would then shift the user's dropout and shuffling, and a pass on the
    writer thread would do so at an unpredictable moment: adding a recorder
    must leave the training as it was.
    """
    if isinstance(loader, DataLoader) and loader.generator is None:
        loader.generator = torch.Generator().manual_seed(0)


class PassTracker:
    """Row bookkeeping of one pass over a loader: which samples each batch is, each seen exactly once.

    Parameters
    ----------
    loader : iterable
        The loader, to tell whether an unindexed loader is shuffled.
    n : int
        Samples in the split.
    name, split : str
        The loader's name and its split, for messages.
    """

    def __init__(self, loader: Iterable, n: int, name: str, split: str = "train") -> None:
        self.loader, self.n, self.name, self.split = loader, n, name, split
        self.seen = np.zeros(n, dtype=bool)
        self.position = 0

    def rows(self, index: Any, size: int) -> np.ndarray:
        """The sample indices of the next batch of ``size`` rows; raises on a repeat or an unordered loader."""
        if index is None:
            if self.position == 0 and is_shuffled(self.loader):
                raise CaptureError(
                    f"{self.name} shuffles its samples (random sampler) but its batches carry no indices; "
                    "use shuffle=False or yield (x, y, index) batches"
                )
            if self.position + size > self.n:
                raise CaptureError(f"{self.name} yielded more than the {self.n} samples of the store")
            rows = np.arange(self.position, self.position + size)
        else:
            rows = as_index(index, self.n, size, self.name)
            if len(np.unique(rows)) != len(rows) or self.seen[rows].any():
                repeated = rows[self.seen[rows]] if self.seen[rows].any() else rows[np.argmax(np.bincount(rows))]
                raise CaptureError(f"{self.name} yielded sample {int(np.ravel(repeated)[0])} twice in one pass")
        self.seen[rows] = True
        self.position += size
        return rows

    def check_complete(self) -> None:
        """Raise unless every sample was seen."""
        if not self.seen.all():
            raise CaptureError(
                f"{self.name} covered {int(self.seen.sum())} of the {self.n} {self.split} samples; it must yield every "
                "sample "
                "once per pass (no drop_last, no subset)"
            )


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
