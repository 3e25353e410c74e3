"""Abnormality detector: finds planted mislabels without true labels, explains itself, saves and loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from timetravel import RunStore, StoreError
from timetravel.detection import detect, load_detection
from timetravel.detector import AbnormalityDetector, DetectorError
from timetravel.features import FEATURES, FeatureTable, extract_features
from timetravel.simulate import simulate_run


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    store = simulate_run(tmp_path_factory.mktemp("d") / "run", n_samples=500, noise_rate=0.1, seed=5)
    return store, extract_features(store, verbose=False)


@pytest.mark.parametrize("method", ["cross-view", "consensus", "mean"])
def test_finds_planted_mislabels(toy, method):
    store, table = toy
    scores = AbnormalityDetector(method).fit(table).scores_
    n_noisy = int(store.noise_mask.sum())
    top = np.argsort(-scores)[:n_noisy]
    assert store.noise_mask[top].mean() >= 0.9


def test_never_reads_true_labels(toy, tmp_path):
    store, table = toy
    # the same features with the truth removed from the store give the same scores
    scores = AbnormalityDetector().fit(table).scores_
    hidden = simulate_run(tmp_path / "again", n_samples=500, noise_rate=0.1, seed=5)
    (hidden.path / "true_labels.npy").unlink()
    (hidden.path / "noise_mask.npy").unlink()
    manifest = json.loads((hidden.path / "run.json").read_text())
    manifest["has_true_labels"] = False
    (hidden.path / "run.json").write_text(json.dumps(manifest))
    blind = AbnormalityDetector().fit(extract_features(RunStore(hidden.path), verbose=False)).scores_
    np.testing.assert_allclose(scores, blind, rtol=1e-6)


def test_weights_and_reasons(toy):
    store, table = toy
    det = AbnormalityDetector().fit(table)
    assert (det.weights_ >= 0).all() and np.isclose(det.weights_.sum(), 1.0)
    worst = int(np.argmax(det.scores_))
    reasons = det.reasons(worst)
    assert 1 <= len(reasons) <= 3 and all(isinstance(r, str) and "% of samples" in r for r in reasons)
    # contributions add up to the weighted mean; the score subtracts the disagreement penalty from it
    contrib = det.contributions(worst)
    spread = np.sqrt(det.weights_ @ (det.transform(table.values[worst : worst + 1])[0] - contrib.sum()) ** 2)
    np.testing.assert_allclose(contrib.sum() - 0.5 * spread, det.scores_[worst], rtol=1e-5)
    best = int(np.argmin(det.scores_))
    assert det.reasons(best) == ["nothing unusual in its training dynamics"]


def test_reasons_bad_index(toy):
    _, table = toy
    det = AbnormalityDetector().fit(table)
    with pytest.raises(DetectorError, match=r"sample index must be an integer in \[0, 500\), got 500"):
        det.reasons(500)
    with pytest.raises(DetectorError, match="got -1"):
        det.reasons(-1)


def test_errors_before_fit_and_bad_params(toy):
    _, table = toy
    with pytest.raises(DetectorError, match="not fitted yet"):
        AbnormalityDetector().score_samples(table.values)
    with pytest.raises(DetectorError, match="method must be one of 'cross-view', 'consensus', 'mean', got 'magic'"):
        AbnormalityDetector("magic").fit(table)
    with pytest.raises(DetectorError, match="agreement must be a finite number >= 0, got -1"):
        AbnormalityDetector(agreement=-1).fit(table)
    with pytest.raises(DetectorError, match="must be a FeatureTable"):
        AbnormalityDetector().fit(np.zeros((10, 3)))


def test_save_and_load_round_trip(tmp_path):
    store = simulate_run(tmp_path / "run", n_samples=200, seed=2)
    with pytest.raises(StoreError, match=r"has no detection results yet; run `timetravel detect .*run` first"):
        load_detection(store)
    made = detect(store, verbose=False)
    loaded = load_detection(RunStore(store.path))
    np.testing.assert_array_equal(made.scores, loaded.scores)
    np.testing.assert_array_equal(made.features.values, loaded.features.values)
    np.testing.assert_array_equal(made.features.neighbors, loaded.features.neighbors)
    i = int(made.ranking()[0])
    assert made.detector.reasons(i) == loaded.detector.reasons(i)
    np.testing.assert_allclose(loaded.detector.scores_, made.scores, rtol=1e-5)
    assert not list((tmp_path / "run" / "features").glob(".*tmp"))


def test_load_refuses_damaged_files(tmp_path):
    store = simulate_run(tmp_path / "run", n_samples=100, seed=2)
    detect(store, verbose=False)
    d = tmp_path / "run" / "features"
    np.save(d / "scores.npy", np.zeros(99, dtype=np.float32))
    with pytest.raises(StoreError, match=r"scores.npy: expected shape \(100,\)"):
        load_detection(store)
    (d / "scores.npy").unlink()
    with pytest.raises(StoreError, match="scores.npy: file is missing"):
        load_detection(store)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="manifest.json: not valid JSON"):
        load_detection(store)


@pytest.mark.parametrize("name, value, what", [("neighbors.npy", 100, "sample numbers outside 0..99"),
                                               ("neighbors.npy", -1, "sample numbers outside 0..99"),
                                               ("suggested.npy", 99, r"classes outside 0..\d+")])
def test_load_refuses_out_of_range_indices_naming_the_file(tmp_path, name, value, what):
    store = simulate_run(tmp_path / "run", n_samples=100, seed=2)
    detect(store, verbose=False)
    path = tmp_path / "run" / "features" / name
    array = np.load(path)
    array.flat[7] = value
    np.save(path, array)
    with pytest.raises(StoreError, match=rf"features/{name}: holds {what} .*run `timetravel detect .*` again"):
        load_detection(store)


def test_load_refuses_features_of_another_version(tmp_path):
    store = simulate_run(tmp_path / "run", n_samples=100, seed=2)
    detect(store, verbose=False)
    path = tmp_path / "run" / "features" / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["has_neighbors"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"another timetravel version \(missing has_neighbors\); run `timetravel detect"):
        load_detection(store)
    manifest["has_neighbors"] = True
    manifest["detector"] = {"unknown": 1}
    path.write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="the saved detector cannot be restored"):
        load_detection(store)
    path.write_text("[]")
    with pytest.raises(StoreError, match="expected a JSON object"):
        load_detection(store)


def test_detect_command(tmp_path, capsys):
    from timetravel.cli import main

    simulate_run(tmp_path / "run", n_samples=150, seed=4)
    assert main(["-q", "detect", str(tmp_path / "run"), "--top", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in out["ranking"]] == [1, 2, 3]
    assert all(r["reasons"] for r in out["ranking"])
    assert main(["-q", "detect", str(tmp_path / "run"), "--top", "2"]) == 0
    text = capsys.readouterr().out
    assert "   1. sample" in text and "maybe" in text
    assert main(["-q", "detect", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_internal_samples_are_independent_of_a_noise_generator_with_the_same_seed():
    from timetravel._random import subsample

    flipped = np.random.default_rng(0).choice(50_000, 10_000, replace=False)  # what a seed-0 noise generator picks
    rows = subsample(50_000, 2_000, 0, "detector-reference")
    assert np.isin(rows, flipped).mean() < 0.3  # about 0.2, the noise rate; the plain default_rng(0) stream gives 1.0
    np.testing.assert_array_equal(rows, subsample(50_000, 2_000, 0, "detector-reference"))
    assert not np.array_equal(rows, subsample(50_000, 2_000, 0, "projection-metric-rows"))
    np.testing.assert_array_equal(subsample(10, 20, 0, "any"), np.arange(10))


def test_score_samples_takes_x_and_follows_scikit_learns_direction(toy):
    _, table = toy
    det = AbnormalityDetector().fit(table)
    np.testing.assert_allclose(det.score_samples(table.values), -det.scores_, rtol=1e-6)
    np.testing.assert_allclose(det.suspicion(table.values[:5]), det.scores_[:5], rtol=1e-6)
    assert np.argmin(det.score_samples(table.values)) == np.argmax(det.scores_)  # lower = more abnormal


def test_cross_view_weights_favour_the_features_both_views_support():
    from timetravel.detector import cross_view_weights

    rng = np.random.default_rng(0)
    bad = rng.random(4000) < 0.1
    hard = rng.random(4000) < 0.1  # clean but hard: high loss only, ordinary neighbours
    z = rng.normal(size=(4000, 5))
    z[:, 0] += 2.0 * bad  # a strong logit feature
    z[:, 1] += 0.5 * bad + 2.0 * hard  # a logit feature mostly about hard samples
    z[:, 2] += 0.0  # noise
    z[:, 3] += 1.5 * bad  # embedding view
    z[:, 4] += 0.3 * bad
    w = cross_view_weights(z, np.array([False, False, False, True, True]))
    assert np.isclose(w.sum(), 1.0) and (w >= 0).all()
    assert w[0] > 5 * w[1] and w[0] > 5 * w[2] and w[3] > 5 * w[4]


def test_cross_view_weights_with_one_view_use_its_own_consensus():
    from timetravel.detector import cross_view_weights

    rng = np.random.default_rng(1)
    bad = rng.random(2000) < 0.1
    z = rng.normal(size=(2000, 3)) + np.outer(bad, [2.0, 2.0, 0.0])
    w = cross_view_weights(z, np.zeros(3, dtype=bool))
    assert w[2] < 0.05 and np.isclose(w.sum(), 1.0)


def test_the_early_stopped_aum_anchors_half_the_weight():
    rng = np.random.default_rng(0)
    n = 600
    bad = rng.random(n) < 0.1
    names = ["aum_early_stop", "confidence", "loss_last", "knn_disagreement_mid", "centroid_ratio"]
    values = rng.normal(size=(n, len(names))) + np.outer(bad, [-2.0, -1.0, 1.0, 1.0, 1.0])
    table = FeatureTable(values=values.astype(np.float32), names=names, descriptions=[FEATURES[x].description for x in names],
                         directions=np.array([FEATURES[x].direction for x in names], dtype=np.int8),
                         labels=np.zeros(n, dtype=np.int64), suggested=np.ones(n, dtype=np.int64),
                         predicted=np.zeros(n, dtype=np.int64))  # fmt: skip
    det = AbnormalityDetector().fit(table)
    assert det.weights_[0] == pytest.approx(0.5) and det.weights_[1:].sum() == pytest.approx(0.5)
    free = AbnormalityDetector(anchor=None).fit(table)
    assert free.weights_.sum() == pytest.approx(1.0) and free.weights_[0] != pytest.approx(0.5)
    assert AbnormalityDetector(anchor_share=0.0).fit(table).weights_[0] == 0.0
    with pytest.raises(DetectorError, match="anchor_share"):
        AbnormalityDetector(anchor_share=1.5).fit(table)
    saved = det.to_dict()
    assert (saved["anchor"], saved["anchor_share"]) == ("aum_early_stop", 0.5)
    again = AbnormalityDetector.from_saved(saved, det.reference_, table.values)
    np.testing.assert_allclose(again.scores_, det.scores_)
    assert det.reasons(int(np.argmax(det.scores_)))[0].startswith("another class outscores its label while")
