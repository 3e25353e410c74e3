"""Confusion over time: given label × predicted class at the current epoch, and one cell over the epochs."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import (
    BasicTicker,
    ColumnDataSource,
    Div,
    FactorRange,
    RadioButtonGroup,
    Span,
    TapTool,
)
from bokeh.plotting import figure

from timetravel.server_app.data import RunData

SHOW = ("counts", "row %")
TEXT_CLASSES = 20  # cells carry their number up to this many classes
_DIAGONAL = np.array([236, 239, 241]), np.array([84, 110, 122])  # light to dark blue-grey
_OFF = np.array([255, 243, 224]), np.array([191, 54, 12])  # light to dark orange


def _shade(share: np.ndarray, diagonal: np.ndarray, off_max: float) -> list[str]:
    """Cell colours: the diagonal in blue-grey by its share, confusions in orange relative to the worst one."""
    out = []
    for s, d in zip(share.tolist(), diagonal.tolist()):
        lo, hi = _DIAGONAL if d else _OFF
        t = s if d else (s / off_max if off_max > 0 else 0.0)
        if not d and s == 0:
            out.append("#ffffff")
            continue
        r, g, b = (lo + (hi - lo) * min(max(t, 0.0), 1.0)).astype(int)
        out.append(f"#{r:02x}{g:02x}{b:02x}")
    return out


@dataclass
class MatrixPlot:
    """One confusion matrix figure and its source."""

    figure: object
    source: ColumnDataSource

    def show(self, matrix: np.ndarray, names: list[str], mode: str) -> None:
        """Draw ``matrix`` (counts) as counts or row percentages."""
        k = len(names)
        sums = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, sums, out=np.zeros(matrix.shape), where=sums > 0)
        g, p = np.divmod(np.arange(k * k), k)
        diagonal = g == p
        off = share[~np.eye(k, dtype=bool)]
        colours = _shade(share.ravel(), diagonal, float(off.max()) if off.size else 0.0)
        if k > TEXT_CLASSES:
            text = [""] * (k * k)
        elif mode == "counts":
            text = [str(c) if c else "" for c in matrix.ravel().tolist()]
        else:
            text = [f"{s:.0%}" if c else "" for s, c in zip(share.ravel().tolist(), matrix.ravel().tolist())]
        self.source.data = dict(
            given=[names[i] for i in g], pred=[names[i] for i in p], gi=g, pi=p,
            count=matrix.ravel(), share=share.ravel(), color=colours, text=text,
            text_color=["#ffffff" if (d and s > 0.6) or (not d and c and s / max(off.max(), 1e-9) > 0.6) else "#263238"
                        for d, s, c in zip(diagonal.tolist(), share.ravel().tolist(), matrix.ravel().tolist())],
        )  # fmt: skip

    def on_cell(self, callback: Callable[[int, int], None]) -> None:
        """Call ``callback(given, predicted)`` when a cell is clicked."""

        def tapped(_attr: str, _old: list[int], new: list[int]) -> None:
            if new:
                k = int(self.source.data["gi"][new[0]]), int(self.source.data["pi"][new[0]])
                callback(*k)

        self.source.selected.on_change("indices", tapped)


def _matrix_plot(data: RunData, name: str, title: str, height: int) -> MatrixPlot:
    names = list(data.class_names)
    source = ColumnDataSource(dict(given=[], pred=[], gi=[], pi=[], count=[], share=[], color=[], text=[],
                                   text_color=[]), name=f"{name}_source")  # fmt: skip
    fig = figure(
        name=name, title=title, height=height, sizing_mode="stretch_width", toolbar_location=None,
        x_range=FactorRange(*names), y_range=FactorRange(*reversed(names)), tools="tap",
        tooltips=[("given", "@given"), ("predicted", "@pred"), ("samples", "@count"), ("of the row", "@share{0.0%}")],
    )  # fmt: skip
    cells = fig.rect("pred", "given", 0.96, 0.96, source=source, fill_color="color", line_color=None,
                     selection_line_color="#000000", selection_line_width=2.5, nonselection_fill_alpha=1.0,
                     name=f"{name}_cells")  # fmt: skip
    fig.text("pred", "given", text="text", source=source, text_align="center", text_baseline="middle",
             text_font_size="8pt", text_color="text_color", nonselection_text_alpha=1.0)  # fmt: skip
    fig.select_one(TapTool).renderers = [cells]
    fig.xaxis.axis_label = "predicted class"
    fig.yaxis.axis_label = "given label"
    fig.xaxis.major_label_orientation = 0.8 if max(map(len, names)) > 3 else 0
    fig.grid.visible = False
    fig.outline_line_color = None
    fig.title.text_font_size = "10pt"
    return MatrixPlot(fig, source)


@dataclass
class ConfusionView:
    """The training set's matrix, the held-out one (when recorded), and the chosen cell over the epochs."""

    mode: RadioButtonGroup
    train: MatrixPlot
    heldout: MatrixPlot | None
    history_source: ColumnDataSource
    history: object
    cursor: Span
    info: Div
    layout: object

    def shown_as(self) -> str:
        return SHOW[self.mode.active]

    def on_mode(self, callback: Callable[[], None]) -> None:
        self.mode.on_change("active", lambda _a, _o, _n: callback())

    def show(self, epoch: int, names: list[str], train: np.ndarray, heldout: np.ndarray | None) -> None:
        """Draw the matrices of ``epoch``."""
        total = int(train.sum())
        wrong = total - int(np.trace(train))
        self.train.figure.title.text = f"training set, epoch {epoch}: {wrong:,} of {total:,} off the diagonal"
        self.train.show(train, names, self.shown_as())
        if self.heldout is not None and heldout is not None:
            wrong = int(heldout.sum() - np.trace(heldout))
            self.heldout.figure.title.text = f"held-out set, epoch {epoch}: {wrong:,} of {int(heldout.sum()):,} off"
            self.heldout.show(heldout, names, self.shown_as())
        self.cursor.location = epoch

    def show_cell(self, title: str, epochs: np.ndarray, counts: np.ndarray, heldout: np.ndarray | None,
                  note: str) -> None:  # fmt: skip
        """Plot the chosen cell's count over the epochs and say what the click did."""
        self.history_source.data = dict(epoch=epochs, count=counts,
                                        heldout=heldout if heldout is not None else np.full(len(epochs), np.nan))
        self.history.title.text = title
        self.history.visible = True
        self.info.text = note


def make_confusion(data: RunData, epoch: int) -> ConfusionView:
    """Build the confusion tab (filled by the grouping controller)."""
    mode = RadioButtonGroup(labels=list(SHOW), active=0, name="confusion_mode")
    k = data.n_classes
    size = int(np.clip(30 + 26 * k, 220, 420))
    train = _matrix_plot(data, "confusion", "training set", size)
    heldout = _matrix_plot(data, "confusion_heldout", "held-out set", int(size * 0.8)) if data.store.n_heldout else None
    history_source = ColumnDataSource(dict(epoch=[], count=[], heldout=[]), name="cell_history_source")
    history = figure(height=150, sizing_mode="stretch_width", toolbar_location=None, name="cell_history",
                     tools="hover", tooltips=[("epoch", "@epoch"), ("samples", "@count")], title=" ")  # fmt: skip
    history.line("epoch", "count", source=history_source, line_width=2, color="#bf360c", legend_label="training")
    history.scatter("epoch", "count", source=history_source, size=4, color="#bf360c")
    if heldout is not None:
        history.line("epoch", "heldout", source=history_source, line_width=2, color="#546e7a", line_dash="dashed",
                     legend_label="held-out")  # fmt: skip
    history.legend.location = "top_left"
    history.legend.label_text_font_size = "8pt"
    history.legend.background_fill_alpha = 0.5
    history.xaxis.ticker = BasicTicker(min_interval=1)
    history.title.text_font_size = "10pt"
    history.visible = False
    cursor = Span(location=epoch, dimension="height", line_color="#ff6f00", line_width=2)
    history.add_layout(cursor)
    info = Div(text="<span class='tt-muted'>Click a cell: its samples are selected on the canvas, the queue "
               "shows only them, and its count over the epochs appears below.</span>",
               name="confusion_info", sizing_mode="stretch_width")  # fmt: skip
    parts = [row(Div(text="<div class='tt-h'>Confusion</div>"), mode, sizing_mode="stretch_width"), train.figure]
    if heldout is not None:
        parts.append(heldout.figure)
    layout = column(*parts, info, history, sizing_mode="stretch_width")
    return ConfusionView(mode, train, heldout, history_source, history, cursor, info, layout)


def cell_title(names: list[str], given: int, predicted: int, split: str = "training") -> str:
    """The chosen cell, in words."""
    what = "predicted correctly" if given == predicted else f"predicted {names[predicted]}"
    return f"{split} samples labelled {names[given]}, {what}, per epoch"


def cell_note(names: list[str], given: int, predicted: int, epoch: int, n: int, scoped: bool) -> str:
    """What a click on a training cell did."""
    what = f"labelled <b>{html.escape(names[given])}</b>, predicted <b>{html.escape(names[predicted])}</b>"
    queue = " The queue now shows only them." if scoped else ""
    return f"<span name='cell_note'>{n:,} samples {what} at epoch {epoch} are selected on the canvas.{queue}</span>"
