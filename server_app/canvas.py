"""The canvas: every sample as a scatter over the epoch's territory image.

Positions travel as float32 binary arrays; an epoch change sends only the columns
that change (``x``, ``y``, ``pred``, ``conf``) and the territory image.

Three ways to draw the dots, chosen from the browser's WebGL renderer:

* ``webgl`` (a GPU): Bokeh's WebGL scatter;
* ``canvas`` (no GPU, up to :data:`CANVAS_RASTER_DOTS` dots): Bokeh's canvas-2D
  scatter, outlined circles;
* ``raster`` (no GPU, more dots): the browser rasterises the dots itself into one
  RGBA image (``assets/raster.js``, a few milliseconds for 50k dots) drawn over the
  territory; the scatter stays, transparent, for hover, tap and box/lasso
  selection. Canvas 2D would otherwise fill every dot as its own path, which
  costs hundreds of milliseconds per frame at 50k. Epoch frames then go to a
  source no glyph draws (``positions_source``): the image is drawn from it at once,
  and the scatter, whose new data costs Bokeh a spatial index and column copies
  (25 ms at 50k), takes the positions once the frame is on screen and the slider
  has rested, off the path of an epoch step.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from bokeh.core.properties import field
from bokeh.events import Tap
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

from timetravel.server_app._bokeh import custom_js
from timetravel.server_app.data import EpochFrame, PoolFrame, RunData

# Overlay rings per mark kind: (colour, extra diameter in px, line width).
MARK_STYLES = {
    "accepted": ("#2e7d32", 8, 2.5),
    "rejected": ("#616161", 6, 2.0),
    "queue": ("#ff6f00", 8, 2.0),
    "seeded": ("#6a1b9a", 6, 2.0),
}


BACKENDS = ("webgl", "canvas", "raster")
# Without a GPU, runs above this many dots are drawn by the raster backend (at 5,000 and 10,000 dots it
# stepped 12% / 41% faster than the canvas scatter and updated the group views 30-70 ms sooner).
CANVAS_RASTER_DOTS = 5000
FILL_ALPHA, NONSELECTION_ALPHA = 0.9, 0.15
# WebGL renderers that are emulated on the CPU; such browsers draw faster with canvas 2D.
SOFTWARE_GL = re.compile(r"swiftshader|llvmpipe|softpipe|software|basic render", re.IGNORECASE)


def point_size(n_samples: int) -> float:
    """Marker size that keeps dense runs readable (7 px at 1k, 3 px at 200k)."""
    return float(np.clip(13.0 - 1.9 * np.log10(max(n_samples, 1)), 3.0, 8.0))


def backend_for(gl_renderer: str, n_samples: int) -> str:
    """``"webgl"`` for a GPU; without one (software or missing WebGL) ``"canvas"``, or ``"raster"`` for big runs.

    ``gl_renderer`` is the browser's ``UNMASKED_RENDERER_WEBGL`` string ("none" without WebGL).
    """
    if gl_renderer not in ("", "none") and not SOFTWARE_GL.search(gl_renderer):
        return "webgl"
    return "raster" if n_samples > CANVAS_RASTER_DOTS else "canvas"




def _abgr(color: str) -> int:
    """``"#rrggbb"`` as the little-endian RGBA uint32 (alpha left 0) of an RGBA image."""
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return r | g << 8 | b << 16


@dataclass
class CanvasView:
    """The canvas figure and the sources the callbacks update."""

    figure: object
    points: ColumnDataSource  # the scatter's source: hover fields and the selection
    positions: ColumnDataSource  # where epoch frames go: ``points``, or the raster layer's own source
    points_view: CDSView
    territory: ColumnDataSource
    marks: ColumnDataSource
    focus: ColumnDataSource
    trails: ColumnDataSource
    color_mapper: LinearColorMapper
    scatter: object
    territory_renderer: object
    pool: ColumnDataSource  # the unlabelled pool's dots (drawn only while the pool tab shows them)
    pool_renderer: object
    pool_focus: ColumnDataSource
    dots: object | None = None  # the raster dot layer's renderer (None: Bokeh draws the dots)
    dots_js: object | None = None  # its CustomJS, to run once the page is ready

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
        self.positions.data.update(x=frame.x, y=frame.y, pred=frame.pred, conf=frame.confidence)
        x0, x1, y0, y1 = frame.extent
        self.territory.data = dict(image=[frame.territory], x=[x0], y=[y0], dw=[x1 - x0], dh=[y1 - y0])

    def set_title(self, text: str) -> None:
        self.figure.title.text = text

    def show_territory(self, shown: bool) -> None:
        self.territory_renderer.visible = shown

    def on_tap(self, callback: Callable[[float, float], None]) -> None:
        """Call ``callback(x, y)`` (data coordinates) when the canvas is tapped."""
        self.figure.on_event(Tap, lambda event: callback(event.x, event.y))

    def on_select(self, callback: Callable[[np.ndarray], None]) -> None:
        """Call ``callback(indices)`` when the box or lasso selection changes."""
        self.points.selected.on_change("indices", lambda _a, _o, new: callback(np.asarray(new, dtype=np.int64)))

    def select(self, indices: np.ndarray) -> None:
        """Select ``indices`` on the canvas (as a box selection would); nothing is sent when they are selected."""
        indices = np.unique(np.asarray(indices, dtype=np.int64))
        if not np.array_equal(np.unique(np.asarray(self.points.selected.indices, dtype=np.int64)), indices):
            self.points.selected.indices = indices.tolist()

    def nearest_dot(self, frame: EpochFrame | PoolFrame, x: float, y: float, radius: float) -> tuple[int, float] | None:
        """The shown dot of ``frame`` nearest to ``(x, y)`` and its distance, if it lies within ``radius``.

        A :class:`PoolFrame` gives the nearest pool dot (the training dots' filter does not apply).
        """
        d2 = (frame.x - x) ** 2 + (frame.y - y) ** 2
        mask = self.points_view.filter.booleans
        if mask is not None and isinstance(frame, EpochFrame):
            d2 = np.where(np.asarray(mask, dtype=bool), d2, np.inf)
        if not len(d2):
            return None
        nearest = int(np.argmin(d2))
        return (nearest, float(np.sqrt(d2[nearest]))) if d2[nearest] <= radius**2 else None

    def color_by(self, column: str) -> None:
        """Colour the dots by ``"label"`` (given) or ``"pred"`` (the model's prediction)."""
        if self.dots is not None:
            self.dots.tags = [column, self.dots.tags[1]]
        else:
            self.scatter.glyph.fill_color = field(column, self.color_mapper)

    def redraw_dots(self) -> None:
        """Have the browser rasterise the dots again (after the figure joined the page)."""
        if self.dots is not None:
            self.dots.tags = [self.dots.tags[0], self.dots.tags[1] + 1]

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

    def show_pool(self, frame: PoolFrame | None, row: int | None) -> None:
        """Draw the pool at ``frame`` (None hides it) and ring its ``row``."""
        if frame is None:  # (an epoch step of a run without a pool lands here: send nothing)
            self.pool_renderer.visible = False
            if len(self.pool_focus.data["x"]):
                self.pool_focus.data = dict(x=[], y=[])
            return
        if self.pool.data.get("epoch") != [frame.epoch] or not self.pool_renderer.visible:
            self.pool.data = dict(x=frame.x, y=frame.y, pred=frame.pred, row=np.arange(len(frame.x), dtype=np.int32),
                                  epoch=[frame.epoch] * len(frame.x))  # fmt: skip
        self.pool_renderer.visible = True
        ring = dict(x=[], y=[]) if row is None else dict(x=[float(frame.x[row])], y=[float(frame.y[row])])
        if ring != dict(self.pool_focus.data):
            self.pool_focus.data = ring

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


def _class_names(data: RunData) -> CustomJSHover:
    """A hover formatter writing a class index with its name."""
    return CustomJSHover(args=dict(names=data.class_names), code="return `${value} (${names[value]})`")


def _hover(data: RunData, renderer) -> HoverTool:
    names = _class_names(data)
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


def _pool_hover(data: RunData, renderer) -> HoverTool:
    return HoverTool(renderers=[renderer], tooltips=[("pool #", "@row"), ("prediction", "@pred{custom}")],
                     formatters={"@pred": _class_names(data)})  # fmt: skip


def make_canvas(data: RunData, frame: EpochFrame, backend: str = "webgl") -> CanvasView:
    """Build the canvas figure showing ``frame``, drawn with ``backend`` (one of :data:`BACKENDS`).

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
        output_backend="webgl" if backend == "webgl" else "canvas",
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
    columns = dict(x=frame.x, y=frame.y, label=data.labels, pred=frame.pred, conf=frame.confidence)
    points = ColumnDataSource(columns, name="points_source")
    view = CDSView(filter=BooleanFilter(booleans=None))
    size = point_size(data.n_samples)
    raster = backend == "raster"
    positions = ColumnDataSource(dict(columns), name="positions_source") if raster else points
    dots = dots_js = None
    if raster:
        dots_source = ColumnDataSource(dict(image=[], x=[], y=[], dw=[], dh=[]), name="dots_source")
        dots = fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=dots_source, name="dots")
        dots.tags = ["label", 0]  # colour column, redraw counter (see CanvasView.color_by)
    scatter = fig.scatter(
        x="x",
        y="y",
        source=points,
        view=view,
        marker="square" if raster else "circle",
        size=size,
        # the raster layer colours the dots itself: a constant spares Bokeh mapping 50k colours per frame
        fill_color="#000000" if raster else field("label", mapper),
        line_color=None if raster else "white",
        line_width=0.4 if data.n_samples > CANVAS_RASTER_DOTS else 0.6,
        fill_alpha=0.0 if raster else FILL_ALPHA,
        selection_fill_alpha=0.0 if raster else 1.0,
        selection_line_color=None if raster else "black",
        nonselection_fill_alpha=0.0 if raster else NONSELECTION_ALPHA,
        nonselection_line_alpha=0.0 if raster else 0.1,
        name="points",
    )
    if raster:
        colors = np.array([_abgr(c) for c in data.palette], dtype=np.uint32)
        dots_js = custom_js("raster.js", fig=fig, scatter=scatter, points=points, positions=positions,
                            view_filter=view.filter, target=dots.data_source, dots=dots, xr=x_range, yr=y_range,
                            colors=colors, size=size, alpha_on=round(255 * FILL_ALPHA),
                            alpha_off=round(255 * NONSELECTION_ALPHA))  # fmt: skip
        positions.js_on_change("data", dots_js)
        points.selected.js_on_change("indices", dots_js)
        view.filter.js_on_change("booleans", dots_js)
        dots.js_on_change("tags", dots_js)
        for r in (x_range, y_range):
            r.js_on_change("start", dots_js)
            r.js_on_change("end", dots_js)
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
    # the pool: hollow triangles outlined in the predicted class's colour, over the training dots
    pool = ColumnDataSource(dict(x=[], y=[], pred=[], row=[], epoch=[]), name="pool_dots_source")
    pool_renderer = fig.scatter(x="x", y="y", source=pool, marker="triangle", size=size + 4, fill_color="white",
                                fill_alpha=0.85, line_color=field("pred", mapper), line_width=1.6, visible=False,
                                name="pool_dots")  # fmt: skip
    pool_focus = ColumnDataSource(dict(x=[], y=[]), name="pool_focus_source")
    fig.scatter(x="x", y="y", source=pool_focus, marker="square", size=size + 18, fill_alpha=0.0,
                line_color="#0d47a1", line_width=3, level="overlay", name="pool_focus")  # fmt: skip
    fig.add_tools(_hover(data, scatter), _pool_hover(data, pool_renderer))
    canvas = CanvasView(fig, points, positions, view, territory, marks, focus, trails, mapper, scatter, territory_renderer,
                        pool, pool_renderer, pool_focus, dots, dots_js)
    canvas.show_frame(frame)
    return canvas
