"""Canvas interaction: the dots follow the session (epoch, filters, decision rings, focus, trails,
the unlabelled pool while the pool tab draws it), and taps and box/lasso selections change it.

With ``renderer="auto"`` the canvas is built once the browser reports its WebGL renderer
(:func:`canvas.backend_for`); until then a placeholder holds its place.
"""

from __future__ import annotations

import html
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
from bokeh.events import DocumentReady

from timetravel.server_app._bokeh import custom_js
from timetravel.server_app.canvas import CanvasView, backend_for, make_canvas
from timetravel.server_app.data import PoolFrame
from timetravel.server_app.filters import FilterView
from timetravel.server_app.session import POOL, FRAME, QUEUE_SIZE, REVIEW, SELECTION, TARGET, Session
from timetravel.server_app.timeline import caption

TRAIL_LIMIT = 200  # trails are drawn for at most this many selected samples
TAP_RADIUS = 0.03  # a tap inspects the nearest dot within this fraction of the canvas width


def _renderer_note(backend: str, gl_renderer: str) -> str:
    if backend == "webgl":
        return "<span class='tt-muted'>dots drawn with WebGL</span>"
    reason = "no WebGL" if gl_renderer in ("", "none") else "WebGL emulated without a GPU"
    how = "canvas 2D" if backend == "canvas" else "canvas 2D, rasterised in the page"
    return f"<span class='tt-muted' title='{html.escape(gl_renderer)}'>dots drawn with {how} ({reason})</span>"


class CanvasInteraction:
    """Keeps the canvas and the filter panel in step with the session.

    Parameters
    ----------
    session : Session
    canvas : CanvasView or None
        None until the browser's GPU probe has answered (renderer "auto").
    canvas_slot : bokeh.layouts.Column
        The column whose first child is the canvas figure (or its placeholder).
    probe : TextInput
        Receives the browser's WebGL renderer string.
    renderer_note : Div
        Says how the dots are drawn.
    filters : FilterView
    """

    def __init__(self, session: Session, canvas: CanvasView | None, canvas_slot: Any, probe: Any,
                 renderer_note: Any, filters: FilterView) -> None:  # fmt: skip
        self.s, self.canvas, self.canvas_slot = session, canvas, canvas_slot
        self.probe, self.renderer_note, self.filters = probe, renderer_note, filters

    def wire(self) -> None:
        """Connect the widgets; call before the layout joins the document.

        Bokeh 3.9 loses event subscriptions (``on_click``, ``on_event``) made after the
        models were added to a server session's document, so they are made first. (A
        canvas built after the GPU probe is wired before it joins the layout, which works.)
        """
        self.filters.on_display_change(self._show_options)
        self.filters.on_filter_change(self._update_mask)
        self.filters.on_trails_change(self._update_trails)
        self.filters.on_selection_row(self.s.inspect)
        if self.canvas is None:
            self.probe.on_change("value", lambda _a, _o, gl_renderer: self._on_probe(gl_renderer))
        else:
            self._wire_canvas(self.canvas)
        self.s.subscribe(self._on_change)

    def start(self) -> None:
        """Page-level hooks: the GPU probe, or the raster layer's first draw."""
        if self.canvas is None:
            self.s.doc.js_on_event(DocumentReady, custom_js("probe_gl.js", probe=self.probe))
        elif self.canvas.dots_js is not None:
            self.s.doc.js_on_event(DocumentReady, self.canvas.dots_js)

    # -- the session changed -----------------------------------------------------------

    def _on_change(self, changed: frozenset[str]) -> None:
        canvas = self.canvas
        if SELECTION in changed:
            s = self.s
            self.filters.show_selection(s.data, s.selected, s.frame.pred, s.snap.decisions)
            if canvas is not None:  # a selection made elsewhere (a confusion cell, a group) shows on the canvas
                canvas.select(s.selected)
        if canvas is not None:
            with canvas.one_paint():
                if FRAME in changed:
                    canvas.show_frame(self.s.frame)
                    canvas.set_title(caption(self.s.data, self.s.frame.epoch))
                if changed & {FRAME, REVIEW, QUEUE_SIZE}:
                    self._update_marks()
                if (FRAME in changed and self.filters.depends_on_prediction()) or (
                    changed & {REVIEW, QUEUE_SIZE} and self.filters.depends_on_review()
                ):
                    self._update_mask()
                if changed & {FRAME, TARGET}:
                    canvas.set_focus(self.s.frame, self.s.target)
                if changed & {FRAME, POOL}:
                    self._update_pool()
        if changed & {TARGET, SELECTION}:
            self._update_trails()

    def _update_mask(self) -> None:
        if self.canvas is None:
            return
        s = self.s
        self.canvas.set_mask(self.filters.mask(s.data.labels, s.frame.pred, s.snap.decisions, s.shown_queue()))

    def _update_marks(self) -> None:
        if self.canvas is None:
            return
        decisions = self.s.snap.decisions
        self.canvas.set_marks(
            self.s.frame,
            {
                "accepted": [i for i, ok in decisions.items() if ok],
                "rejected": [i for i, ok in decisions.items() if not ok],
                "queue": self.s.shown_queue(),
                "seeded": list(self.s.snap.seeds),
            },
        )

    def _pool_frame(self) -> PoolFrame | None:
        """The pool at the session's epoch while the pool tab draws it on the canvas."""
        s = self.s
        return s.data.pool_frame(s.frame.epoch) if s.pool.shown else None

    def _update_pool(self) -> None:
        if self.canvas is not None:
            self.canvas.show_pool(self._pool_frame(), self.s.pool.row)

    def _show_options(self) -> None:
        if self.canvas is not None:
            self.canvas.color_by(self.filters.color_column())
            self.canvas.show_territory(self.filters.territory_shown())

    def _update_trails(self) -> None:
        canvas = self.canvas
        if canvas is None:
            return
        if not self.filters.trails_shown():
            canvas.set_trails([], [])
            return
        chosen = self.s.selected[:TRAIL_LIMIT]
        if self.s.target is not None:
            chosen = np.union1d(chosen, [self.s.target])
        self.s.background(partial(self.s.data.trails, chosen), lambda r: canvas.set_trails(*r), "drawing trails")

    # -- canvas events -----------------------------------------------------------------

    def _wire_canvas(self, canvas: CanvasView) -> None:
        canvas.on_tap(self._on_tap)
        canvas.on_select(self._on_select)

    def _on_select(self, indices: np.ndarray) -> None:
        if not np.array_equal(np.unique(indices), np.unique(self.s.selected)):  # not our own canvas.select
            self.s.change(selected=indices)

    def _on_tap(self, x: float, y: float) -> None:
        """Inspect the nearest training dot, or choose the nearest pool dot when the pool is drawn and it is nearer."""
        s = self.s
        x0, x1, _, _ = s.data.bounds
        radius = TAP_RADIUS * (x1 - x0)
        nearest = self.canvas.nearest_dot(s.frame, x, y, radius)
        pool = self._pool_frame()
        in_pool = None if pool is None else self.canvas.nearest_dot(pool, x, y, radius)
        if in_pool is not None and (nearest is None or in_pool[1] < nearest[1]):
            s.change(pool=replace(s.pool, row=in_pool[0]))
        elif nearest is not None:
            s.inspect(nearest[0])

    def _on_probe(self, gl_renderer: str) -> None:
        """The browser reported its WebGL renderer: build the canvas with the backend that suits it."""
        if self.canvas is not None:
            return
        s = self.s
        backend = backend_for(gl_renderer, s.data.n_samples)
        canvas = make_canvas(s.data, s.frame, backend)
        self._wire_canvas(canvas)
        self.canvas = canvas
        self.renderer_note.text = _renderer_note(backend, gl_renderer)
        with canvas.one_paint():
            canvas.set_title(caption(s.data, s.frame.epoch))
            self._show_options()
            self._update_marks()
            self._update_mask()
            canvas.set_focus(s.frame, s.target)
            self._update_pool()
        self.canvas_slot.children = [canvas.figure, *self.canvas_slot.children[1:]]
        canvas.redraw_dots()
        self._update_trails()
