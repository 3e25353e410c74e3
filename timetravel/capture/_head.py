"""The classification head of each epoch: the model's own linear head, found by itself, or a fitted surrogate.

The store keeps one linear map ``logits = embedding @ W.T + b`` per epoch, so
projections can classify any embedding without the user's code. When the
model's head is an ``nn.Linear`` from the embedding to the logits (alone or
inside an ``nn.Sequential`` with dropout, as tutorials write it), its weights
are copied; otherwise a least-squares surrogate from the embeddings to the
logits is fitted each epoch and its R^2 recorded.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from timetravel.capture._batch import CaptureError
from timetravel.capture._probe import Rows

logger = logging.getLogger("timetravel.capture")

# A linear head must reproduce the model's logits to this relative tolerance,
# otherwise something sits between head and output and a surrogate is fitted.
HEAD_RTOL = 1e-3
# Below this R^2 a fitted surrogate head is a poor stand-in for the model.
SURROGATE_WARN_R2 = 0.99


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


def find_linear_head(model: nn.Module, head: nn.Module | str | None, n_classes: int,
                     embedding_dim: int | None) -> tuple[str | None, nn.Linear | None]:
    """The ``nn.Linear`` that maps the embedding to the ``K`` logits, or ``(None, None)``.

    ``head`` may be that Linear, a module holding it (e.g. an
    ``nn.Sequential(nn.Dropout(0.5), nn.Linear(D, K))``: its last Linear with
    ``K`` outputs), or None: then the model's last Linear with ``K`` outputs
    (and ``D`` inputs, when known). A Linear whose input width is not ``D``
    cannot be the head of the recorded embedding: ``(None, None)`` is
    returned and a surrogate is fitted. The caller checks numerically that
    the Linear reproduces the logits.

    Raises
    ------
    CaptureError
        ``head`` names no module, or holds no Linear with ``K`` outputs.
    """
    if head is None:
        candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)
                      and m.out_features == n_classes and embedding_dim in (None, m.in_features)]
        return candidates[-1] if candidates else (None, None)
    name, module = resolve_module(model, head, "head")
    if isinstance(module, nn.Linear) and (module.out_features, module.in_features) != (n_classes, embedding_dim):
        raise CaptureError(
            f"head {name!r} is Linear({module.in_features}, {module.out_features}) but the store expects "
            f"embedding_dim={embedding_dim} and n_classes={n_classes}"
        )
    found = [(f"{name}.{n}" if name and n else name or n, m) for n, m in module.named_modules()
             if isinstance(m, nn.Linear) and m.out_features == n_classes]
    if not found:
        raise CaptureError(f"head {name!r} ({type(module).__name__}) holds no nn.Linear with {n_classes} outputs")
    head_name, linear = found[-1]
    if embedding_dim not in (None, linear.in_features):
        logger.warning(
            "head %r ends in %s, whose input is not the %d-wide recorded embedding; fitting a surrogate head "
            "(record the input of that Linear with layer=None to keep the model's own head)",
            name, linear, embedding_dim,
        )
        return None, None
    return head_name, linear


def linear_weights(linear: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    """Copies of a Linear's weight ``(K, D)`` and bias ``(K,)`` as float32 arrays."""
    with torch.no_grad():
        weight = linear.weight.detach().to("cpu", torch.float32).numpy().copy()
        if linear.bias is None:
            bias = np.zeros(linear.out_features, np.float32)
        else:
            bias = linear.bias.detach().to("cpu", torch.float32).numpy().copy()
    return weight, bias


def head_reproduces(weights: tuple[np.ndarray, np.ndarray], emb: torch.Tensor, logits: torch.Tensor) -> bool:
    """Whether ``emb @ W.T + b`` matches the model's logits (eval mode, one batch)."""
    emb, logits = emb.to(torch.float32), logits.to(torch.float32)
    expected = emb @ torch.from_numpy(weights[0]).T + torch.from_numpy(weights[1])
    tol = HEAD_RTOL * (1 + float(logits.abs().max())) if logits.numel() else HEAD_RTOL
    return bool(torch.allclose(expected, logits, rtol=HEAD_RTOL, atol=tol))


class LeastSquares:
    """Streaming least squares ``Y ~ [X, 1] @ B`` with its R^2, from sufficient statistics."""

    def __init__(self, d: int, k: int) -> None:
        self.xtx = np.zeros((d + 1, d + 1))
        self.xty = np.zeros((d + 1, k))
        self.y_sum = np.zeros(k)
        self.y_sq = 0.0
        self.n = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add rows ``x`` (B, D) with targets ``y`` (B, K)."""
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
        """Weight ``(K, D)`` and bias ``(K,)`` of the fit."""
        # a tiny ridge keeps rank-deficient embeddings (dead ReLUs) solvable
        ridge = 1e-8 * max(np.trace(self.xtx), 1.0) / len(self.xtx)
        beta = np.linalg.solve(self.xtx + ridge * np.eye(len(self.xtx)), self.xty)
        return beta[:-1].T, beta[-1]

    def r2(self, weight: np.ndarray, bias: np.ndarray) -> float:
        """Coefficient of determination of ``(weight, bias)`` on the rows added."""
        beta = np.vstack([weight.T, bias[None, :]])
        sse = self.y_sq - 2.0 * float((beta * self.xty).sum()) + float((beta * (self.xtx @ beta)).sum())
        sst = self.y_sq - float((self.y_sum**2).sum()) / max(self.n, 1)
        return 1.0 - max(sse, 0.0) / sst if sst > 0 else 1.0


class HeadRecorder:
    """The head recorded each epoch: the model's own linear head when it gives the logits, else a surrogate.

    Parameters
    ----------
    model : nn.Module
    head : nn.Module, str or None
        As for :class:`~timetravel.capture.Recorder` (see :func:`find_linear_head`).
    n_classes, embedding_dim : int
        K and D of the store.
    layer_name : str or None
        The embedding layer (None: the head's input), for messages.

    Attributes
    ----------
    name : str or None
        Dotted name of the linear head found.
    linear : nn.Linear or None
        The head whose weights are recorded; None once a surrogate is fitted instead.
    checked : bool
        Whether :meth:`check` has compared it with the model's logits.
    """

    def __init__(self, model: nn.Module, head: nn.Module | str | None, *, n_classes: int, embedding_dim: int,
                 layer_name: str | None) -> None:
        self.name, self.linear = find_linear_head(model, head, n_classes, embedding_dim)
        self.n_classes, self.embedding_dim, self.layer_name = n_classes, embedding_dim, layer_name
        self.checked = False
        self._warned = False

    def check(self, rows: Rows) -> None:
        """Keep the linear head only if it reproduces the logits of one eval batch from its embedding."""
        self.checked = True
        if self.linear is None or head_reproduces(linear_weights(self.linear), rows.embedding, rows.logits):
            return
        logger.warning("head %r does not reproduce the model's logits from the embedding of layer %r; "
                       "recording a least-squares surrogate head instead", self.name, self.layer_name)
        if self.layer_name is None:
            raise CaptureError(f"layer=None records the input of head {self.name!r}, but that head does not give "
                               "the model's logits; give the embedding layer")
        self.linear = None

    def in_copy(self, model: nn.Module) -> nn.Linear | None:
        """The linear head's counterpart in a copy of the model (None when a surrogate is fitted)."""
        return dict(model.named_modules())[self.name] if self.linear is not None else None

    def new_fit(self) -> LeastSquares | None:
        """A surrogate fit to fill with one epoch's rows, or None when the model's linear head is recorded."""
        return LeastSquares(self.embedding_dim, self.n_classes) if self.linear is None else None

    def solve(self, fit: LeastSquares, epoch: int) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, float]]:
        """The surrogate head of one epoch and its ``head_r2``; logged once, and whenever the fit is poor."""
        weights = fit.solve()
        r2 = fit.r2(*weights)
        if not self._warned or r2 < SURROGATE_WARN_R2:
            logger.warning(
                "epoch %d: no linear head recorded from the model (head=%r); fitted a least-squares surrogate "
                "from layer %r to the logits with R^2 = %.4f (stored as head_r2 in the history)",
                epoch, self.name, self.layer_name, r2,
            )
            self._warned = True
        return weights, {"head_r2": r2}
