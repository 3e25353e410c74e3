"""The unlabelled pool as the app ranks it, shared by every session of the server process.

:class:`PoolRanking` fits the active learner (:mod:`timetravel.active`: the pool's features,
the probability that the final model mispredicts each sample, the feedback recommender over
the pool) once, then follows the pool labels of the feedback log: :meth:`PoolRanking.rank`
is given the standing labels and brings the recommender up to them (``update`` for a new
label, a replay after an undo or another process's edits) before ranking. A label counts as
"the model got it wrong" when it differs from the final prediction. The labels themselves
are the review's (:meth:`timetravel.server_app.review.Review.label_pool`): this module only
ranks and reads.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from timetravel.errors import TimetravelError
from timetravel.server_app.review import by_score
from timetravel.store import RunStore, softmax

logger = logging.getLogger(__name__)

POOL_ROWS = 15  # ranked rows a snapshot holds


@dataclass(frozen=True)
class PoolRanks:
    """The pool ranked at one moment, for every session to show.

    ``status`` is ``"ready"`` or ``"failed"`` (then ``message`` says why in one sentence).
    ``rows`` are unlabelled pool rows, the likeliest mispredicted first: in decreasing ``score``,
    the recommender's posterior-mean chance that the final prediction is wrong, learned from the
    labels given so far on top of the model's estimate (a ranking score, not calibrated).
    ``p_wrong`` is the model's own estimate of that probability (the held-out error model when
    ``calibrated``, else one minus the model's confidence).
    """

    status: str
    message: str = ""
    labels: dict[int, int] = field(default_factory=dict)  # the pool labels this ranking learned from
    rows: list[int] = field(default_factory=list)
    predicted: dict[int, int] = field(default_factory=dict)
    p_wrong: dict[int, float] = field(default_factory=dict)
    score: dict[int, float] = field(default_factory=dict)
    reasons: dict[int, list[str]] = field(default_factory=dict)
    calibrated: bool = False
    n_pool: int = 0
    final_epoch: int | None = None
    n_disagree: int = 0  # labelled rows whose label differs from the final prediction
    n_truly_wrong: int | None = None  # with pool_true_labels: labelled rows the final model truly mispredicts
    truly_wrong_share: float | None = None  # ... and the share of the whole pool it mispredicts


@dataclass(frozen=True)
class PoolHistory:
    """One pool sample over the epochs that hold the pool."""

    epochs: np.ndarray
    pred: np.ndarray  # the predicted class per epoch
    final_prob: np.ndarray  # the probability of the final predicted class per epoch


class PoolRanking:
    """The run's pool ranking; see the module docstring. Thread-safe; the first :meth:`rank` fits (slow).

    Parameters
    ----------
    store : RunStore
        A run with a pool (``store.n_pool > 0``).
    """

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._fitted = False
        self._failure: str | None = None

    def _fit(self) -> None:
        from timetravel.active import pool_features, pool_recommender, score_pool, split_epochs

        store = self.store
        self.epochs = split_epochs(store)
        self.features = pool_features(store)
        scores = score_pool(store, self.features)
        last = np.asarray(store.probabilities(self.epochs[-1], "pool"), dtype=np.float64)
        rows = np.arange(store.n_pool)
        self.predicted = self.features.predicted
        self.confidence = last[rows, self.predicted]
        self.calibrated = scores.calibrated
        self.p_wrong = scores.probability if scores.calibrated else 1.0 - self.confidence
        self.recommender = pool_recommender(store, features=self.features, prior=scores.scores, random_state=0)
        self._labels: dict[int, int] = {}

    def _ensure_fitted(self) -> str | None:
        """Fit once; the sentence saying why the pool cannot be ranked, or None."""
        if not self._fitted and self._failure is None:
            try:
                self._fit()
                self._fitted = True
            except TimetravelError as exc:
                self._failure = f"The pool cannot be ranked: {exc}"
                logger.warning("%s", self._failure)
        return self._failure

    def rank(self, labels: dict[int, int], k: int = POOL_ROWS) -> PoolRanks:
        """Bring the recommender up to the standing pool ``labels`` and rank the unlabelled rows."""
        with self._lock:
            failure = self._ensure_fitted()
            if failure is not None:
                return PoolRanks("failed", failure, labels=dict(labels), n_pool=self.store.n_pool)
            self._learn(labels)
            queue = self.recommender.recommend(k).tolist() if len(labels) < self.store.n_pool else []
            odds = self.recommender.log_odds()[queue].astype(np.float64)
            posterior = dict(zip(queue, (1.0 / (1.0 + np.exp(-odds))).tolist()))
            # rows picked by a posterior sample (exploration), shown in posterior-mean order (as the review queue)
            return self._snapshot(dict(labels), by_score(queue, posterior), posterior)

    def _learn(self, labels: dict[int, int]) -> None:
        """Update the recommender to ``labels``: one ``update`` per new or changed label, a replay otherwise."""
        wrong = {i: bool(c != self.predicted[i]) for i, c in labels.items()}
        if labels == self._labels:
            return
        if self._labels.keys() <= labels.keys():  # only new (or changed) labels: learn from them
            fresh = [i for i in labels if self._labels.get(i) != labels[i]]
            self.recommender.update(fresh, [wrong[i] for i in fresh])
        else:
            self.recommender.restore(wrong)
        self._labels = dict(labels)

    def _snapshot(self, labels: dict[int, int], queue: list[int], posterior: dict[int, float]) -> PoolRanks:
        from timetravel.active import pool_reasons

        names = self.store.class_names
        rows = np.asarray(list(labels), dtype=np.int64)
        given = np.asarray(list(labels.values()), dtype=np.int64)
        true = self.store.pool_true_labels
        truly, share = None, None
        if true is not None:
            truly = int((self.predicted[rows] != true[rows]).sum()) if len(rows) else 0
            share = float((self.predicted != true).mean())
        return PoolRanks(
            "ready",
            labels=labels,
            rows=queue,
            predicted={i: int(self.predicted[i]) for i in queue},
            p_wrong={i: float(self.p_wrong[i]) for i in queue},
            score={i: posterior[i] for i in queue},
            reasons={i: pool_reasons(self.features, i, names) for i in queue},
            calibrated=self.calibrated,
            n_pool=self.store.n_pool,
            final_epoch=int(self.epochs[-1]),
            n_disagree=int((self.predicted[rows] != given).sum()) if len(rows) else 0,
            n_truly_wrong=truly,
            truly_wrong_share=share,
        )

    # -- per-sample reads (after a successful rank) -----------------------------------

    def prediction(self, row: int) -> tuple[int, float, float]:
        """The final model's class for pool ``row``, its confidence and the probability it is wrong.

        That probability is the model's own (the held-out error model when the ranking is
        ``calibrated``, else one minus the confidence), before any label given in the app.
        """
        row = self._check_row(row)
        return int(self.predicted[row]), float(self.confidence[row]), float(self.p_wrong[row])

    def reasons(self, row: int) -> list[str]:
        from timetravel.active import pool_reasons

        return pool_reasons(self.features, self._check_row(row), self.store.class_names)

    def history(self, row: int) -> PoolHistory:
        """The predicted class of pool ``row`` at every epoch holding the pool, and the final class's probability."""
        row = self._check_row(row)
        probs = softmax(np.stack([np.asarray(self.store.logits(e, "pool")[row], dtype=np.float32) for e in self.epochs]))
        return PoolHistory(np.asarray(self.epochs, dtype=np.int32), probs.argmax(axis=1).astype(np.int32),
                           probs[:, self.predicted[row]].astype(np.float64))  # fmt: skip

    def top_classes(self, row: int, epoch: int, k: int = 3) -> list[tuple[int, float]] | None:
        """The ``k`` most probable classes of pool ``row`` at ``epoch`` (None: that epoch holds no pool rows)."""
        row = self._check_row(row)
        if not self.store.has_split(epoch, "pool"):
            return None
        probs = softmax(np.asarray(self.store.logits(epoch, "pool")[row : row + 1], dtype=np.float32))[0]
        top = np.argsort(-probs, kind="stable")[:k]
        return [(int(c), float(probs[c])) for c in top]

    def _check_row(self, row: int) -> int:
        row = int(row)
        if not 0 <= row < self.store.n_pool:
            raise IndexError(f"pool row {row} is out of range for a pool of {self.store.n_pool}")
        if not self._fitted:
            raise RuntimeError("the pool is not ranked yet; call rank() first")
        return row
