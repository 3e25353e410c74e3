"""End-to-end: the real `timetravel serve` driven by Debian's headless Chromium.

Needs the ``chromium`` binary (``.ci/run`` installs it); without it these tests fail
with a message saying so. Screenshots go to ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import csv
import html
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from timetravel.server_app._testing import INSTRUMENT_JS, launch_chromium, serve, wait_until, write_synthetic_run
from timetravel.feedback import FeedbackLog
from timetravel.server_app.palette import class_palette
from timetravel.store import RunStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
VIEWPORT = {"width": 1500, "height": 950}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = launch_chromium(pw)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def detected_run(tmp_path_factory):
    from timetravel.detection import detect

    path = write_synthetic_run(tmp_path_factory.mktemp("browser") / "run", n_samples=600, n_classes=5,
                               n_epochs=6, grid=48)  # fmt: skip
    detect(RunStore(path), verbose=False)
    return path


@pytest.fixture
def run(detected_run, tmp_path):
    """A fresh copy of the detected run per test (its own feedback log)."""
    return shutil.copytree(detected_run, tmp_path / "run")


def _shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def _open(browser, url: str, *, queue: bool = True):
    page = browser.new_context(viewport=VIEWPORT, accept_downloads=True).new_page()
    page.set_default_timeout(30_000)  # generous: other jobs may share the CPU; waits end as soon as they can
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.add_init_script(INSTRUMENT_JS)
    page.goto(url)
    page.wait_for_function("() => window.__tt.first != null", timeout=30_000)
    if queue:
        page.wait_for_function("() => window.__tt.queueTop() != null", timeout=30_000)
    page.js_errors = errors
    return page


def _model(page, name: str, attr: str):
    return page.evaluate("([n, a]) => { const v = Bokeh.documents[0].get_model_by_name(n)[a]; "
                         "return ArrayBuffer.isView(v) ? Array.from(v) : v; }", [name, attr])  # fmt: skip


def _title(page) -> str:
    return page.evaluate("() => Bokeh.documents[0].get_model_by_name('canvas').title.text")


def _queue(page) -> list[int]:
    return page.evaluate("() => Array.from(Bokeh.documents[0].get_model_by_name('queue_source').data.index)")


def _wait_queue_without(page, samples: list[int]) -> list[int]:
    page.wait_for_function(
        "(s) => { const q = Array.from(Bokeh.documents[0].get_model_by_name('queue_source').data.index);"
        " return q.length > 0 && s.every((i) => !q.includes(i)) && window.__tt.queueTop() == String(q[0]); }",
        arg=samples, timeout=30_000,
    )
    return _queue(page)


def _log(run) -> list[dict]:
    path = Path(run) / "feedback.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _wait_log(run, n: int) -> list[dict]:
    return wait_until(lambda: len(_log(run)) >= n and _log(run), timeout=30)


def _canvas_png(page) -> bytes:
    return page.locator(".bk-Figure").first.screenshot()


def _box_select_the_middle(page) -> None:
    """Drag a 300 px box over the middle of the canvas with the box-select tool; wait for the selection list."""
    page.locator(".bk-OnOffButton[title='Box Select']").click()
    box = page.locator(".bk-Figure").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 150, cy - 150)
    page.mouse.down()
    page.mouse.move(cx + 150, cy + 150, steps=8)
    page.mouse.up()
    page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('selection_source').data.index.length > 0")


def test_page_loads_and_the_slider_changes_the_frame(browser, run):
    with serve(run) as server:
        assert server.url.startswith("http://127.0.0.1:")
        page = _open(browser, server.url)
        assert _model(page, "points_source", "data")  # the points arrived
        assert page.evaluate("() => window.__tt.models().src.get_length()") == 600
        # headless Chromium emulates WebGL on the CPU, so the default "auto" renderer picks canvas 2D
        assert _model(page, "canvas", "output_backend") == "canvas"
        assert "canvas 2D" in _model(page, "renderer_note", "text")
        assert _title(page).startswith("epoch 5 (6 of 6)")
        before_png, before_x = _canvas_png(page), _model(page, "points_source", "data")["x"]
        _shot(page, "app-loaded")
        timing = page.evaluate("() => window.__tt.step(0)")
        assert timing["drawn_ms"] > 0
        assert _title(page).startswith("epoch 0 (1 of 6)")
        assert _model(page, "points_source", "data")["x"] != before_x
        assert _canvas_png(page) != before_png
        page.keyboard.press("ArrowRight")
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('canvas').title.text.startsWith('epoch 1 ')")
        _shot(page, "app-epoch-1")
        assert page.js_errors == []


def test_box_selection_lists_the_selected_samples_with_webgl(browser, run):
    with serve(run, args=["--renderer", "webgl"]) as server:
        page = _open(browser, server.url)
        assert page.evaluate("() => window.__tt.models().view.canvas_view.webgl != null")
        _box_select_the_middle(page)
        selected = page.evaluate(
            "() => Array.from(Bokeh.documents[0].get_model_by_name('points_source').selected.indices)")
        listed = _model(page, "selection_source", "data")["index"]
        assert sorted(listed) == sorted(selected)[: len(listed)]
        assert f"{len(selected)} selected" in _model(page, "selection_info", "text")
        _shot(page, "app-box-selection")


_RASTER_JS = """([column, palette]) => {
  const doc = Bokeh.documents[0];
  const dots = doc.get_model_by_name('dots_source').data, pts = doc.get_model_by_name('positions_source').data;
  const img = dots.image[0], [H, W] = img.shape, last = pts.x.length - 1;
  const alphas = new Set();
  let painted = 0;
  for (const v of img) { if (v !== 0) { painted++; alphas.add(v >>> 24); } }
  const px = Math.floor((pts.x[last] - dots.x[0]) / dots.dw[0] * W), py = Math.floor((pts.y[last] - dots.y[0]) / dots.dh[0] * H);
  const hex = (v) => '#' + [0, 8, 16].map((s) => ((v >>> s) & 255).toString(16).padStart(2, '0')).join('');
  return {painted, W, H, alphas: [...alphas].sort((a, b) => a - b), colour: hex(img[py * W + px]),
          expected: palette[pts[column][last]].toLowerCase()};
}"""


def test_raster_dots_follow_the_frame_colour_and_selection(browser, run):
    with serve(run, args=["--renderer", "raster"]) as server:
        page = _open(browser, server.url)
        page.wait_for_function("() => (Bokeh.documents[0].get_model_by_name('dots_source').data.image || []).length")
        palette = class_palette(RunStore(run).n_classes)
        first = page.evaluate(_RASTER_JS, ["label", palette])
        assert first["painted"] > 600 and first["alphas"] == [230]  # every dot a few pixels, 90% opaque
        assert first["colour"] == first["expected"]  # the last dot, drawn on top, in its label's colour
        before_png = _canvas_png(page)
        page.evaluate("() => window.__tt.step(0)")
        assert _title(page).startswith("epoch 0 ")
        assert _canvas_png(page) != before_png
        # the hit-testing scatter takes the frame's positions once the slider rests (hover, box select)
        page.wait_for_function("() => { const d = Bokeh.documents[0], p = d.get_model_by_name('points_source').data;"
                               " return p.x === d.get_model_by_name('positions_source').data.x; }")
        page.get_by_text("Prediction", exact=True).click()
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('dots').tags[0] == 'pred'")
        by_pred = page.evaluate(_RASTER_JS, ["pred", palette])
        assert by_pred["colour"] == by_pred["expected"]
        _shot(page, "app-raster")
        page.set_viewport_size({"width": 1200, "height": 950})  # the image follows the plot's new size
        page.wait_for_function("(w) => Bokeh.documents[0].get_model_by_name('dots_source').data.image[0].shape[1] < w",
                               arg=by_pred["W"])
        page.set_viewport_size(VIEWPORT)
        page.wait_for_function("(w) => Bokeh.documents[0].get_model_by_name('dots_source').data.image[0].shape[1] == w",
                               arg=by_pred["W"])
        _box_select_the_middle(page)
        selected = page.evaluate(_RASTER_JS, ["pred", palette])
        assert selected["alphas"] == [38, 255]  # the transparent scatter picked the samples; others faded
        _shot(page, "app-raster-selection")
        assert page.js_errors == []


def test_accept_reject_undo_write_the_log_and_rerank_the_queue(browser, run):
    with serve(run) as server:
        page = _open(browser, server.url)
        first = _queue(page)[0]
        assert page.evaluate("() => window.__tt.queueTop()") == str(first)
        suggested = _suggested(run, first)
        assert _model(page, "relabel_to", "value") == str(suggested)  # the suggested label is preselected
        page.get_by_role("button", name="✓ Accept (a)").click()
        assert _wait_log(run, 1)[0] | {"time": 0} == {"sample": first, "decision": "relabel", "label": suggested,
                                                      "time": 0, "session": _log(run)[0]["session"]}  # fmt: skip
        queue = _wait_queue_without(page, [first])
        second = queue[0]
        page.keyboard.press("r")
        assert [(e["sample"], e["decision"]) for e in _wait_log(run, 2)] == [(first, "relabel"), (second, "reject")]
        queue = _wait_queue_without(page, [first, second])
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('counters').text.includes('>2<')")
        counters = _model(page, "counters", "text")
        assert "reviewed <b name='reviewed'>2</b>" in counters and "accepted <b name='accepted'>1</b>" in counters
        assert "hit rate" in counters and f"✓ rejected #{second}, saved to feedback.jsonl" in counters
        marks = _model(page, "marks_source", "data")
        assert {first, second} <= set(marks["index"])
        _shot(page, "app-after-decisions")
        page.keyboard.press("u")
        log = _wait_log(run, 3)
        assert (log[2]["sample"], log[2]["decision"]) == (second, "undo")
        assert FeedbackLog(run).read().decisions == {first: True}
        page.wait_for_function(f"() => Bokeh.documents[0].get_model_by_name('inspector_summary').text"
                               f".includes('Sample #{second}')")  # fmt: skip
        assert page.js_errors == []


def _suggested(run, sample: int) -> int:
    from timetravel.detection import load_detection

    return int(load_detection(RunStore(run)).features.suggested[sample])


def _accept_as(page, action: str, label: int | None = None) -> None:
    """Choose what Accept does with the real widgets (the action buttons, the class list), then click Accept."""
    page.locator(".tt-accept-action").get_by_role("button", name=action).click()
    page.wait_for_function("(a) => Bokeh.documents[0].get_model_by_name('accept_action').labels["
                           "Bokeh.documents[0].get_model_by_name('accept_action').active] == a", arg=action)
    if label is not None:
        name = json.loads((Path(page.run) / "run.json").read_text())["class_names"][label]
        page.locator(".tt-relabel-to select").select_option(label=name)
        page.wait_for_function("(v) => Bokeh.documents[0].get_model_by_name('relabel_to').value == v", arg=str(label))
    page.get_by_role("button", name="✓ Accept (a)").click()


def test_relabel_to_any_class_drop_flag_and_undo(browser, run):
    with serve(run) as server:
        page = _open(browser, server.url)
        page.run = run
        first = _queue(page)[0]
        given = int(np.load(Path(run) / "labels.npy")[first])
        other = next(k for k in range(5) if k not in (_suggested(run, first), given))
        _accept_as(page, "Relabel to", other)  # any class, not only the suggested one
        assert (_wait_log(run, 1)[0]["decision"], _wait_log(run, 1)[0]["label"]) == ("relabel", other)
        second = _wait_queue_without(page, [first])[0]
        _accept_as(page, "Drop")
        third = _wait_queue_without(page, [first, second])[0]
        _accept_as(page, "Flag only")
        log = _wait_log(run, 3)
        assert [(e["sample"], e["decision"], e.get("label")) for e in log] == [
            (first, "relabel", other), (second, "drop", None), (third, "flag", None)]
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('counters').text.includes('flagged')")
        counters = _model(page, "counters", "text")
        assert "relabelled <b name='n_relabel'>1</b>" in counters and "dropped <b name='n_drop'>1</b>" in counters
        assert f"✓ flagged #{third}, saved to feedback.jsonl" in counters
        assert "accepted <b name='accepted'>3</b>" in counters
        _shot(page, "app-corrections")
        page.keyboard.press("u")  # withdraws the flag, then the drop
        page.wait_for_function(f"() => Bokeh.documents[0].get_model_by_name('inspector_summary').text"
                               f".includes('Sample #{third}')")  # fmt: skip
        page.get_by_role("button", name="↶ Undo (u)").click()
        _wait_log(run, 5)
        state = FeedbackLog(run).read()
        assert {i: (e.decision, e.label) for i, e in state.standing.items()} == {first: ("relabel", other)}
        page.wait_for_function(f"() => Bokeh.documents[0].get_model_by_name('inspector_summary').text"
                               f".includes('Sample #{second}')")  # fmt: skip
        # the undone sample is inspected again, with its suggested label preselected for a new choice
        page.wait_for_function("(v) => Bokeh.documents[0].get_model_by_name('relabel_to').value == v",
                               arg=str(_suggested(run, second)))
        # what retraining will use
        import timetravel

        fix = timetravel.corrections(run)
        assert fix.labels[first] == other and fix.keep.all()
        _shot(page, "app-corrections-undone")
        assert page.js_errors == []


def test_export_csv_from_the_app(browser, run):
    with serve(run) as server:
        page = _open(browser, server.url)
        accepted = []
        for _ in range(2):
            top = _queue(page)[0]
            # the button, not the key: right after page load the document may not have keyboard focus yet
            page.get_by_role("button", name="✓ Accept (a)").click()
            accepted.append(top)
            assert [e["sample"] for e in _wait_log(run, len(accepted))] == accepted
            _wait_queue_without(page, accepted)
        page.wait_for_function("() => !Bokeh.documents[0].get_model_by_name('export_csv').disabled")
        with page.expect_download() as download:
            page.get_by_role("button", name="Export CSV").click()
        rows = list(csv.DictReader(open(download.value.path())))
        assert [int(r["index"]) for r in rows] == accepted
        assert all(r["suggested_label"] != r["given_label"] for r in rows)
        assert all(r["decision"] == "relabel" and r["corrected_label"] == r["suggested_label"] for r in rows)
        saved = list(csv.DictReader(open(Path(run) / "exports" / "accepted.csv")))
        assert saved == rows
        _shot(page, "app-export")


def test_two_tabs_stay_consistent(browser, run):
    with serve(run) as server:
        tab_a, tab_b = _open(browser, server.url), _open(browser, server.url)
        top = _queue(tab_a)[0]
        tab_a.keyboard.press("a")
        _wait_queue_without(tab_b, [top])
        tab_b.wait_for_function("() => Bokeh.documents[0].get_model_by_name('counters').text.includes('>1<')")
        other = _queue(tab_b)[0]
        tab_b.keyboard.press("r")
        _wait_queue_without(tab_a, [top, other])
        assert _queue(tab_a) == _queue(tab_b)
        state = FeedbackLog(run, 600).read()
        assert state.errors == [] and state.decisions == {top: True, other: False}
        assert len({e.session for e in state.events}) == 2


def test_restart_resumes_from_the_log(browser, run):
    with serve(run) as server:
        page = _open(browser, server.url)
        decided = []
        for key in ("a", "r", "a"):
            decided.append(_queue(page)[0])
            page.keyboard.press(key)
            _wait_queue_without(page, decided)
        _wait_log(run, 3)
    with serve(run) as server:
        page = _open(browser, server.url)
        assert not set(decided) & set(_queue(page))
        counters = _model(page, "counters", "text")
        assert "reviewed <b name='reviewed'>3</b>" in counters and "accepted <b name='accepted'>2</b>" in counters
        assert set(decided) <= set(_model(page, "marks_source", "data")["index"])
        _shot(page, "app-restarted")


def test_corrupt_log_line_is_shown_and_the_rest_kept(browser, run):
    log = FeedbackLog(run, 600)
    log.append(3, "accept")
    with open(log.path, "a") as fh:
        fh.write("this is not json\n")
    log.append(4, "reject")
    with serve(run) as server:
        page = _open(browser, server.url)
        notice = _model(page, "notice", "text")
        assert "1 line(s) of feedback.jsonl could not be read" in notice and "line 2 skipped" in notice
        assert "the other 2 decisions were loaded" in notice
        assert "reviewed <b name='reviewed'>2</b>" in _model(page, "counters", "text")
        _shot(page, "app-corrupt-log")


def test_missing_projection_says_which_command_to_run(browser, tmp_path):
    path = write_synthetic_run(tmp_path / "run", n_samples=50, n_epochs=2, project=False)
    with serve(path) as server:
        page = browser.new_context(viewport=VIEWPORT).new_page()
        page.goto(server.url)
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 "
                               "&& Bokeh.documents[0].get_model_by_name('app_message') != null")  # fmt: skip
        text = _model(page, "app_message", "text")
        assert "No projection yet" in text and f"timetravel project {path}" in text
        assert "Traceback" not in page.content()
        _shot(page, "app-no-projection")


def test_missing_detection_says_which_command_to_run(browser, tmp_path):
    path = write_synthetic_run(tmp_path / "run", n_samples=80, n_epochs=3, grid=16)
    with serve(path) as server:
        page = _open(browser, server.url, queue=False)
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('queue_status').text.includes('detect')")
        assert f"timetravel detect {path}" in _model(page, "queue_status", "text")
        _shot(page, "app-no-detection")


# --------------------------------------------------------------------------- group questions


@pytest.fixture(scope="module")
def sliced_detected(tmp_path_factory):
    """A run with metadata where source = web (a fifth of the samples) has 50% label noise, the rest 5%."""
    from timetravel.detection import detect
    from timetravel.server_app._testing import write_sliced_run

    path = write_sliced_run(tmp_path_factory.mktemp("groups") / "run", n_samples=1500, n_epochs=6, grid=32,
                            n_heldout=60)  # fmt: skip
    detect(RunStore(path), verbose=False)
    return path


@pytest.fixture
def sliced(sliced_detected, tmp_path):
    return shutil.copytree(sliced_detected, tmp_path / "run")


def _tab(page, title: str, ready: str) -> None:
    """Open a side tab and wait for the model ``ready`` (built on first open) to exist."""
    page.locator(".bk-tab", has_text=title).click()
    page.wait_for_function("(n) => Bokeh.documents[0].get_model_by_name(n) != null", arg=ready)


def _selected(page) -> list[int]:
    return sorted(page.evaluate(
        "() => Array.from(Bokeh.documents[0].get_model_by_name('points_source').selected.indices)"))


def _click_table_row(page, table: str, row: int) -> None:
    view = f"Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('{table}'))"
    page.wait_for_function(f"() => {view}.shadow_el.querySelectorAll('.slick-row').length > {row}")
    page.evaluate(f"() => {view}.shadow_el.querySelectorAll('.slick-row')[{row}].querySelector('.slick-cell')"
                  ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")


_CELL_XY_JS = """([g, p]) => {
  const fig = Bokeh.documents[0].get_model_by_name('confusion'), view = Bokeh.index.find_one(fig);
  const k = fig.x_range.factors.length, box = view.frame.bbox, r = view.el.getBoundingClientRect();
  return [r.left + box.left + (p + 0.5) * box.width / k, r.top + box.top + (g + 0.5) * box.height / k];
}"""


def test_the_timeline_shows_the_early_stopped_aum_window(browser, sliced):
    from timetravel.detection import load_early_stop
    from timetravel.features import describe_early_stop

    window = load_early_stop(RunStore(sliced))
    with serve(sliced) as server:
        page = _open(browser, server.url, queue=False)
        page.locator(".bk-Div", has_text="early-stopped AUM over epochs").wait_for(state="visible")
        assert html.escape(describe_early_stop(window)) in _model(page, "early_stop_note", "text")
        assert (_model(page, "early_stop_window", "left"), _model(page, "early_stop_window", "right")) == (
            window["first_epoch"] - 0.5, window["last_epoch"] + 0.5)
        assert page.js_errors == []


def test_a_confusion_cell_click_selects_its_samples_and_limits_the_queue(browser, sliced):
    from timetravel.groups import GroupAnalysis

    outcomes = GroupAnalysis(sliced).outcomes()
    with serve(sliced) as server:
        page = _open(browser, server.url)
        page.evaluate("() => window.__tt.step(2)")  # epoch 2: the noisy labels are not memorised yet
        _tab(page, "Confusion", "confusion_source")
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('confusion').title.text.includes('epoch 2')")
        matrix = np.asarray(_model(page, "confusion_source", "data")["count"]).reshape(4, 4)
        np.fill_diagonal(matrix, 0)
        given, predicted = np.unravel_index(int(matrix.argmax()), matrix.shape)
        x, y = page.evaluate(_CELL_XY_JS, [int(given), int(predicted)])
        page.mouse.click(x, y)
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('cell_history').visible")
        members = np.flatnonzero((outcomes.labels == given) & (outcomes.pred[2] == predicted))
        assert len(members) == matrix.max() > 0
        page.wait_for_function("(n) => Bokeh.documents[0].get_model_by_name('points_source').selected.indices.length"
                               " == n", arg=len(members))  # fmt: skip
        assert _selected(page) == members.tolist()
        assert "Only" in _model(page, "queue_scope", "text")
        counts = _model(page, "cell_history_source", "data")["count"]
        assert counts == [int(((outcomes.labels == given) & (p == predicted)).sum()) for p in outcomes.pred]
        assert f"{len(members)} samples labelled" in _model(page, "confusion_info", "text")
        _shot(page, "app-confusion-cell")
        _tab(page, "Review", "queue_table")
        queue = _queue(page)
        assert queue and set(queue) <= set(members.tolist())  # the queue recommends only within the cell
        page.locator(".bk-btn", has_text="whole run").click()
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('queue_scope').text == ''")
        assert page.js_errors == []


def test_suggestions_rank_the_planted_slice_first_and_a_click_selects_it(browser, sliced):

    web = np.flatnonzero(RunStore(sliced).metadata["source"].as_strings() == "web").tolist()
    with serve(sliced) as server:
        page = _open(browser, server.url)
        _tab(page, "Groups", "suggestions_source")
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('suggestions_source').data.subgroup.length")
        assert _model(page, "suggestions_source", "data")["subgroup"][0] == "source = web"
        _click_table_row(page, "suggestions_table", 0)
        page.wait_for_function("(n) => Bokeh.documents[0].get_model_by_name('points_source').selected.indices.length"
                               " == n", arg=len(web))  # fmt: skip
        assert _selected(page) == web
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('compare_a').value == 'source = web'")
        assert "source = web" in _model(page, "compare_info", "text")
        _shot(page, "app-suggestions")
        page.locator(".bk-btn-group .bk-btn", has_text="this epoch").click()  # rank at the last epoch: memorised
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('suggestions_info').text.includes('epoch 5')")
        _tab(page, "Activations", "activation_source")
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('activation_heatmap').visible")
        assert "separate the selection most" in _model(page, "activations_info", "text")
        cells = _model(page, "activation_source", "data")
        assert len(cells["z"]) == len(set(cells["unit"])) * len(set(cells["row"]))
        _shot(page, "app-activations")
        assert page.js_errors == []


def test_saving_a_selection_makes_it_a_group(browser, sliced):
    from timetravel.selections import read_selections

    with serve(sliced) as server:
        page = _open(browser, server.url)
        _box_select_the_middle(page)
        selected = _selected(page)
        page.locator("input[placeholder='name this selection']").fill("middle pocket")
        page.locator(".bk-btn", has_text="Save").click()
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('selection_note').text.includes('saved')")
        assert read_selections(sliced, 1500)["middle pocket"].tolist() == selected
        _tab(page, "Groups", "groups_source")
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('groups_source').data.group"
                               ".includes('middle pocket')")  # fmt: skip
        rows = _model(page, "groups_source", "data")
        i = rows["group"].index("middle pocket")
        assert rows["kind"][i] == "selection" and rows["size"][i] == len(selected)
        _shot(page, "app-saved-selection")
        assert page.js_errors == []


def test_more_like_these_seeds_the_recommender_and_undo_withdraws_it(browser, sliced):
    with serve(sliced) as server:
        page = _open(browser, server.url)
        before = _queue(page)
        _box_select_the_middle(page)
        selected = _selected(page)
        page.locator(".bk-btn", has_text="Find more like these").click()
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('selection_note').text.includes('seed')")
        log = _wait_log(sliced, len(selected))
        assert {e["decision"] for e in log} == {"seed"} and sorted(e["sample"] for e in log) == selected
        assert {e["group"] for e in log} == {f"selection of {len(selected)}"}
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('counters').text.includes('seeded')")
        after = _queue(page)
        assert not set(after) & set(selected) and after != before
        _shot(page, "app-more-like-these")
        page.locator(".bk-btn", has_text="Undo").click()
        _wait_log(sliced, 2 * len(selected))
        page.wait_for_function("() => !Bokeh.documents[0].get_model_by_name('counters').text.includes('seeded')")
        assert FeedbackLog(sliced).read().seeds == {}


@pytest.fixture(scope="module")
def other_run(tmp_path_factory):
    """A second projected run of the same 600 samples (another seed: other predictions)."""
    return write_synthetic_run(tmp_path_factory.mktemp("browser") / "other", n_samples=600, n_classes=5,
                               n_epochs=6, grid=48, seed=1)  # fmt: skip


def _open_compare(browser, url: str):
    page = browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
    page.set_default_timeout(30_000)
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    page.goto(url)
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0 && "
                           "Bokeh.documents[0].get_model_by_name('changed_note') != null && "
                           "Bokeh.documents[0].get_model_by_name('changed_note').text.includes('epoch')")
    page.wait_for_selector(".bk-DataTable .slick-row")
    return page


def _compare_state(page) -> dict:
    return page.evaluate(
        "() => { const d = Bokeh.documents[0];"
        " const titles = [...d._all_models.values()].filter((m) => m.name == 'canvas').map((m) => m.title.text);"
        " const points = [...d._all_models.values()].filter((m) => m.name == 'points_source');"
        " return {titles, selected: points.map((p) => Array.from(p.selected.indices)),"
        " changed: Array.from(d.get_model_by_name('changed_source').data.index),"
        " note: d.get_model_by_name('changed_note').text}; }")


def test_compare_two_runs_side_by_side(browser, run, other_run):
    with serve(run, args=["--compare", str(other_run)]) as server:
        page = _open_compare(browser, server.url)
        state = _compare_state(page)
        assert state["titles"] == ["run, epoch 5: test accuracy 89.2%", state["titles"][1]]
        assert state["titles"][1].startswith("other, epoch 5")
        assert f"<b name='n_changed'>{len(state['changed'])}</b>" in state["note"] or "listed" in state["note"]
        # a changed row selects that sample on both canvases
        page.locator(".bk-DataTable .slick-row").first.locator("input[type=checkbox]").click()
        page.wait_for_function("() => [...Bokeh.documents[0]._all_models.values()].filter((m) => m.name == "
                               "'points_source').every((p) => p.selected.indices.length == 1)")
        first = _compare_state(page)["changed"][0]
        assert _compare_state(page)["selected"] == [[first], [first]]
        _shot(page, "app-compare")
        page.get_by_role("button", name="◀").click()  # one slider moves both canvases
        page.wait_for_function("() => [...Bokeh.documents[0]._all_models.values()].filter((m) => m.name == "
                               "'canvas').every((f) => f.title.text.includes('epoch 4'))")
        assert page.js_errors == []


def test_compare_two_epochs_of_one_run(browser, run):
    with serve(run, args=["--compare", str(run)]) as server:
        page = _open_compare(browser, server.url)
        titles = _compare_state(page)["titles"]
        left, right = (int(t.split("epoch ")[1].split(":")[0]) for t in titles)
        assert right == left + 1  # before / after: the right canvas shows the next epoch by default
        assert f"at epoch {left} left and {right} right" in _compare_state(page)["note"]
        _shot(page, "app-compare-epochs")
        assert page.js_errors == []


@pytest.fixture
def pool_run(tmp_path):
    """A run with a 60-sample unlabelled pool (and its true labels, as a benchmark run) beside 300 training samples."""
    return write_synthetic_run(tmp_path / "run", n_samples=300, n_classes=4, n_epochs=5, grid=32, n_heldout=100,
                               n_pool=60, spread=1.6)  # fmt: skip


def _pool_counters_include(page, text: str) -> None:
    page.wait_for_function("(t) => Bokeh.documents[0].get_model_by_name('pool_counters').text.includes(t)", arg=text)


def test_pool_tab_labels_a_sample_reranks_and_undoes(browser, pool_run):
    with serve(pool_run) as server:
        page = _open(browser, server.url, queue=False)
        _tab(page, "Pool", "pool_table")
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('pool_source').data.row.length > 0")
        rows = _model(page, "pool_source", "data")["row"]
        _click_table_row(page, "pool_table", 1)  # the second row
        page.wait_for_function("(r) => Bokeh.documents[0].get_model_by_name('pool_sample').text.includes("
                               "'Pool #' + r + '<')", arg=rows[1])  # fmt: skip
        assert "data:image/png;base64," in _model(page, "pool_sample", "text")
        predicted = int(_model(page, "pool_label_to", "value"))  # preselected: the model's prediction
        page.keyboard.press("l")
        log = _wait_log(pool_run, 1)
        assert (log[0]["sample"], log[0]["decision"], log[0]["label"], log[0]["split"]) == (
            rows[1], "label", predicted, "pool")
        _pool_counters_include(page, f"✓ labelled pool #{rows[1]} as class {predicted}, saved to feedback.jsonl")
        page.wait_for_function("(r) => !Array.from(Bokeh.documents[0].get_model_by_name('pool_source').data.row)"
                               ".includes(r)", arg=rows[1])  # fmt: skip
        nxt = _model(page, "pool_source", "data")["row"][0]
        page.wait_for_function("(r) => Bokeh.documents[0].get_model_by_name('pool_sample').text.includes("
                               "'Pool #' + r + '<')", arg=nxt)  # fmt: skip
        other = (int(_model(page, "pool_label_to", "value")) + 1) % 4
        page.locator(".tt-pool-label-to select").select_option(label=f"class {other}")
        page.wait_for_function("(v) => Bokeh.documents[0].get_model_by_name('pool_label_to').value == v",
                               arg=str(other))  # fmt: skip
        page.get_by_role("button", name="✓ Label this (l)").click()
        assert _wait_log(pool_run, 2)[1] | {"time": 0, "session": ""} == {
            "sample": nxt, "decision": "label", "label": other, "split": "pool", "time": 0, "session": ""}
        _pool_counters_include(page, "labelled <b name='pool_labelled'>2</b> of 60")
        assert "the model was wrong on" in _model(page, "pool_counters", "text")
        # the pool on the canvas: 60 triangles, the chosen row ringed
        page.wait_for_function("() => Bokeh.documents[0].get_model_by_name('pool_dots').visible && "
                               "Bokeh.documents[0].get_model_by_name('pool_dots_source').data.x.length == 60")
        chosen = _model(page, "pool_source", "data")["row"][0]
        store = RunStore(pool_run)
        xy = store.projection(store.epochs[-1], "pool")[chosen]
        page.wait_for_function("(xy) => { const r = Bokeh.documents[0].get_model_by_name('pool_focus_source').data;"
                               " return r.x.length == 1 && Math.abs(r.x[0] - xy[0]) < 1e-5 "
                               "&& Math.abs(r.y[0] - xy[1]) < 1e-5; }", arg=[float(xy[0]), float(xy[1])])
        score = _model(page, "pool_source", "data")["score"]
        assert list(score) == sorted(score, reverse=True)
        _shot(page, "app-pool")
        page.keyboard.press("u")  # on the pool tab: the last pool label
        log = _wait_log(pool_run, 3)
        assert (log[2]["sample"], log[2]["decision"], log[2]["split"]) == (nxt, "undo", "pool")
        _pool_counters_include(page, f"↶ undid the last label of pool #{nxt}")
        assert FeedbackLog(pool_run, n_pool=60).read().pool_labels == {rows[1]: predicted}
        assert page.js_errors == []
