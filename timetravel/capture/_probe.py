"""Hooks that take each sample's embedding and logits out of the model's own forward pass.

A :class:`Probe` puts a forward hook on the embedding layer (or, with no
layer, a pre-hook on the linear head, whose input is then the embedding) and
one on the model itself for the logits. It records only while active, so the
user's other forward passes (validation, inference) are left alone. Outputs
that are tuples or dicts (an LSTM's ``(output, (h, c))``, a Hugging Face
``ModelOutput``) are read with a selector, or by default: the logits are
``output.logits`` / ``output["logits"]`` or the first ``(B, K)`` tensor, the
embedding the first tensor with ``D`` values per sample.

Every tensor is copied when it is seen (a later in-place ReLU cannot change
it); from an accelerator the copy goes to pinned host memory without waiting,
and :meth:`Probe.take` returns an event to wait on before reading the rows.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import torch
from torch import nn

from timetravel.capture._batch import CaptureError

OutputSelector = Callable[[Any], Any] | int | str | None


def describe(value: Any, depth: int = 0) -> str:
    """A short description of a nested output: ``tuple(Tensor(8, 20, 64), dict(logits=Tensor(8, 3)))``."""
    if isinstance(value, torch.Tensor):
        return f"Tensor{tuple(value.shape)}"
    if depth > 3:
        return "..."
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k}={describe(v, depth + 1)}" for k, v in value.items())
        return f"{type(value).__name__}({inner})"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__}({', '.join(describe(v, depth + 1) for v in value)})"
    return type(value).__name__


def _tensors(value: Any):
    """Every tensor inside a nested output, depth first."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)


def _apply(selector: OutputSelector, value: Any, role: str) -> Any:
    if callable(selector):
        return selector(value)
    try:
        return value[selector]
    except (KeyError, IndexError, TypeError):
        raise CaptureError(f"{role}={selector!r} selects nothing in an output {describe(value)}") from None


def pick_logits(output: Any, n_classes: int, selector: OutputSelector = None) -> torch.Tensor:
    """The ``(B, K)`` logits inside a model's output."""
    if selector is not None:
        value = _apply(selector, output, "logits")
    elif isinstance(output, torch.Tensor):
        value = output
    elif getattr(output, "logits", None) is not None:
        value = output.logits
    elif isinstance(output, Mapping) and "logits" in output:
        value = output["logits"]
    else:
        value = next((t for t in _tensors(output) if t.ndim == 2 and t.shape[1] == n_classes), None)
    if not isinstance(value, torch.Tensor) or value.ndim != 2 or value.shape[1] != n_classes:
        raise CaptureError(
            f"the model's output {describe(output)} holds no (B, {n_classes}) logits tensor"
            + (f" (logits= selected {describe(value)})" if selector is not None else "")
            + "; pass logits= (a key, a position or a callable) to select it"
        )
    return value


def pick_embedding(output: Any, embedding_dim: int, selector: OutputSelector, layer_name: str) -> torch.Tensor:
    """The ``(B, D)`` embedding inside a layer's output (flattened after the batch dimension)."""
    if selector is not None:
        value = _apply(selector, output, "embedding")
    elif isinstance(output, torch.Tensor):
        value = output
    else:
        value = next((t for t in _tensors(output) if t.ndim >= 2 and t[0].numel() == embedding_dim), None)
    if not isinstance(value, torch.Tensor) or value.ndim < 1:
        raise CaptureError(
            f"layer {layer_name!r} returns {describe(output)}, with no tensor of {embedding_dim} values per sample; "
            "pass embedding= (a key, a position or a callable, e.g. embedding=lambda out: out[1][0][-1] for an "
            "LSTM's last hidden state) or hook another layer"
        )
    value = value.flatten(1) if value.ndim > 1 else value[:, None]
    if value.shape[1] != embedding_dim:
        raise CaptureError(f"layer {layer_name!r} outputs {value.shape[1]} features per sample, the store expects "
                           f"{embedding_dim} (its output: {describe(output)})")
    return value


def to_host(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A detached copy on the host; from an accelerator into pinned memory, without waiting."""
    tensor = tensor.detach()
    if tensor.device.type == "cpu":
        return tensor.to(dtype, copy=True)
    if tensor.device.type == "cuda":
        out = torch.empty(tensor.shape, dtype=dtype, pin_memory=True)
        out.copy_(tensor, non_blocking=True)
        return out
    return tensor.to("cpu", dtype)


class Rows(NamedTuple):
    """Embeddings and logits of one batch on the host; wait on ``ready`` (or None) before reading."""

    embedding: torch.Tensor
    logits: torch.Tensor
    ready: Any


class Probe:
    """Records the embedding and logits of the forward passes made while it is active.

    Parameters
    ----------
    model : nn.Module
        The module whose output holds the logits.
    layer : nn.Module or None
        Its output is the embedding; None: the input of ``head``.
    head : nn.Module or None
        The linear head (needed when ``layer`` is None).
    embedding_dim, n_classes : int
        D and K of the store.
    embedding_dtype : torch.dtype
        Host type of recorded embeddings (the store's).
    embedding, logits : selector, optional
        Pick the embedding out of the layer's output and the logits out of
        the model's (see the module docstring).
    layer_name : str
        For messages.
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None, head: nn.Module | None, *, embedding_dim: int,
                 n_classes: int, embedding_dtype: torch.dtype, embedding: OutputSelector = None,
                 logits: OutputSelector = None, layer_name: str = "") -> None:
        if layer is None and head is None:
            raise CaptureError("layer=None records the input of the linear head, but no head was found; "
                               "give layer= (the module whose output is the embedding)")
        self.model, self.layer, self.head = model, layer, head
        self.embedding_dim, self.n_classes, self.dtype = embedding_dim, n_classes, embedding_dtype
        self.embedding_selector, self.logits_selector = embedding, logits
        self.layer_name = layer_name if layer is not None else f"input of {layer_name or 'the head'}"
        self.active = False
        self._emb: list[torch.Tensor] = []
        self._logits: list[torch.Tensor] = []
        self._handles: list[Any] = []
        self.raw_output: Any = None  # the last model output seen (checks at construction read it)

    def attach(self) -> Probe:
        """Register the hooks (idempotent)."""
        if not self._handles:
            if self.layer is not None:
                self._handles.append(self.layer.register_forward_hook(self._on_layer))
            else:
                self._handles.append(self.head.register_forward_pre_hook(self._on_head_input))
            self._handles.append(self.model.register_forward_hook(self._on_output))
        return self

    def detach(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.active = False

    def start(self) -> None:
        """Start recording forward passes."""
        self._emb.clear()
        self._logits.clear()
        self.active = True

    def take(self) -> Rows:
        """Stop recording; the rows of the passes since :meth:`start` (several passes are concatenated)."""
        self.active = False
        emb, logits = self._emb[:], self._logits[:]
        self._emb.clear()
        self._logits.clear()
        if not logits:
            raise CaptureError("no forward pass of the model ran while the batch was being recorded")
        if len(emb) != len(logits):
            raise CaptureError(
                f"layer {self.layer_name!r} ran {len(emb)} times in {len(logits)} forward passes of the model; "
                "hook a layer that runs exactly once per pass"
            )
        emb_t = emb[0] if len(emb) == 1 else torch.cat(emb)
        logits_t = logits[0] if len(logits) == 1 else torch.cat(logits)
        if len(emb_t) != len(logits_t):
            raise CaptureError(f"layer {self.layer_name!r} gave {len(emb_t)} rows but the model {len(logits_t)} "
                               "logits; the embedding must have one row per sample")
        ready = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            ready = torch.cuda.Event()
            ready.record()
        return Rows(emb_t, logits_t, ready)

    def _on_layer(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.active:
            value = pick_embedding(output, self.embedding_dim, self.embedding_selector, self.layer_name)
            self._emb.append(to_host(value, self.dtype))

    def _on_head_input(self, module: nn.Module, inputs: Any) -> None:
        if self.active:
            value = pick_embedding(inputs[0], self.embedding_dim, None, self.layer_name)
            self._emb.append(to_host(value, self.dtype))

    def _on_output(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if self.active:
            self.raw_output = output
            self._logits.append(to_host(pick_logits(output, self.n_classes, self.logits_selector), torch.float32))
