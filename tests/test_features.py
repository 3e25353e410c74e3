"""Trajectory features: shapes, documentation, signal on planted mislabels, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from timetravel import RunWriter, StoreError
from timetravel.features import FEATURES, FeatureTable, extract_features
from timetravel.simulate import ranking_quality, simulate_run


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    store = simulate_run(tmp_path_factory.mktemp("f") / "run", n_samples=400, noise_rate=0.15, seed=3)
    return store, extract_features(store, verbose=False)


def test_shapes_and_documentation(toy):
    store, table = toy
    n = store.n_samples
    assert isinstance(table, FeatureTable)
    assert table.values.shape == (n, len(table.names)) and table.values.dtype == np.float32
    assert np.isfinite(table.values).all()
    assert len(table.descriptions) == len(table.names)
    for name, desc in zip(table.names, table.descriptions):
        assert desc == FEATURES[name].description and "\n" not in desc
    # the toy run records training margins, so AUM from them is present; no projection -> no canvas features
    assert "aum_train" in table.names
    assert not any(n.startswith("canvas") for n in table.names)
    assert table.neighbors.shape == (n, 10) and table.neighbors.dtype == np.int32
    assert not (table.neighbors == np.arange(n)[:, None]).any(), "a sample is never its own neighbour"
    assert table.suggested.shape == (n,) and (table.suggested != table.labels).all()


def test_definitions_on_known_values(toy):
    store, table = toy
    probs = np.stack([store.probabilities(e) for e in store.epochs])
    given = probs[:, np.arange(store.n_samples), store.labels]
    np.testing.assert_allclose(table.column("confidence"), given.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(table.column("variability"), given.std(axis=0), rtol=1e-4, atol=1e-5)
    correct = probs.argmax(axis=2) == store.labels
    forgets = (correct[:-1] & ~correct[1:]).sum(axis=0)
    np.testing.assert_array_equal(table.column("forgetting"), forgets)
    knn = table.column("knn_disagreement_mid")
    expect = (store.labels[table.neighbors] != store.labels[:, None]).mean(axis=1)
    np.testing.assert_allclose(knn, expect, rtol=1e-6)


def test_features_separate_planted_mislabels(toy):
    store, table = toy
    for name in ("confidence", "aum", "knn_disagreement_mid", "centroid_ratio", "loss_early"):
        j = table.names.index(name)
        auroc = ranking_quality(table.values[:, j] * table.directions[j], store.noise_mask)["auroc"]
        assert auroc > 0.9, f"{name}: AUROC {auroc:.3f}"


def test_canvas_features_when_projected(tmp_path):
    from timetravel._io import write_json_atomic, save_npy_atomic

    store = simulate_run(tmp_path / "run", n_samples=120, n_epochs=5, seed=1)
    rng = np.random.default_rng(0)
    entries = {}
    for e in store.epochs:
        save_npy_atomic(tmp_path / "run" / "projection" / f"{e:04d}" / "xy.npy",
                        rng.normal(size=(120, 2)).astype(np.float32))
        entries[str(e)] = {"extent": [-3, 3, -3, 3], "grid": 4, "metrics": {}}
    write_json_atomic(tmp_path / "run" / "projection" / "manifest.json",
                      {"format_version": 1, "method": "test", "params": {}, "epochs": entries})
    table = extract_features(store.__class__(store.path), verbose=False)
    assert {"canvas_speed", "canvas_acceleration"} <= set(table.names)
    assert (table.column("canvas_speed") > 0).all()
    assert "canvas_speed" not in extract_features(store, use_projection=False, verbose=False).names


def test_deterministic(toy, tmp_path):
    store, table = toy
    again = extract_features(store, verbose=False)
    np.testing.assert_array_equal(table.values, again.values)
    np.testing.assert_array_equal(table.neighbors, again.neighbors)


def test_empty_store_is_a_clear_error(tmp_path):
    RunWriter.create(tmp_path / "empty", labels=np.zeros(30, dtype=int), n_classes=2, embedding_dim=4)
    from timetravel import RunStore

    with pytest.raises(StoreError, match=r"at least 2 recorded epochs, found 0"):
        extract_features(RunStore(tmp_path / "empty"), verbose=False)


def test_too_few_samples_for_neighbours(tmp_path):
    store = simulate_run(tmp_path / "run", n_samples=8, n_classes=2, embedding_dim=4, n_epochs=3)
    with pytest.raises(StoreError, match=r"n_neighbors must be >= 1 and below the number of samples"):
        extract_features(store, n_neighbors=10, verbose=False)


def test_unknown_column_names_the_choices(toy):
    _, table = toy
    with pytest.raises(KeyError, match="no feature named 'nope'; available: confidence"):
        table.column("nope")


def _run_with_heldout(path, accuracy, *, n=40, m=20, seed=0, train=1.0, train_mode=None):
    """A 2-class run whose held-out accuracy per epoch is ``accuracy`` and whose training logits (random
    otherwise) predict the given label for a share ``train`` of the samples (one value, or one per epoch).
    With ``train_mode`` (one share per epoch) it also records training-mode margins, positive for that share
    of the samples (the last ones, so that they are not the samples the eval-mode logits get right)."""
    from timetravel import RunStore

    rng = np.random.default_rng(seed)
    labels, held = rng.integers(0, 2, n), np.arange(m) % 2
    writer = RunWriter.create(path, labels=labels, n_classes=2, embedding_dim=3, heldout_labels=held)
    for e, (acc, agree) in enumerate(zip(accuracy, np.broadcast_to(train, len(accuracy)))):
        right = np.arange(m) < round(acc * m)
        pred = np.where(right, held, 1 - held)
        held_logits = np.eye(2, dtype=np.float32)[pred] * 2.0
        logits = rng.normal(size=(n, 2)).astype(np.float32)
        hit = (logits[np.arange(n), labels] > logits[np.arange(n), 1 - labels]) != (np.arange(n) < round(agree * n))
        logits[hit] = logits[hit, ::-1]  # swapped so that exactly the first round(agree * n) samples agree
        margin = None
        if train_mode is not None:
            margin = np.where(np.arange(n) >= n - round(train_mode[e] * n), 1.0, -1.0).astype(np.float32)
            margin *= 1 + np.arange(n) / n  # distinct values, so the average's order is the samples' order
        writer.write_epoch(e, rng.normal(size=(n, 3)).astype(np.float32), logits,
                           head=(np.zeros((2, 3), np.float32), np.zeros(2, np.float32)),
                           heldout=(rng.normal(size=(m, 3)).astype(np.float32), held_logits),
                           train_margin=margin)  # fmt: skip
    return RunStore(path)


def test_early_stopped_aum_of_an_overfitting_run_averages_the_margin_up_to_the_best_heldout_epoch(tmp_path, capsys):
    from timetravel.features import early_stopping_window
    from timetravel.numerics import label_margins

    # smoothed over 3 epochs the accuracy peaks at epochs 2 and 3 (0.667): the first wins; epoch 1
    # (0.533) is not within 5% of the rise from epoch 0 (0.3), but the window keeps the epochs
    # averaged into the peak (1..3) whatever the tolerance
    accuracy = [0.2, 0.5, 0.9, 0.6, 0.5, 0.4]
    store = _run_with_heldout(tmp_path / "run", accuracy)
    window = early_stopping_window(store, store.epochs, tolerance=0)
    assert (window["first_epoch"], window["last_epoch"], window["peak_epoch"]) == (1, 3, 2)
    assert window["epochs"] == list(range(6)) and window["accuracy"] == accuracy
    assert window["overfit_epoch"] == 0 and window["train_agreement"] == [1.0] * 6  # fits every training label
    with pytest.raises(ValueError, match="tolerance"):
        early_stopping_window(store, store.epochs, tolerance=1.5)
    with pytest.raises(ValueError, match="odd"):
        early_stopping_window(store, store.epochs, smoothing=2)
    with pytest.raises(ValueError, match="overfit_z"):
        early_stopping_window(store, store.epochs, overfit_z=-1)
    with pytest.raises(ValueError, match="one value per epoch"):
        early_stopping_window(store, store.epochs, train_agreement=[0.5] * 5)
    window = early_stopping_window(store, store.epochs)
    assert (window["first_epoch"], window["last_epoch"]) == (1, 3)
    table = extract_features(store, n_neighbors=5, verbose=False)
    margins = [label_margins(np.asarray(store.logits(e), dtype=np.float64), store.labels) for e in (1, 2, 3)]
    np.testing.assert_allclose(table.column("aum_early_stop"), np.mean(margins, axis=0), rtol=1e-5, atol=1e-6)
    assert table.meta["early_stop"] == window
    from timetravel.detection import detect, load_detection

    detect(store, verbose=False)
    saved = load_detection(store)
    assert saved.features.meta["early_stop"] == window  # saved as JSON and read back the same
    assert saved.detector.weights_[saved.features.names.index("aum_early_stop")] == pytest.approx(0.5)
    from timetravel.cli import main

    capsys.readouterr()
    assert main(["-q", "detect", str(store.path), "--anchor-share", "0", "--top", "1"]) == 0
    assert ("early-stopped AUM over epochs 1..3: the held-out accuracy peaks at epoch 2 (0.900; the window keeps "
            "epochs 1..3, the ones averaged into the peak); the model fits its training labels better than the held-out ones from epoch 0 (1.000 against 0.200)") in capsys.readouterr().out
    assert load_detection(store).detector.weights_[saved.features.names.index("aum_early_stop")] == 0.0
    assert main(["-q", "detect", str(store.path), "--top", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["early_stop"] == window
    # still learning at the end: only the last epoch is near the peak, which is averaged with epoch 4
    late = early_stopping_window(_run_with_heldout(tmp_path / "late", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), range(6))
    assert (late["first_epoch"], late["last_epoch"]) == (4, 5)
    # a long plateau before the peak (epoch 8): the window starts half-way, not where the plateau does
    plateau = [0.1, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.81, 0.81, 0.81, 0.6]
    flat = early_stopping_window(_run_with_heldout(tmp_path / "flat", plateau, m=100), range(11))
    assert (flat["first_epoch"], flat["last_epoch"], flat["peak_epoch"]) == (4, 9, 8)


def test_a_run_that_never_overfits_keeps_its_late_epochs_in_the_early_stopped_window(tmp_path):
    from timetravel.features import describe_early_stop, early_stopping_window
    from timetravel.numerics import label_margins

    # flat held-out accuracy with a noise peak at epoch 2; the model agrees with its (noisy) training labels
    # less often than with the held-out labels at every epoch: nothing memorised, so the peak means nothing
    flat = [0.8, 0.82, 0.9, 0.82, 0.8, 0.82, 0.8, 0.82]
    store = _run_with_heldout(tmp_path / "run", flat, n=200, m=200, train=0.75)
    window = early_stopping_window(store, store.epochs)
    assert window["overfit_epoch"] is None and window["peak_epoch"] == 2
    assert (window["margins"], window["jitter_ratio"]) == ("eval", None)  # no training-mode margins to check with
    assert describe_early_stop(window) == (
        "early-stopped AUM over epochs 3..7: the model never fits its training labels significantly better than "
        "the held-out ones (last epoch 0.750 against 0.820), so nothing was memorised and the window runs to the end")
    assert describe_early_stop(None).startswith("no early-stopped AUM: the run has no labelled held-out set")
    assert (window["first_epoch"], window["last_epoch"]) == (3, 7)  # from half-way to the last epoch
    table = extract_features(store, n_neighbors=5, verbose=False)
    assert table.meta["early_stop"] == window  # the one-pass computation decides the same
    margins = [label_margins(np.asarray(store.logits(e), dtype=np.float64), store.labels) for e in range(3, 8)]
    np.testing.assert_allclose(table.column("aum_early_stop"), np.mean(margins, axis=0), rtol=1e-5, atol=1e-6)
    # the same run fitting 95% of its training labels from epoch 2 on overfits (0.95 against at most 0.9;
    # from epoch 3, where the 3-epoch averages part by more than 2 standard errors): the window ends at the
    # held-out peak again, with the epochs averaged into it
    fits = _run_with_heldout(tmp_path / "fits", flat, n=200, m=200, train=[0.75, 0.8] + [0.95] * 6)
    window = early_stopping_window(fits, fits.epochs)
    assert window["overfit_epoch"] == 3 and (window["first_epoch"], window["last_epoch"]) == (1, 3)
    # an agreement above the held-out accuracy by less than the standard errors is not overfitting
    assert early_stopping_window(store, store.epochs, train_agreement=[0.83] * 8)["overfit_epoch"] is None
    assert early_stopping_window(store, store.epochs, train_agreement=[0.83] * 8, overfit_z=0)["overfit_epoch"] == 0


def test_where_eval_mode_jumps_and_training_mode_does_not_the_window_averages_training_margins(tmp_path):
    from timetravel.features import describe_early_stop, early_stopping_window

    # eval mode swings between fitting 50% and 95% of the training labels (and the held-out accuracy with it),
    # as a CNN's BatchNorm running statistics make it, while the training-mode margins rise smoothly
    swing = [0.5, 0.95] * 4
    accuracy = [0.5, 0.9] * 4
    smooth = [0.5, 0.6, 0.65, 0.7, 0.72, 0.74, 0.75, 0.76]
    store = _run_with_heldout(tmp_path / "run", accuracy, n=200, m=200, train=swing, train_mode=smooth)
    window = early_stopping_window(store, store.epochs)
    assert window["margins"] == "training" and window["jitter_ratio"] > 5
    assert (window["first_epoch"], window["last_epoch"], window["overfit_epoch"]) == (4, 7, None)  # second half
    assert describe_early_stop(window).startswith(
        "early-stopped AUM over epochs 4..7, the second half, from training-mode margins: the eval-mode "
        f"predictions of the training labels jump {window['jitter_ratio']:.1f}x more")
    table = extract_features(store, n_neighbors=5, verbose=False)
    assert table.meta["early_stop"] == window
    expect = np.mean([store.train_margin(e) for e in range(4, 8)], axis=0)
    np.testing.assert_allclose(table.column("aum_early_stop"), expect, rtol=1e-5, atol=1e-6)
    # a higher bar keeps the eval-mode window, whose test is the overfitting one (95% of the training labels
    # against 90% of the held-out ones)
    assert early_stopping_window(store, store.epochs, jitter_ratio=1e3)["margins"] == "eval"
    with pytest.raises(ValueError, match="jitter_ratio"):
        early_stopping_window(store, store.epochs, jitter_ratio=-1)
    # training-mode margins that swing as much as the eval-mode predictions say nothing against them
    steady = _run_with_heldout(tmp_path / "steady", accuracy, n=200, m=200, train=swing,
                               train_mode=[0.45, 0.9] * 4)
    window = early_stopping_window(steady, steady.epochs)
    assert window["margins"] == "eval" and 0.5 < window["jitter_ratio"] < 2
    assert extract_features(steady, n_neighbors=5, verbose=False).meta["early_stop"] == window


def test_no_early_stopped_aum_without_a_labelled_heldout_set(toy):
    _, table = toy
    assert "aum_early_stop" not in table.names and table.meta["early_stop"] is None
