"""Tests of timetravel.projection: graph, layout, inverse map, territories, metrics, the projector and CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from timetravel.projection import (
    ProjectionError,
    TemporalProjector,
    knn_preservation,
    load_inverse_map,
    prediction_preservation,
    reconstruction_error,
    temporal_consistency,
)
from timetravel.projection import store as proj_io
from timetravel.numerics import all_knn, knn_search
from timetravel.projection.graph import fuzzy_graph, group_graph, neighbour_overlap, smooth_knn_dist
from timetravel.projection.layout import LayoutParams, align_to, find_ab_params, initial_layout, optimize_layout
from timetravel.projection.territory import canvas_extent, grid_centers, territory_from_logits
from timetravel.store import RunStore, RunWriter

FAST = dict(decoder_steps=60, grid_size=24, init_epochs=100, max_epochs=60, min_epochs=10, metric_samples=50)


def _blobs_run(path: Path, *, n: int = 200, dim: int = 8, epochs: int = 3, seed: int = 0) -> RunStore:
    """Two Gaussian blobs drifting apart over the epochs; a linear head whose boundary is their bisector."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    held_labels = np.arange(40) % 2
    writer = RunWriter.create(path, labels=labels, n_classes=2, embedding_dim=dim, heldout_labels=held_labels,
                              embedding_dtype="float32", dataset="blobs")
    direction = np.zeros(dim)
    direction[0] = 1.0
    weight = np.stack([-direction, direction])  # logit difference = 2 * x0: class 1 iff x0 > 0
    bias = np.zeros(2)
    base = rng.normal(size=(n, dim))
    held = rng.normal(size=(40, dim))
    for e in range(epochs):
        sep = 2.5 + e
        emb = base + np.outer(np.where(labels == 1, sep, -sep), direction) + 0.05 * e * rng.normal(size=(n, dim))
        hemb = held + np.outer(np.where(held_labels == 1, sep, -sep), direction)
        writer.write_epoch(e, emb, emb @ weight.T + bias, head=(weight, bias),
                           heldout=(hemb, hemb @ weight.T + bias))
    return RunStore(path)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> RunStore:
    return _blobs_run(tmp_path_factory.mktemp("blobs") / "run")


def _copy(store: RunStore, dest: Path) -> RunStore:
    shutil.copytree(store.path, dest)
    shutil.rmtree(dest / "projection", ignore_errors=True)
    return RunStore(dest)


def _frames(store: RunStore) -> dict[int, tuple]:
    out = {}
    for e in store.projected_epochs:
        t = store.territory(e)
        out[e] = (np.asarray(store.projection(e)), np.asarray(store.projection(e, "heldout")), t.classes, t.confidence)
    return out


# --------------------------------------------------------------------------- graph


def test_smooth_knn_dist_hits_log2_k():
    rng = np.random.default_rng(0)
    dist = np.sort(rng.random((50, 15)) * 3, axis=1)
    sigma, rho = smooth_knn_dist(dist)
    total = np.exp(-np.maximum(dist - rho[:, None], 0) / sigma[:, None]).sum(axis=1)
    np.testing.assert_allclose(total, np.log2(16), rtol=1e-3)
    np.testing.assert_allclose(rho, dist[:, 0])


def test_fuzzy_graph_is_symmetric_with_weights_in_unit_interval():
    x = np.random.default_rng(1).normal(size=(80, 5)).astype(np.float32)
    g = fuzzy_graph(*all_knn(x, 6))
    w = {(int(h), int(t)): float(v) for h, t, v in zip(g.head, g.tail, g.weight)}
    assert all(w[(t, h)] == pytest.approx(v) for (h, t), v in w.items())
    assert 0 < g.weight.min() and g.weight.max() <= 1 + 1e-6
    assert g.knn.shape == (80, 6) and not (g.knn == np.arange(80)[:, None]).any()


def test_approximate_knn_search_agrees_with_exact():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(3000, 96)) + 4 * rng.normal(size=(10, 96))[rng.integers(0, 10, 3000)]).astype(np.float32)
    d_exact, i_exact = knn_search(x, None, 10, exact=True)
    d_approx, i_approx = knn_search(x, None, 10, exact=False)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_exact, i_approx)])
    assert recall > 0.8
    assert np.all(d_approx >= d_exact - 1e-3)  # approximate neighbours are never closer than the true ones
    assert not (i_approx == np.arange(3000)[:, None]).any()


def test_reweighted_scales_only_edges_across_groups():
    x = np.random.default_rng(3).normal(size=(40, 3)).astype(np.float32)
    g = fuzzy_graph(*all_knn(x, 5))
    groups = np.arange(40) % 2
    h = g.reweighted(groups, 0.25)
    across = groups[g.head] != groups[g.tail]
    np.testing.assert_allclose(h.weight[across], g.weight[across] * 0.25, rtol=1e-6)
    np.testing.assert_array_equal(h.weight[~across], g.weight[~across])


def test_group_graph_joins_only_points_of_one_group_and_union_adds_its_edges():
    x = np.random.default_rng(4).normal(size=(60, 3)).astype(np.float32)
    groups = np.r_[np.zeros(30, int), np.ones(27, int), np.full(3, 2)]  # group 2 is too small for k=4
    g = group_graph(x, groups, 4)
    assert (groups[g.head] == groups[g.tail]).all() and (g.head != g.tail).all()
    assert not np.isin(np.arange(57, 60), g.head).any()
    assert ((g.weight > 0) & (g.weight <= 1)).all()
    base = fuzzy_graph(*all_knn(x, 5))
    both = base.union(g)
    pairs = lambda graph: dict(zip(zip(graph.head.tolist(), graph.tail.tolist()), graph.weight.tolist()))
    a, b, u = pairs(base), pairs(g), pairs(both)
    assert set(u) == set(a) | set(b)
    for edge, w in u.items():
        wa, wb = a.get(edge, 0.0), b.get(edge, 0.0)
        assert w == pytest.approx(wa + wb - wa * wb, rel=1e-5)
    np.testing.assert_array_equal(both.knn, base.knn)


def test_prediction_neighbours_change_the_layout_and_the_settings(tiny_run, tmp_path):
    plain = TemporalProjector(**FAST, verbose=False).fit(tiny_run)
    other = RunStore(shutil.copytree(tiny_run.path, tmp_path / "other"))
    TemporalProjector(**FAST, prediction_neighbors=3, verbose=False).fit(other, overwrite=True)
    assert not np.allclose(tiny_run.projection(2), other.projection(2))
    assert json.loads((plain.path_ / "manifest.json").read_text())["params"]["prediction_neighbors"] == 0


def test_neighbour_overlap():
    prev = np.array([[1, 2, 3], [0, 2, 3]])
    cur = np.array([[3, 2, 1], [4, 5, 0]])
    np.testing.assert_allclose(neighbour_overlap(prev, cur), [1.0, 1 / 3])
    with pytest.raises(ValueError, match="differ in shape"):
        neighbour_overlap(prev, cur[:, :2])


# --------------------------------------------------------------------------- layout


def _toy_graph(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(60, 4)), rng.normal(size=(60, 4)) + 8]).astype(np.float32)
    return x, fuzzy_graph(*all_knn(x, 8))


def test_layout_is_deterministic_and_separates_clusters():
    x, g = _toy_graph()
    params = LayoutParams(*find_ab_params())
    a = optimize_layout(initial_layout(x), g, params, n_epochs=150, learning_rate=1.0, seed=3)
    b = optimize_layout(initial_layout(x), g, params, n_epochs=150, learning_rate=1.0, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (120, 2)
    assert knn_preservation(x, a, k=8) > 0.5
    between = np.linalg.norm(a[:60].mean(0) - a[60:].mean(0))
    within = np.linalg.norm(a[:60] - a[:60].mean(0), axis=1).mean()
    assert between > 2 * within


def test_strong_springs_hold_points_at_their_anchor():
    x, g = _toy_graph()
    params = LayoutParams(*find_ab_params())
    start = initial_layout(x)
    held = optimize_layout(start, g, params, n_epochs=30, learning_rate=0.1, seed=0,
                           anchor=start, anchor_strength=np.full(120, 1e6))
    free = optimize_layout(start, g, params, n_epochs=30, learning_rate=0.1, seed=0)
    assert np.abs(held - start).max() < np.abs(free - start).max() / 10


def test_align_to_removes_a_rotation_but_not_a_reflection():
    rng = np.random.default_rng(0)
    prev = rng.normal(size=(50, 2)).astype(np.float32)
    c, s = np.cos(0.7), np.sin(0.7)
    rotated = prev @ np.array([[c, -s], [s, c]], dtype=np.float32) + 3
    np.testing.assert_allclose(align_to(prev, rotated), prev, atol=1e-5)
    flipped = prev * np.array([-1, 1], dtype=np.float32)
    assert np.abs(align_to(prev, flipped) - prev).max() > 0.5  # a mirror image is not undone by rotating


# --------------------------------------------------------------------------- metrics and territories


def test_knn_preservation_bounds():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    assert knn_preservation(x, 3 * x + 1, k=10) == 1.0
    assert knn_preservation(x, rng.normal(size=(200, 2)), k=10) < 0.2
    with pytest.raises(ValueError, match="200 rows but xy has 10"):
        knn_preservation(x, x[:10])


def test_temporal_consistency_and_simple_metrics():
    rng = np.random.default_rng(0)
    x0 = rng.normal(size=(100, 6))
    step = rng.random(100)[:, None] * rng.normal(size=(100, 6))
    y0 = rng.normal(size=(100, 2))
    moved = np.linalg.norm(step, axis=1)
    y1 = y0 + np.stack([moved**2, np.zeros(100)], axis=1)  # canvas moves monotonically with the embedding
    assert temporal_consistency(x0, x0 + step, y0, y1) == pytest.approx(1.0)
    assert np.isnan(temporal_consistency(x0, x0, y0, y0))
    assert prediction_preservation(np.array([0, 1, 1]), np.array([0, 1, 0])) == pytest.approx(2 / 3)
    assert reconstruction_error(x0, x0) == 0.0
    assert reconstruction_error(x0, np.broadcast_to(x0.mean(0), x0.shape)) == pytest.approx(1.0)


def test_territory_grid_orientation():
    extent = (-1.0, 1.0, -2.0, 2.0)
    centers = grid_centers(extent, 4)
    assert centers[0].tolist() == [-0.75, -1.5]  # row 0, column 0: bottom left
    assert centers[3].tolist() == [0.75, -1.5]  # end of row 0: bottom right
    assert centers[-1].tolist() == [0.75, 1.5]  # last row: top
    logits = np.stack([np.zeros(16), centers[:, 1]], axis=1)  # class 1 above y = 0
    classes, conf = territory_from_logits(logits, 4)
    assert classes.dtype == np.uint8 and conf.dtype == np.uint8
    assert (classes[:2] == 0).all() and (classes[2:] == 1).all()
    assert conf[0, 0] == round(255 / (1 + np.exp(-1.5)))


def test_canvas_extent_pads_around_all_points():
    x0, x1, y0, y1 = canvas_extent(np.array([[0, 0], [10, 2]]), np.array([[-1, 4]]), padding=0.1)
    assert (x0, x1) == pytest.approx((-2.1, 11.1)) and (y0, y1) == pytest.approx((-0.4, 4.4))


# --------------------------------------------------------------------------- the projector


def test_fit_writes_the_documented_format(tiny_run):
    projector = TemporalProjector(**FAST, verbose=False).fit(tiny_run)
    store = RunStore(tiny_run.path)
    assert projector.epochs_ == store.projected_epochs == store.epochs
    manifest = json.loads((store.path / "projection" / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["params"]["grid_size"] == 24
    for e in store.epochs:
        xy = store.projection(e)
        assert xy.shape == (store.n_samples, 2) and xy.dtype == np.float32
        assert store.projection(e, "heldout").shape == (store.n_heldout, 2)
        terr = store.territory(e)
        assert terr.classes.shape == terr.confidence.shape == (24, 24)
        assert terr.classes.dtype == np.uint8 and terr.classes.max() < store.n_classes
        x0, x1, y0, y1 = terr.extent
        assert x0 < xy[:, 0].min() and xy[:, 0].max() < x1 and y0 < xy[:, 1].min() and xy[:, 1].max() < y1
        metrics = projector.metrics_[e]
        for split in ("train", "heldout"):
            assert set(metrics[split]) == {"knn_preservation", "prediction_preservation",
                                           "reconstruction_error", "temporal_consistency"}
            assert 0 <= metrics[split]["knn_preservation"] <= 1
        assert (metrics["train"]["temporal_consistency"] is None) == (e == store.epochs[0])


def test_inverse_map_round_trip_reproduces_the_territory(tiny_run):
    TemporalProjector(**FAST, verbose=False).fit(tiny_run)
    store = RunStore(tiny_run.path)
    e = store.epochs[-1]
    inv = load_inverse_map(store, e)
    terr = store.territory(e)
    logits = inv.logits(grid_centers(terr.extent, 24), *store.head(e))
    np.testing.assert_array_equal(territory_from_logits(logits, 24)[0], terr.classes)
    assert inv(store.projection(e)).shape == (store.n_samples, store.embedding_dim)


def test_territories_match_a_known_linear_boundary(blobs, tmp_path):
    """Two blobs split by x0 = 0: the class read off the canvas matches the head, and both classes own a region."""
    store = _copy(blobs, tmp_path / "run")
    TemporalProjector(decoder_steps=400, grid_size=40, verbose=False).fit(store)
    for e in store.epochs:
        terr = store.territory(e)
        x0, x1, y0, y1 = terr.extent
        for split, labels in (("train", store.labels), ("heldout", store.heldout_labels)):
            xy = np.asarray(store.projection(e, split))
            col = np.clip(((xy[:, 0] - x0) / (x1 - x0) * 40).astype(int), 0, 39)
            row = np.clip(((xy[:, 1] - y0) / (y1 - y0) * 40).astype(int), 0, 39)
            assert np.mean(terr.classes[row, col] == labels) >= 0.95, (e, split)
        share = np.bincount(terr.classes.ravel(), minlength=2) / terr.classes.size
        assert share.min() > 0.15
        # the inverse map of a blob's centre on the canvas lands on the right side of the boundary
        inv = load_inverse_map(store, e)
        xy = np.asarray(store.projection(e))
        for cls in (0, 1):
            centre = np.median(xy[store.labels == cls], axis=0, keepdims=True)
            assert np.sign(inv(centre)[0, 0]) == (1 if cls else -1)


def test_projection_is_deterministic_under_a_seed(tiny_run, tmp_path):
    other = _copy(tiny_run, tmp_path / "copy")
    TemporalProjector(**FAST, random_state=7, verbose=False).fit(tiny_run)
    TemporalProjector(**FAST, random_state=7, verbose=False).fit(other)
    a, b = _frames(RunStore(tiny_run.path)), _frames(RunStore(other.path))
    for e in a:
        for left, right in zip(a[e], b[e]):
            np.testing.assert_array_equal(left, right)
    third = _copy(tiny_run, tmp_path / "third")
    TemporalProjector(**FAST, random_state=8, verbose=False).fit(third)
    assert not np.array_equal(_frames(RunStore(third.path))[2][0], a[2][0])


def test_resume_after_interruption_equals_uninterrupted(tiny_run, tmp_path, monkeypatch):
    whole = _copy(tiny_run, tmp_path / "whole")
    TemporalProjector(**FAST, verbose=False).fit(whole)

    real_write = proj_io.write_epoch
    calls = []

    def crash_on_second(directory, manifest, epoch, *args, **kwargs):
        calls.append(epoch)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real_write(directory, manifest, epoch, *args, **kwargs)

    monkeypatch.setattr(proj_io, "write_epoch", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        TemporalProjector(**FAST, n_jobs=2, verbose=False).fit(tiny_run)
    assert RunStore(tiny_run.path).projected_epochs == [0]
    monkeypatch.setattr(proj_io, "write_epoch", real_write)

    resumed = TemporalProjector(**FAST, verbose=False).fit(tiny_run)
    assert resumed.epochs_ == [0, 1, 2]
    a, b = _frames(RunStore(whole.path)), _frames(RunStore(tiny_run.path))
    for e in a:
        for left, right in zip(a[e], b[e]):
            np.testing.assert_array_equal(left, right)


def test_until_then_continue_equals_one_go(tiny_run, tmp_path):
    whole = _copy(tiny_run, tmp_path / "whole")
    TemporalProjector(**FAST, verbose=False).fit(whole)
    first = TemporalProjector(**FAST, verbose=False).fit(tiny_run, until=0)
    assert first.epochs_ == [0]
    TemporalProjector(**FAST, verbose=False).fit(tiny_run)
    a, b = _frames(RunStore(whole.path)), _frames(RunStore(tiny_run.path))
    for e in (1, 2):
        np.testing.assert_array_equal(a[e][0], b[e][0])


def test_other_settings_need_overwrite(tiny_run):
    TemporalProjector(**FAST, verbose=False).fit(tiny_run, until=0)
    with pytest.raises(ProjectionError, match=r"other settings \(n_neighbors\).*overwrite"):
        TemporalProjector(**{**FAST, "n_neighbors": 10}, verbose=False).fit(tiny_run)
    done = TemporalProjector(**{**FAST, "n_neighbors": 10}, verbose=False).fit(tiny_run, overwrite=True)
    assert done.epochs_ == [0, 1, 2]


def _changed(value):
    """Another valid value of a projector setting."""
    if value is None:
        return 7
    return value + 1 if isinstance(value, int) else value / 2


def test_every_setting_that_shapes_the_result_is_checked_on_resume(tmp_path):
    import inspect

    signature = inspect.signature(TemporalProjector.__init__).parameters
    params = TemporalProjector()._result_params()
    assert set(params) == set(signature) - {"self", "n_jobs", "backend", "chunk_size", "verbose"}
    manifest = {"method": "timetravel-temporal-umap", "params": dict(params)}
    TemporalProjector._check_resumable(manifest, params, tmp_path)  # the same settings resume
    for name, value in params.items():
        with pytest.raises(ProjectionError, match=rf"other settings \({name}\)"):
            TemporalProjector._check_resumable(manifest, {**params, name: _changed(value)}, tmp_path)
    with pytest.raises(ProjectionError, match=r"other settings \(smoothness\)"):  # a manifest lacking a setting
        TemporalProjector._check_resumable({**manifest, "params": {k: v for k, v in params.items() if k != "smoothness"}},
                                           params, tmp_path)


def test_a_changed_setting_is_refused_on_resume(tiny_run):
    TemporalProjector(**FAST, verbose=False).fit(tiny_run, until=0)
    with pytest.raises(ProjectionError, match=r"other settings \(fourier_scale\).*overwrite"):
        TemporalProjector(**FAST, fourier_scale=6.0, verbose=False).fit(tiny_run)
    assert TemporalProjector(**FAST, n_jobs=1, chunk_size=3, verbose=False).fit(tiny_run).epochs_ == [0, 1, 2]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_neighbors": 0}, "n_neighbors must be a positive integer, got 0"),
        ({"grid_size": 2.5}, "grid_size must be a positive integer, got 2.5"),
        ({"learning_rate": -1}, "learning_rate must be a finite number > 0, got -1"),
        ({"anchor_strength": float("nan")}, "anchor_strength must be a finite number >= 0"),
        ({"min_epochs": 50, "max_epochs": 10}, r"min_epochs \(50\) must not exceed max_epochs \(10\)"),
        ({"n_neighbors": 60}, "n_neighbors=60 needs more than 60 samples, the run has 60"),
        ({"cross_prediction_weight": 0}, r"cross_prediction_weight must be in \(0, 1\], got 0"),
        ({"prediction_neighbors": -1}, "prediction_neighbors must be an integer >= 0, got -1"),
        ({"decoder_steps": 0}, "decoder_steps must be a positive integer or None, got 0"),
    ],
)
def test_bad_settings_are_refused(tiny_run, params, message):
    with pytest.raises(ProjectionError, match=message):
        TemporalProjector(**{**FAST, **params}, verbose=False).fit(tiny_run)


def test_unprojected_epoch_has_a_clear_error(tiny_run):
    from timetravel.errors import StoreError

    TemporalProjector(**FAST, verbose=False).fit(tiny_run, until=0)
    with pytest.raises(StoreError, match="epoch 1 is not projected yet"):
        load_inverse_map(RunStore(tiny_run.path), 1)


def test_dask_backend_on_a_local_cluster(tiny_run, tmp_path):
    distributed = pytest.importorskip("distributed")
    reference = _copy(tiny_run, tmp_path / "reference")
    TemporalProjector(**FAST, verbose=False).fit(reference)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        done = TemporalProjector(**FAST, backend="dask", n_jobs=-1, verbose=False).fit(tiny_run)
    assert done.epochs_ == [0, 1, 2]
    a, b = _frames(RunStore(reference.path)), _frames(RunStore(tiny_run.path))
    for e in a:
        np.testing.assert_allclose(a[e][0], b[e][0], atol=1e-4)
        np.testing.assert_array_equal(a[e][2], b[e][2])


# --------------------------------------------------------------------------- command line


def test_cli_project_prints_metrics_and_resumes(tiny_run, capsys):
    from timetravel.cli import main

    args = ["project", str(tiny_run.path), "--n-jobs", "1", "--grid-size", "24", "--decoder-steps", "60"]
    assert main(["-q", *args, "--until", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 epochs projected" in out and "      train kNN" in out and "    heldout kNN" in out and " mean " in out
    assert main(["-q", *args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["metrics"]) == ["0", "1", "2"]
    assert main(["-q", *args, "--n-neighbors", "9"]) == 2
    assert "other settings (n_neighbors)" in capsys.readouterr().err


def test_cli_dask_needs_a_scheduler(tiny_run, capsys):
    from timetravel.cli import main

    assert main(["project", str(tiny_run.path), "--backend", "dask"]) == 2
    assert "--backend dask needs --scheduler ADDR" in capsys.readouterr().err


def test_cli_dask_backend(tiny_run, capsys):
    distributed = pytest.importorskip("distributed")
    from timetravel.cli import main

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None, scheduler_port=0) as cluster:
        code = main(["-q", "project", str(tiny_run.path), "--backend", "dask", "--scheduler",
                     cluster.scheduler_address, "--grid-size", "24", "--decoder-steps", "60"])
    assert code == 0
    assert "3 epochs projected" in capsys.readouterr().out
    assert RunStore(tiny_run.path).projected_epochs == [0, 1, 2]


# --------------------------------------------------------------------------- baselines (umap-learn: slow import)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pca", "umap", "aligned_umap"])
def test_baselines_return_one_layout_per_epoch(blobs, name):
    from projection_baselines import baseline_layouts  # benchmarks/

    rows = np.arange(0, blobs.n_samples, 2)
    layouts, seconds = baseline_layouts(name, blobs, blobs.epochs, rows, **({} if name == "pca" else {"random_state": 0}))
    assert sorted(layouts) == blobs.epochs and seconds > 0
    assert all(y.shape == (len(rows), 2) and y.dtype == np.float32 for y in layouts.values())
    assert knn_preservation(np.asarray(blobs.embedding(2))[rows], layouts[2], k=10) > 0.1


def test_a_run_projected_with_a_reference_sits_where_the_reference_does(tiny_run, tmp_path):
    TemporalProjector(**FAST, random_state=7, verbose=False).fit(tiny_run)
    aligned, free = _copy(tiny_run, tmp_path / "aligned"), _copy(tiny_run, tmp_path / "free")
    TemporalProjector(**FAST, random_state=8, verbose=False).fit(aligned, reference=tiny_run)
    TemporalProjector(**FAST, random_state=8, verbose=False).fit(free)
    ref, a, f = (RunStore(s.path) for s in (tiny_run, aligned, free))
    for e in ref.projected_epochs:
        scale = np.ptp(np.asarray(ref.projection(e)), axis=0).mean()
        off_aligned = np.linalg.norm(np.asarray(a.projection(e)) - ref.projection(e), axis=1).mean() / scale
        off_free = np.linalg.norm(np.asarray(f.projection(e)) - ref.projection(e), axis=1).mean() / scale
        assert off_aligned < 0.1 and off_aligned < off_free / 2
    manifest = json.loads((aligned.path / "projection" / "manifest.json").read_text())
    assert manifest["params"]["reference"] == str(tiny_run.path.resolve())
    with pytest.raises(ProjectionError, match=r"other settings \(reference\)"):
        TemporalProjector(**FAST, random_state=8, verbose=False).fit(aligned)


def test_a_reference_must_hold_the_same_samples_and_a_projection(tiny_run, blobs, tmp_path):
    with pytest.raises(ProjectionError, match="align only runs of the same samples"):
        TemporalProjector(**FAST, verbose=False).fit(_copy(tiny_run, tmp_path / "a"), reference=blobs)
    unprojected = _copy(tiny_run, tmp_path / "b")
    with pytest.raises(ProjectionError, match="has no projection; run `timetravel project"):
        TemporalProjector(**FAST, verbose=False).fit(_copy(tiny_run, tmp_path / "c"), reference=unprojected)
