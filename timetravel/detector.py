"""The abnormality detector: an unsupervised estimator over trajectory features.

The pipeline that runs it and saves ``RUN/features/`` is :mod:`timetravel.detection`.

Each feature is turned into a normal score by its rank (robust to scale and
heavy tails) and oriented so that high means suspicious. The detector then
learns, without any labels, how much to trust each feature: each is weighted
by its (non-negative) loading on the first principal component of the
features' correlation matrix, so signals that agree with the others count and
a feature that measures something unrelated gets (near) zero weight.

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

_REFERENCE_SIZE = 2048  # sorted values kept per feature for the rank transform
_CLIP = 3.5


class DetectorError(TimetravelError, ValueError):
    """The detector was given unusable input or used before fitting."""


class AbnormalityDetector:
    """Scores samples by how abnormal their training dynamics are.

    ``scores_`` and :meth:`suspicion` are higher for more suspicious samples;
    :meth:`score_samples` follows scikit-learn (lower = more abnormal).

    Parameters
    ----------
    method : {"consensus", "mean"}
        How the oriented feature scores are weighted: by agreement with the
        other features (see the module docstring) or equally.
    agreement : float
        Weight of the disagreement penalty (0 = the plain weighted mean).
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

    def __init__(self, method: str = "consensus", *, agreement: float = 0.5, random_state: int = 0) -> None:
        self.method = method
        self.agreement = agreement
        self.random_state = random_state

    # -- fitting -----------------------------------------------------------------------

    def fit(self, features: FeatureTable) -> AbnormalityDetector:
        """Learn the rank transform and the feature weights; returns self."""
        if self.method not in ("consensus", "mean"):
            raise DetectorError(f"method must be 'consensus' or 'mean', got {self.method!r}")
        check_real(self.agreement, "agreement", minimum=0, error=DetectorError)
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
        if self.method == "mean":
            self.weights_ = np.full(z.shape[1], 1.0 / z.shape[1])
        else:
            self.weights_ = _consensus_weights(z[fit_rows])
        self._z = z
        self.scores_ = self._score(z)
        return self

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

        Only features that push the score up are named, strongest first, one
        per family of related features (e.g. the two margins); a sample with none gets ``["nothing unusual in its training dynamics"]``.
        """
        contrib = self.contributions(i)
        i = int(i)
        out: list[str] = []
        families: set[str] = set()
        for j in np.argsort(-contrib, kind="stable"):
            spec = FEATURES[self.names_[j]]
            if len(out) == top or contrib[j] <= 0.05:
                break
            if spec.family in families:
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
            "random_state": self.random_state,
            "names": self.names_,
            "directions": self.directions_.astype(int).tolist(),
            "weights": self.weights_.tolist(),
        }

    @classmethod
    def from_saved(cls, params: dict[str, Any], reference: np.ndarray, values: np.ndarray) -> AbnormalityDetector:
        """Rebuild a fitted detector from :meth:`to_dict`, its ``reference_`` and the raw feature values."""
        det = cls(params["method"], agreement=params["agreement"], random_state=params["random_state"])
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
