"""Run store: round trip, crash safety, and one clear error per kind of bad input."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from timetravel import RunStore, RunWriter, StoreError
from timetravel.store import FORMAT_VERSION

from conftest import build_run

N, K, D, M = 60, 3, 8, 12


def test_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(N, D)).astype(np.float32)
    logits = rng.normal(size=(N, K)).astype(np.float32)
    w = RunWriter.create(tmp_path / "r", labels=rng.integers(0, K, N), n_classes=K, embedding_dim=D,
                         class_names=["a", "b", "c"], embedding_dtype="float32")
    w.write_epoch(0, emb, logits, head=(np.ones((K, D)), np.zeros(K)), metrics={"test_acc": 0.5})
    store = RunStore(tmp_path / "r")
    assert store.n_samples == N and store.n_classes == K and store.embedding_dim == D
    assert store.epochs == [0] and store.class_names == ["a", "b", "c"]
    np.testing.assert_array_equal(store.embedding(0), emb)
    np.testing.assert_array_equal(store.logits(0), logits)
    assert isinstance(store.embedding(0), np.memmap)
    np.testing.assert_allclose(store.probabilities(0).sum(axis=1), 1.0, rtol=1e-5)
    assert store.history == [{"epoch": 0, "test_acc": 0.5}]
    assert store.train_margin(0) is None and store.thumbs is None and store.true_labels is None


def test_float16_default_and_optional_parts(tmp_path):
    build_run(tmp_path / "r")
    store = RunStore(tmp_path / "r")
    assert store.embedding(1).dtype == np.float16
    assert store.embedding(2, split="heldout").shape == (M, D)
    assert store.logits(2, split="heldout").shape == (M, K)
    assert store.train_margin(0).shape == (N,)
    assert store.thumbs.shape == (N, 8, 8)
    assert store.noise_mask.sum() == 6
    assert store.manifest["noise_rate_actual"] == pytest.approx(6 / N)
    assert store.head(0)[0].shape == (K, D)


def test_batchwise_epoch_writer(tmp_path):
    w = RunWriter.create(tmp_path / "r", labels=np.zeros(10, int), n_classes=2, embedding_dim=3)
    emb = np.arange(30, dtype=np.float32).reshape(10, 3)
    with w.begin_epoch(5) as ew:
        for start in range(0, 10, 4):
            ew.write(start, emb[start:start + 4], np.zeros((len(emb[start:start + 4]), 2)))
        ew.set_head(np.zeros((2, 3)), np.zeros(2))
        ew.commit()
    np.testing.assert_array_equal(RunStore(tmp_path / "r").embedding(5), emb)


def test_incomplete_epoch_refuses_to_commit(tmp_path):
    w = RunWriter.create(tmp_path / "r", labels=np.zeros(10, int), n_classes=2, embedding_dim=3)
    with pytest.raises(StoreError, match="4 of 10 rows written"):
        with w.begin_epoch(0) as ew:
            ew.write(0, np.zeros((4, 3)), np.zeros((4, 2)))
            ew.set_head(np.zeros((2, 3)), np.zeros(2))
            ew.commit()
    assert RunStore(tmp_path / "r").epochs == []
    assert not any((tmp_path / "r" / "epochs").iterdir()), "the aborted epoch's temp dir was left behind"


def test_nan_is_refused_at_write(tmp_path):
    w = RunWriter.create(tmp_path / "r", labels=np.zeros(4, int), n_classes=2, embedding_dim=3)
    emb = np.zeros((4, 3))
    emb[2, 1] = np.nan
    with pytest.raises(StoreError, match=r"epoch 0: the embedding recorded holds NaN or inf values \(first at row 2\), "
                                         "so the epoch was not written: did training diverge"):
        w.write_epoch(0, emb, np.zeros((4, 2)), head=(np.zeros((2, 3)), np.zeros(2)))
    assert RunStore(tmp_path / "r").epochs == []  # nothing half-written, the run still opens


def _killed_writer(path: str, ready) -> None:
    writer = RunWriter.resume(path)
    ew = writer.begin_epoch(3)
    ew.write(0, np.ones((N, D)), np.ones((N, K)))
    ready.set()
    time.sleep(60)  # killed here, mid-epoch


def test_kill_mid_epoch_leaves_readable_store(tmp_path):
    build_run(tmp_path / "r", epochs=3)
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_killed_writer, args=(str(tmp_path / "r"), ready))
    proc.start()
    assert ready.wait(30)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    store = RunStore(tmp_path / "r", verify="full")
    assert store.epochs == [0, 1, 2]
    with pytest.raises(StoreError, match="epoch 3 is not recorded"):
        store.embedding(3)
    # the next attempt at the epoch succeeds over the leftovers
    writer = RunWriter.resume(tmp_path / "r")
    writer.write_epoch(3, np.ones((N, D)), np.ones((N, K)), head=(np.zeros((K, D)), np.zeros(K)))
    assert RunStore(tmp_path / "r").epochs == [0, 1, 2, 3]


def test_create_refuses_to_clobber(tmp_path):
    build_run(tmp_path / "r", epochs=1)
    with pytest.raises(StoreError, match="a run already exists"):
        build_run(tmp_path / "r", epochs=1)
    build_run(tmp_path / "r", epochs=2, overwrite=True)
    assert RunStore(tmp_path / "r").epochs == [0, 1]


# ---------------------------------------------------------------- bad input on open


def _edit_manifest(run: Path, **fields) -> None:
    manifest = json.loads((run / "run.json").read_text())
    manifest.update(fields)
    (run / "run.json").write_text(json.dumps(manifest))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])


def _put_nan(path: Path) -> None:
    array = np.load(path)
    array[3, 0] = np.inf
    np.save(path, array)


BAD_CASES = {
    "no run directory": (lambda r: None, "nowhere", "no such run directory"),
    "missing manifest": (lambda r: (r / "run.json").unlink(), None, r"run\.json: file is missing"),
    "manifest not json": (lambda r: (r / "run.json").write_text("{oops"), None, "not valid JSON"),
    "unknown version": (lambda r: _edit_manifest(r, format_version=99), None, "unknown format_version 99"),
    "missing field": (
        lambda r: (r / "run.json").write_text(json.dumps({"format_version": FORMAT_VERSION})),
        None,
        "required field 'n_samples' is missing",
    ),
    "missing labels": (lambda r: (r / "labels.npy").unlink(), None, r"labels\.npy: file is missing"),
    "missing epoch file": (
        lambda r: (r / "epochs/0001/logits.npy").unlink(),
        None,
        r"0001/logits\.npy: file is missing",
    ),
    "truncated embedding": (
        lambda r: _truncate(r / "epochs/0002/embedding.npy"),
        None,
        r"0002/embedding\.npy: truncated",
    ),
    "wrong shape": (
        lambda r: np.save(r / "epochs/0000/logits.npy", np.zeros((N, K + 1), np.float32)),
        None,
        r"0000/logits\.npy: shape \(60, 4\) does not match the manifest, expected \(60, 3\)",
    ),
    "labels out of range": (
        lambda r: np.save(r / "labels.npy", np.full(N, K)),
        None,
        r"labels\.npy: labels must lie in \[0, 3\)",
    ),
    "nan values": (lambda r: _put_nan(r / "epochs/0001/embedding.npy"), None, r"0001/embedding\.npy: contains NaN or inf"),
    "not npy": (
        lambda r: (r / "epochs/0000/embedding.npy").write_bytes(b"garbage"),
        None,
        r"0000/embedding\.npy: not a readable \.npy file",
    ),
    "pickled array": (
        lambda r: np.save(r / "labels.npy", np.array([{"a": 1}] * N, dtype=object), allow_pickle=True),
        None,
        "would need pickle",
    ),
    "mask disagrees": (
        lambda r: np.save(r / "noise_mask.npy", np.zeros(N, bool)),
        None,
        r"noise_mask\.npy: does not match",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_store_gives_one_clear_error(tmp_path, case):
    run = tmp_path / "r"
    build_run(run)
    damage, other_path, message = BAD_CASES[case]
    damage(run)
    with pytest.raises(StoreError, match=message):
        RunStore(tmp_path / other_path if other_path else run)


def test_large_store_checks_nan_lazily(tmp_path, monkeypatch):
    run = tmp_path / "r"
    build_run(run)
    _put_nan(run / "epochs/0001/embedding.npy")
    monkeypatch.setattr("timetravel.store.FULL_VERIFY_BYTES", 0)
    store = RunStore(run)  # too "large" for a full scan at open
    store.embedding(0)
    with pytest.raises(StoreError, match="contains NaN"):
        store.embedding(1)
    with pytest.raises(StoreError, match="contains NaN"):
        RunStore(run, verify="full")


def test_bad_requests(tmp_path):
    build_run(tmp_path / "r")
    store = RunStore(tmp_path / "r")
    with pytest.raises(StoreError, match=r"epoch 7 is not recorded \(recorded epochs: 0..2\)"):
        store.logits(7)
    with pytest.raises(ValueError, match="split must be one of"):
        store.embedding(0, split="test")
    with pytest.raises(StoreError, match="has no projection yet; run `timetravel project"):
        store.projection(0)
    assert store.projected_epochs == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": np.array([0.5, 1.0])}, "labels must be a 1-d integer array"),
        ({"labels": np.array([0, 5])}, r"labels must lie in \[0, 3\)"),
        ({"labels": np.array([0, 1]), "class_names": ["a"]}, "class_names has 1 entries but n_classes is 3"),
        ({"labels": np.array([0, 1]), "true_labels": np.array([0])}, "true_labels has 1 entries but labels has 2"),
        ({"labels": np.array([0, 1]), "embedding_dtype": "int8"}, "embedding_dtype must be one of"),
        ({"labels": np.array([0, 1]), "thumbs": np.zeros((2, 4, 4))}, "thumbs must be"),
    ],
)
def test_create_validates_input(tmp_path, kwargs, message):
    with pytest.raises(StoreError, match=message):
        RunWriter.create(tmp_path / "r", n_classes=3, embedding_dim=2, **kwargs)


def test_write_validates_shapes(tmp_path):
    w = RunWriter.create(tmp_path / "r", labels=np.zeros(4, int), n_classes=2, embedding_dim=3)
    with w.begin_epoch(0) as ew:
        with pytest.raises(StoreError, match=r"embedding rows have shape \(5,\), expected \(3,\)"):
            ew.write(0, np.zeros((4, 5)), np.zeros((4, 2)))
        with pytest.raises(StoreError, match="fall outside the train set of 4 samples"):
            ew.write(2, np.zeros((4, 3)), np.zeros((4, 2)))
        with pytest.raises(StoreError, match="head has weight"):
            ew.set_head(np.zeros((3, 3)), np.zeros(2))
        with pytest.raises(StoreError, match="no such split"):
            ew.write(0, np.zeros((4, 3)), np.zeros((4, 2)), split="heldout")


def test_no_pickle_anywhere(tmp_path):
    build_run(tmp_path / "r")
    for path in (tmp_path / "r").rglob("*.npy"):
        np.load(path, allow_pickle=False)  # raises if anything needed pickle


@pytest.mark.parametrize("manifest, message", [
    ({"format_version": 99, "epochs": {"0": {"grid": 4, "extent": [0, 1, 0, 1]}}},
     r"projection/manifest.json: unknown format_version 99; this timetravel reads version 1"),
    ("{truncated", r"projection/manifest.json: not valid JSON"),
])
def test_projection_of_another_format_is_refused_not_listed(tmp_path, manifest, message):
    from timetravel.projection import ProjectionError

    store = build_run(tmp_path / "r")
    path = tmp_path / "r" / "projection" / "manifest.json"
    path.parent.mkdir()
    path.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    with pytest.raises(ProjectionError, match=message):
        store.projected_epochs
    with pytest.raises(ProjectionError, match=r"run `timetravel project .*r --overwrite`"):
        store.projection(0)


# --------------------------------------------------------------------------- checksums, trailing bytes (issue 14)


def _flip_bytes(path, n=8):
    data = bytearray(path.read_bytes())
    header = len(data) - np.load(path, mmap_mode="r").nbytes
    for k in range(n):  # low-order mantissa bytes: still finite, still the right shape
        data[header + 4 * k] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_bytes_fail_full_verification_and_check(tmp_path, capsys):
    from timetravel.cli import main

    build_run(tmp_path / "r")
    _flip_bytes(tmp_path / "r" / "epochs" / "0001" / "logits.npy")
    with pytest.raises(StoreError, match=r"0001/logits\.npy: checksum mismatch \(CRC32 [0-9a-f]{8}, recorded"):
        RunStore(tmp_path / "r", verify="full")
    assert main(["check", str(tmp_path / "r")]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM" in out and "0001/logits.npy: checksum mismatch" in out and "1 problem(s) found" in out


def test_check_passes_a_sound_run_and_a_run_written_before_checksums(tmp_path, capsys):
    from timetravel.cli import main

    build_run(tmp_path / "r")
    assert main(["check", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")
    for path in (tmp_path / "r" / "epochs").glob("*/checksums.json"):
        path.unlink()
    manifest = json.loads((tmp_path / "r" / "run.json").read_text())
    del manifest["checksums"]
    (tmp_path / "r" / "run.json").write_text(json.dumps(manifest))
    RunStore(tmp_path / "r", verify="full")  # still opens
    assert main(["check", str(tmp_path / "r")]) == 0
    assert "3 epochs written before checksums" in capsys.readouterr().out


def test_trailing_bytes_after_an_arrays_data_are_refused(tmp_path):
    build_run(tmp_path / "r")
    with open(tmp_path / "r" / "epochs" / "0002" / "embedding.npy", "ab") as fh:
        fh.write(b"\0" * 16)
    with pytest.raises(StoreError, match=r"0002/embedding\.npy: 16 unexpected bytes after the array's data"):
        RunStore(tmp_path / "r")


@pytest.mark.parametrize("field, value, message", [
    ("n_samples", None, "field 'n_samples' must be a positive integer, got None"),
    ("n_samples", "abc", "field 'n_samples' must be a positive integer, got 'abc'"),
    ("epochs", ["x"], r"field 'epochs' must be a list of epoch numbers"),
    ("epochs", {"a": 1}, r"field 'epochs' must be a list of epoch numbers"),
    ("epochs", [0, 1, 1], r"field 'epochs' must be a list without repeats, got \[0, 1, 1\]"),
    ("class_names", ["a", "b"], r"field 'class_names' must be a list of n_classes = 3 strings"),
    ("history", 5, r"field 'history' must be a list of per-epoch objects, got 5"),
    ("has_true_labels", "yes", r"field 'has_true_labels' must be true or false"),
])
def test_every_manifest_field_is_type_checked(tmp_path, field, value, message):
    build_run(tmp_path / "r")
    manifest = json.loads((tmp_path / "r" / "run.json").read_text())
    manifest[field] = value
    (tmp_path / "r" / "run.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"run\.json: " + message):
        RunStore(tmp_path / "r")


def test_float_thumbnails_are_refused_when_the_run_is_opened(tmp_path):
    build_run(tmp_path / "r")
    np.save(tmp_path / "r" / "thumbs.npy", np.zeros((60, 4, 4), dtype=np.float32))
    with pytest.raises(StoreError, match=r"thumbs\.npy: expected \(60, H, W\[, C\]\) uint8 images, got \(60, 4, 4\) float32"):
        RunStore(tmp_path / "r", verify="headers")


def test_a_resume_removes_the_temporary_epochs_of_a_killed_writer(tmp_path):
    build_run(tmp_path / "r")
    leftover = tmp_path / "r" / "epochs" / ".0003.tmp-deadbeef"
    leftover.mkdir()
    (leftover / "embedding.npy").write_bytes(b"partial")
    writer = RunWriter.resume(tmp_path / "r")
    assert not leftover.exists()
    assert RunStore(tmp_path / "r").being_written
    del writer
    assert not RunStore(tmp_path / "r").being_written
