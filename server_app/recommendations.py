"""The recommendation queue: next recommendations with reasons, accept (relabel / drop / flag) / reject / undo,
counters, export."""

from __future__ import annotations

import html
from dataclasses import dataclass
from functools import partial
from typing import Callable

from bokeh.layouts import column, row
from bokeh.models import (
    Button,
    ColumnDataSource,
    CustomJS,
    DataTable,
    Div,
    HTMLTemplateFormatter,
    NumberFormatter,
    RadioButtonGroup,
    Select,
    TableColumn,
)

from timetravel.server_app._bokeh import choice, custom_js, redraw_table_on_new_data
from timetravel.server_app.data import RunData
from timetravel.server_app.review import ReviewSnapshot

QUEUE_SIZES = ("5", "10", "20")
ACTIONS = ("relabel", "drop", "flag")  # what Accept does, in the order of the action buttons


@dataclass
class QueueView:
    """Queue table, decision buttons, counters and export controls."""

    status: Div
    table_source: ColumnDataSource
    table: DataTable
    size: Select
    action: RadioButtonGroup
    relabel_to: Select
    accept: Button
    reject: Button
    undo: Button
    counters: Div
    export_csv: Button
    export_json: Button
    export_source: ColumnDataSource
    export_note: Div
    scope_note: Div
    clear_scope: Button
    layout: object
    _showing: bool = False  # show() is selecting the inspected row: not a user's click
    _preselected_for: int | None = None  # the sample whose suggested label relabel_to was set to

    def k(self) -> int:
        return int(choice(self.size))

    def on_row(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(sample)`` when the user clicks a queue row (not when :meth:`show` selects one)."""

        def clicked(_attr: str, _old: list[int], new: list[int]) -> None:
            if new and not self._showing:
                callback(int(self.table_source.data["index"][new[0]]))

        self.table_source.selected.on_change("indices", clicked)

    def show_scope(self, text: str | None) -> None:
        """Say which group the queue is limited to (None: the whole run)."""
        self.scope_note.text = "" if text is None else text
        self.clear_scope.visible = text is not None

    def on_clear_scope(self, callback: Callable[[], None]) -> None:
        self.clear_scope.on_click(callback)

    def on_size(self, callback: Callable[[int], None]) -> None:
        self.size.on_change("value", lambda _a, _o, _n: callback(self.k()))

    def on_decide(self, callback: Callable[[str, int | None], None]) -> None:
        """Call ``callback(decision, label)`` for the decision buttons.

        Accept sends the chosen action: ``("relabel", class)``, ``("drop", None)`` or
        ``("flag", None)``; Reject sends ``("reject", None)``.
        """
        self.accept.on_click(lambda: callback(*self.chosen()))
        self.reject.on_click(partial(callback, "reject", None))

    def chosen(self) -> tuple[str, int | None]:
        """The decision Accept makes now, with the relabel target."""
        action = ACTIONS[self.action.active]
        return action, int(choice(self.relabel_to)) if action == "relabel" else None

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

    def show(self, data: RunData, snap: ReviewSnapshot, target: int | None, suggestion: int | None = None,
             rows: list[int] | None = None) -> None:
        """Render a review snapshot: status line, queue rows, counters and button states.

        ``suggestion`` is preselected as the relabel target when the inspected sample changes;
        ``rows`` replaces the snapshot's queue (the best recommendations within a group).
        """
        ready = snap.status == "ready"
        self.status.text = "" if ready else f"<div class='tt-note'>{html.escape(snap.message)}</div>"
        queue = snap.shown(self.k()) if rows is None else rows
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
        if target != self._preselected_for and suggestion is not None:
            self.relabel_to.value = str(suggestion)
            self._preselected_for = target
        self.accept.disabled = self.reject.disabled = target is None
        self.undo.disabled = not (snap.decisions or snap.seeds)
        self.export_csv.disabled = self.export_json.disabled = not any(snap.decisions.values())
        self.counters.text = _counters(snap, names)


_PAST = {"accept": "accepted", "relabel": "relabelled", "drop": "dropped", "flag": "flagged", "reject": "rejected",
         "undo": "undid the decision on"}


def _counters(snap: ReviewSnapshot, names: list[str]) -> str:
    """Counters, and the latest decision confirmed once it is in feedback.jsonl (one Div: one page re-layout)."""
    reviewed = len(snap.decisions)
    accepted = sum(snap.decisions.values())
    parts = [f"reviewed <b name='reviewed'>{reviewed}</b>", f"accepted <b name='accepted'>{accepted}</b>"]
    if snap.seeds:
        groups = sorted(set(snap.seeds.values()))
        named = ", ".join(f"“{html.escape(g)}”" for g in groups[:2]) + (" ..." if len(groups) > 2 else "")
        parts.append(f"seeded <b name='seeded'>{len(snap.seeds)}</b> <span class='tt-muted'>(more like {named})</span>")
    if snap.hits is not None and reviewed:
        parts.append(f"hit rate <b>{snap.hits / reviewed:.0%}</b> <span class='tt-muted'>(truly mislabelled)</span>")
    kinds = [e.decision for e in snap.standing.values()]
    fixes = [f"{_PAST[kind]} <b name='n_{kind}'>{kinds.count(kind)}</b>" for kind in ACTIONS if kind in kinds]
    text = " · ".join(parts) + ("<br>" + " · ".join(fixes) if fixes else "")
    event = snap.last_event
    if event is not None and event.decision == "seed":
        n = sum(1 for g in snap.seeds.values() if g == event.group)
        text += (f"<br><span class='tt-ok' name='last_decision'>✓ seeded {n} samples of “{html.escape(str(event.group))}”"
                 " as examples of what you are after, saved to feedback.jsonl</span>")  # fmt: skip
    elif event is not None:
        target = f" as {html.escape(names[event.label])}" if event.label is not None else ""
        text += (f"<br><span class='tt-ok' name='last_decision'>✓ {_PAST[event.decision]} #{event.sample}{target}, "
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
    action = RadioButtonGroup(labels=["Relabel to", "Drop", "Flag only"], active=0, name="accept_action",
                              width=230, css_classes=["tt-accept-action"])  # fmt: skip
    relabel_to = Select(value="0", options=[(str(k), name) for k, name in enumerate(data.class_names)], width=110,
                        name="relabel_to", css_classes=["tt-relabel-to"])  # fmt: skip
    action.js_on_change("active", CustomJS(args=dict(target=relabel_to), code="target.disabled = this.active != 0"))
    accept = Button(label="✓ Accept (a)", button_type="success", name="accept", disabled=True,
                    html_attributes={"title": "accept the inspected sample with the chosen correction (key a)"})
    reject = Button(label="✗ Reject (r)", button_type="danger", name="reject", disabled=True,
                    html_attributes={"title": "reject the inspected sample (key r)"})
    undo = Button(label="↶ Undo (u)", name="undo", disabled=True)
    counters = Div(text="", name="counters")
    export_csv = Button(label="Export CSV", name="export_csv", disabled=True, width=100)
    export_json = Button(label="Export JSON", name="export_json", disabled=True, width=100)
    export_source = ColumnDataSource(dict(text=[], filename=[], mime=[]), name="export_source")
    export_source.js_on_change("data", custom_js("download.js", source=export_source))
    export_note = Div(text="", name="export_note")
    scope_note = Div(text="", name="queue_scope", sizing_mode="stretch_width")
    clear_scope = Button(label="whole run", name="clear_scope", visible=False, width=90,
                         html_attributes={"title": "recommend from every sample again"})
    layout = column(
        row(Div(text="<div class='tt-h'>Recommendations</div>"), Div(text="show"), size, sizing_mode="stretch_width"),
        row(scope_note, clear_scope, sizing_mode="stretch_width"),
        status,
        table,
        row(Div(text="<span class='tt-muted'>on accept:</span>"), action, relabel_to, sizing_mode="stretch_width"),
        row(accept, reject, undo, sizing_mode="stretch_width"),
        counters,
        row(export_csv, export_json, export_note, sizing_mode="stretch_width"),
        sizing_mode="stretch_width",
    )
    return QueueView(status, source, table, size, action, relabel_to, accept, reject, undo, counters, export_csv,
                     export_json, export_source, export_note, scope_note, clear_scope, layout)  # fmt: skip
