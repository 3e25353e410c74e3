"""Simulation for evaluating recommenders: toy runs, a simulated user, and the metrics.

* :func:`simulate_run` writes a small run store whose training dynamics look like
  real ones (clean samples are learned early; mislabelled samples sit with their
  true class and are memorised late), so features, detector and recommender can
  be tested without training a network.
* :class:`SimulatedUser` answers accept/reject from the ground truth, with a
  mistake rate.
* :func:`run_session` drives any recommender (anything with ``recommend(k)`` and
  ``update(indices, accepted)``) through rounds of review and records what
  was recommended and how long each update took; :func:`session_metrics` turns
  that into hit rate, cumulative precision, recall, reviews needed for a recall
  level, AUROC/AUPRC of the initial ranking and update latency.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import numpy as np

from timetravel.errors import TimetravelError
from timetravel.numerics import label_margins


class SimulationError(TimetravelError, ValueError):
    """A simulation was asked for with unusable parameters."""


# --------------------------------------------------------------------------- toy runs


def simulate_run(
    path: str | os.PathLike,
    *,
    n_samples: int = 600,
    n_classes: int = 4,
    embedding_dim: int = 16,
    n_epochs: int = 12,
    noise_rate: float = 0.1,
    ood_rate: float = 0.0,
    seed: int = 0,
    overwrite: bool = False,
):
    """Write a toy run store with planted mislabelled (and optionally out-of-distribution) samples.

    Embeddings of clean samples move from a blurred start towards their class
    centre. A mislabelled sample keeps the geometry of its true class for most
    of training and is pulled towards its given label only in the last third
    (memorisation), so its given-label probability rises late. An
    out-of-distribution sample sits far from every class centre.

    Parameters
    ----------
    path : path-like
        Directory of the new run.
    n_samples, n_classes, embedding_dim, n_epochs : int
        Size of the run.
    noise_rate : float
        Fraction of samples whose label is changed to another class (uniformly).
    ood_rate : float
        Fraction of (clean-label) samples placed away from every class.
    seed : int
        Random seed; the same seed writes the same run.
    overwrite : bool
        Replace a run already at ``path``.

    Returns
    -------
    RunStore
        The written run; ``true_labels`` / ``noise_mask`` hold the truth, and
        ``manifest["ood"]`` lists the out-of-distribution samples.

    Examples
    --------
    >>> store = simulate_run("/tmp/toy", noise_rate=0.2, overwrite=True)  # doctest: +SKIP
    >>> round(float(store.noise_mask.mean()), 1)  # doctest: +SKIP
    0.2
    """
    from timetravel.store import RunStore, RunWriter

    if n_samples < 2 * n_classes or n_classes < 2 or n_epochs < 2 or embedding_dim < n_classes:
        raise SimulationError(
            f"need n_classes >= 2, n_samples >= 2 * n_classes, n_epochs >= 2 and embedding_dim >= n_classes; "
            f"got n_samples={n_samples}, n_classes={n_classes}, n_epochs={n_epochs}, embedding_dim={embedding_dim}"
        )
    if not (0 <= noise_rate < 1 and 0 <= ood_rate < 1 and noise_rate + ood_rate < 1):
        raise SimulationError(f"noise_rate and ood_rate must be in [0, 1) and sum below 1, got {noise_rate}, {ood_rate}")
    rng = np.random.default_rng(seed)
    true = np.arange(n_samples) % n_classes
    rng.shuffle(true)
    order = rng.permutation(n_samples)
    noisy = order[: int(round(noise_rate * n_samples))]
    ood = order[len(noisy) : len(noisy) + int(round(ood_rate * n_samples))]
    labels = true.copy()
    labels[noisy] = (true[noisy] + rng.integers(1, n_classes, len(noisy))) % n_classes
    centres = 3.0 * np.eye(n_classes, embedding_dim)
    difficulty = rng.gamma(2.0, 0.5, n_samples)  # hard samples are learned later
    base = centres[true] + rng.normal(0, 1.0, (n_samples, embedding_dim)) * (0.3 + 0.2 * difficulty[:, None])
    base[ood] = rng.normal(0, 1.0, (len(ood), embedding_dim)) * 0.5 + 1.5 * rng.normal(0, 1.0, embedding_dim)
    writer = RunWriter.create(
        path, labels=labels, n_classes=n_classes, embedding_dim=embedding_dim, dataset="toy",
        true_labels=true, noise={"kind": "symmetric", "rate": noise_rate, "seed": seed},
        extra={"ood": sorted(int(i) for i in ood)}, overwrite=overwrite, embedding_dtype="float32",
    )
    head_w = centres.astype(np.float32)
    head_b = np.zeros(n_classes, dtype=np.float32)
    for e in range(n_epochs):
        t = (e + 1) / n_epochs
        learned = 1.0 - np.exp(-4 * t / difficulty)  # how far each sample has moved to its centre
        emb = base * (0.4 + 0.6 * learned[:, None])
        memorise = np.clip((t - 0.6) / 0.4, 0, 1) ** 1.5  # mislabels pulled to their given label late
        emb[noisy] += memorise * (centres[labels[noisy]] - centres[true[noisy]]) * 0.9
        emb += rng.normal(0, 0.15, emb.shape)
        logits = (emb @ head_w.T) * (0.5 + t)
        margin = label_margins(logits + rng.normal(0, 0.5, logits.shape), labels)
        writer.write_epoch(e, emb.astype(np.float32), logits.astype(np.float32), head=(head_w, head_b),
                           train_margin=margin)
    return RunStore(path)


# --------------------------------------------------------------------------- simulated user


class Recommender(Protocol):
    """What :func:`run_session` needs from a recommender."""

    def recommend(self, k: int) -> np.ndarray: ...

    def update(self, indices: Sequence[int], accepted: Sequence[bool]): ...


@dataclass
class SimulatedUser:
    """A user who accepts exactly the target samples, except for a mistake rate.

    Parameters
    ----------
    is_target : array of bool, shape (N,)
        What the user is looking for (e.g. the noise mask).
    mistake_rate : float
        Probability that an answer is flipped.
    random_state : int
        Seed of the mistakes.
    """

    is_target: np.ndarray
    mistake_rate: float = 0.0
    random_state: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.mistake_rate <= 0.5:
            raise SimulationError(f"mistake_rate must be in [0, 0.5], got {self.mistake_rate}")
        self.is_target = np.asarray(self.is_target, dtype=bool)
        self._rng = np.random.default_rng(self.random_state)

    def answer(self, indices: np.ndarray) -> np.ndarray:
        """Accept (True) / reject (False) each sample, flipping a ``mistake_rate`` share of answers."""
        truth = self.is_target[np.asarray(indices, dtype=np.int64)]
        flip = self._rng.random(len(truth)) < self.mistake_rate
        return truth ^ flip


@dataclass
class Session:
    """What happened in one simulated review session."""

    k: int
    rounds: list[np.ndarray]  # recommended indices per round
    answers: list[np.ndarray]  # the user's answers per round
    latencies_ms: list[float]  # one update + recommend per decision (per_decision mode)


def run_session(
    ranker: Recommender,
    user: SimulatedUser,
    *,
    k: int,
    rounds: int = 10,
    update: str = "per_decision",
) -> Session:
    """Review ``rounds`` batches of ``k`` recommendations with a simulated user.

    Parameters
    ----------
    ranker : Recommender
        A fitted recommender (``recommend(k)``, ``update(indices, accepted)``).
    user : SimulatedUser
        Answers the recommendations.
    k : int
        Recommendations per round.
    rounds : int
        Number of rounds.
    update : {"per_decision", "per_round"}
        Feed the answers back one at a time (as the app does after every
        click; each update + re-rank is timed) or as one batch per round.

    Returns
    -------
    Session
    """
    if k < 1 or rounds < 1:
        raise SimulationError(f"k and rounds must be >= 1, got k={k}, rounds={rounds}")
    if update not in ("per_decision", "per_round"):
        raise SimulationError(f"update must be 'per_decision' or 'per_round', got {update!r}")
    session = Session(k=k, rounds=[], answers=[], latencies_ms=[])
    for _ in range(rounds):
        batch = np.asarray(ranker.recommend(k), dtype=np.int64)
        if len(batch) == 0:
            break
        answers = user.answer(batch)
        session.rounds.append(batch)
        session.answers.append(answers)
        if update == "per_round":
            ranker.update(batch, answers)
            continue
        for i, a in zip(batch, answers):
            t0 = time.perf_counter()
            ranker.update([i], [a])
            ranker.recommend(k)
            session.latencies_ms.append((time.perf_counter() - t0) * 1e3)
    return session


# --------------------------------------------------------------------------- metrics


def review_k(n_samples: int, n_target: int, *, large: int = 20000, k_large: int = 50, rounds: int = 10) -> int:
    """Recommendations per round: 50 on runs of 20,000 samples or more, else ``ceil(n_target / (2 * rounds))``.

    On small runs this makes the 10 rounds review half of the target samples,
    so a perfect ranker can reach precision 1.0.
    """
    if n_samples >= large:
        return k_large
    return max(1, math.ceil(n_target / (2 * rounds)))


def reviews_for_recall(order: np.ndarray, is_target: np.ndarray, level: float) -> int | None:
    """Number of reviews (following ``order``) needed to find ``level`` of the targets; None if never."""
    need = math.ceil(level * int(is_target.sum()))
    if need == 0:
        return 0
    hits = np.cumsum(is_target[order])
    reached = np.flatnonzero(hits >= need)
    return int(reached[0]) + 1 if len(reached) else None


def ranking_quality(scores: np.ndarray, is_target: np.ndarray) -> dict[str, float]:
    """AUROC and AUPRC (average precision) of a score (higher = more likely a target)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if is_target.all() or not is_target.any():
        return {"auroc": float("nan"), "auprc": float("nan")}
    return {
        "auroc": float(roc_auc_score(is_target, scores)),
        "auprc": float(average_precision_score(is_target, scores)),
    }


def session_metrics(session: Session, is_target: np.ndarray) -> dict[str, object]:
    """Per-round hit rate, cumulative precision and recall, plus latency percentiles.

    All counts use the ground truth ``is_target``, not the (possibly mistaken)
    answers of the user.
    """
    is_target = np.asarray(is_target, dtype=bool)
    n_target = max(int(is_target.sum()), 1)
    hits = [int(is_target[r].sum()) for r in session.rounds]
    sizes = [len(r) for r in session.rounds]
    cum_hits = np.cumsum(hits)
    cum_sizes = np.cumsum(sizes)
    lat = np.asarray(session.latencies_ms, dtype=float)
    return {
        "k": session.k,
        "hit_rate": [h / s for h, s in zip(hits, sizes)],
        "cumulative_precision": (cum_hits / np.maximum(cum_sizes, 1)).tolist(),
        "recall": (cum_hits / n_target).tolist(),
        "precision": float(cum_hits[-1] / cum_sizes[-1]) if sizes else 0.0,
        "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "latency_p95_ms": float(np.percentile(lat, 95)) if len(lat) else None,
    }
