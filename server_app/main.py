"""Builds one session's document: ``bokeh serve`` runs this for every page load.

The run directory is ``sys.argv[1]`` (``timetravel serve RUN`` passes it). A run
that cannot be shown (not a run store, no projection yet) gets a page saying what
to run instead of a stack trace.
"""

from __future__ import annotations

import argparse
import html
import logging
import sys

from bokeh.document import Document
from bokeh.io import curdoc
from bokeh.layouts import column, row
from bokeh.models import Div, InlineStyleSheet, TextInput

from server_app.callbacks import Controller, Views
from server_app.canvas import BACKENDS, make_canvas
from server_app.data import EpochFrame, RunData, open_run
from server_app.filters import make_filters
from server_app.inspector import make_inspector
from server_app.queue import make_queue
from server_app.review import open_review
from server_app.timeline import make_timeline
from timetravel.errors import TimetravelError

logger = logging.getLogger(__name__)

CSS = """
:host { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 13px; color: #263238; }
.tt-app-title { font-size: 18px; font-weight: 700; }
.tt-muted { color: #78909c; }
.tt-title { font-size: 15px; font-weight: 600; margin-bottom: 2px; }
.tt-h { font-size: 15px; font-weight: 600; }
.tt-sub { font-weight: 600; color: #455a64; margin: 6px 0 2px; }
.tt-swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
.tt-thumb-big { width: 96px; height: 96px; image-rendering: pixelated; border: 1px solid #cfd8dc; }
.tt-thumb { width: 40px; height: 40px; image-rendering: pixelated; border: 1px solid #eceff1; }
.tt-nbs { display: flex; flex-wrap: wrap; gap: 6px; }
.tt-nb { font-size: 11px; text-align: center; line-height: 1.2; }
.tt-reasons { margin: 2px 0; padding-left: 18px; }
.tt-row { display: flex; gap: 12px; align-items: flex-start; }
.tt-note { background: #fff8e1; border-left: 4px solid #ffb300; padding: 6px 10px; margin: 2px 0; }
.tt-error { background: #ffebee; border-left: 4px solid #c62828; padding: 6px 10px; margin: 2px 0; display: block; }
.tt-error ul { margin: 4px 0 0; padding-left: 18px; }
.tt-ok { color: #2e7d32; }
.tt-message { max-width: 760px; margin: 40px auto; font-size: 15px; line-height: 1.5; }
.tt-message code, .tt-note code { background: #eceff1; padding: 1px 4px; border-radius: 3px; }
"""


def _style_divs(root) -> None:
    """Divs render in their own shadow DOM, so each gets the app's stylesheet (one model per document).

    Done before ``root`` joins a document: assigning a model-valued property in a document
    makes Bokeh re-scan all its models, which costs a quarter second per Div at 50k dots.
    """
    style = InlineStyleSheet(css=CSS)
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


def build_views(data: RunData, frame: EpochFrame, renderer: str) -> Views:
    """Create every view for a session starting at ``frame``.

    With ``renderer="auto"`` the canvas is built once the browser reports its WebGL
    renderer (see :func:`server_app.canvas.backend_for`); a placeholder holds its place.
    """
    timeline = make_timeline(data, frame.epoch)
    canvas = None if renderer == "auto" else make_canvas(data, frame, renderer)
    first = canvas.figure if canvas is not None else Div(
        text="<span class='tt-muted'>Preparing the canvas...</span>", name="canvas_placeholder",
        sizing_mode="stretch_both", min_height=420,
    )  # fmt: skip
    note = "" if canvas is None else f"<span class='tt-muted'>dots drawn with {renderer}</span>"
    return Views(
        canvas=canvas,
        canvas_slot=column(first, timeline.layout, sizing_mode="stretch_both"),
        probe=TextInput(visible=False, name="gl_probe"),
        renderer_note=Div(text=note, name="renderer_note"),
        timeline=timeline,
        inspector=make_inspector(data),
        queue=make_queue(data),
        filters=make_filters(data),
        notice=Div(text="", name="notice", sizing_mode="stretch_width"),
        status=Div(text="", name="status", width=420),
    )


def layout(data: RunData, v: Views):
    """Filters and selection on the left, canvas and timeline in the middle, queue and inspector on the right."""
    left = column(v.filters.layout, v.filters.selection_layout, width=250, sizing_mode="stretch_height")
    right = column(v.queue.layout, v.inspector.layout, width=480, sizing_mode="stretch_height",
                   styles={"overflow-y": "auto"})  # fmt: skip
    return column(
        row(_header(data), v.renderer_note, v.status, v.probe, sizing_mode="stretch_width"),
        v.notice,
        row(left, v.canvas_slot, right, sizing_mode="stretch_both"),
        sizing_mode="stretch_both",
    )


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The app's arguments: ``RUN [--renderer auto|webgl|canvas]`` (from ``timetravel serve``)."""
    parser = argparse.ArgumentParser(prog="server_app", add_help=False)
    parser.add_argument("run", nargs="?")
    parser.add_argument("--renderer", choices=("auto", *BACKENDS), default="auto")
    return parser.parse_args(argv)


def build(doc: Document, argv: list[str]) -> None:
    """Fill ``doc`` for the run named in ``argv`` (or with a message page)."""
    args = parse_args(argv)
    if not args.run:
        message_page(doc, "No run given", "<p>Start the app with <code>timetravel serve RUN</code>.</p>")
        return
    run = args.run
    try:
        data = open_run(run)
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
    review = open_review(data)
    views = build_views(data, frame, args.renderer)
    doc.title = f"timetravel: {data.store.manifest.get('dataset') or data.path.name}"
    controller = Controller(doc, data, review, views, frame)
    controller.wire()
    root = layout(data, views)
    _style_divs(root)
    doc.add_root(views.queue.export_source)  # not drawn; a root so the browser has it for downloads
    doc.add_root(root)  # last: each add_root re-scans the document's models
    controller.start()


def main(doc: Document, argv: list[str]) -> None:
    """Build the document; an unexpected failure becomes a message page, and the log has the traceback."""
    try:
        build(doc, argv)
    except Exception as exc:  # noqa: BLE001 - the user gets a sentence, the log gets the traceback
        logger.exception("building the app failed")
        doc.clear()
        detail = f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}"
        message_page(doc, "The app failed to start", f"<p>{detail}</p><p>The server log has the details.</p>")


# Bokeh runs this file as a fresh module named "bokeh_app_<id>" for every session; importing
# it elsewhere (tests) only defines the functions above.
if __name__.startswith("bokeh_app_"):
    main(curdoc(), sys.argv[1:])
