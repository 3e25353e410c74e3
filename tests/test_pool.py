"""The unlabelled pool: store support, recording it with the Recorder, ranking it (active learning)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from timetravel.capture import Recorder, tensor_loader
from timetravel.errors import StoreError
from timetravel.store import RunStore, RunWriter


def _writer(path, n=40, n_pool=25, k=3, d=4, **kw):
    labels = np.arange(n) % k
    return RunWriter.create(path, labels=labels, n_classes=k, embedding_dim=d, n_pool=n_pool,
                            embedding_dtype="float32", **kw)


def _epoch(writer, epoch, rng, pool=True):
    n, m, k, d = writer.n_samples, writer.n_pool, writer.n_classes, writer.embedding_dim
    with writer.begin_epoch(epoch) as ew:
        ew.write(0, rng.normal(size=(n, d)), rng.normal(size=(n, k)))
        if pool:
            ew.write(0, rng.normal(size=(m, d)), rng.normal(size=(m, k)), split="pool")
        ew.set_head(np.zeros((k, d)), np.zeros(k))
        ew.commit()


def test_pool_rows_are_stored_and_read_back(tmp_path):
    rng = np.random.default_rng(0)
    w = _writer(tmp_path / "run", pool_true_labels=np.arange(25) % 3,
                pool_thumbs=np.zeros((25, 4, 4), dtype=np.uint8))
    _epoch(w, 0, rng)
    store = RunStore(tmp_path / "run")
    assert store.n_pool == 25 and store.split_size("pool") == 25
    assert store.embedding(0, "pool").shape == (25, 4) and store.logits(0, "pool").shape == (25, 3)
    assert store.has_split(0, "pool") and not store.has_split(0, "heldout")
    np.testing.assert_array_equal(store.pool_true_labels, np.arange(25) % 3)
    assert store.pool_thumbs.shape == (25, 4, 4)
    assert store.manifest["n_pool"] == 25


def test_a_run_without_pool_says_so(tmp_path):
    w = RunWriter.create(tmp_path / "run", labels=np.arange(10) % 2, n_classes=2, embedding_dim=2)
    w.write_epoch(0, np.zeros((10, 2)), np.zeros((10, 2)), head=(np.zeros((2, 2)), np.zeros(2)))
    store = RunStore(tmp_path / "run")
    assert store.n_pool == 0 and store.pool_true_labels is None
    with pytest.raises(StoreError, match="has no unlabelled pool"):
        store.logits(0, "pool")


def test_an_incomplete_pool_is_not_committed(tmp_path):
    w = _writer(tmp_path / "run")
    with pytest.raises(StoreError, match="pool_embedding has 10 of 25 rows"):
        with w.begin_epoch(0) as ew:
            ew.write(0, np.zeros((40, 4)), np.zeros((40, 3)))
            ew.write(0, np.zeros((10, 4)), np.zeros((10, 3)), split="pool")
            ew.set_head(np.zeros((3, 4)), np.zeros(3))
            ew.commit()


@pytest.mark.parametrize("bad, message", [
    (dict(n_pool=-1), "n_pool must be a non-negative integer"),
    (dict(n_pool=5, pool_true_labels=np.zeros(4, dtype=int)), "pool_true_labels has 4 entries but n_pool is 5"),
])
def test_pool_arguments_are_checked(tmp_path, bad, message):
    with pytest.raises(StoreError, match=message):
        RunWriter.create(tmp_path / "run", labels=np.zeros(4, dtype=int), n_classes=2, embedding_dim=2, **bad)


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def test_the_projection_places_pool_rows_among_the_training_samples_they_resemble(tmp_path):
    from timetravel.projection import TemporalProjector

    rng = np.random.default_rng(0)
    n, k, d = 120, 3, 4
    labels = np.arange(n) % k
    w = RunWriter.create(tmp_path / "run", labels=labels, n_classes=k, embedding_dim=d, n_pool=k,
                         embedding_dtype="float32")  # fmt: skip
    centres = 6.0 * np.eye(k, d)
    for epoch, pool in ((0, False), (1, True)):
        emb = centres[labels] + rng.normal(scale=0.3, size=(n, d))
        logits = emb[:, :k]
        with w.begin_epoch(epoch) as ew:
            ew.write(0, emb, logits)
            if pool:  # one pool sample at each class centre
                ew.write(0, centres[:k], centres[:k, :k], split="pool")
            ew.set_head(np.eye(k, d), np.zeros(k))
            ew.commit()
    TemporalProjector(decoder_steps=40, grid_size=16, init_epochs=100, max_epochs=40, min_epochs=10,
                      metric_samples=40, verbose=False).fit(tmp_path / "run")  # fmt: skip
    store = RunStore(tmp_path / "run")
    assert not store.has_projection(0, "pool") and store.has_projection(1, "pool")
    xy, pool_xy = np.asarray(store.projection(1)), np.asarray(store.projection(1, "pool"))
    assert pool_xy.shape == (k, 2) and pool_xy.dtype == np.float32
    for c in range(k):  # nearest to its own class's dots, far from the others'
        d2 = ((xy - pool_xy[c]) ** 2).sum(axis=1)
        assert np.bincount(labels[np.argsort(d2)[:10]], minlength=k).argmax() == c


def test_recorder_records_the_pool_in_every_eval_pass(tmp_path):
    x, y, pool = torch.randn(30, 5), torch.arange(30) % 3, torch.randn(12, 5)
    model = _model()
    rec = Recorder(model, "1", tmp_path / "run", tensor_loader(x, y, batch_size=7), head="2",
                   pool_loader=tensor_loader(pool, batch_size=5),
                   store_kwargs=dict(labels=y.numpy(), n_classes=3, embedding_dim=8, n_pool=12))
    rec.capture(0)
    rec.capture(1)
    store = RunStore(tmp_path / "run")
    with torch.no_grad():
        expected = model(pool).numpy()
    np.testing.assert_allclose(store.logits(1, "pool"), expected, rtol=1e-5, atol=1e-5)
    assert store.epochs == [0, 1]


def test_recorder_refuses_a_pool_loader_without_a_pool(tmp_path):
    x, y = torch.randn(9, 5), torch.arange(9) % 3
    from timetravel.capture import CaptureError

    with pytest.raises(CaptureError, match="has no pool; create it with n_pool"):
        Recorder(_model(), "1", tmp_path / "run", tensor_loader(x, y), head="2", pool_loader=tensor_loader(x),
                 store_kwargs=dict(labels=y.numpy(), n_classes=3, embedding_dim=8))


def test_pool_labels_are_logged_replayed_and_undone(tmp_path):
    from timetravel.feedback import FeedbackLog

    log = FeedbackLog(tmp_path / "feedback.jsonl", n_samples=10, n_classes=3, n_pool=5)
    log.append(4, "label", "s", label=2, split="pool")
    log.append(4, "accept", "s")  # training sample 4 is another sample
    log.append(1, "label", "s", label=0, split="pool")
    log.append(1, "label", "s", label=1, split="pool")
    log.append(1, "undo", "s", split="pool")
    state = FeedbackLog(tmp_path / "feedback.jsonl", n_pool=5).read()
    assert state.pool_labels == {4: 2, 1: 0}
    assert state.decisions == {4: True}
    assert '"split": "pool"' in (tmp_path / "feedback.jsonl").read_text().splitlines()[0]


@pytest.mark.parametrize("kwargs, message", [
    (dict(sample=0, decision="accept", split="pool"), "does not apply to the pool set"),
    (dict(sample=0, decision="label", label=1), "does not apply to the train set"),
    (dict(sample=5, decision="label", label=1, split="pool"), "out of range for a run of 5 pool rows"),
    (dict(sample=0, decision="label", split="pool"), "a pool label needs the label"),
])
def test_pool_events_are_checked(tmp_path, kwargs, message):
    from timetravel.errors import FeedbackLogError
    from timetravel.feedback import FeedbackLog

    log = FeedbackLog(tmp_path / "feedback.jsonl", n_samples=10, n_classes=3, n_pool=5)
    sample, decision = kwargs.pop("sample"), kwargs.pop("decision")
    with pytest.raises(FeedbackLogError, match=message):
        log.append(sample, decision, **kwargs)


def test_export_writes_the_pool_labels_with_the_models_prediction(tmp_path):
    import json

    from timetravel.cli import main
    from timetravel.feedback import FeedbackLog

    rng = np.random.default_rng(1)
    w = _writer(tmp_path / "run")
    _epoch(w, 0, rng)
    store = RunStore(tmp_path / "run")
    predicted = np.asarray(store.logits(0, "pool")).argmax(axis=1)
    log = FeedbackLog(tmp_path / "run", n_samples=40, n_classes=3, n_pool=25)
    log.append(3, "label", label=int(predicted[3]), split="pool")
    log.append(7, "label", label=int((predicted[7] + 1) % 3), split="pool")
    out = tmp_path / "pool.json"
    assert main(["export", str(tmp_path / "run"), "--pool", "--format", "json", "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert [r["pool_index"] for r in payload["labelled"]] == [3, 7]
    assert [r["model_was_wrong"] for r in payload["labelled"]] == [False, True]
    assert payload["n_model_wrong"] == 1


def test_export_pool_without_pool_says_so(tmp_path, capsys):
    from timetravel.cli import main

    w = RunWriter.create(tmp_path / "run", labels=np.arange(10) % 2, n_classes=2, embedding_dim=2)
    w.write_epoch(0, np.zeros((10, 2)), np.zeros((10, 2)), head=(np.zeros((2, 2)), np.zeros(2)))
    assert main(["export", str(tmp_path / "run"), "--pool"]) != 0
    assert "has no unlabelled pool" in capsys.readouterr().err


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory):
    """A recorded active-learning run: 10% of the tabular subject labelled, the rest as the pool."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import subjects

    return RunStore(subjects.record_pool_run("tabular", 0.1, 0, 4, tmp_path_factory.mktemp("pool")))


def test_pool_features_describe_every_pool_sample(pool_run):
    from timetravel.active import POOL_FEATURES, pool_features

    f = pool_features(pool_run)
    assert f.values.shape == (pool_run.n_pool, len(POOL_FEATURES)) and np.isfinite(f.values).all()
    np.testing.assert_array_equal(f.predicted, np.asarray(pool_run.logits(3, "pool")).argmax(axis=1))
    assert (f.predicted != f.runner_up).all()
    lc = f.values[:, f.names.index("least_confidence")]
    assert (0 <= lc).all() and (lc < 1).all()


def test_pool_scores_find_mispredicted_samples_better_than_chance(pool_run):
    from timetravel.active import pool_scores

    scores = pool_scores(pool_run)
    wrong = np.asarray(pool_run.logits(3, "pool")).argmax(axis=1) != pool_run.pool_true_labels
    top = np.argsort(-scores)[: int(wrong.sum()) // 2]
    assert wrong[top].mean() > wrong.mean() + 0.1


def test_pool_recommender_learns_from_labels(pool_run):
    from timetravel.active import pool_recommender

    rec = pool_recommender(pool_run, random_state=0)
    first = rec.recommend(5)
    assert len(set(first.tolist())) == 5 and first.max() < pool_run.n_pool
    rec.update(first, [True, False, True, False, True])
    assert not set(rec.recommend(20).tolist()) & set(first.tolist())


def test_pool_features_without_pool_say_what_to_record(tmp_path):
    from timetravel.active import ActiveLearningError, pool_features

    w = RunWriter.create(tmp_path / "run", labels=np.arange(10) % 2, n_classes=2, embedding_dim=2)
    for e in range(2):
        w.write_epoch(e, np.zeros((10, 2)), np.zeros((10, 2)), head=(np.zeros((2, 2)), np.zeros(2)))
    with pytest.raises(ActiveLearningError, match="no pool samples; record them with pool_loader"):
        pool_features(RunStore(tmp_path / "run"))
