"""Shared test setup: numba cache location and small deterministic run stores."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

# Before anything imports numba (umap-learn): compiled functions are cached in
# the checkout, so only the first test session pays the compile time.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba_cache"))
# The benchmarks' own modules (rankers.py, projection_baselines.py) are imported the way their scripts do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from timetravel.store import RunStore, RunWriter  # noqa: E402


def build_run(
    path: Path,
    *,
    n_samples: int = 60,
    n_classes: int = 3,
    embedding_dim: int = 8,
    n_heldout: int = 12,
    epochs: int = 3,
    noise_rate: float = 0.1,
    seed: int = 0,
    **create_kw,
) -> RunStore:
    """Write a small random run store (noisy labels, held-out set, thumbnails, margins) and open it.

    ``create_kw`` goes to :meth:`RunWriter.create` (e.g. ``overwrite=True``).

    Embeddings drift towards class centres over the epochs, so there is some
    structure for projections and detectors; the logits come from the stored
    linear head, as in a real run.
    """
    rng = np.random.default_rng(seed)
    true = rng.integers(0, n_classes, n_samples)
    labels = true.copy()
    flipped = rng.choice(n_samples, int(round(noise_rate * n_samples)), replace=False)
    labels[flipped] = (labels[flipped] + 1) % n_classes
    held_labels = rng.integers(0, n_classes, n_heldout) if n_heldout else None
    writer = RunWriter.create(
        path,
        labels=labels,
        n_classes=n_classes,
        embedding_dim=embedding_dim,
        true_labels=true,
        noise={"kind": "symmetric", "rate": noise_rate, "seed": seed},
        thumbs=rng.integers(0, 256, (n_samples, 8, 8), dtype=np.uint8),
        heldout_labels=held_labels,
        dataset="toy",
        **create_kw,
    )
    centres = rng.normal(size=(n_classes, embedding_dim)) * 3
    head_w = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    head_b = np.zeros(n_classes)
    for e in range(epochs):
        pull = (e + 1) / epochs
        emb = rng.normal(size=(n_samples, embedding_dim)) + pull * centres[labels]
        logits = emb @ head_w.T + head_b
        heldout = None
        if n_heldout:
            h_emb = rng.normal(size=(n_heldout, embedding_dim)) + pull * centres[held_labels]
            heldout = (h_emb, h_emb @ head_w.T + head_b)
        margin = logits[np.arange(n_samples), labels] - np.where(
            np.eye(n_classes, dtype=bool)[labels], -np.inf, logits
        ).max(axis=1)
        writer.write_epoch(
            e,
            emb,
            logits,
            head=(head_w, head_b),
            train_margin=margin,
            heldout=heldout,
            metrics={"train_loss": 1.0 / (e + 1), "train_acc": pull, "test_acc": pull},
        )
    return RunStore(path)


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., RunStore]:
    """Factory: ``make_run(name="run", **build_run_kwargs)`` writes a small store under tmp_path."""

    def _make(name: str = "run", **kwargs) -> RunStore:
        return build_run(tmp_path / name, **kwargs)

    return _make


@pytest.fixture
def tiny_run(make_run) -> RunStore:
    """A 60-sample, 3-class, 8-d, 3-epoch run store with noise, held-out set and thumbnails."""
    return make_run()
