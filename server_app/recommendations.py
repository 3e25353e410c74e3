"""The recommendation queue: next recommendations with reasons, accept / reject / undo, counters, export."""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import partial
from typing import Callable

from bokeh.layouts import column, row
from bokeh.models import (
    Button,
    ColumnDataSource,
    DataTable,
    Div,
    HTMLTemplateFormatter,
    NumberFormatter,
    Select,
    TableColumn,
)

from timetravel.server_app._bokeh import custom_js, redraw_table_on_new_data
from timetravel.server_app.data import RunData
from timetravel.server_app.review import ReviewSnapshot

QUEUE_SIZES = ("5", "10", "20")

@dataclass
class QueueView:
    """Queue table, decision buttons, counters and export controls."""

    status: Div
    table_source: ColumnDataSource
    table: DataTable
    size: Select
    accept: Button
    reject: Button
    undo: Button
    counters: Div
    export_csv: Button
    export_json: Button
    export_source: ColumnDataSource
    export_note: Div
    layout: object
    _showing: bool = False  # show() is selecting the inspected row: not a user's click

    def k(self) -> int:
        return int(self.size.value)

    def on_row(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(sample)`` when the user clicks a queue row (not when :meth:`show` selects one)."""

        def clicked(_attr: str, _old: list[int], new: list[int]) -> None:
            if new and not self._showing:
                callback(int(self.table_source.data["index"][new[0]]))

        self.table_source.selected.on_change("indices", clicked)

    def on_size(self, callback: Callable[[int], None]) -> None:
        self.size.on_change("value", lambda _a, _o, _n: callback(self.k()))

    def on_decide(self, callback: Callable[[str], None]) -> None:
        """Call ``callback("accept" | "reject")`` for the decision buttons."""
        self.accept.on_click(partial(callback, "accept"))
        self.reject.on_click(partial(callback, "reject"))

    def on_undo(self, callback: Callable[[], None]) -> None:
        self.undo.on_click(callback)

    def on_export(self, callback: Callable[[str], None]) -> None:
        """Call ``callback("csv" | "json")`` for the export buttons."""
        self.export_csv.on_click(partial(callback, "csv"))
        self.export_json.on_click(partial(callback, "json"))

    def offer_download(self, text: str, filename: str, mime: str, note: str) -> None:
        """Hand ``text`` to the browser as a download named ``filename`` (see ``assets/download.js``)."""
        self.export_source.data = dict(text=[text], filename=[filename], mime=[mime])
        self.export_note.text = f"<span class='tt-muted'>{html.escape(note)}</span>"

    def shortcuts(self) -> dict[str, object]:
        """The buttons the keyboard drives (see ``assets/keys.js``)."""
        return dict(accept=self.accept, reject=self.reject, undo=self.undo)

    def show(self, data: RunData, snap: ReviewSnapshot, target: int | None) -> None:
        """Render a review snapshot: status line, queue rows, counters and button states."""
        ready = snap.status == "ready"
        self.status.text = "" if ready else f"<div class='tt-note'>{html.escape(snap.message)}</div>"
        queue = snap.queue[: self.k()]
        names = data.class_names
        self.table_source.data = dict(
            rank=list(range(1, len(queue) + 1)),
            index=queue,
            given=[names[int(data.labels[i])] for i in queue],
            suggested=[names[snap.suggested[i]] if i in snap.suggested else "" for i in queue],
            score=[snap.scores.get(i, float("nan")) for i in queue],
            reason=[html.escape((snap.reasons.get(i) or [""])[0]) for i in queue],
        )
        self._showing = True
        try:
            self.table_source.selected.indices = [queue.index(target)] if target in queue else []
        finally:
            self._showing = False
        self.accept.disabled = self.reject.disabled = target is None
        self.undo.disabled = not snap.decisions
        self.export_csv.disabled = self.export_json.disabled = not any(snap.decisions.values())
        self.counters.text = _counters(snap)


_PAST = {"accept": "accepted", "reject": "rejected", "undo": "undid the decision on"}


def _counters(snap: ReviewSnapshot) -> str:
    """Counters, and the latest decision confirmed once it is in feedback.jsonl (one Div: one page re-layout)."""
    reviewed = len(snap.decisions)
    accepted = sum(snap.decisions.values())
    parts = [f"reviewed <b name='reviewed'>{reviewed}</b>", f"accepted <b name='accepted'>{accepted}</b>"]
    if snap.hits is not None and reviewed:
        parts.append(f"hit rate <b>{snap.hits / reviewed:.0%}</b> <span class='tt-muted'>(truly mislabelled)</span>")
    text = " · ".join(parts)
    event = snap.last_event
    if event is not None:
        text += (f"<br><span class='tt-ok' name='last_decision'>✓ {_PAST[event.decision]} #{event.sample}, "
                 "saved to feedback.jsonl</span>")  # fmt: skip
    return text


def make_queue(data: RunData) -> QueueView:
    """Build the queue panel (filled later from review snapshots)."""
    status = Div(text="", name="queue_status", sizing_mode="stretch_width")
    source = ColumnDataSource(dict(rank=[], index=[], given=[], suggested=[], score=[], reason=[]), name="queue_source")
    table = DataTable(
        source=source,
        columns=[
            TableColumn(field="rank", title="", width=24),
            TableColumn(field="index", title="#", formatter=NumberFormatter(format="0"), width=55),
            TableColumn(field="given", title="given", width=70),
            TableColumn(field="suggested", title="suggested", width=70),
            TableColumn(field="score", title="p(accept)", formatter=NumberFormatter(format="0.00"), width=62),
            TableColumn(field="reason", title="why", width=250,
                        formatter=HTMLTemplateFormatter(template="<span title='<%= value %>'><%= value %></span>")),
        ],  # fmt: skip
        height=250,
        sizing_mode="stretch_width",
        index_position=None,
        selectable=True,
        name="queue_table",
        css_classes=["tt-queue-table"],
    )
    redraw_table_on_new_data(table)
    size = Select(value="10", options=list(QUEUE_SIZES), width=60, name="queue_size")
    accept = Button(label="✓ Accept (a)", button_type="success", name="accept", disabled=True,
                    html_attributes={"title": "accept the inspected sample (key a)"})
    reject = Button(label="✗ Reject (r)", button_type="danger", name="reject", disabled=True,
                    html_attributes={"title": "reject the inspected sample (key r)"})
    undo = Button(label="↶ Undo (u)", name="undo", disabled=True)
    counters = Div(text="", name="counters")
    export_csv = Button(label="Export CSV", name="export_csv", disabled=True, width=100)
    export_json = Button(label="Export JSON", name="export_json", disabled=True, width=100)
    export_source = ColumnDataSource(dict(text=[], filename=[], mime=[]), name="export_source")
    export_source.js_on_change("data", custom_js("download.js", source=export_source))
    export_note = Div(text="", name="export_note")
    layout = column(
        row(Div(text="<div class='tt-h'>Recommendations</div>"), Div(text="show"), size, sizing_mode="stretch_width"),
        status,
        table,
        row(accept, reject, undo, sizing_mode="stretch_width"),
        counters,
        row(export_csv, export_json, export_note, sizing_mode="stretch_width"),
        sizing_mode="stretch_width",
    )
    return QueueView(status, source, table, size, accept, reject, undo, counters, export_csv, export_json,
                     export_source, export_note, layout)  # fmt: skip
