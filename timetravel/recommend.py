"""Online feedback recommender: learns from accept/reject what the user is looking for.

The recommender starts from the detector's ranking and, after every decision,
re-ranks all samples with a small Bayesian logistic model of "the user would
accept this sample". Its inputs per sample:

* the detector's prior score (its coefficient starts positive, so with no
  feedback the ranking is the detector's);
* the trajectory features (normal scores by rank), so whatever the accepted
  samples share in their dynamics (late learning, distance from the class,
  canvas speed...) is learned, whichever way it points;
* evidence from embedding neighbours: the decisions on a sample's k nearest
  neighbours, once over neighbours with the same given label (mislabelled
  samples of one wrong label cluster together under pair noise) and once over
  all neighbours (a region of out-of-distribution samples);
* a class-pair effect: how often samples with the same (given label,
  suggested label) pair were accepted, as shrunken log-odds, so a confusing
  class pair is found once a few of its members are accepted.

The model is refitted exactly (a few Newton steps on the reviewed samples,
which are few) after each decision; the neighbour evidence and pair counts are
updated incrementally, so one update plus re-rank costs a matrix-vector
product over N samples. Mistaken clicks are tolerated by soft targets (a
decision counts as 1 - mistake_rate sure) and by the prior that keeps every
coefficient near its start until the evidence is consistent. Exploration is
Thompson sampling: each re-rank draws the coefficients from the (scaled)
posterior, so the recommender keeps probing where it is unsure instead of
collapsing onto one cluster.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from timetravel._validation import check_int, check_real
from timetravel.errors import TimetravelError

logger = logging.getLogger(__name__)

_TOP_CACHE = 512  # recommendations kept sorted after each update


class RecommenderError(TimetravelError, ValueError):
    """The recommender was given unusable input or used before fitting."""


def rank_normal_scores(values: np.ndarray) -> np.ndarray:
    """Column-wise normal scores of ranks (ties share their mean rank), float32 in about [-3.5, 3.5]."""
    from scipy.special import ndtri
    from scipy.stats import rankdata

    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        return rank_normal_scores(values[:, None])[:, 0]
    n = len(values)
    ranks = rankdata(values, axis=0, method="average")
    return ndtri((ranks - 0.5) / n).astype(np.float32)


class FeedbackRecommender:
    """Recommends samples to review and re-ranks after every accept/reject.

    Parameters
    ----------
    random_state : int
        Seed of the exploration draws; the same seed and the same decisions
        give the same recommendations.
    exploration : float
        Scale of the Thompson-sampling draw relative to the posterior spread
        (0 = always the posterior mean, greedy).
    mistake_rate : float
        Assumed share of mistaken clicks; each decision is used as a soft
        target of ``1 - mistake_rate`` (accept) or ``mistake_rate`` (reject).
    prior_strength : float
        Prior mean of the coefficient on the detector's score (standardised);
        larger keeps the ranking closer to the detector's.
    feature_scale : float
        Prior standard deviation of the feature coefficients.
    pair_smoothing : float
        Pseudo-count pulling each class pair's acceptance rate to the overall one (10: a pair needs
        about ten answers before it moves the ranking much, so a few mistaken clicks cannot steer it).
    max_iter : int
        Newton steps per refit (warm-started, so usually 2-3 are taken).

    Attributes
    ----------
    coef_ : ndarray
        Posterior mean of the coefficients ``[intercept, prior, features..., same-label neighbours,
        all neighbours, class pair]``.
    decisions_ : dict of int to bool
        Standing decisions in order.
    n_samples_ : int

    Examples
    --------
    >>> rec = FeedbackRecommender(random_state=0).fit(table, detector.scores_)  # doctest: +SKIP
    >>> first = rec.recommend(10)  # doctest: +SKIP
    >>> rec.update(first[:2], [True, False]).recommend(10)  # doctest: +SKIP
    """

    def __init__(
        self,
        random_state: int = 0,
        *,
        exploration: float = 0.15,
        mistake_rate: float = 0.1,
        prior_strength: float = 2.0,
        feature_scale: float = 0.3,
        pair_smoothing: float = 10.0,
        max_iter: int = 6,
    ) -> None:
        self.random_state = random_state
        self.exploration = exploration
        self.mistake_rate = mistake_rate
        self.prior_strength = prior_strength
        self.feature_scale = feature_scale
        self.pair_smoothing = pair_smoothing
        self.max_iter = max_iter

    # -- fitting -----------------------------------------------------------------------

    def fit(
        self,
        features,
        prior_scores: np.ndarray,
        neighbors: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        labels: np.ndarray | None = None,
    ) -> FeedbackRecommender:
        """Set up the model over all samples; no decisions yet.

        Parameters
        ----------
        features : FeatureTable or ndarray of shape (N, F)
            Trajectory features. A :class:`~timetravel.features.FeatureTable`
            also supplies ``neighbors``, ``groups`` (given x suggested label)
            and ``labels`` unless they are passed explicitly.
        prior_scores : ndarray of shape (N,)
            Initial suspicion (e.g. ``AbnormalityDetector.scores_``),
            higher = recommend first.
        neighbors : ndarray of shape (N, k), optional
            Indices of each sample's nearest neighbours.
        groups : ndarray of shape (N,), optional
            Integer group of each sample (e.g. its class pair).
        labels : ndarray of shape (N,), optional
            Given labels (for same-label neighbour evidence); without them all
            neighbours count as same-label.

        Returns
        -------
        self
        """
        self._check_params()
        values, neighbors, groups, labels = _unpack(features, neighbors, groups, labels)
        n = len(values)
        prior_scores = np.asarray(prior_scores, dtype=np.float64)
        if prior_scores.shape != (n,):
            raise RecommenderError(f"prior_scores has shape {prior_scores.shape} but features have {n} rows")
        if n < 2:
            raise RecommenderError(f"need at least 2 samples, got {n}")
        if not (np.isfinite(values).all() and np.isfinite(prior_scores).all()):
            raise RecommenderError("features and prior_scores must be finite")
        self.n_samples_ = n
        self._labels = np.zeros(n, dtype=np.int64) if labels is None else _check_vector(labels, n, "labels")
        self._groups = np.zeros(n, dtype=np.int64) if groups is None else _check_vector(groups, n, "groups")
        self._adjacency = _symmetric_adjacency(neighbors, n) if neighbors is not None else None
        self._k_norm = 1.0 / max(neighbors.shape[1], 1) if neighbors is not None else 1.0
        n_feat = values.shape[1]
        self._design = np.empty((n, 2 + n_feat + 3), dtype=np.float32, order="F")
        self._design[:, 0] = 1.0
        # the prior keeps its own shape (standardised, not rank-transformed): a gap between a
        # suspicious mode and the rest is information that small learned corrections must not cross
        self._design[:, 1] = (prior_scores - prior_scores.mean()) / max(prior_scores.std(), 1e-12)
        self._design[:, 2 : 2 + n_feat] = rank_normal_scores(values) if n_feat else 0.0
        self._col_same, self._col_any, self._col_pair = 2 + n_feat, 3 + n_feat, 4 + n_feat
        self._design[:, self._col_same :] = 0.0
        p = self._design.shape[1]
        self._prior_mean = np.zeros(p)
        self._prior_mean[1] = self.prior_strength
        self._prior_mean[self._col_pair] = 0.5
        sd = np.full(p, self.feature_scale)
        sd[0], sd[1] = 3.0, 1.0
        sd[self._col_same :] = 1.0
        self._prior_prec = 1.0 / sd**2
        self._prior_chol = np.diag(1.0 / sd)
        self._pair_acc = np.zeros(int(self._groups.max()) + 1)
        self._pair_rej = np.zeros_like(self._pair_acc)
        self.decisions_: dict[int, bool] = {}
        self._history: dict[int, list[bool]] = {}  # every decision per sample, for undo
        self._rng = np.random.default_rng(self.random_state)
        self.coef_ = self._prior_mean.copy()
        self._chol = self._prior_chol
        self._rerank()
        return self

    def _check_params(self) -> None:
        err = {"error": RecommenderError}
        check_int(self.random_state, "random_state", **err)
        check_real(self.exploration, "exploration", minimum=0, **err)
        check_real(self.mistake_rate, "mistake_rate", minimum=0, maximum=0.5, exclusive_maximum=True, **err)
        check_real(self.prior_strength, "prior_strength", minimum=0, **err)
        check_real(self.feature_scale, "feature_scale", minimum=0, exclusive_minimum=True, **err)
        check_real(self.pair_smoothing, "pair_smoothing", minimum=0, exclusive_minimum=True, **err)
        check_int(self.max_iter, "max_iter", minimum=1, **err)

    # -- feedback ----------------------------------------------------------------------

    def update(self, indices: Sequence[int] | int, accepted: Sequence[bool] | bool) -> FeedbackRecommender:
        """Record decisions on samples (by index; True = accepted) and re-rank.

        Not scikit-learn's ``partial_fit``: it takes decisions on sample numbers,
        not more rows of X. A new decision on a reviewed sample replaces the old one.

        Raises
        ------
        RecommenderError
            An index is out of range or the two arguments differ in length.
        """
        self._check_fitted()
        idx = self._check_indices(indices)
        acc = np.atleast_1d(np.asarray(accepted))
        if acc.shape != idx.shape or acc.dtype.kind not in "bui":
            raise RecommenderError(f"accepted must be {len(idx)} booleans matching indices, got {acc!r}")
        for i, a in zip(idx.tolist(), acc.astype(bool).tolist()):
            self._history.setdefault(i, []).append(a)
            self._set(i, a)
        self._refit()
        return self

    def undo(self, index: int) -> FeedbackRecommender:
        """Withdraw the latest decision on ``index`` and re-rank.

        As in the feedback log, an earlier decision on the same sample then
        stands again; without one the sample is unreviewed again.
        """
        self._check_fitted()
        i = int(self._check_indices(index)[0])
        if i not in self.decisions_:
            raise RecommenderError(f"sample {i} has no decision to undo")
        stack = self._history[i]
        stack.pop()
        self._set(i, stack[-1] if stack else None)
        self._refit()
        return self

    def _set(self, i: int, accepted: bool | None) -> None:
        """Replace the standing decision on ``i`` (None: no decision), moving it to the end of the order."""
        if i in self.decisions_:
            self._apply(i, self.decisions_.pop(i), -1.0)
        if accepted is not None:
            self.decisions_[i] = accepted
            self._apply(i, accepted, 1.0)

    def restore(self, state) -> FeedbackRecommender:
        """Forget all decisions and apply the standing ones of a feedback log.

        Parameters
        ----------
        state : FeedbackState or dict of int to bool
            ``FeedbackLog(...).read()`` or its ``decisions``.
        """
        self._check_fitted()
        decisions = getattr(state, "decisions", state)
        for i in list(self.decisions_):
            self._set(i, None)
        self._history = {}
        self._rng = np.random.default_rng(self.random_state)
        if decisions:
            return self.update(list(decisions), list(decisions.values()))
        self._refit()
        return self

    @classmethod
    def from_feedback(cls, state, features, prior_scores, **fit_kw) -> FeedbackRecommender:
        """Build a recommender and replay a feedback log into it (``fit_kw``: fit arguments and parameters)."""
        params = {k: fit_kw.pop(k) for k in list(fit_kw) if k not in ("neighbors", "groups", "labels")}
        return cls(**params).fit(features, prior_scores, **fit_kw).restore(state)

    # -- ranking -----------------------------------------------------------------------

    def recommend(self, k: int) -> np.ndarray:
        """The ``k`` best unreviewed samples, best first (fewer when fewer remain)."""
        self._check_fitted()
        k = min(check_int(k, "k", minimum=1, error=RecommenderError), self.n_samples_ - len(self.decisions_))
        if k <= len(self._top):
            return self._top[:k].copy()
        return _top_k(self._ranking, k)

    def log_odds(self) -> np.ndarray:
        """Posterior-mean log-odds that the user accepts each sample (higher = recommend sooner)."""
        self._check_fitted()
        return np.einsum("ij,j->i", self._design, self.coef_.astype(np.float32))

    # -- internals ---------------------------------------------------------------------

    def _apply(self, i: int, accepted: bool, sign: float) -> None:
        """Add (sign=+1) or remove (-1) one decision's contribution to the incremental state."""
        g = self._groups[i]
        (self._pair_acc if accepted else self._pair_rej)[g] += sign
        if self._adjacency is None:
            return
        indptr, nbr = self._adjacency
        js = nbr[indptr[i] : indptr[i + 1]]
        delta = sign * (1.0 if accepted else -1.0) * self._k_norm
        np.add.at(self._design[:, self._col_any], js, delta)
        same = js[self._labels[js] == self._labels[i]]
        np.add.at(self._design[:, self._col_same], same, delta)

    def _pair_column(self) -> None:
        acc, rej = self._pair_acc, self._pair_rej
        n_rev = acc.sum() + rej.sum()
        base = (acc.sum() + 1.0) / (n_rev + 2.0)
        a = self.pair_smoothing
        table = np.log((acc + a * base) / (rej + a * (1 - base))) - np.log(base / (1 - base))
        self._design[:, self._col_pair] = table[self._groups]

    def _training_rows(self) -> tuple[np.ndarray, np.ndarray]:
        idx = np.fromiter(self.decisions_, dtype=np.int64, count=len(self.decisions_))
        y = np.fromiter(self.decisions_.values(), dtype=bool, count=len(idx))
        x = self._design[idx].astype(np.float64)
        # leave-one-out class-pair value: a sample's own decision must not explain itself
        acc, rej = self._pair_acc.copy(), self._pair_rej.copy()
        g = self._groups[idx]
        acc_loo = acc[g] - y
        rej_loo = rej[g] - ~y
        n_rev = acc.sum() + rej.sum() - 1
        base = (acc.sum() - y + 1.0) / (n_rev + 2.0)
        a = self.pair_smoothing
        x[:, self._col_pair] = np.log((acc_loo + a * base) / (rej_loo + a * (1 - base))) - np.log(base / (1 - base))
        target = np.where(y, 1.0 - self.mistake_rate, self.mistake_rate)
        return x, target

    def _objective(self, x: np.ndarray, t: np.ndarray, theta: np.ndarray) -> float:
        z = x @ theta
        return float(np.logaddexp(0.0, z).sum() - t @ z + 0.5 * self._prior_prec @ (theta - self._prior_mean) ** 2)

    def _refit(self) -> None:
        """MAP of the logistic model by damped Newton steps (halved until the objective drops)."""
        self._pair_column()
        if not self.decisions_:
            self.coef_ = self._prior_mean.copy()
            self._chol = self._prior_chol
            self._rerank()
            return
        x, t = self._training_rows()
        theta = self.coef_.copy()
        current = self._objective(x, t, theta)
        for _ in range(int(self.max_iter)):
            p = _sigmoid(x @ theta)
            grad = x.T @ (p - t) + self._prior_prec * (theta - self._prior_mean)
            hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(self._prior_prec)
            step = np.linalg.solve(hess, grad)
            scale = 1.0
            while scale > 1e-3:
                candidate = theta - scale * step
                value = self._objective(x, t, candidate)
                if value <= current:
                    break
                scale /= 2
            else:
                break
            theta, current = candidate, value
            if np.abs(scale * step).max() < 1e-3:
                break
        p = _sigmoid(x @ theta)
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(self._prior_prec)
        self.coef_ = theta
        self._chol = np.linalg.cholesky(hess)
        self._rerank()

    def _rerank(self) -> None:
        theta = self.coef_
        if self.exploration > 0 and self.decisions_:
            # theta ~ N(mean, exploration^2 * H^-1) with H = L L^T: solve L^T d = e
            e = self._rng.standard_normal(len(theta))
            theta = theta + self.exploration * np.linalg.solve(self._chol.T, e)
        theta = theta.astype(np.float32)
        theta[0] = 0.0  # the intercept does not change the order
        # einsum over a column-major matrix: single-threaded and steady, unlike a
        # multi-threaded BLAS gemv that stalls when the cores are busy
        ranking = np.einsum("ij,j->i", self._design, theta)
        if self.decisions_:
            ranking[np.fromiter(self.decisions_, dtype=np.int64, count=len(self.decisions_))] = -np.inf
        self._ranking = ranking
        # the best few hundred, sorted once per update, so recommend(k) costs nothing
        self._top = _top_k(ranking, min(_TOP_CACHE, self.n_samples_ - len(self.decisions_)))

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_samples_"):
            raise RecommenderError("this FeedbackRecommender is not fitted yet; call fit(features, prior_scores) first")

    def _check_indices(self, indices) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(indices))
        if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
            raise RecommenderError(f"indices must be sample numbers (integers), got {indices!r}")
        bad = idx[(idx < 0) | (idx >= self.n_samples_)]
        if bad.size:
            raise RecommenderError(f"sample index {bad[0]} is out of range for {self.n_samples_} samples")
        return idx.astype(np.int64)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, largest first."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    top = np.argpartition(scores, len(scores) - k)[len(scores) - k :]
    return top[np.argsort(-scores[top], kind="stable")].astype(np.int64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _check_vector(values, n: int, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.shape != (n,) or arr.dtype.kind not in "iu" or (n and arr.min() < 0):
        raise RecommenderError(f"{name} must be {n} non-negative integers, got shape {arr.shape} dtype {arr.dtype}")
    return arr.astype(np.int64)


def _unpack(features, neighbors, groups, labels):
    """Arrays from a FeatureTable (or a plain matrix) plus the explicit overrides."""
    from timetravel.features import FeatureTable

    if isinstance(features, FeatureTable):
        k = int(max(features.labels.max(), features.suggested.max())) + 1
        neighbors = features.neighbors if neighbors is None else neighbors
        groups = features.labels * k + features.suggested if groups is None else groups
        labels = features.labels if labels is None else labels
        values = features.values
    else:
        values = np.asarray(features)
    if values.ndim != 2:
        raise RecommenderError(f"features must be a FeatureTable or an (N, F) array, got shape {values.shape}")
    if neighbors is not None:
        neighbors = np.asarray(neighbors)
        if neighbors.ndim != 2 or len(neighbors) != len(values) or neighbors.dtype.kind not in "iu":
            raise RecommenderError(f"neighbors must be an integer array of shape ({len(values)}, k), got "
                                   f"{neighbors.shape} {neighbors.dtype}")
        if neighbors.size and (neighbors.min() < 0 or neighbors.max() >= len(values)):
            raise RecommenderError(f"neighbors must index samples in [0, {len(values)})")
    return values, neighbors, groups, labels


def _symmetric_adjacency(neighbors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, indices) of the kNN graph with both edge directions."""
    k = neighbors.shape[1]
    src = np.repeat(np.arange(n), k)
    dst = neighbors.reshape(-1).astype(np.int64)
    rows = np.concatenate([src, dst])
    cols = np.concatenate([dst, src])
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, cols[order]

