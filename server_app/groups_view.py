"""Subgroups: suggested subgroups, every group's metrics at the epoch, two groups side by side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import (
    BasicTicker,
    Button,
    ColumnDataSource,
    DataTable,
    Div,
    FactorRange,
    NumberFormatter,
    RadioButtonGroup,
    Select,
    Span,
    TableColumn,
)
from bokeh.plotting import figure
from bokeh.transform import dodge

from timetravel.groups import METRICS
from timetravel.server_app._bokeh import choice, redraw_table_on_new_data
from timetravel.server_app.data import RunData

RANK_AT = ("all epochs", "this epoch")
COMPARE_COLOURS = ("#1565c0", "#c62828")
_NO_GROUP = ""


def _table(name: str, source: ColumnDataSource, columns: list[TableColumn], height: int) -> DataTable:
    table = DataTable(source=source, columns=columns, height=height, sizing_mode="stretch_width",
                      index_position=None, selectable=True, name=name)  # fmt: skip
    redraw_table_on_new_data(table)
    return table


def _on_row(source: ColumnDataSource, callback: Callable[[int], None]) -> None:
    def clicked(_attr: str, _old: list[int], new: list[int]) -> None:
        if new:
            callback(int(new[0]))

    source.selected.on_change("indices", clicked)


@dataclass
class GroupsView:
    """Widgets of the groups tab; rows are shown in the order the controller gives them."""

    metric: Select
    rank_at: RadioButtonGroup
    suggestions_info: Div
    suggestions: ColumnDataSource
    groups: ColumnDataSource
    groups_table: DataTable
    compare_a: Select
    compare_b: Select
    more_like: Button
    compare_info: Div
    compare_source: ColumnDataSource
    compare_plot: object
    balance_source: ColumnDataSource
    cursor: Span
    layout: object

    def metric_name(self) -> str:
        return choice(self.metric)

    def ranked_at_epoch(self) -> bool:
        """Whether suggestions are ranked at the current epoch (else over all epochs)."""
        return self.rank_at.active == 1

    def chosen(self) -> tuple[str, str]:
        """The names of the two compared groups ("" for none)."""
        return choice(self.compare_a), choice(self.compare_b)

    def on_settings(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when the metric or where it is ranked changes."""
        self.metric.on_change("value", lambda _a, _o, _n: callback())
        self.rank_at.on_change("active", lambda _a, _o, _n: callback())

    def on_suggestion(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(row)`` when a suggestion is clicked."""
        _on_row(self.suggestions, callback)

    def on_group(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(row)`` when a row of the groups table is clicked."""
        _on_row(self.groups, callback)

    def on_compare(self, callback: Callable[[], None]) -> None:
        self.compare_a.on_change("value", lambda _a, _o, _n: callback())
        self.compare_b.on_change("value", lambda _a, _o, _n: callback())

    def on_more_like(self, callback: Callable[[], None]) -> None:
        self.more_like.on_click(callback)

    def choose(self, slot: str, name: str) -> None:
        """Put group ``name`` in compare slot ``"a"`` or ``"b"``."""
        (self.compare_a if slot == "a" else self.compare_b).value = name

    def set_group_names(self, names: list[str]) -> None:
        """The groups one can compare (a vanished choice is cleared)."""
        options = [(_NO_GROUP, "(none)"), *[(n, n) for n in names]]
        for select in (self.compare_a, self.compare_b):
            if select.options != options:
                select.options = options
            if select.value not in names:
                select.value = _NO_GROUP
        self.more_like.disabled = self.compare_a.value == _NO_GROUP

    def show_suggestions(self, rows: dict[str, list], note: str) -> None:
        self.suggestions.selected.indices = []
        self.suggestions.data = rows
        self.suggestions_info.text = note

    def show_groups(self, rows: dict[str, list], value_title: str) -> None:
        """Fill the groups table; ``value_title`` names its metric column."""
        self.groups.data = rows
        value = self.groups_table.columns[3]
        if value.title != value_title:
            value.title = value_title

    def show_compare(self, epochs: np.ndarray, a: np.ndarray, b: np.ndarray, whole: np.ndarray, metric: str,
                     balance: dict[str, list], note: str) -> None:  # fmt: skip
        """Both groups' ``metric`` over the epochs (and the whole run's), their class balance."""
        self.compare_source.data = dict(epoch=epochs, a=a, b=b, whole=whole)
        self.compare_plot.yaxis.axis_label = metric
        self.balance_source.data = balance
        self.compare_info.text = note
        self.more_like.disabled = self.compare_a.value == _NO_GROUP

    def say(self, text: str) -> None:
        """A line under the comparison (what seeding did)."""
        self.compare_info.text = text

    def show_epoch(self, epoch: int) -> None:
        self.cursor.location = epoch


def make_groups(data: RunData, epoch: int) -> GroupsView:
    """Build the groups tab (filled by the grouping controller)."""
    metric = Select(title="Metric", value="accuracy", options=[(k, v) for k, (v, _) in METRICS.items()],
                    name="group_metric", width=220)  # fmt: skip
    rank_at = RadioButtonGroup(labels=list(RANK_AT), active=0, name="suggest_at")
    suggestions_info = Div(text="", name="suggestions_info", sizing_mode="stretch_width")
    suggestions = ColumnDataSource(dict(subgroup=[], size=[], value=[], gap=[]), name="suggestions_source")
    number = NumberFormatter(format="0.000")
    suggestions_table = _table("suggestions_table", suggestions, [
        TableColumn(field="subgroup", title="subgroup", width=230),
        TableColumn(field="size", title="size", formatter=NumberFormatter(format="0,0"), width=50),
        TableColumn(field="value", title="value", formatter=number, width=55),
        TableColumn(field="gap", title="worse by", formatter=number, width=60),
    ], 120)  # fmt: skip
    groups = ColumnDataSource(dict(group=[], kind=[], size=[], value=[], accepted=[]), name="groups_source")
    groups_table = _table("groups_table", groups, [
        TableColumn(field="group", title="group", width=200),
        TableColumn(field="kind", title="kind", width=60),
        TableColumn(field="size", title="size", formatter=NumberFormatter(format="0,0"), width=50),
        TableColumn(field="value", title="value", formatter=number, width=60),
        TableColumn(field="accepted", title="accepted", formatter=NumberFormatter(format="0%"), width=55),
    ], 140)  # fmt: skip
    compare_a = Select(title="Compare", value=_NO_GROUP, options=[(_NO_GROUP, "(none)")], name="compare_a")
    compare_b = Select(title="with", value=_NO_GROUP, options=[(_NO_GROUP, "(none)")], name="compare_b")
    more_like = Button(label="Find more like this group", name="more_like_group", disabled=True,
                       html_attributes={"title": "seed the recommender with the first group as accepted examples"})
    compare_info = Div(text="", name="compare_info", sizing_mode="stretch_width")
    compare_source = ColumnDataSource(dict(epoch=[], a=[], b=[], whole=[]), name="compare_source")
    plot = figure(height=150, sizing_mode="stretch_width", toolbar_location=None, name="compare_plot", title=" ",
                  tools="hover", tooltips=[("epoch", "@epoch"), ("first", "@a{0.000}"), ("second", "@b{0.000}"),
                                           ("whole run", "@whole{0.000}")])  # fmt: skip
    plot.line("epoch", "whole", source=compare_source, color="#9e9e9e", line_dash="dotted", line_width=2,
              legend_label="whole run")  # fmt: skip
    for key, colour, label in (("a", COMPARE_COLOURS[0], "first"), ("b", COMPARE_COLOURS[1], "second")):
        plot.line("epoch", key, source=compare_source, color=colour, line_width=2, legend_label=label)
    plot.legend.location = "bottom_right"
    plot.legend.label_text_font_size = "8pt"
    plot.legend.background_fill_alpha = 0.5
    plot.xaxis.ticker = BasicTicker(min_interval=1)
    cursor = Span(location=epoch, dimension="height", line_color="#ff6f00", line_width=2)
    plot.add_layout(cursor)
    names = list(data.class_names)
    balance_source = ColumnDataSource(dict(cls=names, a=[0.0] * len(names), b=[0.0] * len(names)),
                                      name="balance_source")  # fmt: skip
    balance = figure(height=120, sizing_mode="stretch_width", toolbar_location=None, x_range=FactorRange(*names),
                     title="class balance (share of given labels)", name="balance_plot")  # fmt: skip
    for key, colour, offset in (("a", COMPARE_COLOURS[0], -0.18), ("b", COMPARE_COLOURS[1], 0.18)):
        balance.vbar(x=dodge("cls", offset, range=balance.x_range), top=key, width=0.34, source=balance_source,
                     color=colour)  # fmt: skip
    balance.y_range.start = 0
    balance.title.text_font_size = "9pt"
    balance.xaxis.major_label_orientation = 0.8 if max(map(len, names)) > 3 else 0
    layout = column(
        row(Div(text="<div class='tt-h'>Groups</div>"), sizing_mode="stretch_width"),
        row(metric, column(Div(text="<span class='tt-muted'>rank over</span>"), rank_at)),
        Div(text="<div class='tt-sub'>Suggested subgroups (click one to select it)</div>"),
        suggestions_info, suggestions_table,
        Div(text="<div class='tt-sub'>Every group at the slider's epoch</div>"), groups_table,
        Div(text="<div class='tt-sub'>Side by side</div>"), row(compare_a, compare_b, sizing_mode="stretch_width"),
        compare_info, plot, balance, more_like,
        sizing_mode="stretch_width",
    )  # fmt: skip
    return GroupsView(metric, rank_at, suggestions_info, suggestions, groups, groups_table, compare_a, compare_b, more_like,
                      compare_info, compare_source, plot, balance_source, cursor, layout)

