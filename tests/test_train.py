"""Training runs: the store they write, determinism, resume after a kill, the command line."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

import timetravel.train as train_module
from timetravel import RunStore
from timetravel.cli import main
from timetravel.models import ModelError, make_model
from timetravel.train import TrainError, auto_batch_size, train_run

TINY = dict(dataset="digits", noise="symmetric:0.2", n_samples=200, embedding_dim=16, verbose=False)


def _run(path, epochs=3, **kw):
    return train_run(out=path, epochs=epochs, **{**TINY, **kw})


def test_tiny_run_writes_a_complete_store(tmp_path):
    store = _run(tmp_path / "run")
    assert store.epochs == [0, 1, 2]
    assert store.n_samples == 200 and store.n_classes == 10 and store.embedding_dim == 16
    assert store.n_heldout == 50 and store.heldout_labels is not None
    assert store.embedding(2).shape == (200, 16) and store.embedding(2).dtype == np.float16
    assert store.logits(2, "heldout").shape == (50, 10)
    assert store.train_margin(2).shape == (200,)
    assert store.thumbs.shape == (200, 8, 8) and store.thumbs.dtype == np.uint8
    w, b = store.head(2)
    np.testing.assert_allclose(np.asarray(store.embedding(2), np.float32) @ w.T + b, store.logits(2), atol=0.05)
    # noise: recorded labels, true labels and mask agree, and the manifest says what happened
    assert store.noise_mask.mean() == pytest.approx(store.manifest["noise_rate_actual"])
    assert store.manifest["noise_rate_actual"] == pytest.approx(0.2, abs=0.01)
    assert np.array_equal(store.noise_mask, store.labels != store.true_labels)
    assert store.manifest["noise"]["rate"] == 0.2
    assert store.manifest["train"]["batch_size"] == auto_batch_size(200) == 32
    assert store.manifest["model"]["name"] == "mlp"
    for entry in store.history:
        assert {"train_loss", "train_acc", "clean_train_acc", "eval_train_acc", "test_acc"} <= entry.keys()
        assert 0.0 <= entry["test_acc"] <= 1.0
    assert (tmp_path / "run" / "checkpoint" / "state.pt").exists()


def test_training_learns_and_memorises(tmp_path):
    store = _run(tmp_path / "run", epochs=8, n_samples=400)
    history = store.history
    assert max(h["test_acc"] for h in history) > 0.8
    assert history[-1]["train_acc"] > history[0]["train_acc"]


def test_same_seed_same_run_and_other_seed_differs(tmp_path):
    a = _run(tmp_path / "a", epochs=2)
    b = _run(tmp_path / "b", epochs=2)
    c = _run(tmp_path / "c", epochs=2, seed=1)
    np.testing.assert_array_equal(a.logits(1), b.logits(1))
    np.testing.assert_array_equal(a.embedding(1), b.embedding(1))
    np.testing.assert_array_equal(a.train_margin(1), b.train_margin(1))
    assert not np.array_equal(a.labels, c.labels)


def test_resume_after_kill_matches_a_straight_run(tmp_path, monkeypatch):
    straight = _run(tmp_path / "straight", epochs=4)
    real_write = train_module.write_bytes_atomic

    def killed_after_commit_of_epoch_2(path, data):
        if torch.load(io.BytesIO(data), weights_only=True)["epoch"] == 2:
            raise KeyboardInterrupt  # epoch 2 is committed, its checkpoint never written
        real_write(path, data)

    monkeypatch.setattr(train_module, "write_bytes_atomic", killed_after_commit_of_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", epochs=4)
    monkeypatch.setattr(train_module, "write_bytes_atomic", real_write)
    partial = RunStore(tmp_path / "killed")
    assert partial.epochs[:3] == [0, 1, 2]
    resumed = _run(tmp_path / "killed", epochs=4, resume=True)
    assert resumed.epochs == [0, 1, 2, 3]
    for e in range(4):
        np.testing.assert_array_equal(resumed.logits(e), straight.logits(e))
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]


def test_resume_extends_a_finished_run(tmp_path):
    _run(tmp_path / "run", epochs=2, background_capture=False)
    store = _run(tmp_path / "run", epochs=3, resume=True, background_capture=False)
    assert store.epochs == [0, 1, 2] and store.manifest["train"]["epochs"] == 3
    straight = _run(tmp_path / "straight", epochs=3)
    np.testing.assert_array_equal(store.logits(2), straight.logits(2))


def test_resume_and_overwrite_errors(tmp_path):
    with pytest.raises(TrainError, match="there is no run to resume"):
        _run(tmp_path / "none", resume=True)
    _run(tmp_path / "run", epochs=1)
    with pytest.raises(TrainError, match="a run already exists here; pass overwrite"):
        _run(tmp_path / "run", epochs=1)
    with pytest.raises(TrainError, match=r"cannot resume with different settings \(seed: run has 0, asked 5\)"):
        _run(tmp_path / "run", epochs=2, seed=5, resume=True)
    assert _run(tmp_path / "run", epochs=1, overwrite=True).epochs == [0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(epochs=0), "epochs must be a positive integer, got 0"),
        (dict(batch_size=-1), "batch_size must be a positive integer, got -1"),
        (dict(lr=0.0), "lr must be a positive finite number, got 0.0"),
        (dict(model="vit"), "model must be 'auto' or one of"),
        (dict(embedding_dtype="int8"), "embedding_dtype must be one of"),
        (dict(threads=0), "threads must be a positive integer, got 0"),
    ],
)
def test_bad_settings(tmp_path, kwargs, message):
    with pytest.raises(TrainError, match=message):
        _run(tmp_path / "run", **kwargs)


def test_diverged_training_says_so_and_keeps_the_run_resumable(tmp_path):
    with pytest.raises(TrainError, match=r"training diverged in epoch 0: the training loss is nan; lower the "
                                         r"learning rate \(now 1e\+30, --lr\)"):
        _run(tmp_path / "run", epochs=2, lr=1e30)
    assert RunStore(tmp_path / "run").epochs == []


def test_a_run_folder_that_training_made_is_removed_when_it_fails_before_writing(tmp_path):
    with pytest.raises(Exception, match="missing.npz: no such file or folder"):
        _run(tmp_path / "new" / "run", dataset="arrays:" + str(tmp_path / "missing.npz"))
    assert not (tmp_path / "new" / "run").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(Exception):
        _run(tmp_path / "kept", dataset="arrays:" + str(tmp_path / "missing.npz"))
    assert (tmp_path / "kept").is_dir()  # a folder the user made stays


def test_synthetic_cnn_float32_without_heldout(tmp_path):
    store = _run(tmp_path / "run", epochs=2, dataset="synthetic", n_samples=300, model="cnn",
                 embedding_dtype="float32", heldout=False, background_capture=False)
    assert store.n_heldout == 0 and store.embedding(1).dtype == np.float32
    assert store.manifest["model"]["name"] == "cnn"
    assert all("test_acc" in h for h in store.history)  # measured on the test split even when not recorded


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["-q", "train", "--dataset", "digits", "--n-samples", "150", "--epochs", "2", "--embedding-dim", "8",
                 "--noise", "symmetric:0.3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "clean test: best" in printed and "30.0% of labels changed" in printed
    store = RunStore(out)
    assert store.epochs == [0, 1] and store.embedding_dim == 8
    assert json.loads((out / "run.json").read_text())["train"]["noise"] == "symmetric:0.3"
    # --resume keeps the stored settings; only --epochs changes
    assert main(["-q", "train", "--out", str(out), "--epochs", "3", "--resume"]) == 0
    assert RunStore(out).epochs == [0, 1, 2] and RunStore(out).embedding_dim == 8
    assert main(["-q", "train", "--out", str(out), "--epochs", "3"]) == 2
    assert "a run already exists here" in capsys.readouterr().err


def test_make_model_errors_and_shapes():
    for name, shape in [("mlp", (1, 8, 8)), ("cnn", (1, 28, 28)), ("resnet", (3, 32, 32))]:
        model = make_model(name, shape, 10, embedding_dim=12)
        assert model.features(torch.zeros(2, *shape)).shape == (2, 12)
        assert model(torch.zeros(2, *shape)).shape == (2, 10)
        assert model.embedding_layer == "features" and model.head.weight.shape == (10, 12)
    assert make_model("auto", (3, 32, 32), 10).name == "resnet"
    assert make_model("auto", (1, 8, 8), 10).name == "mlp"
    assert make_model("auto", (1, 28, 28), 10).name == "cnn"
    with pytest.raises(ModelError, match="model must be 'auto' or one of"):
        make_model("vgg", (1, 8, 8), 10)
    with pytest.raises(ModelError, match=r"in_shape must be \(channels, height, width\)"):
        make_model("mlp", (8, 8), 10)
    with pytest.raises(ModelError, match="embedding_dim must be a positive integer, got 0"):
        make_model("mlp", (1, 8, 8), 10, embedding_dim=0)
