"""The canvas: every sample as a WebGL scatter over the epoch's territory image.

Positions travel as float32 binary arrays; an epoch change sends only the columns
that change (``x``, ``y``, ``pred``, ``conf``) and the territory image.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from bokeh.core.properties import field
from bokeh.models import (
    BooleanFilter,
    CDSView,
    ColumnDataSource,
    CustomJSHover,
    HoverTool,
    LinearColorMapper,
    Range1d,
)
from bokeh.plotting import figure

from server_app.data import EpochFrame, RunData

# Overlay rings per mark kind: (colour, extra diameter in px, line width).
MARK_STYLES = {
    "accepted": ("#2e7d32", 8, 2.5),
    "rejected": ("#616161", 6, 2.0),
    "queue": ("#ff6f00", 8, 2.0),
}


BACKENDS = ("webgl", "canvas")
# Above this many dots the canvas (2D, no GPU) backend draws small squares without an
# outline, several times cheaper for the browser than outlined circles.
CANVAS_FAST_DOTS = 20000
# WebGL renderers that are emulated on the CPU; such browsers draw faster with canvas 2D.
SOFTWARE_GL = re.compile(r"swiftshader|llvmpipe|softpipe|software|basic render", re.IGNORECASE)


def point_size(n_samples: int) -> float:
    """Marker size that keeps dense runs readable (7 px at 1k, 3 px at 200k)."""
    return float(np.clip(13.0 - 1.9 * np.log10(max(n_samples, 1)), 3.0, 8.0))


def backend_for(gl_renderer: str) -> str:
    """``"webgl"`` for a GPU, ``"canvas"`` when the browser's WebGL is software (or missing).

    ``gl_renderer`` is the browser's ``UNMASKED_RENDERER_WEBGL`` string ("none" without WebGL).
    """
    return "canvas" if gl_renderer in ("", "none") or SOFTWARE_GL.search(gl_renderer) else "webgl"


# Runs in the browser once the page is ready: reports the WebGL renderer to the server.
PROBE_GL_JS = """
let renderer = "none";
try {
    const gl = document.createElement("canvas").getContext("webgl");
    if (gl != null) {
        const info = gl.getExtension("WEBGL_debug_renderer_info");
        renderer = String(gl.getParameter(info != null ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    }
} catch (error) { renderer = "none"; }
probe.value = renderer;
"""


@dataclass
class CanvasView:
    """The canvas figure and the sources the callbacks update."""

    figure: object
    points: ColumnDataSource
    points_view: CDSView
    territory: ColumnDataSource
    marks: ColumnDataSource
    focus: ColumnDataSource
    trails: ColumnDataSource
    color_mapper: LinearColorMapper
    scatter: object
    territory_renderer: object

    @contextmanager
    def one_paint(self) -> Iterator[None]:
        """Apply several updates with a single repaint in the browser.

        Bokeh sends each change as its own message; the browser would paint after the
        positions arrive and again after the territory does. Holding the render until the
        last change arrives paints the new frame once.
        """
        self.figure.hold_render = True
        try:
            yield
        finally:
            self.figure.hold_render = False

    def show_frame(self, frame: EpochFrame) -> None:
        """Swap in one epoch: positions, predictions, confidence and territory."""
        self.points.data.update(x=frame.x, y=frame.y, pred=frame.pred, conf=frame.confidence)
        x0, x1, y0, y1 = frame.extent
        self.territory.data = dict(image=[frame.territory], x=[x0], y=[y0], dw=[x1 - x0], dh=[y1 - y0])

    def color_by(self, column: str) -> None:
        """Colour the dots by ``"label"`` (given) or ``"pred"`` (the model's prediction)."""
        self.scatter.glyph.fill_color = field(column, self.color_mapper)

    def set_mask(self, mask: np.ndarray | None) -> None:
        """Show only the samples where ``mask`` is true (None shows all).

        The view keeps one BooleanFilter whose values change: assigning a new filter model
        would make Bokeh re-scan the whole document (a quarter second at 50k dots).
        """
        self.points_view.filter.booleans = mask

    def set_marks(self, frame: EpochFrame, marks: dict[str, np.ndarray]) -> None:
        """Outline decided and queued samples at their positions in ``frame``."""
        index = np.concatenate([np.asarray(v, dtype=np.int64) for v in marks.values()] or [np.zeros(0, np.int64)])
        kinds = [kind for kind, v in marks.items() for _ in range(len(v))]
        self.marks.data = dict(
            x=frame.x[index],
            y=frame.y[index],
            index=index.astype(np.int32),
            color=[MARK_STYLES[k][0] for k in kinds],
            size=np.array([MARK_STYLES[k][1] for k in kinds], dtype=np.float32) + self.scatter.glyph.size,
            width=np.array([MARK_STYLES[k][2] for k in kinds], dtype=np.float32),
        )

    def set_focus(self, frame: EpochFrame, sample: int | None) -> None:
        """Ring the inspected sample."""
        if sample is None:
            self.focus.data = dict(x=[], y=[])
        else:
            self.focus.data = dict(x=[float(frame.x[sample])], y=[float(frame.y[sample])])

    def set_trails(self, xs: list[np.ndarray], ys: list[np.ndarray]) -> None:
        """Draw the trajectories of the selected samples across epochs (as segments, see make_canvas)."""
        if not xs:
            self.trails.data = dict(x0=[], y0=[], x1=[], y1=[])
            return
        self.trails.data = dict(
            x0=np.concatenate([x[:-1] for x in xs]), y0=np.concatenate([y[:-1] for y in ys]),
            x1=np.concatenate([x[1:] for x in xs]), y1=np.concatenate([y[1:] for y in ys]),
        )  # fmt: skip


def _ranges(data: RunData) -> tuple[Range1d, Range1d]:
    x0, x1, y0, y1 = data.bounds
    pad_x, pad_y = 0.02 * (x1 - x0 or 1.0), 0.02 * (y1 - y0 or 1.0)
    return (
        Range1d(x0 - pad_x, x1 + pad_x, bounds=(x0 - 10 * pad_x, x1 + 10 * pad_x)),
        Range1d(y0 - pad_y, y1 + pad_y, bounds=(y0 - 10 * pad_y, y1 + 10 * pad_y)),
    )


def _hover(data: RunData, renderer) -> HoverTool:
    names = CustomJSHover(args=dict(names=data.class_names), code="return `${value} (${names[value]})`")
    return HoverTool(
        renderers=[renderer],
        tooltips=[
            ("sample", "$index"),
            ("given label", "@label{custom}"),
            ("prediction", "@pred{custom}"),
            ("confidence", "@conf{0.0%}"),
        ],
        formatters={"@label": names, "@pred": names},
    )


def make_canvas(data: RunData, frame: EpochFrame, backend: str = "webgl") -> CanvasView:
    """Build the canvas figure showing ``frame``, drawn with ``backend`` ("webgl" or "canvas").

    The territory image and the dots are on the primary layer. The decision rings, the
    focus ring and the trails are plain canvas glyphs on Bokeh's overlay layer: changing
    them (an accept, a click) repaints only that layer, never the dots, which matters when
    the browser renders WebGL in software (a full repaint of 50k dots then takes about a
    second).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    x_range, y_range = _ranges(data)
    fig = figure(
        name="canvas",
        output_backend=backend,
        x_range=x_range,
        y_range=y_range,
        tools="pan,wheel_zoom,box_select,lasso_select,reset,save",
        active_scroll="wheel_zoom",
        active_drag="pan",
        sizing_mode="stretch_both",
        min_width=480,
        min_height=420,
        toolbar_location="above",
        title=" ",
    )
    fig.title.text_font_size = "11pt"
    fig.axis.visible = False
    fig.grid.visible = False
    fig.outline_line_color = "#cfd8dc"
    fig.background_fill_color = "#ffffff"
    territory = ColumnDataSource(dict(image=[], x=[], y=[], dw=[], dh=[]), name="territory_source")
    territory_renderer = fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=territory,
                                        name="territory")  # fmt: skip
    mapper = LinearColorMapper(palette=data.palette, low=-0.5, high=data.n_classes - 0.5)
    points = ColumnDataSource(
        dict(x=frame.x, y=frame.y, label=data.labels, pred=frame.pred, conf=frame.confidence),
        name="points_source",
    )
    view = CDSView(filter=BooleanFilter(booleans=None))
    size = point_size(data.n_samples)
    fast = backend == "canvas" and data.n_samples > CANVAS_FAST_DOTS
    scatter = fig.scatter(
        x="x",
        y="y",
        source=points,
        view=view,
        marker="square" if fast else "circle",
        size=size,
        fill_color=field("label", mapper),
        line_color=None if fast else "white",
        line_width=0.4 if data.n_samples > 20000 else 0.6,
        fill_alpha=0.9,
        selection_fill_alpha=1.0,
        selection_line_color="black",
        nonselection_fill_alpha=0.15,
        nonselection_line_alpha=0.1,
        name="points",
    )
    trails = ColumnDataSource(dict(x0=[], y0=[], x1=[], y1=[]), name="trails_source")
    fig.segment(x0="x0", y0="y0", x1="x1", y1="y1", source=trails, line_color="#37474f", line_alpha=0.5,
                line_width=1.2, level="overlay", name="trails")  # fmt: skip
    marks = ColumnDataSource(dict(x=[], y=[], index=[], color=[], size=[], width=[]), name="marks_source")
    fig.ellipse(x="x", y="y", width="size", height="size", width_units="screen", height_units="screen",
                source=marks, fill_alpha=0.0, line_color="color", line_width="width", level="overlay",
                name="marks")  # fmt: skip
    focus = ColumnDataSource(dict(x=[], y=[]), name="focus_source")
    fig.ellipse(x="x", y="y", width=size + 16, height=size + 16, width_units="screen", height_units="screen",
                source=focus, fill_alpha=0.0, line_color="black", line_width=3, level="overlay",
                name="focus")  # fmt: skip
    fig.add_tools(_hover(data, scatter))
    canvas = CanvasView(fig, points, view, territory, marks, focus, trails, mapper, scatter, territory_renderer)
    canvas.show_frame(frame)
    return canvas
