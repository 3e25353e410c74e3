"""The recommendation benchmark's rankers behind one interface, so every method meets the same simulated user.

A ranker is fitted on a :class:`RankingInput` (the run, its features, the
detector's scores, optional out-of-sample probabilities), then alternates
``recommend(k)`` and ``update(indices, accepted)``. ``initial_scores_``
holds the ranking before any feedback (higher = recommended sooner), for
AUROC/AUPRC.

Baselines (static: they ignore feedback except to skip reviewed samples):
``random``, ``loss`` (last-epoch loss), ``aum`` (area under the margin,
training-mode when recorded), ``aum_early_stop`` (area under the margin before
memorisation, judged by the held-out accuracy, where the run has a held-out set), ``confidence`` (data-map confidence),
``forgetting`` (forgetting events), ``cleanlab`` / ``cleanlab_cv`` (confident
learning's label quality on in-sample last-epoch / K-fold out-of-sample
probabilities). ``deepdebugger`` reimplements DeepDebugger's recommender
(BIRCH clusters of trajectory acceleration + prediction uncertainty, then
kernel ridge regression on the feedback). ``timetravel_static`` is our
detector's ranking without feedback and ``timetravel`` the full
:class:`~timetravel.recommend.FeedbackRecommender`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from timetravel._random import subsample
from timetravel.errors import TimetravelError
from timetravel.features import FeatureTable

logger = logging.getLogger(__name__)


class RankerError(TimetravelError, ValueError):
    """A ranker was asked for by an unknown name or lacks its inputs."""


@dataclass
class RankingInput:
    """Everything a ranker may use. None of it is the ground truth.

    Attributes
    ----------
    store : RunStore
    features : FeatureTable
    detector_scores : ndarray of shape (N,)
        ``AbnormalityDetector.scores_`` (higher = more suspicious).
    cv_probabilities : ndarray of shape (N, K), optional
        Out-of-sample predicted probabilities from K-fold cross-validation of
        the subject model (for ``cleanlab_cv``).
    random_state : int
    notes : dict
        Filled by rankers with facts worth reporting (e.g. which trajectories
        DeepDebugger used).
    """

    store: object
    features: FeatureTable
    detector_scores: np.ndarray
    cv_probabilities: np.ndarray | None = None
    random_state: int = 0
    notes: dict = field(default_factory=dict)


class Ranker:
    """Base class: a ranking over samples that skips reviewed ones.

    Subclasses set ``initial_scores_`` in :meth:`fit` and, when they learn from
    feedback, override :meth:`_learn`.
    """

    name = "ranker"
    uses_feedback = False
    # how a simulated session feeds answers back: the app re-ranks timetravel after every answer
    protocol = "per_round"
    # whether sessions differ by the seed of :meth:`reseed` (exploration draws), so one session is a noisy estimate
    stochastic = False

    def available(self, data: RankingInput) -> bool:
        """Whether ``data`` holds what this ranker needs (e.g. a feature only some runs have)."""
        return True

    def fit(self, data: RankingInput) -> Ranker:
        """Compute the initial ranking; returns self."""
        self.initial_scores_ = np.asarray(self._initial_scores(data), dtype=np.float64)
        n = len(self.initial_scores_)
        # seeded random tie-breaking, so rankers with many ties (forgetting) are not helped by sample order
        self._tiebreak = np.random.default_rng(data.random_state).permutation(n)
        self._scores = self.initial_scores_.copy()
        self._reviewed = np.zeros(n, dtype=bool)
        self._accepted: dict[int, bool] = {}
        return self

    def _initial_scores(self, data: RankingInput) -> np.ndarray:
        raise NotImplementedError

    def recommend(self, k: int) -> np.ndarray:
        """The ``k`` best unreviewed samples."""
        order = np.lexsort((self._tiebreak, -self._scores))
        order = order[~self._reviewed[order]]
        return order[:k].astype(np.int64)

    def update(self, indices: Sequence[int], accepted: Sequence[bool]) -> Ranker:
        """Mark samples reviewed (and learn from the decisions, for feedback rankers)."""
        idx = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        acc = np.atleast_1d(np.asarray(accepted, dtype=bool))
        self._reviewed[idx] = True
        self._accepted.update(zip(idx.tolist(), acc.tolist()))
        if self.uses_feedback:
            self._learn()
        return self

    def _learn(self) -> None:
        raise NotImplementedError

    def reseed(self, seed: int) -> Ranker:
        """Draw this (fitted, unreviewed) ranker's random choices from ``seed`` from now on; returns self."""
        return self


class ScoreRanker(Ranker):
    """A static ranking by a fixed score (higher = recommended first)."""

    def __init__(self, name: str, score: Callable[[RankingInput], np.ndarray], needs: str | None = None) -> None:
        self.name = name
        self._score = score
        self._needs = needs

    def available(self, data: RankingInput) -> bool:
        return self._needs is None or self._needs in data.features.names

    def _initial_scores(self, data: RankingInput) -> np.ndarray:
        return self._score(data)


class ConfidentLearningRanker(Ranker):
    """Confident learning (cleanlab): low label quality first.

    Parameters
    ----------
    probabilities : {"insample", "cv"}
        Last-epoch softmax of the recorded run, or out-of-sample probabilities
        from K-fold cross-validation (``RankingInput.cv_probabilities``).
    """

    def __init__(self, probabilities: str = "insample") -> None:
        if probabilities not in ("insample", "cv"):
            raise RankerError(f"probabilities must be 'insample' or 'cv', got {probabilities!r}")
        self.probabilities = probabilities
        self.name = "cleanlab" if probabilities == "insample" else "cleanlab_cv"

    def available(self, data: RankingInput) -> bool:
        return self.probabilities == "insample" or data.cv_probabilities is not None

    def _initial_scores(self, data: RankingInput) -> np.ndarray:
        from cleanlab.rank import get_label_quality_scores

        store = data.store
        if self.probabilities == "cv":
            if data.cv_probabilities is None:
                raise RankerError("cleanlab_cv needs out-of-sample probabilities (RankingInput.cv_probabilities)")
            probs = data.cv_probabilities
        else:
            probs = store.probabilities(store.epochs[-1])
        probs = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, None)
        probs /= probs.sum(axis=1, keepdims=True)
        return -get_label_quality_scores(np.asarray(store.labels), probs)


class DeepDebuggerRanker(Ranker):
    """Reimplementation of DeepDebugger's abnormal-sample recommender (Yang et al., FSE 2023).

    Trajectories of the last ``period`` share of epochs are differenced twice
    (acceleration) and clustered with BIRCH; a sample's cluster score is one
    minus its cluster's share of samples (rare motion is suspicious) and its
    uncertainty is one minus its last-epoch top probability. The first round
    ranks by their mean; after feedback a kernel ridge regression on
    ``[uncertainty, cluster score]`` with targets accepted=1 / rejected=0
    re-ranks every unreviewed sample. DeepDebugger's regression uses
    scikit-learn's ``KernelRidge(alpha=1.0)``, whose default kernel is linear;
    it is solved here in primal form, which gives the same predictions in
    O(n) instead of O(n^3) in the number of reviewed samples.

    The trajectories are the 2D canvas positions when the run has a
    projection; otherwise each epoch's embedding is mapped with one PCA fitted
    over all epochs (``space`` records which, in ``notes``).

    Parameters
    ----------
    n_clusters : int
        BIRCH clusters (DeepDebugger uses 30).
    period : float
        Share of the last epochs whose trajectory is used (DeepDebugger: 2/3).
    pca_dim : int
        Dimensions of the embedding-space trajectories when there is no canvas.
    split : {"train", "pool"}
        Rank the training samples (abnormal-sample recommendation) or the
        unlabelled pool (active learning; always embedding-space trajectories).
    """

    name = "deepdebugger"
    uses_feedback = True

    def __init__(self, n_clusters: int = 30, period: float = 2 / 3, pca_dim: int = 8, split: str = "train") -> None:
        self.n_clusters = n_clusters
        self.period = period
        self.pca_dim = pca_dim
        self.split = split

    def _initial_scores(self, data: RankingInput) -> np.ndarray:
        from sklearn.cluster import Birch

        traj, self.space_ = _trajectories(data.store, self.period, self.pca_dim, data.random_state, self.split)
        data.notes["deepdebugger_space"] = self.space_
        accel = np.diff(traj, n=2, axis=1).reshape(len(traj), -1)
        # scikit-learn's default threshold (0.5) suits DeepDebugger's canvas units only; scaled to the
        # data, BIRCH keeps a few thousand subclusters instead of one per sample
        radius = float(np.median(np.linalg.norm(accel - accel.mean(axis=0), axis=1)))
        labels = Birch(n_clusters=self.n_clusters, threshold=max(0.5 * radius, 1e-12)).fit_predict(accel)
        cluster_score = 1.0 - np.bincount(labels)[labels] / len(labels)
        store = data.store
        uncertainty = 1.0 - store.probabilities(store.epochs[-1], self.split).max(axis=1)
        self._x = np.column_stack([uncertainty, cluster_score])
        return self._x.mean(axis=1)

    def _learn(self) -> None:
        idx = np.fromiter(self._accepted, dtype=np.int64)
        y = np.fromiter(self._accepted.values(), dtype=float)
        x = self._x[idx]
        coef = np.linalg.solve(x.T @ x + 1.0 * np.eye(x.shape[1]), x.T @ y)  # linear KernelRidge, alpha=1
        self._scores = self._x @ coef


def _trajectories(store, period: float, pca_dim: int, seed: int, split: str = "train") -> tuple[np.ndarray, str]:
    """(N, T, d) trajectories over the last ``period`` of epochs: canvas when projected, else PCA of embeddings."""
    epochs = list(store.epochs)
    epochs = epochs[-max(3, int(round(len(epochs) * period))) :]
    projected = set(store.projected_epochs)
    if split == "train" and all(e in projected for e in epochs):
        return np.stack([np.asarray(store.projection(e), dtype=np.float32) for e in epochs], axis=1), "canvas"
    n = store.split_size(split)
    rows = subsample(n, 4000, seed, "deepdebugger-pca")
    pool = np.concatenate([np.asarray(store.embedding(e, split)[rows], dtype=np.float64) for e in epochs])
    mean = pool.mean(axis=0)
    _, _, vt = np.linalg.svd(pool - mean, full_matrices=False)
    proj = vt[: min(pca_dim, vt.shape[0])].T
    traj = np.stack([(np.asarray(store.embedding(e, split), dtype=np.float64) - mean) @ proj for e in epochs],
                    axis=1)
    return traj.astype(np.float32), "embedding-pca"


class DetectorRanker(Ranker):
    """timetravel's detector ranking without feedback (the no-feedback ablation)."""

    name = "timetravel_static"

    def _initial_scores(self, data: RankingInput) -> np.ndarray:
        return data.detector_scores


class TimetravelRanker(Ranker):
    """timetravel's :class:`~timetravel.recommend.FeedbackRecommender` behind the ranker interface."""

    name = "timetravel"
    uses_feedback = True
    protocol = "per_decision"
    stochastic = True  # Thompson-sampling exploration

    def __init__(self, **params) -> None:
        self.params = params

    def fit(self, data: RankingInput) -> TimetravelRanker:
        from timetravel.recommend import FeedbackRecommender

        params = {"random_state": data.random_state, **self.params}
        self.recommender_ = FeedbackRecommender(**params).fit(data.features, data.detector_scores)
        self.initial_scores_ = np.asarray(data.detector_scores, dtype=np.float64)
        return self

    def recommend(self, k: int) -> np.ndarray:
        return self.recommender_.recommend(k)

    def update(self, indices: Sequence[int], accepted: Sequence[bool]) -> TimetravelRanker:
        self.recommender_.update(indices, accepted)
        return self

    def reseed(self, seed: int) -> TimetravelRanker:
        self.recommender_.random_state = seed
        self.recommender_.restore({})  # restarts the exploration draws from the new seed
        return self


class RandomRanker(Ranker):
    """Uniformly random order (seeded)."""

    name = "random"

    def _initial_scores(self, data: RankingInput) -> np.ndarray:
        return np.random.default_rng(data.random_state + 1).random(data.features.n_samples)


def _column(name: str, sign: float) -> Callable[[RankingInput], np.ndarray]:
    return lambda data: sign * data.features.column(name)


def _aum(data: RankingInput) -> np.ndarray:
    names = data.features.names
    return -data.features.column("aum_train" if "aum_train" in names else "aum")


RANKERS: dict[str, Callable[[], Ranker]] = {
    "random": RandomRanker,
    "loss": lambda: ScoreRanker("loss", _column("loss_last", 1.0)),
    "aum": lambda: ScoreRanker("aum", _aum),
    # AUM up to the epoch of best held-out accuracy (runs with a labelled held-out set): the detector's anchor
    "aum_early_stop": lambda: ScoreRanker("aum_early_stop", _column("aum_early_stop", -1.0), needs="aum_early_stop"),
    "confidence": lambda: ScoreRanker("confidence", _column("confidence", -1.0)),
    "forgetting": lambda: ScoreRanker("forgetting", _column("forgetting", 1.0)),
    "cleanlab": lambda: ConfidentLearningRanker("insample"),
    "cleanlab_cv": lambda: ConfidentLearningRanker("cv"),
    "deepdebugger": DeepDebuggerRanker,
    "timetravel_static": DetectorRanker,
    "timetravel": TimetravelRanker,
}


def make_ranker(name: str, **params) -> Ranker:
    """A new, unfitted ranker by name (see :data:`RANKERS`); ``params`` go to ``timetravel`` only."""
    if name not in RANKERS:
        raise RankerError(f"unknown ranker {name!r}; known: {', '.join(RANKERS)}")
    if params and name != "timetravel":
        raise RankerError(f"ranker {name!r} takes no parameters, got {sorted(params)}")
    return RANKERS[name](**params) if params else RANKERS[name]()
