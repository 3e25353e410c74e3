"""`timetravel fix`: retraining a reviewed run on its corrected labels, resumable, with clear errors."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

import timetravel

import timetravel.train as train_module
from timetravel import RunStore
from timetravel.cli import main
from timetravel.correction import read_corrections
from timetravel.feedback import FeedbackLog
from timetravel.fix import FixError, fix_run
from timetravel.train import TrainConfig, train_accuracy, train_run

TINY = dict(dataset="digits", noise="symmetric:0.2", n_samples=200, embedding_dim=16, verbose=False)


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    """A 3-epoch digits run in which 10 noisy samples were relabelled to their true class and 5 dropped."""
    store = train_run(out=tmp_path_factory.mktemp("fix") / "run", epochs=3, **TINY)
    log = FeedbackLog(store.path, store.n_samples, store.n_classes)
    noisy = np.flatnonzero(store.noise_mask)
    for i in noisy[:10]:
        log.append(int(i), "relabel", label=int(store.true_labels[i]))
    for i in noisy[10:15]:
        log.append(int(i), "drop")
    log.append(int(np.flatnonzero(~store.noise_mask)[0]), "flag")
    return store


def test_fixed_run_trains_on_the_corrected_labels_and_names_its_source(reviewed, tmp_path):
    fixed = fix_run(reviewed.path, tmp_path / "fixed", verbose=False)
    noisy = np.flatnonzero(reviewed.noise_mask)
    assert fixed.epochs == reviewed.epochs and fixed.n_samples == reviewed.n_samples
    np.testing.assert_array_equal(fixed.labels[noisy[:10]], reviewed.true_labels[noisy[:10]])
    np.testing.assert_array_equal(fixed.labels[noisy[10:]], reviewed.labels[noisy[10:]])
    assert fixed.noise_mask.sum() == reviewed.noise_mask.sum() - 10
    assert fixed.manifest["train"] == reviewed.manifest["train"]
    assert fixed.manifest["fixed_from"] == {
        "run": str(reviewed.path.resolve()),
        "corrections": {"relabeled": 10, "dropped": 5, "flagged": 1, "kept": 195}}
    saved = read_corrections(fixed.path)
    assert [r[0] for r in saved["relabeled"]] == sorted(noisy[:10].tolist())
    assert saved["dropped"] == sorted(noisy[10:15].tolist()) and len(saved["flagged"]) == 1
    assert saved["feedback"]["events"] == 16
    # dropped samples are still recorded (the two runs show the same samples), with train margins
    assert fixed.embedding(2).shape == reviewed.embedding(2).shape
    assert np.isfinite(fixed.train_margin(2)).all()
    assert not np.array_equal(fixed.logits(2), reviewed.logits(2))


def test_an_all_true_keep_mask_trains_like_no_mask():
    cfg = TrainConfig(**{**TrainConfig.defaults(), **{k: v for k, v in TINY.items() if k != "verbose"},
                         "epochs": 2})
    plain = train_accuracy(cfg, threads=1)
    assert len(plain) == 2 and all(0 < a <= 1 for a in plain)
    kept = train_accuracy(cfg, keep=np.ones(200, dtype=bool), threads=1)
    np.testing.assert_allclose(kept, plain, atol=1e-9)


def test_resume_after_kill_matches_a_straight_fix(reviewed, tmp_path, monkeypatch):
    straight = fix_run(reviewed.path, tmp_path / "straight", verbose=False)
    real_write = train_module.write_bytes_atomic

    def killed_after_commit_of_epoch_1(path, data):
        if torch.load(io.BytesIO(data), weights_only=True)["epoch"] == 1:
            raise KeyboardInterrupt
        real_write(path, data)

    monkeypatch.setattr(train_module, "write_bytes_atomic", killed_after_commit_of_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        fix_run(reviewed.path, tmp_path / "killed", verbose=False)
    monkeypatch.setattr(train_module, "write_bytes_atomic", real_write)
    resumed = fix_run(reviewed.path, tmp_path / "killed", resume=True, verbose=False)
    assert resumed.epochs == straight.epochs
    for e in straight.epochs:
        np.testing.assert_array_equal(resumed.logits(e), straight.logits(e))


def test_resume_refuses_changed_corrections(tmp_path):
    store = train_run(out=tmp_path / "run", epochs=2, **TINY)
    log = FeedbackLog(store.path, store.n_samples, store.n_classes)
    log.append(0, "drop")
    fix_run(store.path, tmp_path / "fixed", verbose=False)
    log.append(1, "drop")
    with pytest.raises(FixError, match="corrections of .* changed since this fix started; start it again"):
        fix_run(store.path, tmp_path / "fixed", resume=True, verbose=False)
    with pytest.raises(FixError, match="there is no fixed run to resume"):
        fix_run(store.path, tmp_path / "never", resume=True, verbose=False)


def test_a_fixed_run_can_be_fixed_again(reviewed, tmp_path):
    first = fix_run(reviewed.path, tmp_path / "first", verbose=False)
    left = np.flatnonzero(first.noise_mask & np.isin(np.arange(first.n_samples), read_corrections(first.path)["dropped"],
                                                     invert=True))
    FeedbackLog(first.path, first.n_samples, first.n_classes).append(int(left[0]), "relabel",
                                                                     label=int(first.true_labels[left[0]]))
    second = fix_run(first.path, tmp_path / "second", verbose=False)
    saved = read_corrections(second.path)
    assert len(saved["relabeled"]) == 11 and len(saved["dropped"]) == 5
    assert second.manifest["fixed_from"]["run"] == str(first.path.resolve())


def test_errors_say_what_to_do(tmp_path, reviewed):
    from timetravel.server_app._testing import write_synthetic_run

    own = write_synthetic_run(tmp_path / "own", n_samples=40, n_epochs=2)
    FeedbackLog(own).append(1, "drop")
    with pytest.raises(FixError, match=r"not made by `timetravel train`.*timetravel.corrections\(run\)"):
        fix_run(own, tmp_path / "out")
    clean = train_run(out=tmp_path / "clean", epochs=1, **TINY)
    FeedbackLog(clean.path).append(3, "accept")
    with pytest.raises(FixError, match=r"no correction to apply \(1 accepted samples have no relabel or drop"):
        fix_run(clean.path, tmp_path / "out")
    with pytest.raises(FixError, match="is the reviewed run itself"):
        fix_run(reviewed.path, reviewed.path)


def test_cli_fix_prints_the_corrections_and_the_accuracy_change(reviewed, tmp_path, capsys):
    assert main(["-q", "fix", str(reviewed.path), "--out", str(tmp_path / "fixed")]) == 0
    out = capsys.readouterr().out
    assert "fixed:      10 relabelled, 5 dropped (trained on 195 of 200), 1 flagged" in out
    assert "clean test at the last epoch:" in out
    assert main(["-q", "fix", str(reviewed.path), "--out", str(tmp_path / "fixed")]) == 2
    assert "a run already exists here" in capsys.readouterr().err
    assert json.loads((tmp_path / "fixed" / "run.json").read_text())["fixed_from"]["corrections"]["kept"] == 195


def test_cli_drop_suspects_needs_the_detection_and_records_the_rule(tmp_path, capsys):
    from timetravel.detection import detect

    store = train_run(out=tmp_path / "run", epochs=3, **TINY)
    FeedbackLog(store.path, store.n_samples, store.n_classes).append(0, "flag")
    args = ["-q", "fix", str(store.path), "--out", str(tmp_path / "fixed"), "--drop-suspects"]
    assert main(args) == 2
    assert "run `timetravel detect" in capsys.readouterr().err
    detect(store, verbose=False)
    assert main(args) == 0
    saved = read_corrections(tmp_path / "fixed")
    assert saved["suspects_threshold"] == 0.5
    assert saved["dropped"] == timetravel.corrections(store, suspects=True).dropped.tolist()
    assert 0 not in saved["dropped"] and saved["dropped"]  # the flagged sample stays, as the user decided
