"""A dataset wrapper that adds each sample's position to its item, so every batch says which samples it holds."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from timetravel.errors import TimetravelError

LABEL_KEYS = ("labels", "label", "target", "targets", "y")


class IndexedDataset(Dataset):
    """Wraps a map-style dataset so each item also carries its index.

    A tuple item ``(x, y)`` becomes ``(x, y, index)``, a dict item gets an
    ``"index"`` entry (``key``), and any other item ``x`` becomes
    ``(x, index)``. The default collate function (and Hugging Face's) turns the
    indices into an int64 tensor per batch, however the loader shuffles.

    Parameters
    ----------
    dataset : map-style dataset
        Anything with ``__len__`` and ``__getitem__(int)``.
    key : str, default="index"
        The entry added to dict items.

    Examples
    --------
    >>> from torch.utils.data import TensorDataset
    >>> ds = IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.tensor([1, 0, 1])))
    >>> ds[2][2], len(ds), ds.labels().tolist()
    (2, 3, [1, 0, 1])
    """

    def __init__(self, dataset: Any, key: str = "index") -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TimetravelError(
                f"IndexedDataset needs a map-style dataset (with __len__ and __getitem__), got {type(dataset).__name__}"
            )
        self.dataset = dataset
        self.key = key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        if isinstance(item, Mapping):
            return {**item, self.key: int(index)}
        if isinstance(item, (tuple, list)):
            return (*item, int(index))
        return (item, int(index))

    def labels(self) -> np.ndarray:
        """The label of every sample, as int64.

        Read from the dataset's ``targets`` or ``labels`` attribute, its label
        column (Hugging Face ``datasets``), a ``TensorDataset``'s second
        tensor, or else item by item.

        Raises
        ------
        TimetravelError
            An item holds no integer label (pass ``labels=`` to the callback).
        """
        ds = self.dataset
        for attr in ("targets", "labels"):
            values = getattr(ds, attr, None)
            if values is not None and not callable(values) and len(values) == len(ds):
                return _as_labels(values, f"{type(ds).__name__}.{attr}")
        columns = getattr(ds, "column_names", None)  # a Hugging Face datasets.Dataset
        key = next((k for k in LABEL_KEYS if columns is not None and k in columns), None)
        if key is not None:
            return _as_labels(ds[key], f"column {key!r}")
        tensors = getattr(ds, "tensors", None)
        if isinstance(tensors, tuple) and len(tensors) >= 2:
            return _as_labels(tensors[1], "TensorDataset.tensors[1]")
        return _as_labels([_item_label(ds[i], i) for i in range(len(ds))], "the dataset's items")


def _item_label(item: Any, i: int) -> Any:
    if isinstance(item, Mapping):
        key = next((k for k in LABEL_KEYS if k in item), None)
        if key is not None:
            return item[key]
    elif isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[1]
    raise TimetravelError(
        f"item {i} of the dataset holds no label (a (x, y) tuple or a dict with one of {', '.join(LABEL_KEYS)}); "
        "pass labels=... to the callback"
    )


def _as_labels(values: Any, where: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        array = values.detach().cpu().numpy()
    elif isinstance(values, np.ndarray):
        array = values
    else:
        try:
            array = np.array([int(v) for v in values], dtype=np.int64)
        except (TypeError, ValueError, RuntimeError):
            raise TimetravelError(f"{where}: labels must be integers; pass labels=... to the callback") from None
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise TimetravelError(f"{where}: labels must be 1-d integers, got {array.dtype} of shape {array.shape}")
    return array.astype(np.int64)
