"""The notebook side: tables of the ranking and features, and ``timetravel.show`` run in a real Jupyter kernel."""

from __future__ import annotations

import functools
import http.server
import json
import re
import sys
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import timetravel
from timetravel.server_app._testing import write_synthetic_run
from timetravel.errors import StoreError, TimetravelError
from timetravel.table import Table


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    path = write_synthetic_run(tmp_path_factory.mktemp("nb") / "run", n_samples=300, n_classes=4, n_epochs=4, grid=32)
    timetravel.detect(timetravel.RunStore(path), verbose=False)
    return path


# --------------------------------------------------------------------------- tables


def test_table_views_escape_and_truncate():
    t = Table({"sample": np.arange(30), "why": [["a <b>", "c"]] * 30, "score": np.linspace(0, 1, 30)}, title="t & u")
    page = t._repr_html_()
    assert "<caption>t &amp; u</caption>" in page and "<li>a &lt;b&gt;</li>" in page
    assert page.count("<tr>") == 21 and "10 more rows (30 in all)" in page  # header + 20 rows
    text = repr(t)
    assert text.splitlines()[1].split() == ["sample", "why", "score"] and "a <b>; c" in text
    assert len(t.head(3)) == 3 and t.to_dicts()[1] == {"sample": 1, "why": ["a <b>", "c"], "score": 1 / 29}
    with pytest.raises(ValueError, match="equal lengths"):
        Table({"a": [1, 2], "b": [1]})
    with pytest.raises(KeyError, match="the table has sample, why, score"):
        t["nope"]


def test_table_to_pandas():
    pd = pytest.importorskip("pandas")
    frame = Table({"sample": np.array([3, 1]), "reasons": [["x"], ["y", "z"]]}).to_pandas()
    assert isinstance(frame, pd.DataFrame) and frame["sample"].tolist() == [3, 1]
    assert frame["reasons"].tolist() == [["x"], ["y", "z"]]


def test_ranking_table_follows_the_detection(run):
    detection = timetravel.load_detection(timetravel.RunStore(run))
    table = timetravel.ranking_table(run, top=7)
    assert table.columns == ["rank", "sample", "score", "label", "suggested", "predicted", "reasons"]
    assert table["sample"].tolist() == detection.ranking()[:7].tolist()
    assert np.all(np.diff(table["score"]) <= 0) and table["rank"].tolist() == list(range(1, 8))
    first = int(table["sample"][0])
    assert table["reasons"][0] == detection.detector.reasons(first)
    assert table["label"][0] == f"class {detection.features.labels[first]}"
    assert len(timetravel.ranking_table(run, top=None)) == 300
    with pytest.raises(TimetravelError, match="top must be a non-negative integer"):
        timetravel.ranking_table(run, top=-1)


def test_features_table_has_every_feature_in_sample_order(run):
    table = timetravel.features_table(timetravel.RunStore(run))
    detection = timetravel.load_detection(timetravel.RunStore(run))
    assert table.columns[:3] == ["sample", "label", "score"] and table.columns[3:] == detection.features.names
    name = detection.features.names[0]
    np.testing.assert_allclose(table[name], detection.features.column(name))
    assert len(table) == 300


def test_tables_of_a_run_without_detection_say_what_to_run(tmp_path):
    path = write_synthetic_run(tmp_path / "raw", n_samples=40, n_epochs=2, grid=16, project=False)
    with pytest.raises(StoreError, match="run `timetravel detect"):
        timetravel.ranking_table(path)


def test_show_outside_a_notebook_points_to_serve(run):
    with pytest.raises(TimetravelError, match="outside one, run `timetravel serve RUN`"):
        timetravel.show(run)


# --------------------------------------------------------------------------- in a real kernel


KERNEL = "timetravel-test"


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec running this interpreter (the one timetravel is installed in), whatever else is installed."""
    pytest.importorskip("ipykernel")
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def _notebook(run: Path, page_origin: str):
    import nbformat

    cells = [
        "import timetravel\nRUN = %r" % str(run),
        "timetravel.ranking_table(RUN, top=5)",
        "timetravel.features_table(RUN).to_pandas().shape",
        f"app = timetravel.show(RUN, notebook_url={page_origin!r}, resources='inline')\napp",
    ]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])


def _outputs(cell, mime: str) -> list[str]:
    return [o["data"][mime] for o in cell.outputs if "data" in o and mime in o["data"]]


@pytest.fixture
def kernel_notebook(run, tmp_path, kernel):
    """The notebook executed in a live kernel: yields ``(notebook, client)`` while the kernel still runs."""
    from nbclient import NotebookClient

    nb = _notebook(run, "127.0.0.1:8888")
    client = NotebookClient(nb, timeout=180, kernel_name=kernel, resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        yield nb, client


def _app_url(nb) -> str:
    text = _outputs(nb.cells[3], "text/plain")[-1]
    return re.search(r"at (http://127\.0\.0\.1:\d+/)", text).group(1)


@pytest.mark.slow
def test_notebook_shows_tables_and_embeds_the_app(kernel_notebook, run):
    import nbformat

    nb, client = kernel_notebook
    (ranking,) = _outputs(nb.cells[1], "text/html")
    assert "<table class='tt-table'>" in ranking and ranking.count("<tr>") == 6
    n_features = len(timetravel.load_detection(timetravel.RunStore(run)).features.names)
    assert _outputs(nb.cells[2], "text/plain") == [f"(300, {3 + n_features})"]
    shown = nb.cells[3]
    assert not [o for o in shown.outputs if o.get("output_type") == "error"]
    url = _app_url(nb)
    scripts = "".join(_outputs(shown, "text/html"))
    assert f"{url}autoload.js" in scripts  # the output cell loads the app from the kernel's server
    # the kernel is idle now, so its event loop serves the app: a session of the run's document
    with urllib.request.urlopen(url, timeout=60) as response:
        page = response.read().decode()
    assert response.status == 200 and "<title>timetravel: synthetic-app-300</title>" in page
    nb.cells.append(nbformat.v4.new_code_cell("app.stop()"))
    client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)


@pytest.mark.slow
@pytest.mark.browser
def test_embedded_app_renders_in_chromium(run, tmp_path, kernel):
    """The cell's outputs, put in a page the way Jupyter does, show the live app in headless Chromium."""
    from nbclient import NotebookClient
    from playwright.sync_api import sync_playwright

    from timetravel.server_app._testing import INSTRUMENT_JS, launch_chromium

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    page_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=page_server.serve_forever, daemon=True).start()
    origin = f"127.0.0.1:{page_server.server_port}"
    nb = _notebook(run, origin)
    client = NotebookClient(nb, timeout=180, kernel_name=kernel, resources={"metadata": {"path": str(tmp_path)}})
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index)
            shown = nb.cells[3]
            body = "".join(_outputs(shown, "text/html"))
            scripts = "".join(f"<script>{js}</script>" for js in _outputs(shown, "application/javascript"))
            (tmp_path / "cell.html").write_text(f"<html><body>{scripts}{body}</body></html>")
            with sync_playwright() as pw:
                browser = launch_chromium(pw)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.add_init_script(INSTRUMENT_JS)
                page.goto(f"http://{origin}/cell.html")
                # dots drawn, and the ranking (computed off the kernel's event loop) in the queue
                page.wait_for_function("() => window.__tt.first != null", timeout=90_000)
                page.wait_for_function("() => window.__tt.queueTop() != null", timeout=60_000)
                title = page.evaluate("() => Bokeh.documents[0].get_model_by_name('canvas').title.text")
                page.screenshot(path=str(tmp_path / "notebook-app.png"))
                browser.close()
        assert "epoch" in title.lower() and not errors, (title, errors)
    finally:
        page_server.shutdown()
