"""Questions about groups of samples over the epochs, as plain arrays.

* **Confusion over time**: given label × predicted class per epoch (:func:`confusion`,
  :meth:`GroupAnalysis.confusion_over_time`), for the training set and a held-out set.
* **Subgroups**: classes, class pairs, saved selections and the values of per-sample
  metadata columns (:mod:`timetravel.metadata`; numeric columns binned by quantiles).
  For each group and epoch: size, accuracy on the given labels, mean loss, mean suspicion
  and the share accepted so far (:func:`group_metrics`).
* **Suggested subgroups** (:func:`suggest_subgroups`): single column values and
  two-column intersections of at least ``min_size`` samples, ranked by how much worse
  than the whole they are on one metric, at 95% confidence.

The app (``server_app/``) and notebooks share this module; :class:`GroupAnalysis` is the
entry point for a run; results are plain arrays or a :class:`~timetravel.table.Table`
(shown as HTML in Jupyter, ``.to_pandas()`` for a DataFrame).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Iterable, Sequence

import numpy as np

from timetravel.errors import TimetravelError
from timetravel.table import Table

# metric name -> (description, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "accuracy": ("accuracy on the given labels", True),
    "loss": ("mean loss on the given labels", False),
    "suspicion": ("mean suspicion (percentile of the detector's score)", False),
    "accepted": ("share accepted so far", False),
}
LABEL_COLUMN = "given label"
Z_95 = 1.96


class GroupError(TimetravelError, ValueError):
    """A group question that cannot be answered as asked (the message says why)."""


def _table(columns: dict[str, list], title: str) -> Table:
    """A :class:`~timetravel.table.Table` with numeric columns as arrays (shown right-aligned)."""
    return Table({k: np.asarray(v) if v and isinstance(v[0], (int, float, np.number)) else v
                  for k, v in columns.items()}, title=title)  # fmt: skip


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class Outcomes:
    """What the model did with every sample at every recorded epoch.

    Attributes
    ----------
    epochs : ndarray of shape (E,)
    labels : ndarray of shape (N,)
        Given labels.
    pred : ndarray of shape (E, N)
        Predicted class per epoch.
    loss : ndarray of shape (E, N), float32
        Cross-entropy of the given label per epoch.
    n_classes : int
    """

    epochs: np.ndarray
    labels: np.ndarray
    pred: np.ndarray
    loss: np.ndarray
    n_classes: int
    correct: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "correct", self.pred == self.labels[None, :])

    @classmethod
    def from_store(cls, store, split: str = "train", *, verbose: bool = False) -> Outcomes:
        """Read every epoch's logits of ``split`` ("train" or "heldout") once, epoch by epoch."""
        from tqdm.auto import tqdm

        labels = store.labels if split == "train" else store.heldout_labels
        if labels is None:
            raise GroupError(f"the run {store.path} has no {split} set")
        labels = np.asarray(labels, dtype=np.int64)
        dtype = np.uint8 if store.n_classes <= 256 else np.uint16
        epochs = np.asarray(store.epochs, dtype=np.int64)
        pred = np.empty((len(epochs), len(labels)), dtype=dtype)
        loss = np.empty((len(epochs), len(labels)), dtype=np.float32)
        rows = np.arange(len(labels))
        for j, epoch in enumerate(tqdm(epochs, desc=f"reading {split} logits", disable=not verbose)):
            logits = np.asarray(store.logits(int(epoch), split), dtype=np.float32)
            top = logits.max(axis=1, keepdims=True)
            lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
            loss[j] = lse - logits[rows, labels]
            pred[j] = logits.argmax(axis=1)
        return cls(epochs, labels, pred, loss, int(store.n_classes))

    def index(self, epoch: int) -> int:
        """Position of ``epoch`` in :attr:`epochs`.

        Raises
        ------
        GroupError
            The epoch was not recorded.
        """
        where = np.flatnonzero(self.epochs == int(epoch))
        if not len(where):
            raise GroupError(f"epoch {epoch} was not recorded (recorded: {self.epochs.tolist()})")
        return int(where[0])


# --------------------------------------------------------------------------- confusion


def confusion(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(K, K)`` counts: row = given label, column = predicted class."""
    codes = np.asarray(labels, dtype=np.int64) * n_classes + np.asarray(pred, dtype=np.int64)
    return np.bincount(codes, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows without samples stay 0)."""
    sums = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, sums, out=np.zeros(matrix.shape, dtype=np.float64), where=sums > 0)


def cell_members(outcomes: Outcomes, epoch: int, given: int, predicted: int) -> np.ndarray:
    """Samples with label ``given`` predicted as ``predicted`` at ``epoch`` (sorted indices)."""
    pred = outcomes.pred[outcomes.index(epoch)]
    return np.flatnonzero((outcomes.labels == given) & (pred == predicted))


def cell_over_epochs(outcomes: Outcomes, given: int, predicted: int) -> np.ndarray:
    """``(E,)`` number of samples labelled ``given`` and predicted ``predicted`` at each epoch."""
    rows = outcomes.labels == given
    return (outcomes.pred[:, rows] == predicted).sum(axis=1)


# --------------------------------------------------------------------------- columns and groups


@dataclass(frozen=True)
class Column:
    """A way to split the samples: ``codes[i]`` is sample i's value (index into ``values``), -1 = none."""

    name: str
    codes: np.ndarray
    values: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    """A named set of samples (``indices`` sorted); ``kind`` is class, pair, selection, metadata or subgroup."""

    name: str
    kind: str
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)


def bin_numeric(values: np.ndarray, n_bins: int = 4) -> tuple[np.ndarray, tuple[str, ...]]:
    """Quantile bins of a numeric column: ``(codes, names)``; NaN gets -1.

    A column with at most ``n_bins`` distinct values keeps one bin per value.
    """
    values = np.asarray(values, dtype=np.float64)
    ok = ~np.isnan(values)
    codes = np.full(len(values), -1, dtype=np.int32)
    distinct = np.unique(values[ok])
    if len(distinct) <= n_bins:
        codes[ok] = np.searchsorted(distinct, values[ok])
        return codes, tuple(f"{v:g}" for v in distinct)
    edges = np.unique(np.quantile(values[ok], np.linspace(0, 1, n_bins + 1)))
    codes[ok] = np.clip(np.searchsorted(edges, values[ok], side="right") - 1, 0, len(edges) - 2)
    names = [f"[{lo:.3g}, {hi:.3g})" for lo, hi in zip(edges[:-2], edges[1:-1])]
    names.append(f"[{edges[-2]:.3g}, {edges[-1]:.3g}]")
    return codes, tuple(names)


def label_column(labels: np.ndarray, class_names: Sequence[str]) -> Column:
    """The given label as a column (one group per class)."""
    return Column(LABEL_COLUMN, np.asarray(labels, dtype=np.int32), tuple(class_names))


def metadata_columns(metadata, n_bins: int = 4) -> list[Column]:
    """The metadata table's columns as group columns (numeric ones binned by quantiles)."""
    if metadata is None:
        return []
    columns = []
    for col in metadata.values():
        if col.kind == "numeric":
            codes, names = bin_numeric(col.values, n_bins)
            columns.append(Column(col.name, codes, names))
        else:
            columns.append(Column(col.name, np.asarray(col.values, dtype=np.int32), col.categories))
    return columns


def column_groups(column: Column) -> list[Group]:
    """One group per value of ``column`` (empty values left out)."""
    order = np.argsort(column.codes, kind="stable")
    bounds = np.searchsorted(column.codes[order], np.arange(len(column.values) + 1))
    kind = "class" if column.name == LABEL_COLUMN else "metadata"
    groups = []
    for k, value in enumerate(column.values):
        members = np.sort(order[bounds[k] : bounds[k + 1]])
        if len(members):
            name = value if kind == "class" else f"{column.name} = {value}"
            groups.append(Group(name, kind, members))
    return groups


def pair_groups(outcomes: Outcomes, epoch: int, class_names: Sequence[str], top: int = 10) -> list[Group]:
    """The ``top`` most confused class pairs at ``epoch``: the samples labelled either class.

    Pairs are ordered by how many samples of one are predicted as the other (both ways).
    """
    matrix = confusion(outcomes.labels, outcomes.pred[outcomes.index(epoch)], outcomes.n_classes)
    both = matrix + matrix.T
    a, b = np.triu_indices(outcomes.n_classes, k=1)
    order = np.argsort(-both[a, b], kind="stable")
    groups = []
    for j in order[:top]:
        if both[a[j], b[j]] == 0:
            break
        members = np.flatnonzero((outcomes.labels == a[j]) | (outcomes.labels == b[j]))
        groups.append(Group(f"{class_names[a[j]]} ↔ {class_names[b[j]]}", "pair", members))
    return groups


# --------------------------------------------------------------------------- metrics


def suspicion_percentile(scores: np.ndarray) -> np.ndarray:
    """Detector scores as percentiles in [0, 1] (1 = the most suspicious sample)."""
    scores = np.asarray(scores, dtype=np.float64)
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[np.argsort(scores, kind="stable")] = np.arange(len(scores))
    return ranks / max(len(scores) - 1, 1)


def sample_values(
    outcomes: Outcomes,
    metric: str,
    epoch: int | None = None,
    *,
    suspicion: np.ndarray | None = None,
    accepted: np.ndarray | None = None,
) -> np.ndarray:
    """``(N,)`` per-sample value of ``metric`` at ``epoch`` (None: the mean over all epochs).

    Suspicion and the accepted share do not depend on the epoch.

    Raises
    ------
    GroupError
        Unknown metric, or suspicion/accepted asked for without the arrays.
    """
    if metric not in METRICS:
        raise GroupError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
    if metric in ("accuracy", "loss"):
        table = outcomes.correct if metric == "accuracy" else outcomes.loss
        if epoch is None:
            return table.mean(axis=0, dtype=np.float64)
        return table[outcomes.index(epoch)].astype(np.float64)
    values = suspicion if metric == "suspicion" else accepted
    if values is None:
        what = "no detection (run `timetravel detect`)" if metric == "suspicion" else "no decisions given"
        raise GroupError(f"metric {metric!r} needs per-sample values, but there are {what}")
    return np.asarray(values, dtype=np.float64)


def group_metrics(
    outcomes: Outcomes,
    groups: Iterable[Group],
    *,
    suspicion: np.ndarray | None = None,
    accepted: np.ndarray | None = None,
) -> Table:
    """One row per group and epoch: size, accuracy, mean loss, mean suspicion, share accepted.

    Parameters
    ----------
    outcomes : Outcomes
    groups : iterable of Group
    suspicion : ndarray of shape (N,), optional
        Per-sample suspicion (e.g. :func:`suspicion_percentile` of the detector's scores); NaN without.
    accepted : ndarray of shape (N,) of bool, optional
        Samples accepted so far; NaN without.

    Returns
    -------
    Table
        Columns ``group, kind, epoch, size, accuracy, mean_loss, mean_suspicion, accepted_share``.
    """
    out: dict[str, list] = {k: [] for k in ("group", "kind", "epoch", "size", "accuracy", "mean_loss",
                                            "mean_suspicion", "accepted_share")}  # fmt: skip
    n_epochs = len(outcomes.epochs)
    for group in groups:
        curves = group_curves(outcomes, group.indices)
        sus = float(np.mean(suspicion[group.indices])) if suspicion is not None and len(group) else np.nan
        acc = float(np.mean(accepted[group.indices])) if accepted is not None and len(group) else np.nan
        out["group"] += [group.name] * n_epochs
        out["kind"] += [group.kind] * n_epochs
        out["epoch"] += outcomes.epochs.tolist()
        out["size"] += [len(group)] * n_epochs
        out["accuracy"] += curves["accuracy"].tolist()
        out["mean_loss"] += curves["loss"].tolist()
        out["mean_suspicion"] += [sus] * n_epochs
        out["accepted_share"] += [acc] * n_epochs
    return _table(out, "group metrics per epoch")


def group_curves(outcomes: Outcomes, indices: np.ndarray) -> dict[str, np.ndarray]:
    """``{"accuracy": (E,), "loss": (E,)}`` of the samples ``indices`` at every epoch (NaN when empty)."""
    indices = np.asarray(indices, dtype=np.int64)
    if not len(indices):
        empty = np.full(len(outcomes.epochs), np.nan)
        return {"accuracy": empty, "loss": empty.copy()}
    return {
        "accuracy": outcomes.correct[:, indices].mean(axis=1, dtype=np.float64),
        "loss": outcomes.loss[:, indices].mean(axis=1, dtype=np.float64),
    }


def class_balance(labels: np.ndarray, indices: np.ndarray, n_classes: int) -> np.ndarray:
    """``(K,)`` share of each given label among ``indices``."""
    counts = np.bincount(np.asarray(labels)[np.asarray(indices, dtype=np.int64)], minlength=n_classes)
    return counts / max(counts.sum(), 1)


# --------------------------------------------------------------------------- suggestions


@dataclass(frozen=True)
class Suggestion:
    """A subgroup that is worse than the whole on a metric.

    ``gap`` is how much worse (in the metric's unit, positive = worse) and ``lower`` the
    lower end of its 95% confidence interval, by which suggestions are ranked.
    """

    name: str
    columns: tuple[str, ...]
    values: tuple[str, ...]
    size: int
    value: float
    overall: float
    gap: float
    lower: float
    indices: np.ndarray = field(repr=False)


def _stats(codes: np.ndarray, n_codes: int, values: np.ndarray, ok: np.ndarray):
    """Per code: count, mean and standard error of ``values`` (rows where ``ok``)."""
    c, v = codes[ok], values[ok]
    n = np.bincount(c, minlength=n_codes).astype(np.float64)
    s = np.bincount(c, weights=v, minlength=n_codes)
    s2 = np.bincount(c, weights=v * v, minlength=n_codes)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        var = np.maximum(s2 / n - mean**2, 0.0) * n / np.maximum(n - 1, 1)
        se = np.sqrt(var / n)
    return n, mean, se


def suggest_subgroups(
    columns: Sequence[Column],
    values: np.ndarray,
    *,
    higher_is_better: bool,
    min_size: int = 30,
    limit: int = 20,
    intersections: bool = True,
) -> list[Suggestion]:
    """Subgroups worse than the whole on ``values``, most confidently worse first.

    Every value of every column is a candidate, and (with ``intersections``) every pair
    of values of two different columns. A candidate needs ``min_size`` samples. Its gap
    is its mean minus the whole's (sign flipped when higher is better), and it is ranked
    by the gap's 95% lower confidence bound, so a small group needs a larger gap to rank
    high. An intersection is kept only when that bound exceeds the gaps of both its
    single-column parents: it then says something neither column says alone.

    Parameters
    ----------
    columns : sequence of Column
    values : ndarray of shape (N,)
        Per-sample metric values (:func:`sample_values`).
    higher_is_better : bool
        Whether a higher value is better (accuracy) or worse (loss, suspicion).
    min_size : int
        Smallest subgroup considered.
    limit : int
        At most this many suggestions.
    intersections : bool
        Also consider two-column intersections.

    Returns
    -------
    list of Suggestion
        Only subgroups whose lower bound is above 0 (confidently worse than the whole).
    """
    values = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(values)
    if not valid.any():
        return []
    overall = float(values[valid].mean())
    sign = -1.0 if higher_is_better else 1.0
    found: list[Suggestion] = []
    single_gap: dict[tuple[str, int], float] = {}

    def consider(name_parts, cols, vals, n, mean, se, members) -> None:
        gap = sign * (mean - overall)
        found.append(Suggestion(" ∧ ".join(name_parts), cols, vals, int(n), float(mean), overall, float(gap),
                                float(gap - Z_95 * se), members))  # fmt: skip

    for col in columns:
        ok = valid & (col.codes >= 0)
        n, mean, se = _stats(col.codes, len(col.values), values, ok)
        for k, value in enumerate(col.values):
            gap = sign * (mean[k] - overall) if n[k] else -np.inf
            single_gap[(col.name, k)] = gap
            if n[k] >= min_size:
                members = np.flatnonzero(col.codes == k)
                consider([f"{col.name} = {value}"], (col.name,), (value,), n[k], mean[k], se[k], members)
    if intersections:
        for a, b in combinations(columns, 2):
            nb = len(b.values)
            codes = a.codes.astype(np.int64) * nb + b.codes
            ok = valid & (a.codes >= 0) & (b.codes >= 0)
            n, mean, se = _stats(np.where(ok, codes, 0), len(a.values) * nb, values, ok)
            for code in np.flatnonzero(n >= min_size):
                ka, kb = divmod(int(code), nb)
                lower = sign * (mean[code] - overall) - Z_95 * se[code]
                if lower <= max(single_gap[(a.name, ka)], single_gap[(b.name, kb)]):
                    continue
                members = np.flatnonzero((a.codes == ka) & (b.codes == kb))
                consider([f"{a.name} = {a.values[ka]}", f"{b.name} = {b.values[kb]}"], (a.name, b.name),
                         (a.values[ka], b.values[kb]), n[code], mean[code], se[code], members)  # fmt: skip
    found = [s for s in found if s.lower > 0]
    found.sort(key=lambda s: (-s.lower, s.name))
    return found[:limit]


def suggestions_table(suggestions: Sequence[Suggestion]) -> Table:
    """Suggestions as a table: ``subgroup, size, value, overall, gap, lower``."""
    return _table({
        "subgroup": [s.name for s in suggestions],
        "size": [s.size for s in suggestions],
        "value": [s.value for s in suggestions],
        "overall": [s.overall for s in suggestions],
        "gap": [s.gap for s in suggestions],
        "lower": [s.lower for s in suggestions],
    }, "suggested subgroups, most confidently worse first")  # fmt: skip


# --------------------------------------------------------------------------- a run's groups


class GroupAnalysis:
    """The group questions of one run, for notebooks (and the app, which shares the numerics).

    Parameters
    ----------
    run : path-like or RunStore
    n_bins : int
        Quantile bins per numeric metadata column.
    verbose : bool
        Show progress while the logits of every epoch are read (once).

    Examples
    --------
    >>> g = GroupAnalysis("runs/demo")                       # doctest: +SKIP
    >>> g.confusion(epoch=29)                                # (K, K) counts   # doctest: +SKIP
    >>> g.metrics().to_pandas()                              # every group x epoch  # doctest: +SKIP
    >>> g.suggest("accuracy", epoch=10).to_pandas()          # worst subgroups first  # doctest: +SKIP
    """

    def __init__(self, run, *, n_bins: int = 4, verbose: bool = False) -> None:
        from timetravel.store import RunStore

        self.store = run if isinstance(run, RunStore) else RunStore(run)
        self.n_bins = n_bins
        self.verbose = verbose
        self._outcomes: dict[str, Outcomes] = {}
        self._suspicion: np.ndarray | None = None
        self._columns: list[Column] | None = None
        self._lock = threading.Lock()  # the app's sessions share one analysis

    def outcomes(self, split: str = "train") -> Outcomes:
        """Predictions and losses of ``split`` at every epoch (read once, thread-safe)."""
        with self._lock:
            if split not in self._outcomes:
                self._outcomes[split] = Outcomes.from_store(self.store, split, verbose=self.verbose)
            return self._outcomes[split]

    def columns(self) -> list[Column]:
        """The given label, then the metadata columns (numeric ones binned)."""
        if self._columns is None:
            store = self.store
            self._columns = [label_column(store.labels, store.class_names), *metadata_columns(store.metadata,
                                                                                              self.n_bins)]
        return self._columns

    def suspicion(self) -> np.ndarray | None:
        """Suspicion percentile of every sample (from ``timetravel detect``), or None without a detection."""
        if self._suspicion is None:
            from timetravel.detection import load_detection

            try:
                self._suspicion = suspicion_percentile(load_detection(self.store).scores)
            except TimetravelError:
                return None
        return self._suspicion

    def accepted(self) -> np.ndarray:
        """Samples accepted so far in the run's feedback log."""
        from timetravel.feedback import FeedbackLog

        mask = np.zeros(self.store.n_samples, dtype=bool)
        mask[FeedbackLog(self.store.path, self.store.n_samples).read().accepted] = True
        return mask

    def groups(self, *, pairs_at: int | None = None, extra: Iterable[Group] = ()) -> list[Group]:
        """Classes, the most confused class pairs (at ``pairs_at``, default the last epoch), metadata values."""
        outcomes = self.outcomes()
        epoch = int(outcomes.epochs[-1]) if pairs_at is None else pairs_at
        out: list[Group] = []
        for col in self.columns():
            out += column_groups(col)
        out += pair_groups(outcomes, epoch, self.store.class_names)
        return [*out, *extra]

    def confusion(self, epoch: int, split: str = "train", *, normalise: bool = False) -> np.ndarray:
        """Given label × predicted class at ``epoch`` (counts, or row-normalised)."""
        o = self.outcomes(split)
        matrix = confusion(o.labels, o.pred[o.index(epoch)], o.n_classes)
        return row_normalised(matrix) if normalise else matrix

    def confusion_over_time(self, split: str = "train") -> np.ndarray:
        """``(E, K, K)`` confusion counts at every epoch."""
        o = self.outcomes(split)
        return np.stack([confusion(o.labels, p, o.n_classes) for p in o.pred])

    def metrics(self, groups: Iterable[Group] | None = None) -> Table:
        """:func:`group_metrics` of ``groups`` (default :meth:`groups`) with suspicion and decisions."""
        return group_metrics(self.outcomes(), self.groups() if groups is None else groups,
                             suspicion=self.suspicion(), accepted=self.accepted())  # fmt: skip

    def suggest(self, metric: str = "accuracy", epoch: int | None = None, *, min_size: int | None = None,
                limit: int = 20) -> Table:  # fmt: skip
        """Suggested subgroups on ``metric`` at ``epoch`` (None: averaged over the epochs), as a table."""
        return suggestions_table(self.suggestions(metric, epoch, min_size=min_size, limit=limit))

    def suggestions(self, metric: str = "accuracy", epoch: int | None = None, *, min_size: int | None = None,
                    limit: int = 20) -> list[Suggestion]:  # fmt: skip
        """Like :meth:`suggest`, as :class:`Suggestion` objects (with their members)."""
        values = sample_values(self.outcomes(), metric, epoch, suspicion=self.suspicion(),
                               accepted=self.accepted() if metric == "accepted" else None)  # fmt: skip
        size = default_min_size(self.store.n_samples) if min_size is None else min_size
        return suggest_subgroups(self.columns(), values, higher_is_better=METRICS[metric][1], min_size=size,
                                 limit=limit)  # fmt: skip


def default_min_size(n_samples: int) -> int:
    """The smallest subgroup worth suggesting: 1% of the run, at least 20 samples."""
    return max(20, n_samples // 100)
