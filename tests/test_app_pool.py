"""The pool tab in-process (no browser): ranking, "label this" through feedback.jsonl, undo, other writers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.events import ButtonClick

from timetravel.feedback import FeedbackLog
from timetravel.server_app import main as app
from timetravel.server_app._testing import wait_until, write_synthetic_run
from timetravel.server_app.context import AppContext
from timetravel.server_app.session import Session
from timetravel.store import RunStore

N_POOL = 60


@pytest.fixture(scope="module")
def pool_template(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("pool") / "run", n_samples=200, n_epochs=4, grid=8,
                               n_heldout=80, n_pool=N_POOL, spread=1.6)  # fmt: skip


@pytest.fixture
def run(pool_template, tmp_path):
    """A fresh copy per test (its own feedback log)."""
    return shutil.copytree(pool_template, tmp_path / "run")


@pytest.fixture(autouse=True)
def synchronous(monkeypatch):
    """Background work and next-tick callbacks run at once (a test document has no event loop)."""
    monkeypatch.setattr(Session, "background", lambda self, work, done, what, failed=None: done(work()))
    monkeypatch.setattr(Session, "later", lambda self, fn, *args: fn(*args))


def _open(run, context: AppContext | None = None) -> tuple[Document, AppContext]:
    context = context or AppContext([str(run), "--renderer", "webgl"])
    _, review = context.open()
    wait_until(lambda: review.snapshot().status != "loading", timeout=30)  # no detection: "missing"
    doc = Document()
    app.main(doc, context)
    tabs = doc.select_one({"name": "side_tabs"})
    tabs.active = [t.title for t in tabs.tabs].index("Pool")
    return doc, context


def _click(doc: Document, name: str) -> None:
    button = doc.select_one({"name": name})
    button._trigger_event(ButtonClick(button))


def _rows(doc: Document) -> list[int]:
    return list(doc.select_one({"name": "pool_source"}).data["row"])


def _log(run) -> list[dict]:
    path = run / "feedback.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_run_without_pool_has_no_pool_tab(tmp_path):
    path = write_synthetic_run(tmp_path / "run", n_samples=60, n_epochs=3, grid=8)
    doc = Document()
    app.main(doc, AppContext([str(path)]))
    assert [t.title for t in doc.select_one({"name": "side_tabs"}).tabs] == list(app.TABS)


def test_the_pool_tab_is_built_when_opened_and_ranks_by_p_wrong(run):
    from timetravel.active import pool_features, score_pool

    context = AppContext([str(run), "--renderer", "webgl"])
    doc = Document()
    app.main(doc, context)
    assert doc.select_one({"name": "pool_table"}) is None  # not built until opened
    doc, _ = _open(run, context)
    data = doc.select_one({"name": "pool_source"}).data
    store = RunStore(run)
    scores = score_pool(store, pool_features(store))
    assert scores.calibrated
    assert data["row"] == np.argsort(-scores.scores, kind="stable")[: len(data["row"])].tolist()
    np.testing.assert_allclose(data["p_wrong"], scores.probability[data["row"]])
    assert data["p_wrong"] == sorted(data["p_wrong"], reverse=True)  # before any label the score follows p(wrong)
    assert data["score"] == sorted(data["score"], reverse=True)
    predicted = np.asarray(store.logits(3, "pool")).argmax(axis=1)
    names = store.class_names
    assert data["predicted"] == [names[predicted[i]] for i in data["row"]]
    assert all(data["reason"])
    top = data["row"][0]
    sample = doc.select_one({"name": "pool_sample"}).text
    assert f"Pool #{top}" in sample and "data:image/png;base64," in sample and "not labelled yet" in sample
    assert doc.select_one({"name": "pool_label_to"}).value == str(predicted[top])  # the prediction preselected
    assert "Top classes at epoch 3" in doc.select_one({"name": "pool_top"}).text
    assert list(doc.select_one({"name": "pool_history"}).renderers[0].data_source.data["epoch"]) == [0, 1, 2, 3]
    assert "labelled <b name='pool_labelled'>0</b> of 60" in doc.select_one({"name": "pool_counters"}).text


def test_label_this_saves_reranks_moves_on_and_undo_withdraws_it(run):
    from timetravel.cli import main as cli

    doc, context = _open(run)
    store = RunStore(run)
    predicted = np.asarray(store.logits(3, "pool")).argmax(axis=1)
    first = _rows(doc)[0]
    other = int((predicted[first] + 1) % store.n_classes)
    doc.select_one({"name": "pool_label_to"}).value = str(other)
    _click(doc, "pool_label")
    log = _log(run)
    assert [(e["sample"], e["decision"], e["label"], e["split"]) for e in log] == [(first, "label", other, "pool")]
    counters = doc.select_one({"name": "pool_counters"}).text
    assert f"✓ labelled pool #{first} as class {other}, saved to feedback.jsonl" in counters
    assert "labelled <b name='pool_labelled'>1</b> of 60" in counters
    assert "differs from the model's on <b name='pool_disagree'>1</b>" in counters
    truly = int(predicted[first] != store.pool_true_labels[first])
    assert f"the model was wrong on <b name='pool_truly_wrong'>{truly}</b> of the 1 labelled" in counters
    rows = _rows(doc)
    assert first not in rows  # re-ranked without it, and the next row chosen
    assert f"Pool #{rows[0]}" in doc.select_one({"name": "pool_sample"}).text
    assert context.pool().recommender.decisions_ == {first: True}  # the label taught the recommender
    second = rows[0]
    _click(doc, "pool_label")  # the preselected prediction: the model was right
    assert FeedbackLog(run, n_pool=N_POOL).read().pool_labels == {first: other, second: int(predicted[second])}
    assert context.pool().recommender.decisions_ == {first: True, second: False}

    out = run / "pool.json"
    assert cli(["export", str(run), "--pool", "--format", "json", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert [(r["pool_index"], r["label"], r["model_was_wrong"]) for r in payload["labelled"]] == [
        (first, other, True), (second, int(predicted[second]), False)]

    _click(doc, "pool_undo")
    assert (_log(run)[-1]["sample"], _log(run)[-1]["decision"], _log(run)[-1]["split"]) == (second, "undo", "pool")
    assert FeedbackLog(run, n_pool=N_POOL).read().pool_labels == {first: other}
    assert f"Pool #{second}" in doc.select_one({"name": "pool_sample"}).text  # its row shown again
    assert f"↶ undid the last label of pool #{second}" in doc.select_one({"name": "pool_counters"}).text
    assert context.pool().recommender.decisions_ == {first: True}


def test_pool_labels_stay_out_of_the_training_review(run):
    doc, context = _open(run)
    _, review = context.open()
    review.decide(5, "reject", "test")
    _click(doc, "pool_label")
    snap = review.snapshot()
    assert snap.decisions == {5: False} and len(snap.pool_labels) == 1
    assert "✓ rejected #5, saved" in doc.select_one({"name": "counters"}).text  # the queue confirms training decisions
    review.undo("test")  # the review's undo withdraws the training decision, not the pool label
    assert review.snapshot().decisions == {} and len(review.snapshot().pool_labels) == 1
    assert review.undo("test") is None


def test_another_process_labelling_the_pool_is_picked_up(run):
    doc, context = _open(run)
    _, review = context.open()
    top = _rows(doc)[0]
    FeedbackLog(run, n_pool=N_POOL).append(top, "label", "other-process", label=0, split="pool")
    assert review.sync_with_disk()  # what the review queue's poll of the log does every 2 s
    assert top not in _rows(doc)
    assert "labelled <b name='pool_labelled'>1</b> of 60" in doc.select_one({"name": "pool_counters"}).text
    second, _ = _open(run, context)  # another tab of the same server sees it too
    assert top not in _rows(second)


def test_a_crafted_class_value_falls_back_and_the_session_keeps_working(run):
    doc, _ = _open(run)
    first = _rows(doc)[0]
    select = doc.select_one({"name": "pool_label_to"})
    select.value = "999; drop"
    _click(doc, "pool_label")
    assert _log(run)[0]["label"] == 0  # put back on the first class, not a crash
    assert select.value in [value for value, _ in select.options]  # the next row's prediction preselected
    assert first not in _rows(doc)
    doc.select_one({"name": "epoch_slider"}).value = 1
    assert "Top classes at epoch 1" in doc.select_one({"name": "pool_top"}).text


def test_a_pool_without_thumbnails_works(tmp_path):
    path = write_synthetic_run(tmp_path / "run", n_samples=120, n_epochs=3, grid=8, n_pool=30, pool_thumbs=False)
    doc, _ = _open(path)
    sample = doc.select_one({"name": "pool_sample"}).text
    assert "no image" in sample and "Pool #" in sample
    # no held-out set: p(wrong) is one minus the model's confidence, and the page says so
    assert "one minus the model's confidence" in doc.select_one({"name": "pool_status"}).text
    data = doc.select_one({"name": "pool_source"}).data
    probs = RunStore(path).probabilities(2, "pool")[data["row"]]
    np.testing.assert_allclose(np.asarray(data["p_wrong"]) + probs.max(axis=1), 1.0, atol=1e-6)
    _click(doc, "pool_label")
    assert len(_log(path)) == 1


def test_an_epoch_without_the_pool_says_so_in_one_sentence(tmp_path):
    from timetravel.active import split_epochs

    run = write_synthetic_run(tmp_path / "run", n_samples=200, n_epochs=4, grid=8, n_heldout=80, n_pool=N_POOL,
                              spread=1.6, pool_epochs=[0, 2, 3])  # as if epoch 1 were a train pass  # fmt: skip
    assert split_epochs(RunStore(run)) == [0, 2, 3]
    doc, _ = _open(run)
    assert len(_rows(doc)) == 15
    doc.select_one({"name": "epoch_slider"}).value = 1
    top = doc.select_one({"name": "pool_top"}).text
    assert "Epoch 1 holds no pool rows" in top and "recorded at epochs 0, 2, 3" in top
    doc.select_one({"name": "epoch_slider"}).value = 2
    assert "Top classes at epoch 2" in doc.select_one({"name": "pool_top"}).text


def test_a_pool_that_cannot_be_ranked_says_why(tmp_path):
    path = write_synthetic_run(tmp_path / "run", n_samples=120, n_epochs=3, grid=8, n_pool=30, pool_epochs=[2])
    doc, _ = _open(path)
    status = doc.select_one({"name": "pool_status"}).text
    assert "The pool cannot be ranked" in status and "at least 2 epochs holding the pool rows" in status
    assert doc.select_one({"name": "pool_label"}).disabled
    assert doc.select_one({"name": "canvas"}) is not None  # the rest of the page works


def test_scores_stay_in_order_after_every_label(run):
    doc, _ = _open(run)
    store = RunStore(run)
    predicted = np.asarray(store.logits(3, "pool")).argmax(axis=1)
    for step in range(6):  # the model wrong on every other label: the ranking learns both ways
        first = _rows(doc)[0]
        doc.select_one({"name": "pool_label_to"}).value = str((predicted[first] + step % 2) % store.n_classes)
        _click(doc, "pool_label")
        data = doc.select_one({"name": "pool_source"}).data
        assert data["score"] == sorted(data["score"], reverse=True), step
        assert data["rank"] == list(range(1, len(data["row"]) + 1))
        assert first not in data["row"]
        assert f"ranking score <b name='pool_score'>{data['score'][0]:.2f}</b>" in doc.select_one(
            {"name": "pool_sample"}).text


def _pool_dots(doc: Document):
    return doc.select_one({"name": "pool_dots"}), doc.select_one({"name": "pool_dots_source"}).data


def test_the_pool_is_drawn_on_the_canvas_while_its_tab_is_open(run):
    from bokeh.events import Tap

    doc, _ = _open(run)
    renderer, dots = _pool_dots(doc)
    xy = np.asarray(RunStore(run).projection(3, "pool"))
    assert renderer.visible and len(dots["x"]) == N_POOL
    np.testing.assert_allclose(dots["x"], xy[:, 0])
    chosen = _rows(doc)[0]
    ring = doc.select_one({"name": "pool_focus_source"}).data
    assert ring["x"] == [pytest.approx(float(xy[chosen, 0]))] and ring["y"] == [pytest.approx(float(xy[chosen, 1]))]

    # a tap on a pool dot chooses that row in the pool tab
    other = next(i for i in range(N_POOL) if i != chosen)
    canvas = doc.select_one({"name": "canvas"})
    canvas._trigger_event(Tap(canvas, x=float(xy[other, 0]), y=float(xy[other, 1])))
    assert f"Pool #{other}" in doc.select_one({"name": "pool_sample"}).text
    assert doc.select_one({"name": "pool_focus_source"}).data["x"] == [pytest.approx(float(xy[other, 0]))]

    # the slider moves the triangles
    doc.select_one({"name": "epoch_slider"}).value = 1
    np.testing.assert_allclose(_pool_dots(doc)[1]["x"], np.asarray(RunStore(run).projection(1, "pool"))[:, 0])

    doc.select_one({"name": "pool_on_canvas"}).active = False  # the checkbox hides them
    assert not _pool_dots(doc)[0].visible and not doc.select_one({"name": "pool_focus_source"}).data["x"]
    doc.select_one({"name": "pool_on_canvas"}).active = True
    assert _pool_dots(doc)[0].visible
    doc.select_one({"name": "side_tabs"}).active = 0  # so does leaving the tab
    assert not _pool_dots(doc)[0].visible
    points = doc.select_one({"name": "points_source"}).data
    canvas._trigger_event(Tap(canvas, x=float(points["x"][7]), y=float(points["y"][7])))  # training dots again
    assert "Sample #7" in doc.select_one({"name": "inspector_summary"}).text


def test_an_epoch_without_pool_rows_hides_them_and_an_old_projection_says_how_to_add_them(tmp_path):
    run = write_synthetic_run(tmp_path / "run", n_samples=200, n_epochs=4, grid=8, n_heldout=80, n_pool=N_POOL,
                              spread=1.6, pool_epochs=[0, 2, 3])  # fmt: skip
    (run / "projection" / "0002" / "pool_xy.npy").unlink()  # as if projected before pool placement
    doc, _ = _open(run)
    assert _pool_dots(doc)[0].visible
    doc.select_one({"name": "epoch_slider"}).value = 1
    assert not _pool_dots(doc)[0].visible
    doc.select_one({"name": "epoch_slider"}).value = 2
    assert not _pool_dots(doc)[0].visible
    top = doc.select_one({"name": "pool_top"}).text
    assert "predates pool placement" in top and "--overwrite" in top
