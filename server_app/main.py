"""Builds one session's document: ``bokeh serve`` runs this file for every page load.

The run was opened once for the whole server by ``app_hooks.py``; this file builds the
views (one small function per view module), connects them to the session's controllers
and lays them out. A run that cannot be shown (not a run store, no projection yet) gets
a page saying what to run instead of a stack trace.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from typing import Any

from bokeh.document import Document
from bokeh.events import DocumentReady
from bokeh.io import curdoc
from bokeh.layouts import column, row
from bokeh.models import Div, TabPanel, Tabs, TextInput

from timetravel.errors import TimetravelError
from timetravel.server_app._bokeh import LazyPanel, TabSlot, custom_js, stylesheet
from timetravel.server_app.activating import Activating
from timetravel.server_app.activations_view import make_activations
from timetravel.server_app.canvas import CanvasView, make_canvas
from timetravel.server_app.catalog import GroupCatalog
from timetravel.server_app.confusion_view import make_confusion
from timetravel.server_app.context import AppContext, context_of
from timetravel.server_app.data import EpochFrame, RunData
from timetravel.server_app.filters import FilterView, make_filters
from timetravel.server_app.grouping import Confusing, Grouping, Selecting
from timetravel.server_app.groups_view import make_groups
from timetravel.server_app.inspecting import Inspecting
from timetravel.server_app.inspector import InspectorView, make_inspector
from timetravel.server_app.interaction import CanvasInteraction
from timetravel.server_app.pool import PoolRanking
from timetravel.server_app.pool_view import make_pool
from timetravel.server_app.pooling import Pooling
from timetravel.server_app.recommendations import QueueView, make_queue
from timetravel.server_app.reviewing import Reviewing
from timetravel.server_app.session import Session
from timetravel.server_app.time_travel import TimeTravel
from timetravel.server_app.timeline import TimelineView, make_timeline

logger = logging.getLogger(__name__)

TABS = ("Review", "Confusion", "Groups", "Activations")  # the right-hand panels, in order
POOL_TAB = "Pool"  # last, only for a run with an unlabelled pool


def tab_titles(data: RunData) -> tuple[str, ...]:
    """The right-hand panels of this run, in order."""
    return TABS + ((POOL_TAB,) if data.store.n_pool else ())


def _style_divs(root) -> None:
    """Divs render in their own shadow DOM, so each gets the app's stylesheet (one model per document).

    Done before ``root`` joins a document: assigning a model-valued property in a document
    makes Bokeh re-scan all its models, which costs a quarter second per Div at 50k dots.
    """
    style = stylesheet()
    for div in root.select({"type": Div}):
        div.stylesheets = [style]


def message_page(doc: Document, title: str, body_html: str) -> None:
    """A page that only explains what is wrong and what to run."""
    doc.title = f"timetravel: {title}"
    message = Div(
        text=f"<div class='tt-message'><div class='tt-app-title'>{html.escape(title)}</div>{body_html}</div>",
        sizing_mode="stretch_width",
        name="app_message",
    )
    _style_divs(message)
    doc.add_root(message)


def _header(data: RunData) -> Div:
    store = data.store
    noise = store.manifest.get("noise") or {}
    noise_text = f", {noise.get('kind')} noise {noise.get('rate')}" if noise.get("kind") else ""
    return Div(
        text=f"<span class='tt-app-title'>timetravel</span> &nbsp; <span class='tt-muted'>"
        f"{html.escape(str(store.manifest.get('dataset') or store.path.name))}: {store.n_samples:,} samples, "
        f"{store.n_classes} classes, {len(store.epochs)} epochs{html.escape(noise_text)}</span>",
        name="app_header",
    )


@dataclass
class Views:
    """The views of one session's document.

    ``canvas`` is None until the browser has said whether its WebGL runs on a GPU
    (renderer "auto"); ``canvas_slot`` is the column whose first child is the canvas
    figure, or a placeholder until then.
    """

    canvas: CanvasView | None
    canvas_slot: Any
    probe: TextInput
    renderer_note: Div
    timeline: TimelineView
    inspector: InspectorView
    queue: QueueView
    filters: FilterView
    tabs: Tabs
    notice: Div
    status: Div


def build_views(data: RunData, frame: EpochFrame, renderer: str) -> Views:
    """Create every view for a session starting at ``frame``.

    With ``renderer="auto"`` the canvas is built once the browser reports its WebGL
    renderer (see :func:`timetravel.server_app.canvas.backend_for`); a placeholder holds its place.
    """
    timeline = make_timeline(data, frame.epoch)
    canvas = None if renderer == "auto" else make_canvas(data, frame, renderer)
    first = canvas.figure if canvas is not None else Div(
        text="<span class='tt-muted'>Preparing the canvas...</span>", name="canvas_placeholder",
        sizing_mode="stretch_both", min_height=420,
    )  # fmt: skip
    note = "" if canvas is None else f"<span class='tt-muted'>dots drawn with {renderer}</span>"
    inspector, queue = make_inspector(data), make_queue(data)
    review = column(queue.layout, inspector.layout, sizing_mode="stretch_width")
    titles = tab_titles(data)
    later = [column(Div(text="<span class='tt-muted'>Loading...</span>"), sizing_mode="stretch_width")
             for _ in titles[1:]]  # filled when first opened (LazyPanel)
    tabs = Tabs(tabs=[TabPanel(child=child, title=title) for child, title in zip([review, *later], titles)],
                name="side_tabs", sizing_mode="stretch_both")  # fmt: skip
    return Views(
        canvas=canvas,
        canvas_slot=column(first, timeline.layout, sizing_mode="stretch_both"),
        probe=TextInput(visible=False, name="gl_probe"),
        renderer_note=Div(text=note, name="renderer_note"),
        timeline=timeline,
        inspector=inspector,
        queue=queue,
        filters=make_filters(data),
        tabs=tabs,
        notice=Div(text="", name="notice", sizing_mode="stretch_width"),
        status=Div(text="", name="status", width=420),
    )


def layout(data: RunData, v: Views):
    """Filters and selection on the left, canvas and timeline in the middle, the tabs (review first) on the right."""
    left = column(v.filters.layout, v.filters.selection_layout, width=250, sizing_mode="stretch_height")
    right = column(v.tabs, width=480, sizing_mode="stretch_height", styles={"overflow-y": "auto"})
    return column(
        row(_header(data), v.renderer_note, v.status, v.probe, sizing_mode="stretch_width"),
        v.notice,
        row(left, v.canvas_slot, right, sizing_mode="stretch_both"),
        sizing_mode="stretch_both",
    )


def controllers(session: Session, v: Views, pool: PoolRanking | None = None) -> list:
    """The session's controllers, one per job; each has ``wire()`` and optionally ``start()``.

    The group tabs' and the pool tab's controllers are built with their views when the tab is first
    opened (:class:`~timetravel.server_app._bokeh.LazyPanel`), so the page opens as fast as without them.
    ``pool``: the run's pool ranking (a run with an unlabelled pool).
    """
    data = session.data
    reviewing = Reviewing(session, v.queue, v.notice)
    catalog = GroupCatalog(data)

    def confusion(slot: TabSlot) -> tuple[Any, Confusing]:
        view = make_confusion(data, session.frame.epoch)
        return view.layout, Confusing(session, view, slot)

    def groups(slot: TabSlot) -> tuple[Any, Grouping]:
        view = make_groups(data, session.frame.epoch)
        return view.layout, Grouping(session, catalog, view, slot, reviewing.seed)

    def activations(slot: TabSlot) -> tuple[Any, Activating]:
        view = make_activations()
        return view.layout, Activating(session, catalog, view, slot)

    def pooling(slot: TabSlot) -> tuple[Any, Pooling]:
        view = make_pool(data, session.frame.epoch)
        return view.layout, Pooling(session, view, slot, pool)

    panels = [("Confusion", confusion), ("Groups", groups), ("Activations", activations)]
    if pool is not None:
        panels.append((POOL_TAB, pooling))
    titles = [p.title for p in v.tabs.tabs]
    for title, build in panels:
        LazyPanel(v.tabs, titles.index(title), build, _style_divs)
    return [
        TimeTravel(session, v.timeline),
        CanvasInteraction(session, v.canvas, v.canvas_slot, v.probe, v.renderer_note, v.filters),
        Inspecting(session, v.inspector),
        reviewing,
        Selecting(session, catalog, v.filters, reviewing.seed),
    ]


def _show_failure(status: Div, text: str) -> None:
    status.text = f"<span class='tt-error'>{html.escape(text)}</span>"


def build_compare(doc: Document, context: AppContext) -> None:
    """Fill ``doc`` with the comparison of the context's run and ``--compare`` run (or a message page)."""
    from timetravel.server_app.compare import ComparePage

    try:
        left, _ = context.open()
        right = context.open_compared()
    except TimetravelError as exc:
        message_page(doc, "The runs cannot be opened", f"<p>{html.escape(str(exc))}</p>")
        return
    if left.n_samples != right.n_samples:
        message_page(doc, "These runs have different samples",
                     f"<p>{html.escape(str(left.path))} has {left.n_samples:,} samples and "
                     f"{html.escape(str(right.path))} {right.n_samples:,}; compare a run with the run "
                     "<code>timetravel fix</code> made from it.</p>")  # fmt: skip
        return
    if not [e for e in left.epochs if e in right.epochs]:
        missing = right if left.epochs else left
        message_page(doc, "No projected epoch in common",
                     f"<p>Project the run aligned with the other: <code>timetravel project "
                     f"{html.escape(str(missing.path))} --align-to {html.escape(str(left.path))}</code> "
                     "(<code>timetravel fix</code> does it), and reload this page.</p>")  # fmt: skip
        return
    page = ComparePage(left, right)
    doc.title = f"timetravel: {left.path.name} vs {right.path.name}"
    root = page.layout()
    _style_divs(root)
    doc.add_root(root)
    for side in (page.left, page.right):
        if side.canvas.dots_js is not None:
            doc.js_on_event(DocumentReady, side.canvas.dots_js)


def build(doc: Document, context: AppContext) -> None:
    """Fill ``doc`` for the context's run (or with a message page)."""
    if not context.args.run:
        message_page(doc, "No run given", "<p>Start the app with <code>timetravel serve RUN</code>.</p>")
        return
    if context.args.compare:
        build_compare(doc, context)
        return
    try:
        data, review = context.open()
    except TimetravelError as exc:
        message_page(doc, "This run cannot be opened", f"<p>{html.escape(str(exc))}</p>")
        return
    if not data.epochs:
        message_page(
            doc,
            "No projection yet",
            f"<p>The run <code>{html.escape(str(data.path))}</code> has {len(data.store.epochs)} recorded epochs "
            "but no 2D projection, which the canvas needs. Run</p>"
            f"<p><code>timetravel project {html.escape(str(data.path))}</code></p>"
            "<p>and reload this page. (<code>timetravel detect</code> then adds the recommendation queue.)</p>",
        )
        return
    try:
        frame = data.frame(data.epochs[-1])
    except TimetravelError as exc:
        message_page(doc, "The projection cannot be read", f"<p>{html.escape(str(exc))}</p>")
        return
    views = build_views(data, frame, context.args.renderer)
    doc.title = f"timetravel: {data.store.manifest.get('dataset') or data.path.name}"
    session = Session(doc, data, review, frame, views.queue.k())
    session.on_failure(lambda text: _show_failure(views.status, text))
    jobs = controllers(session, views, context.pool())
    for job in jobs:  # before the layout joins the document (see CanvasInteraction.wire)
        job.wire()
    root = layout(data, views)
    _style_divs(root)
    doc.add_root(views.queue.export_source)  # not drawn; a root so the browser has it for downloads
    doc.add_root(root)  # last: each add_root re-scans the document's models
    doc.js_on_event(DocumentReady, custom_js("keys.js", **views.queue.shortcuts(), **views.timeline.shortcuts()))
    for job in jobs:
        if hasattr(job, "start"):
            job.start()
    snap = session.snap
    session.change(frame=frame, snap=snap, **({"target": session.shown_queue()[0]} if snap.queue else {}))


def main(doc: Document, context: AppContext) -> None:
    """Build the document; an unexpected failure becomes a message page, and the log has the traceback."""
    try:
        build(doc, context)
    except Exception as exc:  # noqa: BLE001 - the user gets a sentence, the log gets the traceback
        logger.exception("building the app failed")
        doc.clear()
        detail = f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}"
        message_page(doc, "The app failed to start", f"<p>{detail}</p><p>The server log has the details.</p>")


# Bokeh runs this file as a fresh module named "bokeh_app_<id>" for every session; importing
# it elsewhere (tests) only defines the functions above.
if __name__.startswith("bokeh_app_"):
    main(curdoc(), context_of(curdoc().session_context.server_context))
