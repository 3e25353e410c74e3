"""Subject runs of the kinds users make, recorded through the public ``Recorder`` from a plain training loop.

Three generated tasks, each with the model a user would pick for it:

* ``shapes`` -- 3 x 32 x 32 colour images of five shapes (disc, ring, square,
  triangle, cross) in two colour families (warm, cool): 10 classes. Position,
  scale, rotation, tint, background and pixel noise vary, so the class is
  neither the mean colour nor a pixel template: a small CNN learns it, a
  linear model on pixels does not. Model: three convolution blocks, global
  pooling, a 64-d embedding and a linear head.
* ``text`` -- token sequences (32 tokens of a 2,000-token vocabulary) in 8
  topics. A document carries a few keywords of its topic among Zipf-distributed
  filler, and sometimes keywords of a neighbouring topic, so topic pairs are
  confusable. Model: ``nn.EmbeddingBag`` (mean) and one hidden layer.
* ``tabular`` -- scikit-learn's ``make_classification`` (24 standardised
  columns, 6 classes of two clusters each). Model: a two-hidden-layer MLP.

:func:`record_run` trains one of them on labels corrupted by
:func:`timetravel.noise.inject_noise` with Adam at a constant learning rate,
feeding each batch's logits to ``Recorder.record_train_margins`` (AUM) and
calling ``Recorder.capture(epoch)`` after every epoch, exactly as the README
shows. A constant learning rate means the first ``e`` epochs of a long run are
an ``e``-epoch run, so ``snapshots`` copies the store after those epochs: a
short and a long training cost one training.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

N_TRAIN = 3000
N_TEST = 1000
EMBEDDING_DIM = 64


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class SubjectData:
    """One generated task: inputs, clean labels and what the noise injection compares classes by."""

    x: np.ndarray  # float32 inputs, or int64 token ids
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    similarity_features: np.ndarray  # (N, F) float: class centroids on these say which classes look alike
    thumbs: np.ndarray | None = None


_SHAPES = ("disc", "ring", "square", "triangle", "cross")
_HUES = {"warm": (-0.06, 0.11), "cool": (0.52, 0.70)}


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(N, 3) RGB in [0, 1] of N hue / saturation / value triples."""
    h = np.mod(h, 1.0) * 6.0
    i = np.floor(h).astype(int) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    table = np.stack([np.stack(c, axis=1) for c in
                      ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))], axis=0)
    return table[i, np.arange(len(h))]


def _shape_masks(shape: np.ndarray, cx, cy, scale, angle, size: int) -> np.ndarray:
    """(N, size, size) float masks of the shapes (anti-aliased by 2 x 2 supersampling)."""
    offsets = (0.25, 0.75)
    masks = np.zeros((len(shape), size, size), dtype=np.float32)
    grid = np.arange(size, dtype=np.float32)
    for oy in offsets:
        for ox in offsets:
            gx = (grid[None, None, :] + ox - cx[:, None, None]) / scale[:, None, None]
            gy = (grid[None, :, None] + oy - cy[:, None, None]) / scale[:, None, None]
            c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
            u, v = c * gx + s * gy, -s * gx + c * gy
            r = np.sqrt(u**2 + v**2)
            inside = np.select(
                [shape[:, None, None] == k for k in range(len(_SHAPES))],
                [r <= 1.0,
                 (r <= 1.0) & (r >= 0.55),
                 np.maximum(np.abs(u), np.abs(v)) <= 0.8,
                 (v >= -0.5) & (v <= 1.0 - math.sqrt(3) * np.abs(u)),
                 ((np.abs(u) <= 0.3) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 1.0))],
            )
            masks += inside.astype(np.float32) / 4
    return masks


def make_shapes(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``n`` shape images ``(n, 3, size, size)`` float32 in [0, 1] and their labels (shape * 2 + colour)."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % (2 * len(_SHAPES)))
    shape, family = y // 2, y % 2
    scale = rng.uniform(5.5, 11.0, n)
    cx = rng.uniform(scale * 0.9, size - scale * 0.9)
    cy = rng.uniform(scale * 0.9, size - scale * 0.9)
    angle = rng.uniform(0, 2 * np.pi, n)
    lo = np.array([_HUES["warm"][0], _HUES["cool"][0]])[family]
    hi = np.array([_HUES["warm"][1], _HUES["cool"][1]])[family]
    fg = _hsv_to_rgb(rng.uniform(lo, hi), rng.uniform(0.5, 1.0, n), rng.uniform(0.7, 1.0, n))
    bg = _hsv_to_rgb(rng.uniform(0, 1, n), rng.uniform(0.0, 0.3, n), rng.uniform(0.05, 0.35, n))
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for start in range(0, n, 1000):
        sl = slice(start, min(start + 1000, n))
        mask = _shape_masks(shape[sl], cx[sl], cy[sl], scale[sl], angle[sl], size)[:, None]
        img = mask * fg[sl, :, None, None] + (1 - mask) * bg[sl, :, None, None]
        img += rng.normal(0, 0.1, img.shape)  # sensor noise
        out[sl] = np.clip(img, 0, 1)
    return out, y.astype(np.int64)


def _shapes_data(seed: int) -> SubjectData:
    x, y = make_shapes(N_TRAIN + N_TEST, seed)
    names = [f"{c} {s}" for s in _SHAPES for c in _HUES]
    thumbs = np.round(np.moveaxis(x[:N_TRAIN], 1, -1) * 255).astype(np.uint8)
    return SubjectData(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], names,
                       x[:N_TRAIN].reshape(N_TRAIN, -1), thumbs)


VOCAB = 2000
SEQ_LEN = 32
N_TOPICS = 8
_KEYWORDS = 12


def make_text(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` token sequences ``(n, SEQ_LEN)`` int64 and their topics.

    The topic keyword sets are fixed (seed 0); ``seed`` draws the documents.
    """
    world = np.random.default_rng(0)
    keywords = world.choice(np.arange(1, VOCAB), size=(N_TOPICS, _KEYWORDS), replace=False)
    filler_p = 1.0 / np.arange(1, VOCAB + 1) ** 1.1
    filler_p /= filler_p.sum()
    filler_ids = world.permutation(VOCAB)
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % N_TOPICS)
    tokens = filler_ids[rng.choice(VOCAB, size=(n, SEQ_LEN), p=filler_p)]
    n_own = rng.integers(1, 5, n)  # 1-4 keywords of the topic
    n_near = rng.binomial(2, 0.35, n)  # and sometimes up to 2 of the next topic's
    for i in range(n):
        pos = rng.choice(SEQ_LEN, n_own[i] + n_near[i], replace=False)
        words = np.concatenate([rng.choice(keywords[y[i]], n_own[i]),
                                rng.choice(keywords[(y[i] + 1) % N_TOPICS], n_near[i])])
        tokens[i, pos] = words
    return tokens.astype(np.int64), y.astype(np.int64)


def _text_data(seed: int) -> SubjectData:
    x, y = make_text(N_TRAIN + N_TEST, seed)
    bags = np.zeros((N_TRAIN, VOCAB), dtype=np.float32)
    np.add.at(bags, (np.repeat(np.arange(N_TRAIN), SEQ_LEN), x[:N_TRAIN].ravel()), 1.0)
    return SubjectData(x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:], [f"topic {t}" for t in range(N_TOPICS)],
                       bags)


def _tabular_data(seed: int) -> SubjectData:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=N_TRAIN + N_TEST, n_features=24, n_informative=12, n_redundant=4,
                               n_classes=6, n_clusters_per_class=2, class_sep=1.2, flip_y=0.0, random_state=seed)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)
    return SubjectData(x[:N_TRAIN], y[:N_TRAIN].astype(np.int64), x[N_TRAIN:], y[N_TRAIN:].astype(np.int64),
                       [f"class {c}" for c in range(6)], x[:N_TRAIN])


# --------------------------------------------------------------------------- models (as a user writes them)


def _shapes_model(n_classes: int):
    from torch import nn

    def block(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]

    class ShapesCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(64, EMBEDDING_DIM), nn.ReLU())
            self.fc = nn.Linear(EMBEDDING_DIM, n_classes)

        def forward(self, x):
            return self.fc(self.body(x))

    return ShapesCNN()


def _text_model(n_classes: int):
    from torch import nn

    class BagOfWords(nn.Module):
        def __init__(self):
            super().__init__()
            self.bag = nn.EmbeddingBag(VOCAB, 64, mode="mean")
            self.body = nn.Sequential(nn.Linear(64, EMBEDDING_DIM), nn.ReLU())
            self.fc = nn.Linear(EMBEDDING_DIM, n_classes)

        def forward(self, tokens):
            return self.fc(self.body(self.bag(tokens)))

    return BagOfWords()


def _tabular_model(n_classes: int):
    from torch import nn

    class TabularMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(24, 128), nn.ReLU(), nn.Linear(128, EMBEDDING_DIM), nn.ReLU())
            self.fc = nn.Linear(EMBEDDING_DIM, n_classes)

        def forward(self, x):
            return self.fc(self.body(x))

    return TabularMLP()


@dataclass(frozen=True)
class Subject:
    """A task, the model for it and how it is trained."""

    name: str
    model_kind: str
    data: Callable[[int], SubjectData]
    model: Callable[[int], object]
    lr: float
    batch_size: int = 64


SUBJECTS: dict[str, Subject] = {
    s.name: s
    for s in (
        Subject("shapes", "cnn", _shapes_data, _shapes_model, lr=1e-3),
        Subject("text", "embedding-bag", _text_data, _text_model, lr=3e-3),
        Subject("tabular", "mlp", _tabular_data, _tabular_model, lr=1e-3),
    )
}


# --------------------------------------------------------------------------- recording


def run_name(subject: str, epochs: int, kind: str, rate: float, seed: int) -> str:
    """Directory name of a cached subject run."""
    return f"{subject}-e{epochs:02d}-{kind}-{int(round(rate * 100)):02d}-s{seed}"


def record_run(subject: str, kind: str, rate: float, seed: int, epochs: int, out: Path, *,
               snapshots: Sequence[int] = (), threads: int = 1) -> dict[int, Path]:
    """Train a subject on noisy labels with a plain PyTorch loop, recording every epoch.

    Parameters
    ----------
    subject : str
        Key of :data:`SUBJECTS`.
    kind, rate : str, float
        Label noise (``symmetric``, ``pairflip``, ``class-conditional``) and its rate.
    seed : int
        Seed of the data, the noise, the initial weights and the batch order.
    epochs : int
        Epochs of the longest run.
    out : Path
        Directory holding the runs, named by :func:`run_name`.
    snapshots : sequence of int
        Shorter trainings to keep: after that many epochs the store is copied
        to its own run directory.
    threads : int
        torch threads.

    Returns
    -------
    dict of int to Path
        Run directory per number of epochs (``epochs`` and each snapshot).
    """
    import torch

    from timetravel.capture import Recorder, tensor_loader
    from timetravel.noise import class_similarity, inject_noise
    from timetravel.store import RunWriter

    spec = SUBJECTS[subject]
    data = spec.data(seed)
    k = len(data.class_names)
    canonical = "matrix" if kind == "class-conditional" else kind
    similarity = class_similarity(data.similarity_features, data.y, k) if canonical == "matrix" else None
    noisy = inject_noise(data.y, k, canonical, rate, seed=seed, similarity=similarity)
    paths = {e: out / run_name(subject, e, kind, rate, seed) for e in sorted({*snapshots, epochs})}
    path = paths[epochs]
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    model = spec.model(k)
    writer = RunWriter.create(
        path, labels=noisy.labels, n_classes=k, embedding_dim=EMBEDDING_DIM, class_names=data.class_names,
        dataset=subject, true_labels=data.y, noise=noisy.info, thumbs=data.thumbs, heldout_labels=data.y_test,
        extra={"subject": {"name": subject, "model": spec.model_kind, "lr": spec.lr, "batch_size": spec.batch_size,
                           "epochs": epochs, "seed": seed}},
        overwrite=True,
    )
    x, y = torch.from_numpy(data.x), torch.from_numpy(noisy.labels)
    train = tensor_loader(x, y, batch_size=spec.batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(seed), with_index=True)
    recorder = Recorder(model, "body", writer, tensor_loader(x, y, batch_size=500),
                        heldout_loader=tensor_loader(torch.from_numpy(data.x_test), torch.from_numpy(data.y_test),
                                                     batch_size=500), head="fc")

    def snapshot(epoch: int) -> None:
        if epoch + 1 in paths and epoch + 1 != epochs:
            _copy_run(path, paths[epoch + 1])

    _train(model, train, recorder, spec.lr, epochs, path.name, after_epoch=snapshot)
    return paths


def _train(model, loader, recorder, lr: float, epochs: int, name: str, *, after_epoch=None) -> None:
    """The user's loop: Adam at a constant learning rate, margins fed to the recorder, one capture per epoch."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for epoch in range(epochs):
        model.train()
        total, count = 0.0, 0
        for xb, yb, ib in loader:
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            recorder.record_train_margins(ib, logits, yb)
            total, count = total + loss.item() * len(yb), count + len(yb)
        metrics = recorder.capture(epoch, metrics={"train_loss": total / max(count, 1)})
        logger.info("%s epoch %d: %s", name, epoch, {m: round(v, 3) for m, v in metrics.items()})
        if after_epoch is not None:
            after_epoch(epoch)


def _copy_run(src: Path, dst: Path) -> None:
    """Copy a run directory (temp copy + rename, so a half-copied run never looks complete)."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


# --------------------------------------------------------------------------- active learning


def pool_run_name(subject: str, labelled: float, seed: int, epochs: int) -> str:
    """Directory name of a cached active-learning run."""
    return f"pool-{subject}-l{int(round(labelled * 100)):02d}-e{epochs:02d}-s{seed}"


def record_pool_run(subject: str, labelled: float, seed: int, epochs: int, out: Path, *, threads: int = 1) -> Path:
    """Train a subject on a labelled share of its training set, recording the rest as the unlabelled pool.

    DeepDebugger's active-learning protocol: ``labelled`` of the training
    samples (stratified, clean labels) train the model; the others form the
    pool, recorded every epoch beside them (their true labels kept for the
    benchmark only); the test set is the labelled held-out set.

    Returns
    -------
    Path
        The run directory (:func:`pool_run_name`).
    """
    import torch

    from timetravel.capture import Recorder, tensor_loader
    from timetravel.store import RunWriter

    spec = SUBJECTS[subject]
    data = spec.data(seed)
    k = len(data.class_names)
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(data.y), dtype=bool)
    for c in range(k):
        members = rng.permutation(np.flatnonzero(data.y == c))
        chosen[members[: max(1, int(round(labelled * len(members))))]] = True
    train, pool = np.flatnonzero(chosen), np.flatnonzero(~chosen)
    path = out / pool_run_name(subject, labelled, seed, epochs)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    model = spec.model(k)
    writer = RunWriter.create(
        path, labels=data.y[train], n_classes=k, embedding_dim=EMBEDDING_DIM, class_names=data.class_names,
        dataset=subject, heldout_labels=data.y_test, n_pool=len(pool), pool_true_labels=data.y[pool],
        thumbs=None if data.thumbs is None else data.thumbs[train],
        pool_thumbs=None if data.thumbs is None else data.thumbs[pool],
        extra={"subject": {"name": subject, "model": spec.model_kind, "lr": spec.lr, "batch_size": spec.batch_size,
                           "epochs": epochs, "seed": seed, "labelled": labelled}},
        overwrite=True,
    )
    x, y = torch.from_numpy(data.x[train]), torch.from_numpy(data.y[train])
    loader = tensor_loader(x, y, batch_size=spec.batch_size, shuffle=True,
                           generator=torch.Generator().manual_seed(seed), with_index=True)
    recorder = Recorder(model, "body", writer, tensor_loader(x, y, batch_size=500), head="fc",
                        heldout_loader=tensor_loader(torch.from_numpy(data.x_test), torch.from_numpy(data.y_test),
                                                     batch_size=500),
                        pool_loader=tensor_loader(torch.from_numpy(data.x[pool]), batch_size=500))
    _train(model, loader, recorder, spec.lr, epochs, path.name)
    return path
