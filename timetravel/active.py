"""Active learning: which unlabelled pool samples will the final model get wrong?

A run may record an unlabelled *pool* beside its labelled training set (see
``docs/run-store.md``). The final model's prediction on a pool sample is all a
user has; labelling the samples it mispredicts teaches the model most, and is
DeepDebugger's second task (Yang et al., FSE 2023). :func:`pool_features`
describes every pool sample by label-free quantities:

* **last-epoch uncertainty** (the classic active-learning scores): least
  confidence, margin between the two most probable classes, entropy;
* **training dynamics**: how often the predicted class changed over the epochs,
  how late the final prediction settled, the mean probability of the final
  prediction over the epochs;
* **labelled neighbours**: the share of the sample's nearest *labelled*
  training samples (in the last epoch's embedding) whose label differs from
  the predicted class, and its distance to the predicted class's labelled
  centroid relative to the nearest other one.

:func:`pool_scores` combines them into "how likely the final prediction is
wrong". When the run has a labelled held-out set, the same features are
computed for it and a logistic regression learns, on samples whose correctness
is known, which features announce an error; without one, the score is the
mean normal score of the three uncertainty features.
:func:`pool_recommender` wraps the scores in the feedback recommender, where
"accept" means "the model got this one wrong" (the label the user gives says
so).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from timetravel.errors import TimetravelError

logger = logging.getLogger(__name__)

# name -> (direction: +1 high = likely wrong, -1 low = likely wrong; what it is computed from; description)
POOL_FEATURES: dict[str, tuple[int, str, str]] = {
    "least_confidence": (1, "logits", "one minus the top probability at the last epoch"),
    "top2_margin": (-1, "logits", "top probability minus the second at the last epoch"),
    "entropy": (1, "logits", "entropy of the last epoch's predicted distribution"),
    "prediction_changes": (1, "logits", "epochs where the predicted class changed"),
    "settled_late": (1, "logits", "fraction of training before the final prediction holds for good"),
    "mean_final_probability": (-1, "logits", "mean probability of the final predicted class over the epochs"),
    "knn_label_disagreement": (1, "embedding", "share of the nearest labelled samples whose label is not the "
                                               "predicted class (last epoch)"),
    "centroid_ratio": (1, "embedding", "distance to the predicted class's labelled centroid over the distance to "
                                       "the nearest other one (last epoch)"),
}


UNCERTAINTY = ("least_confidence", "top2_margin", "entropy")


class ActiveLearningError(TimetravelError, ValueError):
    """The run has no pool, or the pool features cannot be computed."""


@dataclass(frozen=True)
class PoolFeatures:
    """Label-free features of one split's samples.

    Attributes
    ----------
    values : ndarray of shape (M, F), float64
    names : list of str
        Keys of :data:`POOL_FEATURES`.
    predicted : ndarray of shape (M,), int64
        The final model's prediction.
    runner_up : ndarray of shape (M,), int64
        The second most probable class at the last epoch.
    """

    values: np.ndarray
    names: list[str]
    predicted: np.ndarray
    runner_up: np.ndarray

    @property
    def directions(self) -> np.ndarray:
        """+1 / -1 per feature: which way means "likely wrong"."""
        return np.array([POOL_FEATURES[n][0] for n in self.names], dtype=np.float64)


def split_epochs(store, split: str = "pool") -> list[int]:
    """The recorded epochs that hold rows of ``split`` (train-pass epochs hold no pool or held-out rows).

    The last of them is the "final model" whose predictions :func:`pool_features` describes.
    """
    return [e for e in store.epochs if store.has_split(e, split)]


def pool_features(store, split: str = "pool", *, n_neighbors: int = 10) -> PoolFeatures:
    """Features of every sample of ``split`` (``"pool"``, or ``"heldout"`` to learn from), see the module docstring.

    Computed over the epochs that hold the split (:func:`split_epochs`).

    Raises
    ------
    ActiveLearningError
        The run has no such split or fewer than two epochs hold it.
    """
    n = store.n_pool if split == "pool" else store.n_heldout
    if not n:
        raise ActiveLearningError(f"{store.path}: the run has no {split} samples; record them with "
                                  f"{'pool_loader' if split == 'pool' else 'heldout_loader'}=...")
    epochs = split_epochs(store, split)
    if len(epochs) < 2:
        raise ActiveLearningError(f"{store.path}: pool features need at least 2 epochs holding the {split} rows, "
                                  f"found {len(epochs)} (of {len(store.epochs)} recorded)")
    last = np.asarray(store.probabilities(epochs[-1], split), dtype=np.float64)
    order = np.argsort(-last, axis=1)
    predicted, runner_up = order[:, 0].astype(np.int64), order[:, 1].astype(np.int64)
    rows = np.arange(n)
    top, second = last[rows, predicted], last[rows, runner_up]
    changes = np.zeros(n)
    settled = np.full(n, -1)
    final_prob = np.zeros(n)
    prev = None
    for t, e in enumerate(epochs):
        probs = np.asarray(store.probabilities(e, split), dtype=np.float64)
        pred = probs.argmax(axis=1)
        if prev is not None:
            changes += pred != prev
        settled = np.where(pred == predicted, settled, t)
        final_prob += probs[rows, predicted]
        prev = pred
    columns = {
        "least_confidence": 1.0 - top,
        "top2_margin": top - second,
        "entropy": -(last * np.log(np.clip(last, 1e-12, None))).sum(axis=1),
        "prediction_changes": changes,
        "settled_late": (settled + 1) / len(epochs),
        "mean_final_probability": final_prob / len(epochs),
    }
    columns.update(_labelled_neighbourhood(store, epochs[-1], split, predicted, n_neighbors))
    names = list(columns)
    return PoolFeatures(np.column_stack([columns[c] for c in names]), names, predicted, runner_up)


def _labelled_neighbourhood(store, epoch: int, split: str, predicted: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """kNN label disagreement and centroid ratio of ``split``'s samples against the labelled training set."""
    from timetravel.numerics import import_faiss, reduced_embedding

    train = np.asarray(store.embedding(epoch), dtype=np.float32)
    other = np.asarray(store.embedding(epoch, split), dtype=np.float32)
    both = reduced_embedding(np.concatenate([train, other]))
    base, queries = both[: len(train)], both[len(train) :]
    labels = np.asarray(store.labels)
    k = min(k, len(train))
    index = import_faiss().IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base))
    _, nbrs = index.search(np.ascontiguousarray(queries), k)
    disagreement = (labels[nbrs] != predicted[:, None]).mean(axis=1)
    n_classes = store.n_classes
    counts = np.bincount(labels, minlength=n_classes)
    centroids = np.zeros((n_classes, train.shape[1]))
    np.add.at(centroids, labels, train.astype(np.float64))
    centroids /= np.maximum(counts, 1)[:, None]
    d = np.sqrt(np.maximum((other.astype(np.float64) ** 2).sum(axis=1)[:, None] - 2 * other @ centroids.T
                           + (centroids**2).sum(axis=1)[None, :], 0.0))
    d[:, counts == 0] = np.inf
    rows = np.arange(len(other))
    own = d[rows, predicted].copy()
    d[rows, predicted] = np.inf
    return {"knn_label_disagreement": disagreement, "centroid_ratio": own / np.maximum(d.min(axis=1), 1e-12)}


@dataclass(frozen=True)
class PoolScores:
    """How likely the final model mispredicts each pool sample.

    Attributes
    ----------
    scores : ndarray of shape (M,), float64
        Higher = more likely wrong: log-odds of an error when ``calibrated``, else the mean
        normal score of the uncertainty features.
    calibrated : bool
        Whether an error model learned on the labelled held-out set gave the scores.
    """

    scores: np.ndarray
    calibrated: bool

    @property
    def probability(self) -> np.ndarray | None:
        """The probability that the final prediction is wrong (None when not ``calibrated``)."""
        if not self.calibrated:
            return None
        return 1.0 / (1.0 + np.exp(-np.clip(self.scores, -30, 30)))


def score_pool(store, features: PoolFeatures | None = None, *, n_neighbors: int = 10) -> PoolScores:
    """Score the pool (see :func:`pool_scores`) and say whether the scores are calibrated log-odds."""
    from timetravel.recommend import rank_normal_scores

    features = pool_features(store, n_neighbors=n_neighbors) if features is None else features
    if store.n_heldout and len(split_epochs(store, "heldout")) >= 2:
        held = pool_features(store, "heldout", n_neighbors=n_neighbors)
        wrong = held.predicted != np.asarray(store.heldout_labels)
        if 0 < wrong.sum() < len(wrong):
            from sklearn.linear_model import LogisticRegression
            from sklearn.preprocessing import StandardScaler

            scaler = StandardScaler().fit(held.values)
            model = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(held.values), wrong)
            return PoolScores(model.decision_function(scaler.transform(features.values)), True)
        logger.warning("%s: the final model gets %d of %d held-out samples wrong; scoring the pool without them",
                       store.path, int(wrong.sum()), len(wrong))
    columns = [features.names.index(n) for n in UNCERTAINTY]
    return PoolScores((rank_normal_scores(features.values[:, columns]) * features.directions[columns]).mean(axis=1),
                      False)


def pool_scores(store, features: PoolFeatures | None = None, *, n_neighbors: int = 10) -> np.ndarray:
    """How likely the final model mispredicts each pool sample (higher = more likely; log-odds when learned).

    With a labelled held-out set, a logistic regression on the held-out
    samples' features (target: the final model mispredicts them) scores the
    pool; without one (or when the model gets every held-out sample right or
    every one wrong), the mean rank-normal score of least confidence, margin
    and entropy. :func:`score_pool` also says which.
    """
    return score_pool(store, features, n_neighbors=n_neighbors).scores


def pool_reasons(features: PoolFeatures, row: int, class_names: list[str], *, top: float = 0.2) -> list[str]:
    """Why pool sample ``row`` is likely mispredicted: its features in the pool's most suspicious ``top`` share.

    One short sentence per such feature, the most extreme first (e.g. "low margin: cat 41% vs dog 37%",
    "prediction flipped late: cat holds only for the last 1 of 8 epochs"); empty when none stands out.
    """
    values = features.values
    n = len(values)
    signed = values * features.directions  # higher = more suspicious, per column
    rank = (signed < signed[row]).sum(axis=0) / max(n - 1, 1)  # share of the pool less suspicious than row
    v = dict(zip(features.names, values[row].tolist()))
    pred, other = class_names[int(features.predicted[row])], class_names[int(features.runner_up[row])]
    top_p = 1.0 - v["least_confidence"]
    reasons = []
    for j in np.argsort(-rank, kind="stable"):
        if rank[j] < 1.0 - top:
            break
        name = features.names[j]
        if _REASON_GATES.get(name, lambda _v: True)(v):
            reasons.append(_reason(name, v, pred, other, top_p))
    return [r for r in reasons if r]


# a feature among the pool's most suspicious is a reason only when it is also suspicious in itself
_REASON_GATES = {
    "least_confidence": lambda v: v["least_confidence"] > 0.1,
    "top2_margin": lambda v: v["top2_margin"] < 0.5,
    "entropy": lambda v: v["entropy"] > 0.3,
    "prediction_changes": lambda v: v["prediction_changes"] >= 1,
    "settled_late": lambda v: v["settled_late"] > 0.5,
    "mean_final_probability": lambda v: v["mean_final_probability"] < 0.6,
    "knn_label_disagreement": lambda v: v["knn_label_disagreement"] >= 0.3,
    "centroid_ratio": lambda v: v["centroid_ratio"] >= 0.8,
}


def _reason(name: str, v: dict[str, float], pred: str, other: str, top_p: float) -> str:
    if name == "least_confidence":
        return f"low confidence: {pred} only {top_p:.0%}"
    if name == "top2_margin":
        return f"low margin: {pred} {top_p:.0%} vs {other} {top_p - v['top2_margin']:.0%}"
    if name == "entropy":
        return f"probability spread over several classes (entropy {v['entropy']:.2f})"
    if name == "prediction_changes":
        return f"prediction changed {int(v['prediction_changes'])} times over training"
    if name == "settled_late":
        share = 1.0 - v["settled_late"]
        return f"prediction flipped late: {pred} holds only for the last {share:.0%} of training"
    if name == "mean_final_probability":
        return f"{pred} had {v['mean_final_probability']:.0%} mean probability over training"
    if name == "knn_label_disagreement":
        return f"{v['knn_label_disagreement']:.0%} of its nearest labelled samples are not {pred}"
    if name == "centroid_ratio":
        if v["centroid_ratio"] >= 1:
            return f"nearer another class's labelled samples than {pred}'s"
        return f"almost as near another class's labelled samples as {pred}'s (distance ratio {v['centroid_ratio']:.2f})"
    return ""


def pool_recommender(store, *, n_neighbors: int = 10, features: PoolFeatures | None = None,
                     prior: np.ndarray | None = None, **params):
    """A fitted :class:`~timetravel.recommend.FeedbackRecommender` over the pool (indices are pool rows).

    Accept = the final model mispredicts the sample (the label the user gives
    differs from the prediction); the recommender learns from it like from any
    decision. Its neighbours are the pool samples' nearest pool neighbours and
    its class pairs (predicted, runner-up). ``features`` and ``prior`` (the
    :func:`pool_scores`) are computed unless given.
    """
    from timetravel.numerics import embedding_neighbours
    from timetravel.recommend import FeedbackRecommender

    features = pool_features(store, n_neighbors=n_neighbors) if features is None else features
    prior = pool_scores(store, features, n_neighbors=n_neighbors) if prior is None else prior
    k = store.n_classes
    last = split_epochs(store)[-1]
    neighbours = embedding_neighbours(store.embedding(last, "pool"), min(n_neighbors, store.n_pool - 1))
    return FeedbackRecommender(**params).fit(
        features.values, prior, neighbors=neighbours, groups=features.predicted * k + features.runner_up,
        labels=features.predicted,
    )
