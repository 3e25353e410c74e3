"""The abnormality detector: an unsupervised estimator over trajectory features.

The pipeline that runs it and saves ``RUN/features/`` is :mod:`timetravel.detection`.

Each feature is turned into a normal score by its rank (robust to scale and
heavy tails) and oriented so that high means suspicious. The detector then
learns, without any labels, how much to trust each feature. The features fall
in two views that fail in different ways: the logit dynamics (margins, losses,
confidence, forgetting) and the embedding geometry (label disagreement of the
nearest neighbours, distance to the class centroids, canvas motion). Each
view's most suspicious samples serve as pseudo-labels for the other view, and a
feature's weight grows steeply with how well it separates them
(:func:`cross_view_weights`): what a run supports (the last epoch's loss in a
short training that is still learning, the early dynamics in a long one that
memorised its noise) gets the weight, while a feature that only repeats its own
view's noise gets almost none. ``method="consensus"`` weights by the loadings on
the first principal component of the correlations instead.

Where the run has a labelled held-out set, one feature is validated by it: the
area under the margin over the epochs before the network memorises noisy labels
(``aum_early_stop``: up to the best held-out accuracy, keeping the epochs averaged
into it, when the model overfits its training labels, else to the last epoch; from the
training-mode margins of the run's second half where the eval-mode predictions jump
between epochs far more than the training-mode ones). It is the
detector's anchor: it gets a fixed share of the weight (half by default), the
other features share the rest as their method weights them. On the subject runs
of the recommendation benchmark this alone was the strongest single signal in
most settings, and the cross-view weights alone spread their weight too evenly
to match it.

The score is the weighted mean of the oriented normal scores minus a penalty
for disagreement (their weighted standard deviation): a mislabelled sample is
abnormal in almost every view at once, while a hard but correctly labelled one
is extreme in a few (high loss, many forgetting events) and ordinary in the
others. Each feature's share of the weighted mean is its contribution, from
which :meth:`AbnormalityDetector.reasons` says in words which features made a
sample suspicious. True labels are never used.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from timetravel._random import subsample
from timetravel._validation import check_index, check_int, check_real
from timetravel.errors import TimetravelError
from timetravel.features import FEATURES, FeatureTable

logger = logging.getLogger(__name__)

METHODS = ("cross-view", "consensus", "mean")
_REFERENCE_SIZE = 2048  # sorted values kept per feature for the rank transform
_CLIP = 3.5
_REASON_Z = 1.0  # a reason names a feature only where the sample is more unusual than 84% of samples


class DetectorError(TimetravelError, ValueError):
    """The detector was given unusable input or used before fitting."""


class AbnormalityDetector:
    """Scores samples by how abnormal their training dynamics are.

    ``scores_`` and :meth:`suspicion` are higher for more suspicious samples;
    :meth:`score_samples` follows scikit-learn (lower = more abnormal).

    Parameters
    ----------
    method : {"cross-view", "consensus", "mean"}
        How the oriented feature scores are weighted: by cross-view agreement
        (:func:`cross_view_weights`), by the first principal component of
        their correlations, or equally.
    agreement : float
        Weight of the disagreement penalty (0 = the plain weighted mean).
    anchor : str or None
        A feature given the fixed weight ``anchor_share`` when the table has it
        (default: the early-stopped area under the margin); None = no anchor.
    anchor_share : float
        The anchor's weight, in [0, 1]; the other features share the rest.
    random_state : int
        Seed of the subsample used for the correlation and the rank reference.

    Attributes
    ----------
    names_ : list of str
        Feature names seen in :meth:`fit`.
    directions_ : ndarray of shape (F,)
        +1 / -1: which way each feature is suspicious.
    reference_ : ndarray of shape (F, R)
        Sorted reference values of each feature (the rank transform).
    weights_ : ndarray of shape (F,)
        Weight of each oriented normal score in the score.
    scores_ : ndarray of shape (N,), float32
        Suspicion of the training samples, higher = more suspicious
        (:meth:`score_samples` uses scikit-learn's opposite sign).

    Examples
    --------
    >>> from timetravel.features import extract_features  # doctest: +SKIP
    >>> det = AbnormalityDetector().fit(extract_features(store))  # doctest: +SKIP
    >>> worst = det.scores_.argmax()  # doctest: +SKIP
    >>> det.reasons(worst)  # doctest: +SKIP
    ['5 of its 10 nearest neighbours carry another label mid-training', ...]
    """

    def __init__(self, method: str = "cross-view", *, agreement: float = 0.5, anchor: str | None = "aum_early_stop",
                 anchor_share: float = 0.5, random_state: int = 0) -> None:  # fmt: skip
        self.method = method
        self.agreement = agreement
        self.anchor = anchor
        self.anchor_share = anchor_share
        self.random_state = random_state

    # -- fitting -----------------------------------------------------------------------

    def fit(self, features: FeatureTable) -> AbnormalityDetector:
        """Learn the rank transform and the feature weights; returns self."""
        if self.method not in METHODS:
            raise DetectorError(f"method must be one of {', '.join(map(repr, METHODS))}, got {self.method!r}")
        check_real(self.agreement, "agreement", minimum=0, error=DetectorError)
        check_real(self.anchor_share, "anchor_share", minimum=0, maximum=1, error=DetectorError)
        check_int(self.random_state, "random_state", error=DetectorError)
        if not isinstance(features, FeatureTable):
            raise DetectorError(f"features must be a FeatureTable (from extract_features), got {type(features).__name__}")
        x = features.values
        if x.shape[0] < 4:
            raise DetectorError(f"need at least 4 samples to fit the detector, got {x.shape[0]}")
        if not np.isfinite(x).all():
            raise DetectorError("features contain NaN or inf values")
        self.names_ = list(features.names)
        self.directions_ = np.asarray(features.directions, dtype=np.float64)
        ref_rows = subsample(len(x), _REFERENCE_SIZE, self.random_state, "detector-reference")
        self.reference_ = np.sort(x[ref_rows].astype(np.float64), axis=0).T.copy()
        self.raw_ = x
        z = self.transform(x)
        fit_rows = subsample(len(z), 50000, self.random_state, "detector-weights")
        rest = np.array([name != self.anchor for name in self.names_])
        anchored = 0 < rest.sum() < len(rest)  # the anchor is there, beside other features
        if not anchored:
            rest[:] = True
        self.weights_ = np.zeros(len(self.names_))
        self.weights_[rest] = self._method_weights(z[fit_rows][:, rest], np.array(self.names_)[rest])
        if anchored:
            self.weights_ *= 1.0 - self.anchor_share
            self.weights_[~rest] = self.anchor_share
        self._z = z
        self.scores_ = self._score(z)
        return self

    def _method_weights(self, z: np.ndarray, names: np.ndarray) -> np.ndarray:
        """Weights of the features ``names`` (columns of ``z``) by the detector's method, summing to 1."""
        if self.method == "mean":
            return np.full(z.shape[1], 1.0 / z.shape[1])
        if self.method == "consensus":
            return _consensus_weights(z)
        return cross_view_weights(z, np.array([FEATURES[name].view == "embedding" for name in names]))

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Oriented normal scores ``(N, F)`` of raw feature values (high = suspicious)."""
        from scipy.special import ndtri

        self._check_fitted("reference_")
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.names_):
            raise DetectorError(f"values must have shape (N, {len(self.names_)}), got {values.shape}")
        r = self.reference_.shape[1]
        out = np.empty(values.shape)
        for j in range(values.shape[1]):
            ref = self.reference_[j]
            mid = (np.searchsorted(ref, values[:, j], "left") + np.searchsorted(ref, values[:, j], "right")) / 2
            q = np.clip(mid / r, 0.5 / r, 1 - 0.5 / r)
            out[:, j] = ndtri(q) * self.directions_[j]
        return np.clip(out, -_CLIP, _CLIP)

    # -- scoring -----------------------------------------------------------------------

    def suspicion(self, X: np.ndarray) -> np.ndarray:
        """Suspicion score of samples with raw feature values ``X``; higher is more suspicious.

        On the training features this equals :attr:`scores_`.

        Parameters
        ----------
        X : ndarray of shape (N, F)
            Raw feature values, columns in the order of :attr:`names_`.

        Returns
        -------
        ndarray of shape (N,), float32
        """
        self._check_fitted()
        return self._score(self.transform(X))

    def score_samples(self, X: np.ndarray) -> np.ndarray:
        """Normality of samples with raw feature values ``X``: the lower, the more abnormal.

        scikit-learn's convention for outlier detectors (``IsolationForest``,
        ``LocalOutlierFactor``): this is ``-suspicion(X)``.

        Parameters
        ----------
        X : ndarray of shape (N, F)
            Raw feature values, columns in the order of :attr:`names_`.

        Returns
        -------
        ndarray of shape (N,), float32
        """
        return -self.suspicion(X)

    def _score(self, z: np.ndarray) -> np.ndarray:
        mean = z @ self.weights_
        spread = np.sqrt(np.maximum(((z - mean[:, None]) ** 2) @ self.weights_, 0.0))
        return (mean - self.agreement * spread).astype(np.float32)

    def contributions(self, i: int) -> np.ndarray:
        """Each feature's share of sample ``i``'s weighted mean (weight times oriented normal score)."""
        self._check_fitted()
        i = self._check_index(i)
        return self._z[i] * self.weights_

    def reasons(self, i: int, top: int = 3) -> list[str]:
        """Up to ``top`` short sentences saying which features make sample ``i`` suspicious.

        Only features that push the score up and in which the sample is more
        unusual than 84% of samples (normal score >= 1) are named, strongest
        first, one per family of related features (e.g. the two margins); a
        sample with none gets ``["nothing unusual in its training dynamics"]``.
        """
        contrib = self.contributions(i)
        i = int(i)
        out: list[str] = []
        families: set[str] = set()
        for j in np.argsort(-contrib, kind="stable"):
            spec = FEATURES[self.names_[j]]
            if len(out) == top or contrib[j] <= 0.05:
                break
            if spec.family in families or self._z[i, j] < _REASON_Z:
                continue
            families.add(spec.family)
            pct = min(100.0 * _normal_cdf(self._z[i, j]), 99.0)
            out.append(f"{spec.reason.format(v=float(self.raw_[i, j]))}; more unusual than {pct:.0f}% of samples")
        return out or ["nothing unusual in its training dynamics"]

    # -- persistence -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Parameters and fitted weights as JSON-ready data (the rank reference is saved separately)."""
        self._check_fitted()
        return {
            "method": self.method,
            "agreement": self.agreement,
            "anchor": self.anchor,
            "anchor_share": self.anchor_share,
            "random_state": self.random_state,
            "names": self.names_,
            "directions": self.directions_.astype(int).tolist(),
            "weights": self.weights_.tolist(),
        }

    @classmethod
    def from_saved(cls, params: dict[str, Any], reference: np.ndarray, values: np.ndarray) -> AbnormalityDetector:
        """Rebuild a fitted detector from :meth:`to_dict`, its ``reference_`` and the raw feature values."""
        # detections saved before the anchor existed had none (their weights are loaded as saved)
        det = cls(params["method"], agreement=params["agreement"], anchor=params.get("anchor"),
                  anchor_share=params.get("anchor_share", 0.5), random_state=params["random_state"])
        det.names_ = list(params["names"])
        det.directions_ = np.asarray(params["directions"], dtype=np.float64)
        det.weights_ = np.asarray(params["weights"], dtype=np.float64)
        det.reference_ = np.asarray(reference, dtype=np.float64)
        if det.reference_.shape[0] != len(det.names_) or values.shape[1] != len(det.names_):
            raise DetectorError(
                f"saved detector has {len(det.names_)} features but the reference has {det.reference_.shape[0]} "
                f"rows and the values {values.shape[1]} columns"
            )
        det.raw_ = values
        det._z = det.transform(values)
        det.scores_ = det._score(det._z)
        return det

    # -- helpers -----------------------------------------------------------------------

    def _check_fitted(self, attribute: str = "weights_") -> None:
        if not hasattr(self, attribute):
            raise DetectorError("this AbnormalityDetector is not fitted yet; call fit(features) first")

    def _check_index(self, i) -> int:
        return check_index(i, "sample index", len(self.raw_), error=DetectorError)


def _normal_cdf(z: float) -> float:
    from scipy.special import ndtr

    return float(ndtr(z))


def _consensus_weights(z: np.ndarray) -> np.ndarray:
    """Non-negative loadings on the first principal component of the feature correlations, summing to 1."""
    centred = z - z.mean(axis=0)
    std = centred.std(axis=0)
    std[std == 0] = np.inf  # a constant feature correlates with nothing
    corr = (centred.T @ centred) / len(z) / np.outer(std, std)
    np.fill_diagonal(corr, 1.0)
    _, vecs = np.linalg.eigh(corr)
    v = vecs[:, -1]
    if v.sum() < 0:
        v = -v
    w = np.maximum(v, 0.0)
    if w.sum() <= 0:
        return np.full(len(v), 1.0 / len(v))
    return w / w.sum()


def cross_view_weights(z: np.ndarray, views: np.ndarray, *, top: float = 0.15, power: float = 4.0,
                       rounds: int = 2) -> np.ndarray:
    """Feature weights learned without labels from the agreement of two views, summing to 1.

    Each view's ``top`` share of most suspicious samples (by the view's own
    weighted score) labels the other view's features: a feature's separation
    is the difference of its mean between those samples and the rest, in
    pooled standard deviations, and its weight is the separation (clipped at 0)
    raised to ``power``. Two views whose errors differ (a hard sample has a
    high loss but ordinary neighbours; a memorised mislabel has a low final
    loss but neighbours of its true class) agree mostly on the mislabelled
    samples, so the weight goes to the features that find what the other view
    finds, and the steep power lets the strongest feature of a view dominate
    it instead of being averaged with weak ones. The views start from their
    first-principal-component weights and alternate ``rounds`` times. With a
    single view, its own consensus labels it.

    Parameters
    ----------
    z : ndarray of shape (N, F)
        Oriented normal scores, high = suspicious.
    views : bool ndarray of shape (F,)
        True for the features of the second view (embedding geometry).
    top : float
        Share of samples taken as a view's suspects (a few times the share of
        mislabels worth reviewing; the weights change little between 0.1 and 0.25).
    power : float
        Steepness of the weight in the separation.
    rounds : int
        Alternations between the views.

    Returns
    -------
    ndarray of shape (F,), non-negative, summing to 1

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> bad = rng.random(1000) < 0.1
    >>> z = rng.normal(size=(1000, 4)) + np.outer(bad, [2.0, 0.2, 2.0, 0.0])
    >>> cross_view_weights(z, np.array([False, False, True, True])).round(1).tolist()
    [0.6, 0.0, 0.4, 0.0]
    """
    views = np.asarray(views, dtype=bool)
    groups = [np.flatnonzero(~views), np.flatnonzero(views)]
    groups = [g for g in groups if len(g)]
    scores = [z[:, g] @ _consensus_weights(z[:, g]) for g in groups]
    separation = np.zeros(z.shape[1])
    for _ in range(max(int(rounds), 1)):
        for i, g in enumerate(groups):
            referee = scores[1 - i] if len(groups) == 2 else scores[i]
            separation[g] = np.maximum(_separation(z[:, g], referee, top), 0.0)
        scores = [z[:, g] @ _normalised(separation[g] ** power) for g in groups]
    return _normalised(separation**power)


def _separation(z: np.ndarray, score: np.ndarray, top: float) -> np.ndarray:
    """Per column: mean over the ``top`` share of highest ``score`` minus the mean over the rest, in pooled SDs."""
    suspects = score >= np.quantile(score, 1.0 - top)
    if suspects.all() or not suspects.any():
        return np.zeros(z.shape[1])
    a, b = z[suspects], z[~suspects]
    pooled = np.sqrt(0.5 * (a.var(axis=0) + b.var(axis=0)))
    return np.where(pooled > 0, (a.mean(axis=0) - b.mean(axis=0)) / np.maximum(pooled, 1e-12), 0.0)


def _normalised(w: np.ndarray) -> np.ndarray:
    total = w.sum()
    return w / total if total > 0 else np.full(len(w), 1.0 / len(w))
