"""Filters (class, disagreement, decision, display toggles) and the selection list."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import (
    Button,
    Checkbox,
    ColumnDataSource,
    DataTable,
    Div,
    MultiChoice,
    NumberFormatter,
    RadioButtonGroup,
    Select,
    TableColumn,
    TextInput,
)

from timetravel.server_app._bokeh import redraw_table_on_new_data
from timetravel.server_app.data import RunData

COLOR_BY = ("label", "pred")
DECISION_FILTERS = (
    ("all", "all samples"),
    ("queue", "in the queue"),
    ("accepted", "accepted"),
    ("rejected", "rejected"),
    ("reviewed", "reviewed"),
    ("unreviewed", "not reviewed"),
)
SELECTION_ROWS = 500
RINGS_LEGEND = (
    "<div class='tt-muted'>Rings: <span style='color:#ff6f00'>&#9711; in the queue</span>, "
    "<span style='color:#2e7d32'>&#9711; accepted</span>, <span style='color:#616161'>&#9711; rejected</span>, "
    "<span style='color:#6a1b9a'>&#9711; seeded</span>, "
    "<b style='color:#000'>&#9711; inspected</b></div>"
)


@dataclass
class FilterView:
    """Filter widgets and the selection list."""

    color_by: RadioButtonGroup
    classes: MultiChoice
    disagree: Checkbox
    decision: Select
    territory: Checkbox
    trails: Checkbox
    selection_info: Div
    selection: ColumnDataSource
    selection_table: DataTable
    save_name: TextInput
    save: Button
    more_like: Button
    selection_note: Div
    layout: object
    selection_layout: object

    def color_column(self) -> str:
        return COLOR_BY[self.color_by.active]

    def territory_shown(self) -> bool:
        return bool(self.territory.active)

    def trails_shown(self) -> bool:
        return bool(self.trails.active)

    def depends_on_prediction(self) -> bool:
        """Whether the mask changes with the epoch (the prediction ≠ label filter is on)."""
        return bool(self.disagree.active)

    def depends_on_review(self) -> bool:
        """Whether the mask changes with the decisions or the queue."""
        return self.decision.value != "all"

    def on_display_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when the colouring or the territory toggle changes."""
        self.color_by.on_change("active", lambda _a, _o, _n: callback())
        self.territory.on_change("active", lambda _a, _o, _n: callback())

    def on_filter_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when any filter of :meth:`mask` changes."""
        for widget, attr in ((self.classes, "value"), (self.disagree, "active"), (self.decision, "value")):
            widget.on_change(attr, lambda _a, _o, _n: callback())

    def on_trails_change(self, callback: Callable[[], None]) -> None:
        self.trails.on_change("active", lambda _a, _o, _n: callback())

    def on_selection_row(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(sample)`` when a row of the selection list is clicked."""

        def clicked(_attr: str, _old: list[int], new: list[int]) -> None:
            if new:
                callback(int(self.selection.data["index"][new[0]]))

        self.selection.selected.on_change("indices", clicked)

    def on_save(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(name)`` when the user saves the selection."""
        self.save.on_click(lambda: callback(self.save_name.value.strip()))

    def on_more_like(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` for "Find more like these"."""
        self.more_like.on_click(callback)

    def selection_name(self) -> str:
        return self.save_name.value.strip()

    def say(self, text: str) -> None:
        """A line under the selection tools (what saving or seeding did)."""
        self.selection_note.text = text

    def mask(
        self, labels: np.ndarray, pred: np.ndarray, decisions: dict[int, bool], queue: list[int]
    ) -> np.ndarray | None:
        """Boolean mask of the samples to show, or None when nothing is filtered."""
        mask = None
        if self.classes.value:
            mask = np.isin(labels, np.array([int(v) for v in self.classes.value]))
        if self.disagree.active:
            mask = _and(mask, labels != pred)
        if self.decision.value != "all":
            mask = _and(mask, _decision_mask(self.decision.value, len(labels), decisions, queue))
        return mask

    def show_selection(self, data: RunData, indices: np.ndarray, pred: np.ndarray, decisions: dict[int, bool]) -> None:
        """List the selected samples (the first SELECTION_ROWS of them)."""
        shown = np.asarray(indices, dtype=np.int64)[:SELECTION_ROWS]
        names = data.class_names
        self.selection.data = dict(
            index=shown.astype(np.int32),
            given=[names[int(data.labels[i])] for i in shown],
            pred=[names[int(pred[i])] for i in shown],
            decision=[_decision_name(decisions.get(int(i))) for i in shown],
        )
        n = len(indices)
        self.save.disabled = self.more_like.disabled = n == 0
        if n == 0:
            self.selection_info.text = "<span class='tt-muted'>Box or lasso select dots to list them here.</span>"
        else:
            disagree = int(np.count_nonzero(data.labels[indices] != pred[indices]))
            more = f", showing the first {SELECTION_ROWS}" if n > SELECTION_ROWS else ""
            self.selection_info.text = f"<b>{n} selected</b> ({disagree} predicted differently from their label{more})"


def _and(mask: np.ndarray | None, other: np.ndarray) -> np.ndarray:
    return other if mask is None else mask & other


def _decision_mask(kind: str, n: int, decisions: dict[int, bool], queue: list[int]) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    if kind == "queue":
        mask[np.asarray(queue, dtype=np.int64)] = True
        return mask
    wanted = {"accepted": (True,), "rejected": (False,), "reviewed": (True, False), "unreviewed": (True, False)}[kind]
    chosen = [i for i, ok in decisions.items() if ok in wanted]
    mask[np.asarray(chosen, dtype=np.int64)] = True
    return ~mask if kind == "unreviewed" else mask


def _decision_name(decision: bool | None) -> str:
    return "" if decision is None else ("accepted" if decision else "rejected")


def make_filters(data: RunData) -> FilterView:
    """Build the filter widgets and the (empty) selection list."""
    color_by = RadioButtonGroup(labels=["Given label", "Prediction"], active=0, name="color_by")
    options = [(str(k), name) for k, name in enumerate(data.class_names)]
    classes = MultiChoice(options=options, value=[], placeholder="all classes", title="Given label",
                          name="class_filter", sizing_mode="stretch_width")  # fmt: skip
    disagree = Checkbox(label="prediction ≠ given label", name="disagree_filter")
    decision = Select(title="Decision", value="all", options=list(DECISION_FILTERS), name="decision_filter")
    territory = Checkbox(label="territories", active=True, name="show_territory")
    trails = Checkbox(label="trails of selected samples", active=True, name="show_trails")
    selection = ColumnDataSource(dict(index=[], given=[], pred=[], decision=[]), name="selection_source")
    table = DataTable(
        source=selection,
        columns=[
            TableColumn(field="index", title="#", formatter=NumberFormatter(format="0"), width=60),
            TableColumn(field="given", title="given"),
            TableColumn(field="pred", title="predicted"),
            TableColumn(field="decision", title="decision"),
        ],
        height=260,
        sizing_mode="stretch_width",
        index_position=None,
        name="selection_table",
        css_classes=["tt-selection-table"],
    )
    redraw_table_on_new_data(table)
    info = Div(text="<span class='tt-muted'>Box or lasso select dots to list them here.</span>", name="selection_info")
    layout = column(
        Div(text="<div class='tt-sub'>Colour dots by</div>"), color_by, classes, disagree, decision,
        Div(text="<div class='tt-sub'>Show</div>"), territory, trails, Div(text=RINGS_LEGEND),
        sizing_mode="stretch_width",
    )  # fmt: skip
    save_name = TextInput(placeholder="name this selection", name="selection_name", sizing_mode="stretch_width")
    save = Button(label="Save", name="save_selection", disabled=True, width=60)
    more_like = Button(label="Find more like these", name="more_like_these", disabled=True,
                       sizing_mode="stretch_width", button_type="primary",
                       html_attributes={"title": "seed the recommender with the selection as accepted examples "
                                                 "(recorded in feedback.jsonl, undone by Undo)"})  # fmt: skip
    note = Div(text="", name="selection_note", sizing_mode="stretch_width")
    selection_layout = column(info, row(save_name, save, sizing_mode="stretch_width"), more_like, note, table,
                              sizing_mode="stretch_width")  # fmt: skip
    return FilterView(color_by, classes, disagree, decision, territory, trails, info, selection, table, save_name,
                      save, more_like, note, layout, selection_layout)  # fmt: skip
