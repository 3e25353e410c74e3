"""The pool tab: the unlabelled pool ranked by the active learner, the chosen sample, "label this", undo, counters."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable

from bokeh.layouts import column, row
from bokeh.models import (
    BasicTicker,
    Button,
    Checkbox,
    ColumnDataSource,
    DataTable,
    Div,
    HTMLTemplateFormatter,
    NumberFormatter,
    Select,
    Span,
    TableColumn,
)
from bokeh.plotting import figure

from timetravel.feedback import FeedbackEvent
from timetravel.server_app._bokeh import choice, redraw_table_on_new_data
from timetravel.server_app.data import RunData
from timetravel.server_app.inspector import swatch, thumbnail_html
from timetravel.server_app.pool import PoolHistory, PoolRanks

EMPTY_TEXT = "<span class='tt-muted'>Click a row to see the pool sample.</span>"


@dataclass
class PoolView:
    """Widgets of the pool tab; filled by the :class:`~timetravel.server_app.pooling.Pooling` controller."""

    status: Div
    on_canvas: Checkbox
    source: ColumnDataSource
    table: DataTable
    label_to: Select
    label: Button
    undo: Button
    counters: Div
    sample: Div
    history: object
    history_source: ColumnDataSource
    cursor: Span
    top: Div
    layout: object
    _showing: bool = False  # show() is selecting the chosen row: not a user's click
    _preselected_for: int | None = None  # the row whose prediction label_to was set to

    def on_row(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(pool_row)`` when the user clicks a row (not when :meth:`show_ranks` selects one)."""

        def clicked(_attr: str, _old: list[int], new: list[int]) -> None:
            if new and not self._showing:
                callback(int(self.source.data["row"][new[0]]))

        self.source.selected.on_change("indices", clicked)

    def on_label(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(class)`` for "Label this" (a crafted class value falls back to the first class)."""
        self.label.on_click(lambda: callback(int(choice(self.label_to))))

    def on_undo(self, callback: Callable[[], None]) -> None:
        self.undo.on_click(callback)

    def canvas_shown(self) -> bool:
        """Whether the user wants the pool drawn on the canvas (while this tab is open)."""
        return bool(self.on_canvas.active)

    def on_canvas_toggle(self, callback: Callable[[], None]) -> None:
        self.on_canvas.on_change("active", lambda _a, _o, _n: callback())

    def show_ranks(self, data: RunData, ranks: PoolRanks, chosen: int | None, busy: bool = False) -> None:
        """Render a ranking: status line, rows (``chosen`` selected), counters and button states."""
        names = data.class_names
        if ranks.status != "ready":
            self.status.text = f"<div class='tt-error' name='pool_error'>{html.escape(ranks.message)}</div>"
        else:
            how = ("the error model learned on the held-out set" if ranks.calibrated else
                   "one minus the model's confidence (no labelled held-out set to learn an error model from)")
            self.status.text = (f"<span class='tt-muted'>Most likely mispredicted first, re-ranked after every "
                                f"label. p(wrong): the model's estimate ({how}); score ▾: the ranking's, which "
                                f"starts from p(wrong) and learns from your labels (rows in score order); final "
                                f"model: epoch {ranks.final_epoch}. Triangles on the canvas: the pool, outlined in "
                                f"the predicted class's colour.</span>")
        rows = ranks.rows
        self.source.data = dict(
            rank=list(range(1, len(rows) + 1)),
            row=rows,
            predicted=[names[ranks.predicted[i]] for i in rows],
            p_wrong=[ranks.p_wrong[i] for i in rows],
            score=[ranks.score[i] for i in rows],
            reason=[html.escape((ranks.reasons.get(i) or ["nothing stands out"])[0]) for i in rows],
        )
        self._showing = True
        try:
            self.source.selected.indices = [rows.index(chosen)] if chosen in rows else []
        finally:
            self._showing = False
        self.label.disabled = busy or chosen is None or ranks.status != "ready"
        self.undo.disabled = busy or not ranks.labels

    def show_counters(self, data: RunData, ranks: PoolRanks, event: FeedbackEvent | None) -> None:
        """Labelled k of P, how often the model was wrong on them, and the latest label confirmed (once saved)."""
        k = len(ranks.labels)
        parts = [f"labelled <b name='pool_labelled'>{k}</b> of {ranks.n_pool:,}"]
        if k:
            parts.append(f"your label differs from the model's on <b name='pool_disagree'>{ranks.n_disagree}</b>")
        if ranks.n_truly_wrong is not None and k:
            parts.append(f"the model was wrong on <b name='pool_truly_wrong'>{ranks.n_truly_wrong}</b> of the "
                         f"{k} labelled <span class='tt-muted'>(hit rate {ranks.n_truly_wrong / k:.0%}; "
                         f"{ranks.truly_wrong_share:.0%} of the pool; benchmark run)</span>")  # fmt: skip
        text = " · ".join(parts)
        if event is not None:
            if event.decision == "undo":
                done = f"↶ undid the last label of pool #{event.sample}"
            else:
                done = f"✓ labelled pool #{event.sample} as {html.escape(data.class_names[int(event.label)])}"
            text += f"<br><span class='tt-ok' name='pool_last'>{done}, saved to feedback.jsonl</span>"
        self.counters.text = text

    def preselect(self, row: int | None, predicted: int | None) -> None:
        """Preselect the model's prediction as the label when the chosen row changes."""
        if row != self._preselected_for and predicted is not None:
            self.label_to.value = str(predicted)
        self._preselected_for = row

    def clear_sample(self) -> None:
        self.sample.text = EMPTY_TEXT
        self.history.visible = False
        self.top.text = ""

    def show_sample(self, data: RunData, row: int, predicted: int, confidence: float, p_wrong: float,
                    ranked: float | None, reasons: list[str], label: int | None) -> None:  # fmt: skip
        """The chosen pool sample: image, the final prediction, p(wrong), reasons and the label given so far.

        ``p_wrong`` is the model's own estimate, ``ranked`` the ranking's score (after the labels given;
        None for a row the ranking does not show).
        """
        names = data.class_names
        given = ("not labelled yet" if label is None
                 else f"labelled <b>{swatch(data, label)}{html.escape(names[label])}</b>")  # fmt: skip
        ranking = "" if ranked is None else f" · ranking score <b name='pool_score'>{ranked:.2f}</b>"
        lines = [
            f"<div class='tt-title'>Pool #{row}</div>",
            f"final model: <b>{swatch(data, predicted)}{html.escape(names[predicted])}</b> ({confidence:.0%})",
            f"p(wrong) <b name='pool_p_wrong'>{p_wrong:.2f}</b>{ranking}",
            f"<span name='pool_state'>{given}</span>",
        ]
        items = "".join(f"<li>{html.escape(r)}</li>" for r in reasons) or "<li>nothing stands out</li>"
        self.sample.text = (f"<div class='tt-row'>{thumbnail_html(data.thumbnail_png(row, 'pool'), f'pool {row}')}"
                            f"<div>{'<br>'.join(lines)}<ul class='tt-reasons'>{items}</ul></div></div>")  # fmt: skip
        self.history.visible = True

    def show_history(self, data: RunData, history: PoolHistory) -> None:
        """The predicted class at every epoch (strip) and the final class's probability (line)."""
        self.history_source.data = dict(
            epoch=history.epochs,
            prob=history.final_prob,
            color=[data.palette[p] for p in history.pred.tolist()],
            name=[data.class_names[p] for p in history.pred.tolist()],
        )

    def show_epoch(self, data: RunData, epoch: int, top: list[tuple[int, float]] | None, epochs: list[int]) -> None:
        """The top classes at the slider's ``epoch``, or one sentence when that epoch holds no pool rows.

        When the epoch holds pool rows its projection did not place (made before pool placement),
        a second sentence says how to see them on the canvas.
        """
        self.cursor.location = epoch
        if top is None:
            held = ", ".join(str(e) for e in epochs[:8]) + (" ..." if len(epochs) > 8 else "")
            self.top.text = (f"<span class='tt-note' name='pool_no_epoch'>Epoch {epoch} holds no pool rows (it was "
                             f"recorded without the pool); the pool is recorded at epochs {held}.</span>")
            return
        items = " · ".join(f"{swatch(data, c)}{html.escape(data.class_names[c])} <b>{p:.0%}</b>" for c, p in top)
        self.top.text = f"<span class='tt-sub'>Top classes at epoch {epoch}:</span> {items}"
        if data.pool_unplaced(epoch):
            self.top.text += (f"<br><span class='tt-note' name='pool_unplaced'>This projection predates pool "
                              f"placement, so the canvas cannot show the pool; run <code>timetravel project "
                              f"{html.escape(str(data.path))} --overwrite</code> to add it.</span>")

    def show_unreadable(self, epoch: int, why: str) -> None:
        """One sentence: the pool rows of ``epoch`` cannot be read."""
        self.cursor.location = epoch
        self.top.text = (f"<span class='tt-error' name='pool_no_epoch'>The pool rows of epoch {epoch} cannot be "
                         f"read: {html.escape(why)}</span>")


def make_pool(data: RunData, epoch: int) -> PoolView:
    """Build the pool tab (filled later from pool rankings); the history spans every recorded epoch."""
    status = Div(text="<span class='tt-muted'>Ranking the pool...</span>", name="pool_status",
                 sizing_mode="stretch_width")  # fmt: skip
    on_canvas = Checkbox(label="show the pool on the canvas (triangles; click one to choose it)", active=True,
                         name="pool_on_canvas")  # fmt: skip
    source = ColumnDataSource(dict(rank=[], row=[], predicted=[], p_wrong=[], score=[], reason=[]),
                              name="pool_source")  # fmt: skip
    table = DataTable(
        source=source,
        columns=[
            TableColumn(field="rank", title="", width=24),
            TableColumn(field="row", title="pool #", formatter=NumberFormatter(format="0"), width=50),
            TableColumn(field="predicted", title="predicted", width=70),
            TableColumn(field="p_wrong", title="p(wrong)", formatter=NumberFormatter(format="0.00"), width=64),
            TableColumn(field="score", title="score ▾", formatter=NumberFormatter(format="0.00"), width=52),
            TableColumn(field="reason", title="why", width=212,
                        formatter=HTMLTemplateFormatter(template="<span title='<%= value %>'><%= value %></span>")),
        ],  # fmt: skip
        height=205,
        sizing_mode="stretch_width",
        index_position=None,
        selectable=True,
        name="pool_table",
    )
    redraw_table_on_new_data(table)
    label_to = Select(value="0", options=[(str(k), name) for k, name in enumerate(data.class_names)], width=120,
                      name="pool_label_to", css_classes=["tt-pool-label-to"])  # fmt: skip
    label = Button(label="✓ Label this (l)", button_type="success", name="pool_label", disabled=True,
                   html_attributes={"title": "give the chosen pool sample this class (key l)"})
    undo = Button(label="↶ Undo label", name="pool_undo", disabled=True,
                  html_attributes={"title": "withdraw the last pool label (key u on this tab)"})
    counters = Div(text="", name="pool_counters", sizing_mode="stretch_width")
    sample = Div(text=EMPTY_TEXT, name="pool_sample", sizing_mode="stretch_width")
    history_source = ColumnDataSource(dict(epoch=[], prob=[], color=[], name=[]))
    epochs = data.store.epochs
    fig = figure(
        height=140, sizing_mode="stretch_width", toolbar_location=None, y_range=(-0.16, 1.02), name="pool_history",
        x_range=(epochs[0] - 0.5, epochs[-1] + 0.5), tools="hover",
        tooltips=[("epoch", "@epoch"), ("predicted", "@name"), ("P(final class)", "@prob{0.00}")],
    )  # fmt: skip
    fig.min_border_left = 40
    fig.line("epoch", "prob", source=history_source, line_width=2, color="#1565c0", legend_label="P(final class)")
    fig.rect("epoch", -0.09, width=1.0, height=0.1, source=history_source, fill_color="color", line_color=None)
    fig.legend.location = "top_left"
    fig.legend.label_text_font_size = "8pt"
    fig.legend.background_fill_alpha = 0.5
    fig.legend.padding = 2
    fig.xaxis.axis_label = "epoch (strip: predicted class)"
    fig.xaxis.ticker = BasicTicker(min_interval=1)
    fig.visible = False  # until a row is chosen
    cursor = Span(location=epoch, dimension="height", line_color="#ff6f00", line_width=2)
    fig.add_layout(cursor)
    top = Div(text="", name="pool_top", sizing_mode="stretch_width")
    layout = column(
        Div(text="<div class='tt-h'>Unlabelled pool: label what the model gets wrong</div>"),
        status,
        on_canvas,
        table,
        row(Div(text="<span class='tt-muted'>label as:</span>"), label_to, label, undo, sizing_mode="stretch_width"),
        counters,
        sample,
        top,
        fig,
        sizing_mode="stretch_width",
    )
    return PoolView(status, on_canvas, source, table, label_to, label, undo, counters, sample, fig, history_source, cursor, top,
                    layout)  # fmt: skip

