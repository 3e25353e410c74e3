"""Bundled subject models: small classifiers whose training timetravel records.

Every model is ``head(features(x))``: ``features`` maps an image batch to the
``(B, D)`` penultimate embedding and ``head`` is the ``nn.Linear`` classifier.
The attribute ``embedding_layer`` names the module to hook (``"features"``), so
:class:`timetravel.capture.Recorder` can be pointed at any of them the same way::

    model = make_model("mlp", (1, 8, 8), n_classes=10)
    Recorder(model, model.embedding_layer, ..., head=model.head)
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from timetravel.errors import TimetravelError

MODEL_NAMES = ("mlp", "cnn", "resnet")


class ModelError(TimetravelError, ValueError):
    """A model was asked for with an unknown name or unusable shape."""


def inference_batch_size(model: nn.Module) -> int:
    """A batch size for inference passes (eval-pass capture, accuracy) that is fast on a CPU.

    Large batches are slower per sample once a layer's activations leave the cache:
    measured on 1 thread, a CNN on 28x28 images takes 0.61 ms per sample at batch 64 and
    1.28 ms at 2,048, a small ResNet on 3x32x32 0.89 and 2.71 ms, an MLP 2.0 us at 256 and
    4.2 us at 2,048. Convolutional models get 64, others 256.

    Parameters
    ----------
    model : nn.Module

    Returns
    -------
    int
    """
    convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
    return 64 if convolutional else 256


class SubjectModel(nn.Module):
    """A classifier split into an embedding network and a linear head.

    Parameters
    ----------
    features : nn.Module
        Maps inputs to ``(B, embedding_dim)`` embeddings.
    embedding_dim : int
        Width D of the embedding.
    n_classes : int
        Number of classes K.
    name : str
        Name of the architecture, for manifests and logs.

    Attributes
    ----------
    embedding_layer : str
        Dotted name of the module whose output is the embedding (``"features"``).
    head : nn.Linear
        The ``(K, D)`` classification head.
    """

    embedding_layer = "features"

    def __init__(self, features: nn.Module, embedding_dim: int, n_classes: int, name: str = "custom") -> None:
        super().__init__()
        self.name = name
        self.features = features
        self.head = nn.Linear(embedding_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` of a batch."""
        return self.head(self.features(x))


def _mlp_features(in_shape: Sequence[int], embedding_dim: int, hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(in_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, embedding_dim),
        nn.ReLU(),
    )


def _cnn_features(in_shape: Sequence[int], embedding_dim: int, width: int) -> nn.Module:
    channels = in_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        nn.ReLU(),
        # a fixed 4x4 grid makes the same network fit 8x8 digits and 28x28 MNIST
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(2 * width * 16, embedding_dim),
        nn.ReLU(),
    )


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _resnet_features(in_shape: Sequence[int], embedding_dim: int, width: int) -> nn.Module:
    widths = (width, 2 * width, 4 * width)
    layers: list[nn.Module] = [
        nn.Conv2d(in_shape[0], width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
    ]
    c_in = width
    for i, c_out in enumerate(widths):
        layers.append(_BasicBlock(c_in, c_out, stride=1 if i == 0 else 2))
        c_in = c_out
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(c_in, embedding_dim),
        nn.ReLU(),
    ]
    return nn.Sequential(*layers)


_BUILDERS = {"mlp": (_mlp_features, 512), "cnn": (_cnn_features, 32), "resnet": (_resnet_features, 32)}


def auto_model_name(in_shape: Sequence[int]) -> str:
    """The bundled model that suits inputs of shape ``(C, H, W)``.

    Colour images get the ResNet, small grey images (up to 16x16, e.g. digits
    and synthetic data) the MLP, larger grey images (MNIST) the CNN.
    """
    channels, height, width = _check_shape(in_shape)
    if channels == 3:
        return "resnet"
    return "mlp" if height * width <= 256 else "cnn"


def _check_shape(in_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ModelError(f"in_shape must be (channels, height, width) of positive sizes, got {tuple(in_shape)}")
    return shape  # type: ignore[return-value]


def make_model(
    name: str,
    in_shape: Sequence[int],
    n_classes: int,
    embedding_dim: int = 64,
    *,
    width: int | None = None,
) -> SubjectModel:
    """Build a bundled subject model.

    Parameters
    ----------
    name : {"auto", "mlp", "cnn", "resnet"}
        ``"mlp"``: two hidden layers; ``"cnn"``: three convolutions for
        MNIST-like grey images; ``"resnet"``: a compact three-stage ResNet for
        CIFAR-like colour images; ``"auto"`` picks by input shape
        (:func:`auto_model_name`).
    in_shape : tuple of int
        ``(C, H, W)`` of one input.
    n_classes : int
        Number of classes K.
    embedding_dim : int, default=64
        Width D of the penultimate embedding (use 512 for scale tests).
    width : int, optional
        Hidden width (MLP units, or base channel count of the CNN/ResNet);
        defaults to 512 for the MLP and 32 otherwise.

    Returns
    -------
    SubjectModel
        With ``model.embedding_layer == "features"`` and ``model.head`` an
        ``nn.Linear(embedding_dim, n_classes)``.

    Raises
    ------
    ModelError
        Unknown name or non-positive sizes.

    Examples
    --------
    >>> model = make_model("mlp", (1, 8, 8), n_classes=10, embedding_dim=32)
    >>> model(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    shape = _check_shape(in_shape)
    if name == "auto":
        name = auto_model_name(shape)
    if name not in _BUILDERS:
        raise ModelError(f"model must be 'auto' or one of {MODEL_NAMES}, got {name!r}")
    for arg, value in (("n_classes", n_classes), ("embedding_dim", embedding_dim), ("width", width or 1)):
        if int(value) < 1:
            raise ModelError(f"{arg} must be a positive integer, got {value}")
    builder, default_width = _BUILDERS[name]
    features = builder(shape, int(embedding_dim), int(width or default_width))
    return SubjectModel(features, int(embedding_dim), int(n_classes), name=name)
