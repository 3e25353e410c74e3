"""Every callback of a session, in one place.

Slow work (loading an epoch that is not cached, a sample's history, neighbours,
trails, decisions with their fsync and re-ranking, exports) runs on the run's
executor; results come back to the document through ``add_next_tick_callback``,
so the event loop never blocks on disk or on the recommender.
"""

from __future__ import annotations

import html
import logging
import time
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np
from bokeh.document import Document
from bokeh.events import DocumentReady, Tap
from bokeh.models import CustomJS, Div

from server_app.canvas import PROBE_GL_JS, CanvasView, backend_for, make_canvas
from server_app.data import EpochFrame, RunData
from server_app.filters import FilterView
from server_app.inspector import InspectorView
from server_app.queue import QueueView
from server_app.review import Review, ReviewSnapshot
from server_app.timeline import TimelineView
from timetravel.export import accepted_records, render, write_export
from timetravel.feedback import FeedbackState

logger = logging.getLogger(__name__)

TRAIL_LIMIT = 200  # trails are drawn for at most this many selected samples
TAP_RADIUS = 0.03  # a tap inspects the nearest dot within this fraction of the canvas width
LOG_POLL_MS = 2000  # how often a session checks the feedback log for other processes' decisions

# Keyboard shortcuts: installed once per page; ignored while typing in a widget.
_KEYS_JS = """
if (window.__timetravel_keys) { return; }
window.__timetravel_keys = true;
const keymap = {"a": accept, "r": reject, "u": undo, "ArrowLeft": back, "ArrowRight": forward, " ": play};
document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    const target = ev.composedPath()[0];
    const tag = target && target.tagName ? target.tagName.toUpperCase() : "";
    if (tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || (target && target.isContentEditable)) { return; }
    const model = keymap[ev.key];
    if (model == null || model.disabled) { return; }
    const view = Bokeh.index.find_one(model);
    if (view != null) { ev.preventDefault(); view.click(); }
});
"""


@dataclass
class Views:
    """The views of one session's document.

    ``canvas`` is None until the browser has said whether its WebGL runs on a GPU
    (renderer "auto"); ``canvas_slot`` is the column whose first child is the canvas
    figure, or a placeholder until then.
    """

    canvas: CanvasView | None
    canvas_slot: Any
    probe: Any
    renderer_note: Div
    timeline: TimelineView
    inspector: InspectorView
    queue: QueueView
    filters: FilterView
    notice: Div
    status: Div


def _renderer_note(backend: str, gl_renderer: str) -> str:
    if backend == "webgl":
        return "<span class='tt-muted'>dots drawn with WebGL</span>"
    reason = "no WebGL" if gl_renderer in ("", "none") else "WebGL emulated without a GPU"
    how = "canvas 2D" if backend == "canvas" else "canvas 2D, rasterised in the page"
    return f"<span class='tt-muted' title='{html.escape(gl_renderer)}'>dots drawn with {how} ({reason})</span>"


class Controller:
    """Session state and the callbacks that keep the views in step with it."""

    def __init__(self, doc: Document, data: RunData, review: Review, views: Views, frame: EpochFrame) -> None:
        self.doc, self.data, self.review, self.v = doc, data, review, views
        context = doc.session_context
        self.session = (context.id if context is not None else "local")[:12]
        self.frame = frame
        self.wanted_epoch = frame.epoch
        self.loading = False
        self.target: int | None = None
        self.selected = np.zeros(0, dtype=np.int64)
        self.snap = review.snapshot()
        self._play_callback = None
        self._deciding = False
        self._syncing_queue = False
        self._polling = False
        self._alive = True

    # -- wiring ------------------------------------------------------------------------

    def wire(self) -> None:
        """Connect every widget; call before the layout joins the document.

        Bokeh 3.9 loses event subscriptions (``on_click``, ``on_event``) made after
        the models were added to a server session's document, so they are made first.
        (Models added later, like a canvas built after the browser's GPU probe, are
        wired before they join the layout, which works.)
        """
        v = self.v
        v.timeline.slider.on_change("value", self._on_slider)
        v.timeline.back.on_click(partial(self._step, -1))
        v.timeline.forward.on_click(partial(self._step, 1))
        v.timeline.play.on_change("active", self._on_play)
        v.timeline.speed.on_change("value", self._on_speed)
        v.filters.color_by.on_change("active", lambda _a, _o, _n: self._show_canvas_options())
        v.filters.territory.on_change("active", lambda _a, _o, _n: self._show_canvas_options())
        for widget, attr in (
            (v.filters.classes, "value"),
            (v.filters.disagree, "active"),
            (v.filters.decision, "value"),
        ):
            widget.on_change(attr, lambda _a, _o, _n: self._update_mask())
        v.filters.trails.on_change("active", lambda _a, _o, _n: self._update_trails())
        v.filters.selection.selected.on_change("indices", self._on_selection_row)
        v.queue.table_source.selected.on_change("indices", self._on_queue_row)
        v.queue.size.on_change("value", lambda _a, _o, _n: self._refresh_queue())
        v.queue.accept.on_click(partial(self._decide, "accept"))
        v.queue.reject.on_click(partial(self._decide, "reject"))
        v.queue.undo.on_click(self._undo)
        v.queue.export_csv.on_click(partial(self._export, "csv"))
        v.queue.export_json.on_click(partial(self._export, "json"))
        if v.canvas is None:
            v.probe.on_change("value", self._on_probe)
        else:
            self._wire_canvas(v.canvas)

    def _wire_canvas(self, canvas: CanvasView) -> None:
        canvas.figure.on_event(Tap, self._on_tap)
        canvas.points.selected.on_change("indices", self._on_select)

    def _on_probe(self, _attr: str, _old: str, gl_renderer: str) -> None:
        """The browser reported its WebGL renderer: build the canvas with the backend that suits it."""
        if self.v.canvas is not None:
            return
        backend = backend_for(gl_renderer, self.data.n_samples)
        canvas = make_canvas(self.data, self.frame, backend)
        self._wire_canvas(canvas)
        self.v.canvas = canvas
        self.v.renderer_note.text = _renderer_note(backend, gl_renderer)
        with canvas.one_paint():
            canvas.figure.title.text = self._caption()
            self._show_canvas_options()
            self._update_marks()
            self._update_mask()
            canvas.set_focus(self.frame, self.target)
        self.v.canvas_slot.children = [canvas.figure, *self.v.canvas_slot.children[1:]]
        canvas.redraw_dots()
        self._update_trails()

    def _show_canvas_options(self) -> None:
        canvas = self.v.canvas
        if canvas is not None:
            canvas.color_by(self.v.filters.color_column())
            canvas.territory_renderer.visible = self.v.filters.territory.active

    def start(self) -> None:
        """Document-level hooks (GPU probe, keyboard, review broadcasts, log polling) and the first render."""
        v = self.v
        if v.canvas is None:
            self.doc.js_on_event(DocumentReady, CustomJS(args=dict(probe=v.probe), code=PROBE_GL_JS))
        elif v.canvas.dots_js is not None:
            self.doc.js_on_event(DocumentReady, v.canvas.dots_js)
        keys = dict(accept=v.queue.accept, reject=v.queue.reject, undo=v.queue.undo,
                    back=v.timeline.back, forward=v.timeline.forward, play=v.timeline.play)  # fmt: skip
        self.doc.js_on_event(DocumentReady, CustomJS(args=keys, code=_KEYS_JS))
        self.review.subscribe(self._on_review)
        self.doc.on_session_destroyed(self._on_destroyed)
        self.doc.add_periodic_callback(self._poll_log, LOG_POLL_MS)
        self._apply_frame(self.frame)
        if self.snap.queue:
            self.inspect(self.snap.queue[0])
        else:
            self._show_review()

    def _on_destroyed(self, _context: Any) -> None:
        self._alive = False
        self.review.unsubscribe(self._on_review)

    def _later(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the document's event loop (from any thread)."""
        if self._alive:
            self.doc.add_next_tick_callback(partial(fn, *args))

    def _background(self, work: Callable[[], Any], done: Callable[[Any], None], what: str) -> None:
        """Run ``work`` on the executor, then ``done(result)`` on the event loop; errors go to the status line."""

        def finished(future: Future) -> None:
            exc = future.exception()
            if exc is not None:
                logger.error("%s failed", what, exc_info=exc)
                self._later(self._failed, f"{what} failed: {exc}")
            else:
                self._later(done, future.result())

        self.data.executor.submit(work).add_done_callback(finished)

    def _failed(self, text: str) -> None:
        self._deciding = False
        self.loading = False
        self.v.status.text = f"<span class='tt-error'>{html.escape(text)}</span>"

    # -- time travel -------------------------------------------------------------------

    def _on_slider(self, _attr: str, _old: Any, new: Any) -> None:
        self.wanted_epoch = self.v.timeline.epochs[int(new)]
        self._request_frame()

    def _step(self, delta: int) -> None:
        t = self.v.timeline
        t.slider.value = int(np.clip(t.position() + delta, 0, len(t.epochs) - 1))

    def _request_frame(self) -> None:
        """Show ``wanted_epoch``: at once when cached, else load it off the loop (newest request wins)."""
        if self.loading or self.wanted_epoch == self.frame.epoch:
            return
        epoch = self.wanted_epoch
        if epoch in self.data.cached_epochs():
            self._apply_frame(self.data.frame(epoch))
            return
        self.loading = True
        self._background(partial(self.data.frame, epoch), self._frame_loaded, f"loading epoch {epoch}")

    def _frame_loaded(self, frame: EpochFrame) -> None:
        self.loading = False
        self._apply_frame(frame)
        self._request_frame()

    def _apply_frame(self, frame: EpochFrame) -> None:
        """Show ``frame``: one canvas repaint, plot cursors and titles, no page re-layout."""
        self.frame = frame
        v = self.v
        if v.canvas is not None:
            with v.canvas.one_paint():
                v.canvas.show_frame(frame)
                v.canvas.figure.title.text = self._caption()
                self._update_marks()
                if v.filters.disagree.active:
                    self._update_mask()
                v.canvas.set_focus(frame, self.target)
        v.timeline.cursor.location = frame.epoch
        if self.target is not None:
            self._show_target_epoch()
        self.data.prefetch(frame.epoch)

    def _caption(self) -> str:
        epoch = self.frame.epoch
        metrics = next((h for h in self.data.store.history if h.get("epoch") == epoch), {})
        return self.v.timeline.caption(epoch, metrics)

    def _on_play(self, _attr: str, _old: bool, active: bool) -> None:
        t = self.v.timeline
        if self._play_callback is not None:
            self.doc.remove_periodic_callback(self._play_callback)
            self._play_callback = None
        t.play.label = "❚❚ Pause" if active else "▶ Play"
        if active:
            if t.position() == len(t.epochs) - 1:
                t.slider.value = 0
            self._play_callback = self.doc.add_periodic_callback(self._play_tick, int(1000 / float(t.speed.value)))

    def _on_speed(self, _attr: str, _old: Any, _new: Any) -> None:
        if self.v.timeline.play.active:
            self._on_play("active", True, True)

    def _play_tick(self) -> None:
        t = self.v.timeline
        if self.loading:
            return
        if t.position() >= len(t.epochs) - 1:
            t.play.active = False
            return
        t.slider.value = t.position() + 1

    # -- filters, marks, selection, trails ---------------------------------------------

    def _update_mask(self) -> None:
        if self.v.canvas is None:
            return
        mask = self.v.filters.mask(self.data.labels, self.frame.pred, self.snap.decisions, self._shown_queue())
        self.v.canvas.set_mask(mask)

    def _shown_queue(self) -> list[int]:
        return self.snap.queue[: self.v.queue.k()]

    def _update_marks(self) -> None:
        if self.v.canvas is None:
            return
        decisions = self.snap.decisions
        self.v.canvas.set_marks(
            self.frame,
            {
                "accepted": [i for i, ok in decisions.items() if ok],
                "rejected": [i for i, ok in decisions.items() if not ok],
                "queue": self._shown_queue(),
            },
        )

    def _on_select(self, _attr: str, _old: Any, new: list[int]) -> None:
        self.selected = np.asarray(new, dtype=np.int64)
        self.v.filters.show_selection(self.data, self.selected, self.frame.pred, self.snap.decisions)
        self._update_trails()

    def _on_selection_row(self, _attr: str, _old: Any, new: list[int]) -> None:
        if new:
            self.inspect(int(self.v.filters.selection.data["index"][new[0]]))

    def _update_trails(self) -> None:
        if self.v.canvas is None:
            return
        if not self.v.filters.trails.active:
            self.v.canvas.set_trails([], [])
            return
        chosen = self.selected[:TRAIL_LIMIT]
        if self.target is not None:
            chosen = np.union1d(chosen, [self.target])
        self._background(partial(self.data.trails, chosen), lambda r: self.v.canvas.set_trails(*r), "drawing trails")

    def _on_tap(self, event: Tap) -> None:
        f = self.frame
        mask = self.v.canvas.points_view.filter.booleans
        d2 = (f.x - event.x) ** 2 + (f.y - event.y) ** 2
        if mask is not None:
            d2 = np.where(np.asarray(mask, dtype=bool), d2, np.inf)
        nearest = int(np.argmin(d2))
        x0, x1, _, _ = self.data.bounds
        if d2[nearest] <= (TAP_RADIUS * (x1 - x0)) ** 2:
            self.inspect(nearest)

    # -- inspector ---------------------------------------------------------------------

    def inspect(self, sample: int | None) -> None:
        """Show ``sample`` in the inspector (None clears it); decisions apply to it."""
        self.target = None if sample is None else self.data.check_index(sample)
        v = self.v
        if v.canvas is not None:
            v.canvas.set_focus(self.frame, self.target)
        self._show_review()
        if self.target is None:
            v.inspector.clear()
            return
        self._show_summary()
        self._show_target_epoch()
        sample = self.target
        self._background(partial(self.data.sample_history, sample), partial(self._history_loaded, sample),
                         "reading the sample's history")  # fmt: skip
        epoch = self.frame.epoch
        self._background(partial(self.data.neighbours, sample, epoch), partial(self._neighbours_loaded, sample, epoch),
                         "finding neighbours")  # fmt: skip
        self._update_trails()

    def _show_summary(self) -> None:
        i = self.target
        decision = self.snap.decisions.get(i)
        state = "not reviewed" if decision is None else ("accepted" if decision else "rejected")
        self.v.inspector.show(self.data, i, decision=state, reasons=self.review.reasons(i), note=self.snap.message)

    def _show_target_epoch(self) -> None:
        i = self.target
        f = self.frame
        self.v.inspector.show_epoch(self.data, f.epoch, int(f.pred[i]), float(f.confidence[i]))

    def _history_loaded(self, sample: int, history) -> None:
        if sample == self.target:
            self.v.inspector.show_history(self.data, history)

    def _neighbours_loaded(self, sample: int, epoch: int, neighbours: np.ndarray) -> None:
        if sample == self.target:
            self.v.inspector.show_neighbours(self.data, epoch, neighbours, self.frame.pred[neighbours])

    # -- review ------------------------------------------------------------------------

    def _on_queue_row(self, _attr: str, _old: Any, new: list[int]) -> None:
        if self._syncing_queue or not new:
            return
        self.inspect(int(self.v.queue.table_source.data["index"][new[0]]))

    def _decide(self, decision: str) -> None:
        """Accept or reject the inspected sample; one decision at a time (a held key repeats)."""
        sample = self.target
        if sample is None or self._deciding:
            return
        self._deciding = True
        self._background(partial(self.review.decide, sample, decision, self.session), self._decided,
                         f"saving the {decision} of #{sample}")  # fmt: skip

    def _decided(self, snap: ReviewSnapshot | None) -> None:
        """The decision is in feedback.jsonl (fsynced); the counters line confirms it."""
        self._deciding = False
        if snap is not None:
            self._on_review_main(snap)

    def _undo(self) -> None:
        if self._deciding:
            return
        self._deciding = True
        self._background(partial(self.review.undo, self.session), self._undone, "undo")

    def _undone(self, snap: ReviewSnapshot | None) -> None:
        self._deciding = False
        if snap is None or snap.last_event is None:
            return
        self._on_review_main(snap)
        self.inspect(snap.last_event.sample)

    def _on_review(self, snap: ReviewSnapshot) -> None:
        """Review listener: called from whichever thread changed the review."""
        self._later(self._on_review_main, snap)

    def _on_review_main(self, snap: ReviewSnapshot) -> None:
        if snap.version <= self.snap.version:
            return
        self.snap = snap
        if self.target is not None and self.target in snap.decisions:
            self.target = next((i for i in snap.queue if i not in snap.decisions), None)
            self.inspect(self.target)
        elif self.target is None and snap.queue:
            self.inspect(snap.queue[0])
        else:
            self._show_review()
            if self.target is not None:
                self._show_summary()
        self._update_marks()
        if self.v.filters.decision.value != "all":
            self._update_mask()

    def _refresh_queue(self) -> None:
        self._show_review()
        self._update_marks()

    def _show_review(self) -> None:
        snap = self.snap
        self._syncing_queue = True
        try:
            self.v.queue.show(self.data, snap, self.target)
        finally:
            self._syncing_queue = False
        self._show_notice()

    def _show_notice(self) -> None:
        notes = []
        missing = self.data.unprojected_epochs
        if missing:
            notes.append(
                f"<div class='tt-note'>{len(missing)} recorded epochs are not projected yet; run "
                f"<code>timetravel project {html.escape(str(self.data.path))}</code> to see them.</div>"
            )
        if self.snap.log_errors:
            shown = "".join(f"<li>{html.escape(e)}</li>" for e in self.snap.log_errors[:5])
            more = f"<li>... and {len(self.snap.log_errors) - 5} more</li>" if len(self.snap.log_errors) > 5 else ""
            notes.append(
                f"<div class='tt-error' name='log_errors'><b>{len(self.snap.log_errors)} line(s) of feedback.jsonl "
                f"could not be read and were skipped</b>; the other {len(self.snap.decisions)} decisions were "
                f"loaded.<ul>{shown}{more}</ul></div>"
            )
        self.v.notice.text = "".join(notes)

    def _poll_log(self) -> None:
        if self._polling:
            return
        self._polling = True

        def done(_changed: bool) -> None:
            self._polling = False

        self._background(self.review.sync_with_disk, done, "reading feedback.jsonl")

    # -- export ------------------------------------------------------------------------

    def _export(self, fmt: str) -> None:
        decisions = dict(self.snap.decisions)
        self._background(partial(self._write_export, fmt, decisions), self._exported, f"exporting {fmt.upper()}")

    def _write_export(self, fmt: str, decisions: dict[int, bool]) -> tuple[str, str, int]:
        store = self.data.store
        records = accepted_records(store, FeedbackState(decisions=decisions), suggestions=self.review.suggestions())
        text = render(records, store, fmt)
        path = write_export(store.path / "exports" / f"accepted.{fmt}", text)
        return text, str(path), len(records)

    def _exported(self, result: tuple[str, str, int]) -> None:
        text, path, count = result
        fmt = path.rsplit(".", 1)[-1]
        mime = "text/csv" if fmt == "csv" else "application/json"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.v.queue.export_source.data = dict(text=[text], filename=[f"accepted-{stamp}.{fmt}"], mime=[mime])
        self.v.queue.export_note.text = (
            f"<span class='tt-muted'>{count} samples; also saved to {html.escape(path)}</span>"
        )
