"""Activation patterns: the embedding units that set the selection apart, as a heatmap, at the current epoch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import ColorBar, ColumnDataSource, Div, FactorRange, HoverTool, LinearColorMapper, Select
from bokeh.palettes import RdBu11
from bokeh.plotting import figure

from timetravel.activations import ActivationPattern
from timetravel.server_app._bokeh import choice, custom_js

REFERENCE_CLASSES = ""  # the compare-with choice "its classes"
EMPTY = ("<span class='tt-muted'>Select samples (box or lasso on the canvas, a confusion cell, a group) to see "
         "which embedding units set them apart, and how that changes over the epochs.</span>")  # fmt: skip


@dataclass
class ActivationsView:
    """Heatmap of standardised unit means, the hovered unit's distributions, and what is compared."""

    reference: Select
    info: Div
    heatmap: object
    cells: ColumnDataSource
    units: ColumnDataSource
    hist: ColumnDataSource
    histogram: object
    layout: object

    def reference_name(self) -> str:
        """The group the selection is compared with ("" = its classes)."""
        return choice(self.reference)

    def on_reference(self, callback: Callable[[], None]) -> None:
        self.reference.on_change("value", lambda _a, _o, _n: callback())

    def set_group_names(self, names: list[str]) -> None:
        options = [(REFERENCE_CLASSES, "its classes"), *[(n, n) for n in names]]
        if self.reference.options != options:
            self.reference.options = options
        if self.reference.value not in names:
            self.reference.value = REFERENCE_CLASSES

    def clear(self, text: str = EMPTY) -> None:
        self.info.text = text
        self.heatmap.visible = self.histogram.visible = False

    def show(self, pattern: ActivationPattern, elapsed_ms: float) -> None:
        """Draw ``pattern``: rows × units, most separating unit on the left."""
        p = pattern
        cols = [f"u{u}" for u in p.units.tolist()]
        n_rows, n_units = p.rows.shape
        r, c = np.divmod(np.arange(n_rows * n_units), n_units)
        self.heatmap.x_range.factors = cols
        self.heatmap.y_range.factors = list(reversed(p.row_names))
        self.cells.data = dict(
            unit=[cols[j] for j in c], row=[p.row_names[i] for i in r], col=c, z=p.rows.ravel(),
            sep=np.repeat(p.separation[None, :], n_rows, axis=0).ravel(),
        )  # fmt: skip
        self.units.data = dict(name=cols, edges=list(p.edges), sel=list(p.selection_hist), ref=list(p.reference_hist))
        first = 0
        self.hist.tags = [first]
        self.hist.data = dict(left=p.edges[first][:-1], right=p.edges[first][1:], sel=p.selection_hist[first],
                              ref=p.reference_hist[first])  # fmt: skip
        self.histogram.title.text = f"unit {cols[first]}: values in the selection (blue) and the reference (grey)"
        # a plot title changes without re-laying out the page; the Div below changes only with the question
        self.heatmap.title.text = (f"epoch {p.epoch}: {p.n_selection:,} selected vs {p.reference} ({p.n_reference:,}); "
                                   f"d {p.separation[0]:+.2f} … {p.separation[-1]:+.2f}; {elapsed_ms:.0f} ms")  # fmt: skip
        faint = ("" if np.abs(p.separation).max() >= 0.3 else " <b>No unit separates them by even 0.3 standard "
                 "deviations: in this epoch's embedding the selection looks like its reference.</b>")  # fmt: skip
        self.info.text = (f"<span name='activation_info'>The {n_units} embedding units that separate the selection "
                          f"most from {p.reference} (Cohen's d, in the title), most separating on the left. Colour: "
                          "unit mean in standard deviations of the whole run (red above, blue below). Hover a cell "
                          f"for the unit's distributions.{faint}</span>")  # fmt: skip
        self.heatmap.visible = self.histogram.visible = True


def make_activations() -> ActivationsView:
    """Build the activations tab (filled by its controller)."""
    reference = Select(title="Compare the selection with", value=REFERENCE_CLASSES,
                       options=[(REFERENCE_CLASSES, "its classes")], name="activation_reference", width=260)
    info = Div(text=EMPTY, name="activations_info", sizing_mode="stretch_width")
    cells = ColumnDataSource(dict(unit=[], row=[], col=[], z=[], sep=[]), name="activation_source")
    mapper = LinearColorMapper(palette=list(RdBu11), low=-2.5, high=2.5)
    heatmap = figure(height=330, sizing_mode="stretch_width", toolbar_location=None, name="activation_heatmap",
                     x_range=FactorRange(), y_range=FactorRange(), title=" ", tools="")  # fmt: skip
    rects = heatmap.rect("unit", "row", 1, 1, source=cells, fill_color={"field": "z", "transform": mapper},
                         line_color=None)  # fmt: skip
    heatmap.xaxis.major_label_orientation = 1.2
    heatmap.xaxis.major_label_text_font_size = "7pt"
    heatmap.yaxis.major_label_text_font_size = "8pt"
    heatmap.grid.visible = False
    heatmap.title.text_font_size = "9pt"
    heatmap.add_layout(ColorBar(color_mapper=mapper, width=8, label_standoff=4, major_label_text_font_size="7pt"),
                       "right")  # fmt: skip
    units = ColumnDataSource(dict(name=[], edges=[], sel=[], ref=[]), name="unit_hist_store")
    hist = ColumnDataSource(dict(left=[], right=[], sel=[], ref=[]), name="unit_hist_source", tags=[0])
    histogram = figure(height=140, sizing_mode="stretch_width", toolbar_location=None, name="unit_histogram",
                       title=" ", tools="")  # fmt: skip
    histogram.quad(left="left", right="right", bottom=0, top="ref", source=hist, fill_color="#9e9e9e",
                   fill_alpha=0.5, line_color=None)  # fmt: skip
    histogram.quad(left="left", right="right", bottom=0, top="sel", source=hist, fill_color="#1565c0",
                   fill_alpha=0.5, line_color=None)  # fmt: skip
    histogram.title.text_font_size = "9pt"
    histogram.yaxis.axis_label = "share"
    heatmap.add_tools(HoverTool(renderers=[rects], tooltips=[("unit", "@unit"), ("row", "@row"),
                                                              ("standardised mean", "@z{0.00}"),
                                                              ("separation (d)", "@sep{+0.00}")],
                                callback=custom_js("unit_hover.js", cells=cells, units=units, hist=hist,
                                                   title=histogram.title)))  # fmt: skip
    heatmap.visible = histogram.visible = False
    layout = column(row(Div(text="<div class='tt-h'>Activation patterns</div>"), sizing_mode="stretch_width"),
                    reference, info, heatmap, histogram, sizing_mode="stretch_width")  # fmt: skip
    return ActivationsView(reference, info, heatmap, cells, units, hist, histogram, layout)
