"""Building a session's document in-process (no browser): the views, their wiring, message pages."""

from __future__ import annotations

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.events import ButtonClick, Tap
from bokeh.models import Div

from timetravel.server_app import main as app
from timetravel.server_app._testing import write_synthetic_run
from timetravel.server_app.context import AppContext


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("doc") / "run", n_samples=200, n_epochs=4, grid=8)


_CONTEXTS: dict[tuple[str, str], AppContext] = {}


def _context(path, renderer: str = "webgl") -> AppContext:
    """One context per run and renderer, as one server would hold (sessions share its cached frames)."""
    key = (str(path), renderer)
    if key not in _CONTEXTS:
        _CONTEXTS[key] = AppContext([str(path), "--renderer", renderer])
    return _CONTEXTS[key]


def _build(path, renderer: str = "webgl") -> Document:
    doc = Document()
    app.main(doc, _context(path, renderer))
    return doc


def _text(doc: Document) -> str:
    return " ".join(d.text for d in doc.select({"type": Div}))


def test_document_has_every_view(run):
    doc = _build(run)
    for name in ("canvas", "epoch_slider", "queue_table", "accept", "reject", "undo", "inspector_summary",
                 "class_filter", "selection_table", "export_csv", "history", "curves"):  # fmt: skip
        assert doc.select_one({"name": name}) is not None, name
    points = doc.select_one({"name": "points_source"})
    assert points.data["x"].dtype == np.float32 and len(points.data["x"]) == 200
    assert doc.select_one({"name": "canvas"}).output_backend == "webgl"


def test_slider_and_step_buttons_swap_in_the_epoch(run):
    from timetravel.store import RunStore

    data, _ = _context(run).open()
    for e in data.epochs:  # cached frames are applied synchronously, without the server's event loop
        data.frame(e)
    doc = _build(run)
    slider = doc.select_one({"name": "epoch_slider"})
    points = doc.select_one({"name": "points_source"})
    assert slider.value == 3
    slider.value = 0
    np.testing.assert_array_equal(points.data["x"], np.asarray(RunStore(run).projection(0))[:, 0])
    assert doc.select_one({"name": "canvas"}).title.text.startswith("epoch 0 (1 of 4)")
    forward = doc.select_one({"name": "step_forward"})
    forward._trigger_event(ButtonClick(forward))
    assert slider.value == 1
    np.testing.assert_array_equal(points.data["x"], np.asarray(RunStore(run).projection(1))[:, 0])


def test_filters_hide_samples(run):
    doc = _build(run)
    view = doc.select_one({"name": "points"}).view
    classes = doc.select_one({"name": "class_filter"})
    classes.value = ["1"]
    labels = doc.select_one({"name": "points_source"}).data["label"]
    np.testing.assert_array_equal(np.asarray(view.filter.booleans), labels == 1)
    classes.value = []
    assert view.filter.booleans is None


def test_tap_inspects_the_nearest_dot(run):
    doc = _build(run)
    points = doc.select_one({"name": "points_source"}).data
    canvas = doc.select_one({"name": "canvas"})
    canvas._trigger_event(Tap(canvas, x=float(points["x"][17]), y=float(points["y"][17])))
    assert "Sample #17" in doc.select_one({"name": "inspector_summary"}).text
    focus = doc.select_one({"name": "focus_source"}).data
    assert focus["x"] == [pytest.approx(float(points["x"][17]))]


@pytest.mark.parametrize("gl_renderer, backend", [
    ("ANGLE (NVIDIA, NVIDIA GeForce RTX 3080 Direct3D11 vs_5_0 ps_5_0)", "webgl"),
    ("ANGLE (Google, Vulkan 1.3.0 (SwiftShader Device (Subzero) (0x0000C0DE)), SwiftShader driver)", "canvas"),
    ("llvmpipe (LLVM 15.0.6, 256 bits)", "canvas"),
    ("none", "canvas"),
])  # fmt: skip
def test_auto_renderer_builds_the_canvas_the_browser_suits(run, gl_renderer, backend):
    doc = _build(run, "auto")
    assert doc.select_one({"name": "canvas"}) is None
    assert doc.select_one({"name": "canvas_placeholder"}) is not None
    doc.select_one({"name": "gl_probe"}).value = gl_renderer
    canvas = doc.select_one({"name": "canvas"})
    assert canvas.output_backend == backend
    assert doc.select_one({"name": "canvas_placeholder"}) is None
    assert len(doc.select_one({"name": "points_source"}).data["x"]) == 200
    note = doc.select_one({"name": "renderer_note"}).text
    assert ("dots drawn with WebGL" in note) == (backend == "webgl")
    assert ("dots drawn with canvas 2D" in note) == (backend == "canvas")


def test_big_runs_without_a_gpu_get_the_raster_dots():
    from timetravel.server_app.canvas import CANVAS_RASTER_DOTS, backend_for

    swiftshader = "ANGLE (Google, Vulkan 1.3.0 (SwiftShader Device (Subzero)), SwiftShader driver)"
    assert backend_for(swiftshader, CANVAS_RASTER_DOTS) == "canvas"
    assert backend_for(swiftshader, CANVAS_RASTER_DOTS + 1) == "raster"
    assert backend_for("none", 10**6) == "raster"
    assert backend_for("ANGLE (NVIDIA, NVIDIA GeForce RTX 3080)", 10**6) == "webgl"


def test_raster_canvas_keeps_a_transparent_scatter_for_picking(run):
    doc = _build(run, "raster")
    assert doc.select_one({"name": "canvas"}).output_backend == "canvas"
    dots = doc.select_one({"name": "dots"})
    assert dots.tags == ["label", 0]
    scatter = doc.select_one({"name": "points"})
    assert scatter.glyph.fill_alpha == 0 and scatter.nonselection_glyph.fill_alpha == 0
    doc.select_one({"name": "color_by"}).active = 1  # colour by prediction: the page rasterises again
    assert dots.tags == ["pred", 0]


def test_missing_projection_page_names_the_command(tmp_path):
    path = write_synthetic_run(tmp_path / "run", n_samples=40, n_epochs=2, project=False)
    text = _text(_build(path))
    assert "No projection yet" in text
    assert f"timetravel project {path}" in text


def test_not_a_run_page_says_why(tmp_path):
    text = _text(_build(tmp_path))
    assert "This run cannot be opened" in text and "run.json" in text


def test_no_run_argument_page():
    doc = Document()
    app.main(doc, AppContext([]))
    assert "timetravel serve RUN" in _text(doc)


@pytest.mark.parametrize("widget", ["queue_size", "speed", "relabel_to", "group_metric", "activation_reference"])
def test_a_crafted_select_value_is_put_back_and_the_session_keeps_working(run, widget):
    doc = _build(run)
    tabs = doc.select_one({"name": "side_tabs"})
    for i in range(len(tabs.tabs)):  # the group tabs build their views when first opened
        tabs.active = i
    select = doc.select_one({"name": widget})
    assert select is not None, widget
    select.value = "abc"  # what a crafted client message can set: any string
    slider = doc.select_one({"name": "epoch_slider"})
    data, _ = _context(run).open()
    data.frame(1)
    slider.value = 1
    assert doc.select_one({"name": "canvas"}).title.text.startswith("epoch 1 ")
    values = [o[0] if isinstance(o, tuple) else o for o in select.options]
    from timetravel.server_app._bokeh import choice

    assert choice(select) in values and select.value in values


def test_a_failing_view_update_reaches_the_page_and_the_other_views_still_update(run, monkeypatch):
    from timetravel.errors import StoreError
    from timetravel.server_app.recommendations import QueueView

    def broken(*_args, **_kwargs):
        raise StoreError(f"{run}/feedback.jsonl: not readable; check its permissions")

    doc = _build(run)
    monkeypatch.setattr(QueueView, "show", broken)
    doc.select_one({"name": "queue_size"}).value = "5"  # the queue's listener fails
    status = doc.select_one({"name": "status"}).text
    assert "feedback.jsonl: not readable; check its permissions" in status and "tt-error" in status
    data, _ = _context(run).open()
    data.frame(2)
    doc.select_one({"name": "epoch_slider"}).value = 2
    assert doc.select_one({"name": "canvas"}).title.text.startswith("epoch 2 ")


def test_background_work_cancelled_at_shutdown_is_dropped_quietly(caplog):
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from types import SimpleNamespace

    from timetravel.server_app.session import Session

    executor = ThreadPoolExecutor(1)
    data = SimpleNamespace(executor=executor)
    session = Session(Document(), data, SimpleNamespace(snapshot=lambda: None), None, 10)
    release = threading.Event()
    executor.submit(release.wait)  # keeps the only worker busy, so the next job is still queued
    done = []
    session.background(lambda: 1, done.append, "a job")
    executor.shutdown(wait=False, cancel_futures=True)  # what a stopping server does
    release.set()
    executor.shutdown(wait=True)
    assert done == [] and "exception calling callback" not in caplog.text


def test_the_timeline_shades_the_early_stopped_aum_window_and_says_it(tmp_path):
    from bokeh.models import BoxAnnotation, Label, Span

    from timetravel import RunStore
    from timetravel.detection import detect
    from timetravel.features import describe_early_stop
    from timetravel.server_app._testing import write_synthetic_run

    path = write_synthetic_run(tmp_path / "run", n_samples=200, n_epochs=6, grid=8, n_heldout=80)
    assert not list(_build(path).select({"name": "early_stop_window"}))  # no detection yet: nothing to shade
    window = detect(RunStore(path), verbose=False).features.meta["early_stop"]
    doc = _build(path)
    (box,) = doc.select({"type": BoxAnnotation, "name": "early_stop_window"})
    assert (box.left, box.right) == (window["first_epoch"] - 0.5, window["last_epoch"] + 0.5)
    (note,) = doc.select({"type": Div, "name": "early_stop_note"})
    assert describe_early_stop(window).replace("'", "&#x27;") in note.text
    assert len(list(doc.select({"type": Label, "name": "early_stop_label"}))) == 1
    # the marker of the first overfitting epoch is there exactly when the run overfits
    assert len(list(doc.select({"type": Span, "name": "overfit_marker"}))) == (window["overfit_epoch"] is not None)


def test_a_run_without_heldout_labels_has_no_early_stop_marks(run, tmp_path):
    import shutil

    from timetravel import RunStore
    from timetravel.detection import detect

    path = shutil.copytree(run, tmp_path / "run")
    detect(RunStore(path), verbose=False)
    doc = _build(path)
    assert not list(doc.select({"name": "early_stop_window"})) and not list(doc.select({"name": "early_stop_note"}))
