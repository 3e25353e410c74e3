"""Group questions in the app: confusion over time, subgroups and suggestions, saved selections, seeding.

One controller per tab (:class:`Confusing`, :class:`Grouping`; both built when their tab is
first opened) and one for the selection tools (:class:`Selecting`).

The numerics are :mod:`timetravel.groups` (shared with notebooks); this controller only
picks what the views show at the session's epoch, and turns clicks into selections,
a queue limited to a confusion cell, saved selections and "find more like these".
"""

from __future__ import annotations

import html
from typing import Callable

import numpy as np

from timetravel.errors import TimetravelError
from timetravel.groups import (
    METRICS,
    Group,
    Outcomes,
    cell_members,
    cell_over_epochs,
    class_balance,
    confusion,
    default_min_size,
    group_curves,
    sample_values,
    suggest_subgroups,
)
from timetravel.server_app._bokeh import TabSlot
from timetravel.server_app.catalog import GroupCatalog
from timetravel.server_app.confusion_view import ConfusionView, cell_note, cell_title
from timetravel.server_app.filters import FilterView
from timetravel.server_app.groups_view import COMPARE_COLOURS, GroupsView
from timetravel.server_app.session import FRAME, REVIEW, Session

Seed = Callable[[np.ndarray, str, Callable[[str], None]], None]


def read_outcomes(session: Session, done: Callable[[Outcomes, Outcomes | None], None]) -> None:
    """Every epoch's predictions of the training (and held-out) set, then ``done(train, heldout)`` on the loop.

    The server reads them once at start (``AppContext.warm``); later calls return at once.
    """
    data = session.data

    def work() -> tuple[Outcomes, Outcomes | None]:
        return data.analysis.outcomes(), data.analysis.outcomes("heldout") if data.store.n_heldout else None

    session.background(work, lambda pair: done(*pair), "reading the predictions of every epoch")


class Confusing:
    """The confusion tab: the matrices of the session's epoch, a clicked cell selected and over the epochs."""

    def __init__(self, session: Session, view: ConfusionView, tab: TabSlot) -> None:
        self.s, self.view, self.tab = session, view, tab
        self.outcomes: Outcomes | None = None
        self.heldout: Outcomes | None = None

    def wire(self) -> None:
        v = self.view
        v.train.on_cell(lambda given, pred: self._on_cell(given, pred, "train"))
        if v.heldout is not None:
            v.heldout.on_cell(lambda given, pred: self._on_cell(given, pred, "heldout"))
        v.on_mode(self.refresh)
        self.tab.on_shown(self.refresh)
        self.s.subscribe(self._on_change)

    def start(self) -> None:
        read_outcomes(self.s, self._ready)

    def _ready(self, train: Outcomes, heldout: Outcomes | None) -> None:
        self.outcomes, self.heldout = train, heldout
        self.refresh()

    def _on_change(self, changed: frozenset[str]) -> None:
        if FRAME in changed and self.tab.shown():
            self.refresh()

    def refresh(self) -> None:
        """Draw the matrices of the session's epoch."""
        if self.outcomes is None:
            return
        epoch, names = self.s.frame.epoch, list(self.s.data.class_names)
        o, k = self.outcomes, self.s.data.n_classes
        train = confusion(o.labels, o.pred[o.index(epoch)], k)
        heldout = None
        if self.heldout is not None:
            heldout = confusion(self.heldout.labels, self.heldout.pred[self.heldout.index(epoch)], k)
        self.view.show(epoch, names, train, heldout)

    def _on_cell(self, given: int, predicted: int, split: str) -> None:
        if self.outcomes is None:
            return
        names, epoch = list(self.s.data.class_names), self.s.frame.epoch
        counts = cell_over_epochs(self.outcomes, given, predicted)
        held = cell_over_epochs(self.heldout, given, predicted) if self.heldout is not None else None
        title = cell_title(names, given, predicted)
        if split == "heldout":
            self.view.show_cell(title, self.outcomes.epochs, counts, held,
                                "<span class='tt-muted'>Held-out samples are not on the canvas; the plot "
                                "shows this cell in both sets.</span>")  # fmt: skip
            return
        members = cell_members(self.outcomes, epoch, given, predicted)
        scope = None
        if given != predicted and len(members):
            scope = Group(f"labelled {names[given]}, predicted {names[predicted]} at epoch {epoch}", "cell", members)
        self.view.show_cell(title, self.outcomes.epochs, counts, held,
                            cell_note(names, given, predicted, epoch, len(members), scope is not None))  # fmt: skip
        self.s.change(selected=members, scope=scope)


class Grouping:
    """The groups tab: suggested subgroups, every group at the epoch, two groups side by side, seeding a group.

    Parameters
    ----------
    session : Session
    catalog : GroupCatalog
    view : GroupsView
    tab : TabSlot
    seed : callable
        ``seed(samples, group_name, report)`` (:meth:`Reviewing.seed`).
    """

    def __init__(self, session: Session, catalog: GroupCatalog, view: GroupsView, tab: TabSlot, seed: Seed) -> None:
        self.s, self.catalog, self.view, self.tab, self.seed = session, catalog, view, tab, seed
        self.outcomes: Outcomes | None = None
        self._suggested: list[Group] = []
        self._whole_cache: dict[str, np.ndarray] = {}

    def wire(self) -> None:
        v = self.view
        v.on_settings(self.refresh)
        v.on_suggestion(self._on_suggestion)
        v.on_group(self._on_group_row)
        v.on_compare(self._show_compare)
        v.on_more_like(self._seed_group)
        self.tab.on_shown(self.refresh)
        self.catalog.subscribe(self._catalog_changed)
        self.s.subscribe(self._on_change)

    def start(self) -> None:
        read_outcomes(self.s, self._ready)

    def _ready(self, train: Outcomes, _heldout: Outcomes | None) -> None:
        self.outcomes = train
        self.catalog.load(train)  # tells _catalog_changed
        self.refresh()

    def _on_change(self, changed: frozenset[str]) -> None:
        if self.outcomes is None or not self.tab.shown():
            return
        if FRAME in changed:
            self.view.show_epoch(self.s.frame.epoch)
        if changed & {FRAME, REVIEW}:
            ranked_now = self.view.ranked_at_epoch() or self.view.metric_name() == "accepted"
            if REVIEW in changed or ranked_now:
                self._show_suggestions()
            self._show_group_table()

    def _catalog_changed(self) -> None:
        self.view.set_group_names(self.catalog.names())
        if self.outcomes is not None and self.tab.shown():
            self._show_group_table()

    def refresh(self) -> None:
        """Suggestions, the groups table and the comparison at the session's epoch."""
        if self.outcomes is None:
            return
        self.view.show_epoch(self.s.frame.epoch)
        self._show_suggestions()
        self._show_group_table()
        self._show_compare()

    def _accepted(self) -> np.ndarray:
        accepted = np.zeros(self.s.data.n_samples, dtype=bool)
        accepted[[i for i, ok in self.s.snap.decisions.items() if ok]] = True
        return accepted

    def _values(self, metric: str, epoch: int | None) -> np.ndarray:
        if metric in ("accuracy", "loss") and epoch is None:
            if metric not in self._whole_cache:  # the mean over the epochs does not change
                self._whole_cache[metric] = sample_values(self.outcomes, metric, None)
            return self._whole_cache[metric]
        return sample_values(self.outcomes, metric, epoch, suspicion=self.s.review.suspicion(),
                             accepted=self._accepted())  # fmt: skip

    def _show_suggestions(self) -> None:
        v, s = self.view, self.s
        metric = v.metric_name()
        epoch = s.frame.epoch if v.ranked_at_epoch() else None
        where = f"at epoch {epoch}" if epoch is not None else "averaged over the epochs"
        empty = dict(subgroup=[], size=[], value=[], gap=[])
        try:
            values = self._values(metric, epoch)
        except TimetravelError as exc:
            self._suggested = []
            v.show_suggestions(empty, f"<div class='tt-note' name='suggestions_note'>{html.escape(str(exc))}</div>")
            return
        size = default_min_size(s.data.n_samples)
        columns = s.data.analysis.columns()
        found = suggest_subgroups(columns, values, higher_is_better=METRICS[metric][1], min_size=size)
        self._suggested = [Group(f.name, "subgroup", f.indices) for f in found]
        overall, described = float(np.nanmean(values)), METRICS[metric][0]
        if found:
            note = (f"<span class='tt-muted' name='suggestions_note'>Subgroups of at least {size} samples whose "
                    f"{described} {where} is worse than the whole run's ({overall:.3f}) at 95% confidence, most "
                    "confidently worse first; an intersection of two columns is listed only when it is worse than "
                    "both its parts.</span>")  # fmt: skip
        else:
            names = ", ".join(c.name for c in columns)
            note = (f"<div class='tt-note' name='suggestions_note'>No subgroup of at least {size} samples (columns: "
                    f"{html.escape(names)}) is confidently worse than the whole run on {described} {where} "
                    f"({overall:.3f}). Try another metric, or rank over all epochs.</div>")  # fmt: skip
        v.show_suggestions(dict(subgroup=[f.name for f in found], size=[f.size for f in found],
                                value=[f.value for f in found], gap=[f.gap for f in found]), note)  # fmt: skip

    def _show_group_table(self) -> None:
        s, v = self.s, self.view
        metric = v.metric_name()
        groups = self.catalog.groups()
        try:
            values = self._values(metric, s.frame.epoch)
        except TimetravelError:
            values = np.full(s.data.n_samples, np.nan)
        accepted = self._accepted()
        v.show_groups(dict(group=[g.name for g in groups], kind=[g.kind for g in groups], size=[len(g) for g in groups],
                           value=[float(np.mean(values[g.indices])) for g in groups],
                           accepted=[float(np.mean(accepted[g.indices])) for g in groups]), metric)  # fmt: skip

    def _on_suggestion(self, row: int) -> None:
        if row < len(self._suggested):
            group = self._suggested[row]
            self.catalog.keep(group)
            self.view.choose("a", group.name)
            self.s.change(selected=group.indices)

    def _on_group_row(self, row: int) -> None:
        groups = self.catalog.groups()
        if row < len(groups):
            self.view.choose("a", groups[row].name)
            self.s.change(selected=groups[row].indices)

    def _show_compare(self) -> None:
        if self.outcomes is None:
            return
        v, s, o = self.view, self.s, self.outcomes
        metric = v.metric_name()
        chosen = [self.catalog.get(name) for name in v.chosen()]
        k = s.data.n_classes
        over_time = metric if metric in ("accuracy", "loss") else "accuracy"
        whole = group_curves(o, np.arange(s.data.n_samples))[over_time]
        nothing = np.full(len(o.epochs), np.nan)
        curves = [group_curves(o, g.indices)[over_time] if g is not None else nothing for g in chosen]
        balance = [class_balance(o.labels, g.indices, k) if g is not None else np.zeros(k) for g in chosen]
        if not any(chosen):
            note = "<span class='tt-muted'>Pick one or two groups (or click a suggestion or a group row).</span>"
        else:
            parts = [f"<b style='color:{c}'>{html.escape(g.name)}</b> ({len(g):,})"
                     for g, c in zip(chosen, COMPARE_COLOURS) if g is not None]  # fmt: skip
            also = "" if over_time == metric else f" ({METRICS[metric][0]} does not change over the epochs)"
            note = f"<span name='compare_note'>{' vs '.join(parts)}: {over_time} over the epochs{also}</span>"
        v.show_compare(o.epochs, curves[0], curves[1], whole, over_time,
                       dict(cls=list(s.data.class_names), a=balance[0], b=balance[1]), note)  # fmt: skip

    def _seed_group(self) -> None:
        group = self.catalog.get(self.view.chosen()[0])
        if group is not None:
            self.seed(group.indices, group.name, self.view.say)


class Selecting:
    """The selection tools under the selection list: save it as a group, "find more like these"."""

    def __init__(self, session: Session, catalog: GroupCatalog, filters: FilterView, seed: Seed) -> None:
        self.s, self.catalog, self.filters, self.seed = session, catalog, filters, seed

    def wire(self) -> None:
        self.filters.on_save(self._save)
        self.filters.on_more_like(self._more_like)

    def _save(self, name: str) -> None:
        if not name:
            self.filters.say("<span class='tt-error'>Give the selection a name first.</span>")
            return
        try:
            group = self.catalog.save(name, self.s.selected)
        except TimetravelError as exc:
            self.filters.say(f"<span class='tt-error'>{html.escape(str(exc))}</span>")
            return
        self.filters.say(f"<span class='tt-ok' name='saved_note'>✓ saved “{html.escape(group.name)}” "
                         f"({len(group):,} samples): it is a group in the Groups tab.</span>")  # fmt: skip

    def _more_like(self) -> None:
        selected = self.s.selected
        if len(selected):
            name = self.filters.selection_name() or f"selection of {len(selected)}"
            self.seed(selected, name, self.filters.say)
