"""The sample inspector: image, labels, per-epoch curves, nearest neighbours, detector reasons."""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np
from bokeh.layouts import column
from bokeh.models import BasicTicker, ColumnDataSource, Div, LinearAxis, Range1d, Span
from bokeh.plotting import figure

from timetravel.server_app.data import RunData, SampleHistory

EMPTY_TEXT = "<span class='tt-muted'>Click a dot or a queue entry to inspect a sample.</span>"


@dataclass
class InspectorView:
    """Widgets of the inspector; filled by :meth:`show`.

    The sample's image, labels, decision and the detector's reasons share one Div, and the
    prediction at the current epoch is the curves' title: every Div change makes Bokeh lay
    out the whole page again, so an accept or an epoch step touches as few as possible.
    """

    summary: Div
    curves: object
    curve_source: ColumnDataSource
    pred_source: ColumnDataSource
    margin_range: Range1d
    cursor: Span
    neighbours: Div
    layout: object

    def clear(self) -> None:
        self.summary.text = EMPTY_TEXT
        self.curves.visible = False
        self.neighbours.text = ""
        self.curve_source.data = dict(epoch=[], prob=[], margin=[])
        self.pred_source.data = dict(epoch=[], pred=[], color=[], name=[])

    def show(self, data: RunData, sample: int, *, decision: str, reasons: list[str] | None, note: str = "") -> None:
        """Fill the summary of ``sample``: image, labels, decision and the detector's reasons."""
        names = data.class_names
        given = int(data.labels[sample])
        true = data.store.true_labels
        lines = [
            f"<div class='tt-title'>Sample #{sample}</div>",
            f"given label <b>{swatch(data, given)}{html.escape(names[given])}</b>",
        ]
        if true is not None:
            lines.append(f"true label (benchmark run): <b>{html.escape(names[int(true[sample])])}</b>")
        lines.append(f"decision: <b name='decision'>{decision}</b>")
        image = thumbnail_html(data.thumbnail_png(sample), f"sample {sample}")
        self.summary.text = (
            f"<div class='tt-row'>{image}<div>{'<br>'.join(lines)}</div></div>{_reasons_html(reasons, note)}"
        )
        self.curves.visible = True

    def show_epoch(self, data: RunData, epoch: int, pred: int, confidence: float) -> None:
        """Move the cursor to ``epoch`` and name the prediction there (a plot title: no page re-layout)."""
        self.cursor.location = epoch
        self.curves.title.text = f"epoch {epoch}: predicted {data.class_names[pred]} ({confidence:.0%})"

    def show_history(self, data: RunData, history: SampleHistory) -> None:
        """Draw the given-label probability, margin and per-epoch prediction curves."""
        self.curve_source.data = dict(epoch=history.epochs, prob=history.given_prob, margin=history.margin)
        lo, hi = float(np.min(history.margin)), float(np.max(history.margin))
        span = max(hi - lo, 1e-3)
        self.margin_range.start, self.margin_range.end = lo - 0.05 * span, hi + 0.05 * span
        self.pred_source.data = dict(
            epoch=history.epochs,
            pred=history.pred,
            color=[data.palette[p] for p in history.pred],
            name=[data.class_names[p] for p in history.pred],
        )

    def show_neighbours(self, data: RunData, epoch: int, neighbours: np.ndarray, preds: np.ndarray) -> None:
        items = []
        for j, p in zip(neighbours.tolist(), preds.tolist()):
            uri = data.thumbnail_png(j)
            img = f"<img src='{uri}' class='tt-thumb'>" if uri else ""
            given = int(data.labels[j])
            items.append(
                f"<div class='tt-nb' title='given {html.escape(data.class_names[given])}, "
                f"predicted {html.escape(data.class_names[p])}'>{img}<br>#{j}<br>"
                f"{swatch(data, given)}{html.escape(data.class_names[given])}</div>"
            )
        self.neighbours.text = (
            f"<div class='tt-sub'>Nearest neighbours (embedding, epoch {epoch})</div>"
            f"<div class='tt-nbs'>{''.join(items)}</div>"
        )



def _reasons_html(reasons: list[str] | None, note: str) -> str:
    if reasons is None:
        return f"<div class='tt-muted'>{html.escape(note)}</div>" if note else ""
    items = "".join(f"<li>{html.escape(r)}</li>" for r in reasons) or "<li>nothing unusual</li>"
    return f"<div class='tt-sub'>Why the detector flags it</div><ul class='tt-reasons'>{items}</ul>"


def thumbnail_html(uri: str | None, alt: str) -> str:
    """The big image of an inspected sample (``uri``: :meth:`RunData.thumbnail_png`), or "no image"."""
    return f"<img src='{uri}' alt='{html.escape(alt)}' class='tt-thumb-big'>" if uri else "<i>no image</i>"


def swatch(data: RunData, k: int) -> str:
    """A small square of class ``k``'s colour."""
    return f"<span class='tt-swatch' style='background:{data.palette[k]}'></span>"


def make_inspector(data: RunData) -> InspectorView:
    """Build an empty inspector (the curves span every recorded epoch)."""
    summary = Div(text=EMPTY_TEXT, name="inspector_summary", sizing_mode="stretch_width")
    curve_source = ColumnDataSource(dict(epoch=[], prob=[], margin=[]))
    pred_source = ColumnDataSource(dict(epoch=[], pred=[], color=[], name=[]))
    fig = figure(
        height=190, sizing_mode="stretch_width", toolbar_location=None, y_range=(-0.14, 1.02), name="curves",
        x_range=(data.store.epochs[0] - 0.5, data.store.epochs[-1] + 0.5), title=" ",
        tools="hover", tooltips=[("epoch", "@epoch"), ("value", "$y{0.00}")],
    )  # fmt: skip
    fig.title.text_font_size = "10pt"
    fig.min_border_left = 40
    margin_range = Range1d(-1, 1)
    fig.extra_y_ranges = {"margin": margin_range}
    fig.add_layout(LinearAxis(y_range_name="margin", axis_label="margin"), "right")
    fig.yaxis[0].axis_label = "P(given)"
    fig.line("epoch", "prob", source=curve_source, line_width=2, color="#1565c0", legend_label="P(given label)")
    fig.line("epoch", "margin", source=curve_source, line_width=2, color="#c62828", line_dash="dashed",
             y_range_name="margin", legend_label="margin")  # fmt: skip
    fig.rect("epoch", -0.08, width=1.0, height=0.09, source=pred_source, fill_color="color", line_color=None)
    fig.legend.location = "top_left"
    fig.legend.label_text_font_size = "8pt"
    fig.legend.background_fill_alpha = 0.5
    fig.legend.padding = 2
    fig.legend.spacing = 0
    fig.xaxis.axis_label = "epoch (strip: predicted class)"
    fig.xaxis.ticker = BasicTicker(min_interval=1)
    fig.visible = False  # until a sample is inspected
    cursor = Span(location=0, dimension="height", line_color="#ff6f00", line_width=2)
    fig.add_layout(cursor)
    neighbours = Div(text="", name="inspector_neighbours", sizing_mode="stretch_width")
    layout = column(summary, fig, neighbours, sizing_mode="stretch_width")
    return InspectorView(summary, fig, curve_source, pred_source, margin_range, cursor, neighbours, layout)
