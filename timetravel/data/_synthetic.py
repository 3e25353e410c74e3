"""Synthetic images: Gaussian class clusters in a latent space, rendered by a random decoder.

Each class is a Gaussian cluster in a small latent space; a fixed random
two-layer decoder paints every latent point as a smooth grey-level image,
and pixel noise is added before quantising to uint8. Clusters overlap a
little, so a classifier can learn the task but not perfectly. The "world"
(class centres and decoder) depends only on ``seed``, ``n_classes`` and
``image_size``; train and test samples come from separate random streams, so
a bigger ``n_samples`` draws more of the same distribution.

Generation runs in chunks: memory stays proportional to the output
(N x H x W bytes of thumbnails plus 4 x N x H x W bytes of ``x``), so a
million 8x8 images take about 320 MB.
"""

from __future__ import annotations

import os

import numpy as np

from timetravel.data._base import DatasetSplits, build_splits, check_n_samples
from timetravel.data._digits import check_fraction
from timetravel.errors import DatasetError

LATENT_DIM = 8
HIDDEN_DIM = 32
PIXEL_NOISE = 0.35  # standard deviation of the noise added to pixel logits
_CHUNK = 65536


class _World:
    """Class centres and decoder weights drawn once from a seed."""

    def __init__(self, rng: np.random.Generator, n_classes: int, image_size: int, class_sep: float) -> None:
        self.image_size = image_size
        self.means = rng.normal(size=(n_classes, LATENT_DIM)) * class_sep
        # Per-class spread, so some classes are tighter than others.
        self.scales = rng.uniform(0.8, 1.2, size=n_classes)
        self.w1 = rng.normal(size=(LATENT_DIM, HIDDEN_DIM)) * (1.5 / np.sqrt(LATENT_DIM))
        self.b1 = rng.normal(size=HIDDEN_DIM) * 0.5
        self.w2 = _smooth_patterns(rng, HIDDEN_DIM, image_size) * (3.0 / np.sqrt(HIDDEN_DIM))
        self.b2 = -1.0  # dark background, like the real digit datasets

    def render(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """uint8 images ``(n, H, W)`` of fresh latent samples of the given classes."""
        z = self.means[labels] + rng.normal(size=(len(labels), LATENT_DIM)) * self.scales[labels, None]
        logits = np.tanh(z @ self.w1 + self.b1) @ self.w2 + self.b2
        logits += rng.normal(size=logits.shape) * PIXEL_NOISE
        pixels = 255.0 / (1.0 + np.exp(-logits))
        return np.round(pixels).astype(np.uint8).reshape(-1, self.image_size, self.image_size)


def _smooth_patterns(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """``count`` random images, Gaussian-smoothed so they look like strokes, flattened to rows of unit RMS."""
    grid = np.arange(size)
    sigma = max(size / 6.0, 0.75)
    kernel = np.exp(-0.5 * ((grid[:, None] - grid[None, :]) / sigma) ** 2)
    kernel /= kernel.sum(axis=1, keepdims=True)
    noise = rng.normal(size=(count, size, size))
    patterns = (kernel @ noise @ kernel.T).reshape(count, -1)
    patterns -= patterns.mean(axis=1, keepdims=True)
    return patterns / np.sqrt(np.mean(patterns**2, axis=1, keepdims=True))


def _generate(world: _World, n: int, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    # Balanced classes in random order: every split is stratified by construction.
    labels = rng.permutation(np.arange(n, dtype=np.int64) % n_classes)
    images = np.empty((n, world.image_size, world.image_size), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        images[start : start + _CHUNK] = world.render(labels[start : start + _CHUNK], rng)
    return images, labels


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DatasetError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def load_synthetic(
    *,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    n_samples: int | None = None,
    n_classes: int = 10,
    image_size: int = 8,
    test_fraction: float = 0.2,
    class_sep: float = 1.6,
) -> DatasetSplits:
    """Generate a synthetic image classification dataset.

    ``n_samples`` (default 2,000) is the size of the training split; the test
    split holds ``test_fraction`` of all generated samples. ``class_sep``
    scales the distance between class centres (smaller = more overlap).
    ``root`` is not used.
    """
    n_train = 2000 if n_samples is None else check_n_samples(n_samples)
    n_classes = _check_int("n_classes", n_classes, 2)
    image_size = _check_int("image_size", image_size, 2)
    test_fraction = check_fraction(test_fraction)
    if isinstance(class_sep, bool) or not isinstance(class_sep, (int, float)) or not class_sep > 0:
        raise DatasetError(f"class_sep must be a positive number, got {class_sep!r}")
    n_test = max(1, round(n_train * test_fraction / (1.0 - test_fraction)))
    world_rng, train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    world = _World(world_rng, n_classes, image_size, float(class_sep))
    train = _generate(world, n_train, n_classes, train_rng)
    test = _generate(world, n_test, n_classes, test_rng)
    return build_splits("synthetic", train, test, [f"class {k}" for k in range(n_classes)])
