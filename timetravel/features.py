"""Per-sample training-dynamics features, streamed from the run store.

Every feature is one number per training sample, computed from the recorded
epochs without the true labels. Three families:

* **logit dynamics** (every epoch, read in row chunks): data-map confidence and
  variability, area under the margin (eval-mode, and training-mode when
  recorded), forgetting events, epoch first learned, last-epoch and early loss;
* **embedding space** (a few evenly spaced epochs): disagreement of the given
  label with the labels of the k nearest neighbours (faiss), and distance to
  the centroid of the labelled class relative to the nearest other centroid;
* **canvas** (only when a projection exists): speed and acceleration of the 2D
  trajectory, as DeepDebugger uses.

:data:`FEATURES` documents each feature in one line; ``direction`` says which
way is suspicious (+1: high values, -1: low values).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from timetravel._validation import check_int, check_real
from timetravel.errors import StoreError
from timetravel.numerics import embedding_neighbours, label_margins

logger = logging.getLogger(__name__)

_CHUNK = 65536


@dataclass(frozen=True)
class FeatureSpec:
    """Documentation of one feature: its name, a one-line description, and which way is suspicious."""

    name: str
    description: str
    direction: int
    reason: str  # phrase for the app, formatted with the value as {v}
    family: str = ""  # features of one family say the same thing; reasons name only the strongest
    view: str = "logits"  # "logits" (training dynamics) or "embedding" (geometry): the detector's two views

    def __post_init__(self) -> None:
        if not self.family:
            object.__setattr__(self, "family", self.name)


FEATURES: dict[str, FeatureSpec] = {
    s.name: s
    for s in (
        FeatureSpec("confidence", "mean probability of the given label over the epochs (data-map confidence)", -1,
                    "the model gives its label little probability (mean {v:.2f})"),
        FeatureSpec("variability", "standard deviation of the given-label probability over the epochs "
                    "(data-map variability)", 1, "the model keeps changing its mind about the label (std {v:.2f})"),
        FeatureSpec("aum", "area under the margin: mean over epochs of the given-label logit minus the largest "
                    "other logit (eval mode)", -1, "another class usually outscores its label (mean margin {v:.2f})", "margin"),
        FeatureSpec("aum_train", "area under the margin from training-mode margins recorded during training", -1,
                    "another class outscores its label during training (mean margin {v:.2f})", "margin"),
        FeatureSpec("aum_early_stop", "area under the margin over the epochs before noisy labels are memorised: "
                    "near the best held-out accuracy and around it, when the model overfits its training labels, "
                    "else its second half; from training-mode margins over the second half when the eval-mode "
                    "predictions jump far more between epochs (runs with a labelled held-out set)", -1,
                    "another class outscores its label while the model still generalises (mean margin {v:.2f} "
                    "before memorisation)", "margin"),
        FeatureSpec("forgetting", "forgetting events: epochs where the prediction went from the given label to "
                    "another", 1, "forgotten {v:.0f} times after being learned"),
        FeatureSpec("first_learned", "fraction of training before the given label is predicted for good "
                    "(1 = never)", 1, "learned late ({v:.0%} of training passed first)"),
        FeatureSpec("loss_last", "cross-entropy of the given label at the last epoch", 1,
                    "high loss at the last epoch ({v:.2f})"),
        FeatureSpec("loss_early", "mean cross-entropy of the given label over the first quarter of the epochs", 1,
                    "high loss early in training ({v:.2f}), before it could be memorised"),
        FeatureSpec("knn_disagreement_early", "fraction of the k nearest neighbours in embedding space with another "
                    "label, early in training", 1, "{v:.0%} of its nearest neighbours carry another label early on", "knn",
                    view="embedding"),
        FeatureSpec("knn_disagreement_mid", "fraction of the k nearest neighbours in embedding space with another "
                    "label, mid-training", 1, "{v:.0%} of its nearest neighbours carry another label mid-training", "knn",
                    view="embedding"),
        FeatureSpec("knn_disagreement_last", "fraction of the k nearest neighbours in embedding space with another "
                    "label, at the last epoch", 1, "{v:.0%} of its nearest neighbours carry another label at the end", "knn",
                    view="embedding"),
        FeatureSpec("centroid_distance", "distance to the centroid of its labelled class over that class's median "
                    "distance, averaged over epochs", 1, "far from the centre of its class ({v:.1f}x the typical "
                    "distance)", view="embedding"),
        FeatureSpec("centroid_ratio", "distance to its labelled class's centroid over the distance to the nearest "
                    "other centroid, averaged over epochs", 1,
                    "closer to another class's centre than to its own (ratio {v:.2f})", view="embedding"),
        FeatureSpec("canvas_speed", "mean distance travelled per epoch on the 2D canvas (in canvas widths)", 1,
                    "moves fast on the canvas ({v:.3f} canvas widths per epoch)", "canvas",
                    view="embedding"),
        FeatureSpec("canvas_acceleration", "mean change of velocity per epoch on the 2D canvas (in canvas widths)", 1,
                    "its canvas trajectory keeps changing direction ({v:.3f})", "canvas",
                    view="embedding"),
    )
}


@dataclass(frozen=True)
class FeatureTable:
    """Per-sample features of a run.

    Attributes
    ----------
    values : ndarray of shape (N, F), float32
        One row per training sample.
    names : list of str
        F feature names (keys of :data:`FEATURES`).
    descriptions : list of str
        F one-line descriptions.
    directions : ndarray of shape (F,), int8
        +1 when high values are suspicious, -1 when low values are.
    labels : ndarray of shape (N,), int64
        The given labels.
    suggested : ndarray of shape (N,), int64
        The most likely other label (highest mean probability over the epochs
        among classes other than the given one).
    predicted : ndarray of shape (N,), int64
        The model's prediction at the last epoch.
    neighbors : ndarray of shape (N, k), int32, or None
        Nearest neighbours in embedding space (mid-training epoch), self excluded.
    epochs : list of int
        Epochs the features were computed from.
    meta : dict
        Settings (k, the epochs used for each embedding feature, projection use).
    """

    values: np.ndarray
    names: list[str]
    descriptions: list[str]
    directions: np.ndarray
    labels: np.ndarray
    suggested: np.ndarray
    predicted: np.ndarray
    neighbors: np.ndarray | None = None
    epochs: list[int] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, f = self.values.shape
        if len(self.names) != f or len(self.descriptions) != f or len(self.directions) != f:
            raise ValueError(f"values has {f} columns but names/descriptions/directions have "
                             f"{len(self.names)}/{len(self.descriptions)}/{len(self.directions)}")
        for name, arr in (("labels", self.labels), ("suggested", self.suggested), ("predicted", self.predicted)):
            if len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} entries but values has {n} rows")
        if self.neighbors is not None and len(self.neighbors) != n:
            raise ValueError(f"neighbors has {len(self.neighbors)} rows but values has {n}")

    @property
    def n_samples(self) -> int:
        """Number of samples N."""
        return self.values.shape[0]

    def column(self, name: str) -> np.ndarray:
        """The values of one feature."""
        try:
            return self.values[:, self.names.index(name)]
        except ValueError:
            raise KeyError(f"no feature named {name!r}; available: {', '.join(self.names)}") from None


def extract_features(
    store,
    *,
    n_neighbors: int = 10,
    embedding_epochs: int = 8,
    use_projection: bool = True,
    chunk_size: int = _CHUNK,
    verbose: bool = True,
) -> FeatureTable:
    """Compute the training-dynamics features of every sample of a run.

    Parameters
    ----------
    store : RunStore
        The run (at least two recorded epochs).
    n_neighbors : int
        k of the nearest-neighbour features and of ``FeatureTable.neighbors``.
    embedding_epochs : int
        At most this many evenly spaced epochs feed the centroid features.
    use_projection : bool
        Add the canvas features when the run has a projection of every epoch.
    chunk_size : int
        Rows read at a time from the memory-mapped store.
    verbose : bool
        Show progress bars.

    Returns
    -------
    FeatureTable

    Raises
    ------
    StoreError
        The run has fewer than two epochs or fewer than ``n_neighbors + 1`` samples.

    Examples
    --------
    >>> from timetravel.simulate import simulate_run
    >>> table = extract_features(simulate_run("/tmp/toy-doc", overwrite=True), verbose=False)  # doctest: +SKIP
    >>> table.values.shape  # doctest: +SKIP
    (600, 13)
    """
    epochs = list(store.epochs)
    if len(epochs) < 2:
        raise StoreError(f"{store.path}: feature extraction needs at least 2 recorded epochs, found {len(epochs)}")
    check_int(n_neighbors, "n_neighbors", minimum=1, error=StoreError)
    check_int(embedding_epochs, "embedding_epochs", minimum=1, error=StoreError)
    check_int(chunk_size, "chunk_size", minimum=1, error=StoreError)
    if store.n_samples < n_neighbors + 2:
        raise StoreError(
            f"{store.path}: n_neighbors must be >= 1 and below the number of samples - 1 "
            f"({store.n_samples} samples, n_neighbors={n_neighbors})"
        )
    labels = np.asarray(store.labels)
    columns: dict[str, np.ndarray] = {}
    plan = _EarlyStopPlan.from_store(store, epochs)
    logit_cols, suggested, predicted, early_stop = _logit_features(store, epochs, labels, chunk_size, verbose, plan)
    columns.update(logit_cols)
    knn_epochs = _spread(epochs, 3, skip_first=True)
    neighbors = None
    for tag, e in zip(("early", "mid", "last"), knn_epochs):
        nbrs = embedding_neighbours(store.embedding(e), n_neighbors, chunk_size=chunk_size)
        columns[f"knn_disagreement_{tag}"] = (labels[nbrs] != labels[:, None]).mean(axis=1)
        if tag == "mid":
            neighbors = nbrs
    cent_epochs = _spread(epochs, embedding_epochs, skip_first=True)
    columns.update(_centroid_features(store, cent_epochs, labels, chunk_size, verbose))
    projected = [e for e in epochs if e in set(store.projected_epochs)] if use_projection else []
    if len(projected) >= 3:
        columns.update(_canvas_features(store, projected))
    names = list(columns)
    values = np.column_stack([columns[n] for n in names]).astype(np.float32)
    return FeatureTable(
        values=values,
        names=names,
        descriptions=[FEATURES[n].description for n in names],
        directions=np.array([FEATURES[n].direction for n in names], dtype=np.int8),
        labels=labels,
        suggested=suggested,
        predicted=predicted,
        neighbors=neighbors,
        epochs=epochs,
        meta={
            "n_neighbors": n_neighbors,
            "knn_epochs": knn_epochs,
            "neighbors_epoch": knn_epochs[1],
            "centroid_epochs": cent_epochs,
            "projection_epochs": projected if len(projected) >= 3 else [],
            "early_stop": early_stop,
        },
    )


def _spread(epochs: Sequence[int], count: int, *, skip_first: bool) -> list[int]:
    """``count`` evenly spaced epochs from ``epochs`` (the first skipped when there are enough)."""
    pool = list(epochs[1:]) if skip_first and len(epochs) > count else list(epochs)
    idx = np.unique(np.round(np.linspace(0, len(pool) - 1, min(count, len(pool)))).astype(int))
    picked = [pool[i] for i in idx]
    while len(picked) < count:  # fewer epochs than requested: reuse the last
        picked.append(picked[-1])
    return picked


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _progress(iterable, verbose: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=not verbose, leave=False)


def early_stopping_window(store, epochs: Sequence[int], *, smoothing: int = 3, tolerance: float = 0.05,
                          overfit_z: float = 2.0, jitter_ratio: float = 5.0,
                          train_agreement: Sequence[float] | None = None) -> dict | None:
    """The epochs before noisy labels are memorised, found from the held-out accuracy; None without one.

    A network fits the cleanly labelled samples first and memorises the mislabelled ones
    later, when its held-out accuracy stops rising. The held-out peak is the best of a
    centred moving average over ``smoothing`` of the epochs that have held-out rows (the
    first peak on ties). The window starts at the first epoch whose accuracy is within
    ``tolerance`` of the whole rise (first epoch to the window's end) of the end's, but not
    before half-way to it: on a plateau it spans the plateau's second half, while a run
    still learning at its end keeps its last epochs only, where the clean samples are
    learned and the noisy ones not yet.

    The window ends at the held-out peak when the run overfits: when, at some epoch, the
    model agrees with its training labels more often than with the held-out labels, by more
    than ``overfit_z`` standard errors (both smoothed alike). It then spans at least the
    ``smoothing`` epochs averaged into the peak (one past it included): where the held-out
    accuracy jumps from epoch to epoch, a single epoch's margins are as noisy as its
    accuracy. A run that never overfits has
    memorised nothing, and its peak is only noise on a flat curve; the window then ends at
    the last epoch, where the model is best trained. Only the held-out labels and the
    given training labels are used, never the training labels' truth.

    All of that reads eval-mode predictions. When the run also recorded training-mode
    margins in every epoch, their agreement with the training labels is the check: if the
    eval-mode agreement jumps from epoch to epoch ``jitter_ratio`` times more than the
    training-mode one (RMS deviation from a centred 3-epoch moving average; a CNN whose
    BatchNorm running statistics lag its weights does that), the eval-mode network is not
    the one that trained, neither its held-out peak nor its memorising can be read, and the
    early-stopped AUM averages the training-mode margins over the second half of the run.

    Parameters
    ----------
    store : RunStore
    epochs : sequence of int
        The run's epochs, in order.
    smoothing : int
        Epochs averaged around each accuracy (odd: the average is centred).
    tolerance : float
        How far below the window's end, as a share of the rise to it, an epoch may be and
        still start the window (0: the end alone; 1: from half-way).
    overfit_z : float
        Standard errors by which the training-label agreement must exceed the held-out
        accuracy for the run to count as overfitting.
    jitter_ratio : float
        How many times more the eval-mode training-label agreement may jitter than the
        training-mode one before the window uses the training-mode margins.
    train_agreement : sequence of float, optional
        Share of training samples predicted as their given label (eval mode), one per epoch
        of ``epochs``; computed from the stored logits when not given.

    Returns
    -------
    dict or None
        ``{"first_epoch", "last_epoch", "peak_epoch", "overfit_epoch", "margins",
        "jitter_ratio", "epochs", "accuracy", "train_agreement"}`` (the window, the held-out
        peak, the first epoch that overfits or None, ``"eval"`` or ``"training"`` for the
        margins averaged, the jitter ratio or None without training-mode margins in every
        epoch, and per epoch with held-out rows its held-out accuracy and training-label
        agreement; JSON-ready; :func:`describe_early_stop` says it in words), or None when
        the run has no labelled held-out set in at least 3 epochs. With training-mode margins
        ``overfit_epoch`` is None: the eval-mode curves cannot tell.

    Raises
    ------
    ValueError
        ``smoothing`` is not a positive odd integer, ``tolerance`` is outside [0, 1],
        ``overfit_z`` or ``jitter_ratio`` is negative, or ``train_agreement`` does not
        match ``epochs``.
    """
    plan = _EarlyStopPlan.from_store(store, epochs, smoothing=smoothing, tolerance=tolerance, overfit_z=overfit_z,
                                     jitter_ratio=jitter_ratio)
    if plan is None:
        return None
    if train_agreement is None:
        train_agreement = _train_agreement(store, epochs)
    return plan.decide(train_agreement, _train_mode_agreement(store, epochs))


@dataclass(frozen=True)
class _EarlyStopPlan:
    """The held-out curve and the two candidate windows, known before the pass over the training logits."""

    epochs: list[int]  # the run's epochs
    scored: list[int]  # those with held-out rows
    accuracy: np.ndarray
    smoothing: int
    n_heldout: int
    n_train: int
    overfit_z: float
    jitter_ratio: float
    windows: dict[str, tuple[int, int]]  # "peak" / "last": (first, last epoch) of the eval-mode margins
    peak_epoch: int  # the best smoothed held-out accuracy
    half: tuple[int, int]  # the second half of the run: the window of the training-mode margins

    @classmethod
    def from_store(cls, store, epochs, *, smoothing: int = 3, tolerance: float = 0.05,
                   overfit_z: float = 2.0, jitter_ratio: float = 5.0) -> _EarlyStopPlan | None:
        if check_int(smoothing, "smoothing", minimum=1) % 2 == 0:
            raise ValueError(f"smoothing must be odd (a centred moving average), got {smoothing}")
        tolerance = check_real(tolerance, "tolerance", minimum=0, maximum=1)
        overfit_z = check_real(overfit_z, "overfit_z", minimum=0)
        jitter_ratio = check_real(jitter_ratio, "jitter_ratio", minimum=0)
        epochs = list(epochs)
        y = store.heldout_labels
        scored = [e for e in epochs if y is not None and store.has_heldout(e)]
        if len(scored) < 3:
            return None
        acc = np.array([float((np.asarray(store.logits(e, "heldout")).argmax(axis=1) == y).mean()) for e in scored])
        smooth = _moving_average(acc, smoothing)
        peak = int(np.argmax(smooth))
        windows = {}
        for name, end in (("peak", peak), ("last", len(scored) - 1)):
            near = smooth[: end + 1] >= smooth[end] - tolerance * (smooth[end] - smooth[0])
            position = epochs.index(scored[end])
            windows[name] = (max(epochs[position // 2], scored[int(np.argmax(near))]), scored[end])
        # the peak is a mean over `smoothing` epochs, so its window keeps at least those: on a curve
        # that jumps from epoch to epoch, one epoch's margins alone are as noisy as its accuracy
        half = smoothing // 2
        first, last = windows["peak"]
        windows["peak"] = (min(first, scored[max(peak - half, 0)]), scored[min(peak + half, len(scored) - 1)])
        return cls(epochs, scored, acc, smoothing, len(y), store.n_samples, overfit_z, jitter_ratio, windows,
                   scored[peak], (epochs[len(epochs) // 2], epochs[-1]))

    def overfit_epoch(self, train_agreement: Sequence[float]) -> int | None:
        """The first epoch whose training-label agreement exceeds its held-out accuracy by ``overfit_z`` SEs."""
        agree = np.asarray(train_agreement, dtype=np.float64)
        if agree.shape != (len(self.epochs),):
            raise ValueError(f"train_agreement needs one value per epoch ({len(self.epochs)}), got shape "
                             f"{agree.shape}")
        at = {e: a for e, a in zip(self.epochs, agree)}
        g = _moving_average(np.array([at[e] for e in self.scored]), self.smoothing)
        s = _moving_average(self.accuracy, self.smoothing)
        se = np.sqrt(s * (1 - s) / self.n_heldout + g * (1 - g) / self.n_train)
        over = g - s > self.overfit_z * se
        return int(self.scored[int(np.argmax(over))]) if over.any() else None

    def jitter(self, train_agreement: Sequence[float], train_mode_agreement: Sequence[float] | None) -> float | None:
        """How many times more the eval-mode training-label agreement jitters than the training-mode one.

        None without training-mode agreement or with fewer than 3 epochs. A jitter below one
        sample's share counts as one sample's, so that two curves flat to the sample do not divide 0 by 0.
        """
        if train_mode_agreement is None or len(self.epochs) < 3:
            return None
        floor = 1.0 / self.n_train
        return _jitter(train_agreement) / max(_jitter(train_mode_agreement), floor)

    @staticmethod
    def window_name(early_stop: dict) -> str:
        """Which candidate window a decision (:meth:`decide`) chose: "half" (training-mode), "peak" or "last"."""
        if early_stop["margins"] == "training":
            return "half"
        return "last" if early_stop["overfit_epoch"] is None else "peak"

    def decide(self, train_agreement: Sequence[float], train_mode_agreement: Sequence[float] | None = None) -> dict:
        """The window (JSON-ready): up to the held-out peak if the run overfits, else up to its last epoch;
        the second half of the training-mode margins where the eval-mode predictions jitter."""
        ratio = self.jitter(train_agreement, train_mode_agreement)
        margins = "training" if ratio is not None and ratio > self.jitter_ratio else "eval"
        overfit = None if margins == "training" else self.overfit_epoch(train_agreement)
        name = self.window_name({"margins": margins, "overfit_epoch": overfit})
        first, last = self.half if name == "half" else self.windows[name]
        at = dict(zip(self.epochs, train_agreement))
        return {"first_epoch": int(first), "last_epoch": int(last), "peak_epoch": int(self.peak_epoch),
                "overfit_epoch": overfit, "margins": margins,
                "jitter_ratio": None if ratio is None else round(float(ratio), 3),
                "epochs": [int(e) for e in self.scored], "accuracy": [round(float(a), 6) for a in self.accuracy],
                "train_agreement": [round(float(at[e]), 6) for e in self.scored]}


def describe_early_stop(early_stop: dict | None) -> str:
    """One line on the early-stopped AUM's window (``FeatureTable.meta["early_stop"]``), for people.

    Examples
    --------
    >>> describe_early_stop({"first_epoch": 4, "last_epoch": 7, "peak_epoch": 7, "overfit_epoch": 3,
    ...                      "epochs": [3, 7], "accuracy": [0.78, 0.8], "train_agreement": [0.82, 0.91]})
    'early-stopped AUM over epochs 4..7: the held-out accuracy peaks at epoch 7 (0.800); the model fits its training labels better than the held-out ones from epoch 3 (0.820 against 0.780)'
    """
    if early_stop is None:
        return "no early-stopped AUM: the run has no labelled held-out set in at least 3 epochs"
    span = f"early-stopped AUM over epochs {early_stop['first_epoch']}..{early_stop['last_epoch']}"
    if early_stop.get("margins", "eval") == "training":  # detections saved before the check have no "margins"
        return (f"{span}, the second half, from training-mode margins: the eval-mode predictions of the training "
                f"labels jump {early_stop['jitter_ratio']:.1f}x more from epoch to epoch than the training-mode "
                "ones (as BatchNorm statistics that lag the weights make them), so neither the held-out peak nor "
                "memorising can be read from them")
    at = {e: (a, g) for e, a, g in zip(early_stop["epochs"], early_stop["accuracy"], early_stop["train_agreement"])}
    peak, over = early_stop["peak_epoch"], early_stop["overfit_epoch"]
    if over is None:
        a, g = at[early_stop["epochs"][-1]]
        return (f"{span}: the model never fits its training labels significantly better than the held-out ones "
                f"(last epoch {g:.3f} against {a:.3f}), so nothing was memorised and the window runs to the end")
    half = early_stop["last_epoch"] - peak  # > 0: the window keeps the epochs averaged into the peak
    around = (f"; the window keeps epochs {max(peak - half, early_stop['epochs'][0])}..{peak + half}, the ones "
              "averaged into the peak") if half > 0 else ""
    return (f"{span}: the held-out accuracy peaks at epoch {peak} ({at[peak][0]:.3f}{around}); the model fits its "
            f"training labels better than the held-out ones from epoch {over} ({at[over][1]:.3f} against "
            f"{at[over][0]:.3f})")


def _moving_average(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over ``width`` (odd) values, the ends padded with the edge values."""
    half = width // 2
    return np.convolve(np.pad(values, (half, half), mode="edge"), np.ones(width) / width, mode="valid")


def _jitter(values: Sequence[float]) -> float:
    """RMS deviation of a curve from its centred 3-point moving average, the two ends left out."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.sqrt(np.mean((values - _moving_average(values, 3))[1:-1] ** 2)))


def _train_mode_agreement(store, epochs) -> list[float] | None:
    """Share of training samples with a positive training-mode margin, per epoch; None unless every epoch has them."""
    shares = []
    for e in epochs:
        margin = store.train_margin(e)
        if margin is None:
            return None
        shares.append(float((np.asarray(margin) > 0).mean()))
    return shares


def _train_agreement(store, epochs, chunk_size: int = _CHUNK) -> list[float]:
    """Share of training samples whose given label the model predicts (eval mode), per epoch."""
    labels = np.asarray(store.labels)
    shares = []
    for e in epochs:
        logits = store.logits(e)
        hits = sum(int((label_margins(np.asarray(logits[sl], dtype=np.float64), labels[sl]) > 0).sum())
                   for sl in _chunks(len(labels), chunk_size))
        shares.append(hits / len(labels))
    return shares


def _logit_features(store, epochs, labels, chunk_size, verbose, plan):
    """One pass over every epoch's logits (and training margins when all epochs have them).

    With an early-stopping ``plan``, the margins are summed over both of its candidate windows
    and the training-label agreement counted per epoch, so the plan decides after the pass.
    """
    n, t = store.n_samples, len(epochs)
    n_early = max(1, t // 4)
    p_sum = np.zeros(n)
    p_sq = np.zeros(n)
    margin_sum = np.zeros(n)
    windows = {} if plan is None else plan.windows
    window_sums = {name: np.zeros(n) for name in windows}
    half_sum = np.zeros(n)  # training-mode margins over the second half, for runs whose eval mode jitters
    agreement = np.zeros(t)
    train_mode_agreement = np.zeros(t)
    loss_early = np.zeros(n)
    forgetting = np.zeros(n)
    prob_sum = np.zeros((n, store.n_classes), dtype=np.float32)
    prev_correct = np.zeros(n, dtype=bool)
    last_wrong = np.full(n, -1)
    train_margin_sum = np.zeros(n)
    has_train_margin = True
    loss_last = np.zeros(n)
    predicted = np.zeros(n, dtype=np.int64)
    for ti, e in enumerate(_progress(epochs, verbose, "features: logits")):
        logits = store.logits(e)
        tm = store.train_margin(e)
        has_train_margin &= tm is not None
        for sl in _chunks(n, chunk_size):
            z = np.asarray(logits[sl], dtype=np.float64)
            y = labels[sl]
            rows = np.arange(len(y))
            z_max = z.max(axis=1, keepdims=True)
            log_norm = np.log(np.exp(z - z_max).sum(axis=1)) + z_max[:, 0]
            given = z[rows, y]
            p = np.exp(given - log_norm)
            prob_sum[sl] += np.exp(z - log_norm[:, None]).astype(np.float32)
            margin = label_margins(z, y)
            correct = margin > 0
            p_sum[sl] += p
            p_sq[sl] += p * p
            margin_sum[sl] += margin
            agreement[ti] += correct.sum() / n
            for name, (first, last) in windows.items():
                if first <= e <= last:
                    window_sums[name][sl] += margin
            if ti < n_early:
                loss_early[sl] += (log_norm - given) / n_early
            if ti > 0:
                forgetting[sl] += prev_correct[sl] & ~correct
            prev_correct[sl] = correct
            last_wrong[sl] = np.where(correct, last_wrong[sl], ti)
            if ti == t - 1:
                loss_last[sl] = log_norm - given
                predicted[sl] = z.argmax(axis=1)
            if tm is not None and has_train_margin:
                train_margin = np.asarray(tm[sl], dtype=np.float64)
                train_margin_sum[sl] += train_margin
                train_mode_agreement[ti] += (train_margin > 0).sum() / n
                if plan is not None and plan.half[0] <= e <= plan.half[1]:
                    half_sum[sl] += train_margin
    mean_p = p_sum / t
    cols = {
        "confidence": mean_p,
        "variability": np.sqrt(np.maximum(p_sq / t - mean_p**2, 0.0)),
        "aum": margin_sum / t,
    }
    if has_train_margin:
        cols["aum_train"] = train_margin_sum / t
    early_stop = None
    if plan is not None:
        early_stop = plan.decide(agreement.tolist(), train_mode_agreement.tolist() if has_train_margin else None)
        size = sum(early_stop["first_epoch"] <= e <= early_stop["last_epoch"] for e in epochs)
        name = plan.window_name(early_stop)
        cols["aum_early_stop"] = (half_sum if name == "half" else window_sums[name]) / size
    cols.update({
        "forgetting": forgetting,
        "first_learned": (last_wrong + 1) / t,
        "loss_last": loss_last,
        "loss_early": loss_early,
    })
    prob_sum[np.arange(n), labels] = -1.0
    suggested = prob_sum.argmax(axis=1).astype(np.int64)
    return cols, suggested, predicted, early_stop


def _centroid_features(store, epochs, labels, chunk_size, verbose):
    """Distance to the labelled class centroid (relative and against the nearest other centroid)."""
    n, k = store.n_samples, store.n_classes
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    rel_sum = np.zeros(n)
    ratio_sum = np.zeros(n)
    for e in _progress(epochs, verbose, "features: embeddings"):
        emb = store.embedding(e)
        centroids = np.zeros((k, emb.shape[1]))
        for sl in _chunks(n, chunk_size):
            np.add.at(centroids, labels[sl], np.asarray(emb[sl], dtype=np.float64))
        centroids /= np.maximum(counts, 1)[:, None]
        c_sq = (centroids**2).sum(axis=1)
        own = np.empty(n)
        nearest_other = np.empty(n)
        for sl in _chunks(n, chunk_size):
            x = np.asarray(emb[sl], dtype=np.float64)
            d2 = np.maximum((x**2).sum(axis=1)[:, None] - 2 * x @ centroids.T + c_sq[None, :], 0.0)
            d = np.sqrt(d2)
            rows = np.arange(len(x))
            own[sl] = d[rows, labels[sl]]
            d[rows, labels[sl]] = np.inf
            d[:, counts == 0] = np.inf
            nearest_other[sl] = d.min(axis=1)
        typical = np.ones(k)
        for c in np.flatnonzero(counts):
            typical[c] = max(np.median(own[labels == c]), 1e-12)
        rel_sum += own / typical[labels]
        ratio_sum += own / np.maximum(nearest_other, 1e-12)
    return {"centroid_distance": rel_sum / len(epochs), "centroid_ratio": ratio_sum / len(epochs)}


def _canvas_features(store, epochs):
    """Speed and acceleration of the 2D trajectory, in canvas widths per epoch."""
    xy_prev = v_prev = None
    speed = np.zeros(store.n_samples)
    accel = np.zeros(store.n_samples)
    scale = 1.0
    for i, e in enumerate(epochs):
        xy = np.asarray(store.projection(e), dtype=np.float64)
        if i == 0:
            span = np.percentile(xy, 99, axis=0) - np.percentile(xy, 1, axis=0)
            scale = max(float(span.max()), 1e-12)
        if xy_prev is not None:
            v = (xy - xy_prev) / scale
            speed += np.linalg.norm(v, axis=1)
            if v_prev is not None:
                accel += np.linalg.norm(v - v_prev, axis=1)
            v_prev = v
        xy_prev = xy
    return {"canvas_speed": speed / (len(epochs) - 1), "canvas_acceleration": accel / (len(epochs) - 2)}
