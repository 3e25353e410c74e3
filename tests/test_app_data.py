"""The app's read side: epoch frames and their cache, per-sample reads, territory colours."""

from __future__ import annotations

import json

import numpy as np
import pytest

from timetravel.server_app._testing import write_synthetic_run
from timetravel.server_app.data import RunData
from timetravel.server_app.palette import class_palette, hex_to_rgb, territory_image, territory_lut
from timetravel.errors import StoreError
from timetravel.store import softmax


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("app") / "run", n_samples=300, n_classes=4, n_epochs=6, grid=16)


@pytest.fixture
def data(run):
    return RunData(run)


def test_frame_matches_the_store(data):
    store = data.store
    frame = data.frame(3)
    xy = np.asarray(store.projection(3))
    probs = softmax(np.asarray(store.logits(3), dtype=np.float32))
    assert frame.x.dtype == frame.y.dtype == np.float32
    np.testing.assert_array_equal(frame.x, xy[:, 0])
    np.testing.assert_array_equal(frame.y, xy[:, 1])
    np.testing.assert_array_equal(frame.pred, probs.argmax(1))
    np.testing.assert_allclose(frame.confidence, probs.max(1), rtol=1e-6)
    assert frame.territory.shape == (16, 16) and frame.territory.dtype == np.uint32
    assert frame.extent == store.territory(3).extent


def test_frames_are_cached_and_reused(data):
    assert data.frame(2) is data.frame(2)


def test_cache_is_bounded_by_its_memory_budget(run):
    data = RunData(run, frame_cache_bytes=1)  # budget below one frame: the minimum applies
    assert data.max_frames() == 3
    for e in data.epochs:
        data.frame(e)
    assert data.cached_epochs() == data.epochs[-3:]


def test_prefetch_loads_the_neighbours(data):
    data.frame(3)
    data.prefetch(3)
    data.executor.submit(lambda: None).result()  # the prefetches queued before it have run
    data.executor.shutdown(wait=True)
    assert {2, 3, 4, 5} <= set(data.cached_epochs())


def test_bounds_cover_every_epoch(data):
    x0, x1, y0, y1 = data.bounds
    for e in data.epochs:
        ex0, ex1, ey0, ey1 = data.store.territory(e).extent
        assert x0 <= ex0 and ex1 <= x1 and y0 <= ey0 and ey1 <= y1


def test_sample_history_over_every_epoch(data):
    h = data.sample_history(7)
    given = data.labels[7]
    assert h.epochs.tolist() == data.store.epochs
    for k, e in enumerate(data.store.epochs):
        logits = np.asarray(data.store.logits(e)[7], dtype=np.float32)
        p = softmax(logits[None].copy())[0]
        assert h.given_prob[k] == pytest.approx(p[given], rel=1e-5)
        assert h.margin[k] == pytest.approx(logits[given] - np.delete(logits, given).max(), rel=1e-5)
        assert h.pred[k] == p.argmax()


def test_neighbours_are_the_nearest_in_embedding_space(data):
    # cosine similarity of the centred embedding, as the detector's neighbour features (D = 16: no PCA)
    emb = np.asarray(data.store.embedding(4), dtype=np.float64)
    emb -= emb.mean(axis=0)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    sim = emb @ emb[11]
    sim[11] = -np.inf
    got = data.neighbours(11, 4, k=5)
    assert 11 not in got
    np.testing.assert_allclose(np.sort(sim[got]), np.sort(sim)[-5:], rtol=1e-5)
    assert np.all(np.diff(sim[got]) <= 1e-6)


def test_inspector_shows_the_neighbours_the_reason_counted(tmp_path):
    from timetravel.detection import detect

    path = write_synthetic_run(tmp_path / "run", n_samples=200, n_classes=4, n_epochs=6, grid=8, embedding_dim=80)
    data = RunData(path)
    table = detect(data.store, verbose=False).features
    epoch = table.meta["neighbors_epoch"]
    counted = table.column("knn_disagreement_mid")
    labels = np.asarray(data.store.labels)
    for i in range(0, 200, 7):
        shown = data.neighbours(i, epoch)  # what the inspector lists at that epoch
        assert len(shown) == table.neighbors.shape[1] == 10
        assert set(shown.tolist()) == set(table.neighbors[i].tolist())
        assert np.mean(labels[shown] != labels[i]) == pytest.approx(counted[i])


def test_trails_follow_the_projection_in_the_given_order(data):
    xs, ys = data.trails(np.array([9, 2]))
    for sample, x, y in zip([9, 2], xs, ys):
        expected = np.array([data.store.projection(e)[sample] for e in data.epochs])
        np.testing.assert_array_equal(x, expected[:, 0])
        np.testing.assert_array_equal(y, expected[:, 1])


def test_bad_sample_index_is_refused(data):
    with pytest.raises(IndexError, match="sample 300 is out of range for a run of 300 samples"):
        data.sample_history(300)


def test_thumbnail_is_a_png_data_uri(data):
    assert data.thumbnail_png(0).startswith("data:image/png;base64,")


def test_run_without_projection_has_no_epochs(tmp_path):
    data = RunData(write_synthetic_run(tmp_path / "run", n_samples=50, project=False))
    assert data.epochs == []
    assert data.unprojected_epochs == data.store.epochs


def test_refresh_picks_up_a_new_projection(tmp_path):
    path = write_synthetic_run(tmp_path / "run", n_samples=50, n_epochs=3)
    manifest_path = path / "projection" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    full = dict(manifest["epochs"])
    manifest["epochs"] = {"0": full["0"]}
    manifest_path.write_text(json.dumps(manifest))
    data = RunData(path)
    assert data.epochs == [0] and data.unprojected_epochs == [1, 2]
    manifest["epochs"] = full
    manifest_path.write_text(json.dumps(manifest))
    import os

    os.utime(manifest_path, (1, 1))  # a different mtime, whatever the clock resolution
    assert data.refresh()
    assert data.epochs == [0, 1, 2]


def test_missing_run_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="no such run directory"):
        RunData(tmp_path / "missing")


def test_palette_colours_are_distinct():
    for k in (2, 10, 20, 37):
        colours = class_palette(k)
        assert len(colours) == len(set(colours)) == k


def test_territory_colour_fades_with_confidence():
    lut = territory_lut(class_palette(3))
    classes = np.array([[0, 1], [2, 2]], dtype=np.uint8)
    confidence = np.array([[255, 255], [0, 255]], dtype=np.uint8)
    image = territory_image(classes, confidence, lut)
    rgba = image.view(np.uint8).reshape(2, 2, 4)
    assert (rgba[..., 3] == 255).all()
    colour = hex_to_rgb(class_palette(3))[2]
    # the confident cell of class 2 is nearer its class colour than the uncertain one
    assert np.abs(rgba[1, 1, :3] - colour).sum() < np.abs(rgba[1, 0, :3] - colour).sum()
    # unknown classes (a corrupt grid) are drawn white instead of failing
    assert territory_image(np.array([[7]], dtype=np.uint8), np.array([[255]], dtype=np.uint8), lut)[0, 0] == 0xFFFFFFFF
