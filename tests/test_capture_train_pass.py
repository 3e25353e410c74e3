"""Train-pass capture: rows from the user's own training forward passes, eval passes on schedule, missing samples."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from timetravel import RunStore, RunWriter, StoreError
from timetravel.capture import CaptureError, Recorder, label_margins, tensor_loader
from timetravel.store import EpochWriter

N, K, D = 40, 3, 5


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, D))
        self.head = nn.Linear(D, K)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 2, 4, generator=g), torch.randint(0, K, (N,), generator=g)


def _writer(path, y, **kw):
    return RunWriter.create(path, labels=y.numpy(), n_classes=K, embedding_dim=D, embedding_dtype="float32",
                            overwrite=True, **kw)


def _shuffled(x, y, batch_size, seed):
    return tensor_loader(x, y, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed),
                         with_index=True)


def _train(rec, model, loader, epochs, *, spy=None, record=True):
    """A plain training loop; ``spy`` collects what the layer gave in the training pass, by sample."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for epoch in range(epochs):
        model.train()
        for x, y, idx in loader:
            if record:
                with rec.batch(idx, y):
                    logits = model(x)
            else:
                logits = model(x)
            if spy is not None:
                spy[epoch][idx.numpy()] = logits.detach().numpy()
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        rec.capture(epoch, metrics={"train_loss": loss.item()})


def test_rows_come_from_the_training_pass(tmp_path):
    torch.manual_seed(0)
    x, y = _data()
    model = _Net()
    rec = Recorder(model, "body", _writer(tmp_path / "run", y), head="head", train_pass=True)
    loader = _shuffled(x, y, 7, 1)
    spy = np.zeros((3, N, K), np.float32)
    _train(rec, model, loader, 3, spy=spy)
    rec.close()
    store = RunStore(tmp_path / "run")
    assert store.epochs == [0, 1, 2] and [store.epoch_pass(e) for e in store.epochs] == ["train"] * 3
    for e in range(3):
        # the logits of the training forward pass (dropout on, weights of the moment), row by sample index
        np.testing.assert_allclose(store.logits(e), spy[e], rtol=1e-6)
        np.testing.assert_allclose(store.train_margin(e), label_margins(spy[e], y.numpy()), rtol=1e-5)
        assert store.observed(e) is None
    assert store.history[0]["train_pass_acc"] == pytest.approx(np.mean(spy[0].argmax(1) == y.numpy()))
    assert "train_loss" in store.history[2]
    w, _ = store.head(2)
    np.testing.assert_array_equal(w, model.head.weight.detach().numpy())


def test_eval_every_and_the_last_epoch_by_eval_pass(tmp_path):
    torch.manual_seed(0)
    x, y = _data()
    model = _Net()
    rec = Recorder(model, "body", _writer(tmp_path / "run", y), tensor_loader(x, y, batch_size=16), head="head",
                   train_pass=True, eval_every=2)
    assert [rec.eval_due(e) for e in range(4)] == [False, True, False, True]
    loader = _shuffled(x, y, 8, 2)
    spy = np.zeros((5, N, K), np.float32)
    _train(rec, model, loader, 5, spy=spy)
    rec.close()
    store = RunStore(tmp_path / "run")
    assert [store.epoch_pass(e) for e in store.epochs] == ["train", "eval", "train", "eval", "eval"]
    model.eval()
    with torch.no_grad():
        final = model(x).numpy()
    np.testing.assert_allclose(store.logits(4), final, rtol=1e-5, atol=1e-6)  # close(): the final weights, eval mode
    # the eval-pass epochs keep the training pass's margins and the user's metrics
    np.testing.assert_allclose(store.train_margin(4), label_margins(spy[4], y.numpy()), rtol=1e-5)
    np.testing.assert_allclose(store.train_margin(1), label_margins(spy[1], y.numpy()), rtol=1e-5)
    assert "train_loss" in store.history[4] and "eval_train_acc" in store.history[4]
    assert store.manifest["epoch_passes"]["4"] == "eval"


def test_a_one_epoch_run_ends_as_an_eval_pass(tmp_path):
    x, y = _data()
    model = _Net()
    rec = Recorder(model, "body", _writer(tmp_path / "run", y), tensor_loader(x, y), head="head", train_pass=True)
    _train(rec, model, tensor_loader(x, y, batch_size=10, with_index=True), 1)
    rec.close()
    assert RunStore(tmp_path / "run").epoch_pass(0) == "eval"


def test_writes_happen_off_the_training_thread(tmp_path, monkeypatch):
    threads = set()
    original = EpochWriter.write

    def spy(self, *args, **kwargs):
        threads.add(threading.current_thread().name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EpochWriter, "write", spy)
    x, y = _data()
    model = _Net()
    rec = Recorder(model, "body", _writer(tmp_path / "run", y), head="head", train_pass=True)
    _train(rec, model, tensor_loader(x, y, batch_size=10, with_index=True), 2)
    rec.close()
    assert threads == {"timetravel-writer"}


def test_a_sample_missing_from_the_training_pass_is_an_error(tmp_path):
    x, y = _data()
    model = _Net()
    rec = Recorder(model, "body", _writer(tmp_path / "run", y), head="head", train_pass=True)
    dropped = [(x[:32], y[:32], torch.arange(32))]  # drop_last: 8 samples never go through
    with pytest.raises(CaptureError, match="epoch 0: 8 of 40 training samples went through no recorded training pass "
                                           r"\(e.g. sample 32\).*drop_last=False, or Recorder\(missing='previous'\)"):
        _train(rec, model, dropped, 1)
        rec.wait()
    assert RunStore(tmp_path / "run").epochs == []


def test_missing_previous_carries_rows_and_marks_them(tmp_path):
    x, y = _data()
    model = _Net()
    rec = Recorder(model, "body", _writer(tmp_path / "run", y), head="head", train_pass=True, missing="previous")
    full = [(x, y, torch.arange(N))]
    partial = [(x[10:], y[10:], torch.arange(10, N))]
    spy = np.zeros((2, N, K), np.float32)
    _train(rec, model, full, 1, spy=spy[:1])
    opt_spy = spy[1:]
    _train(rec, model, partial, 1, spy=opt_spy)  # counted as epoch 0 again: re-recorded below as epoch 1
    rec.close()
    store = RunStore(tmp_path / "run")
    observed = store.observed(0)
    assert observed is not None and not observed[:10].any() and observed[10:].all()
    np.testing.assert_allclose(store.logits(0)[10:], spy[1][10:], rtol=1e-6)
    np.testing.assert_allclose(store.logits(0)[:10], spy[0][:10], rtol=1e-6)  # carried from the earlier pass
    # a sample that no training pass ever saw has nothing to carry
    rec2 = Recorder(_Net(), "body", _writer(tmp_path / "run2", y), head="head", train_pass=True, missing="previous")
    with pytest.raises(CaptureError, match="10 of 40 training samples have never gone through a recorded training"):
        _train(rec2, rec2.model, partial, 1)
        rec2.wait()


def test_batches_must_be_recorded(tmp_path):
    x, y = _data()
    model = _Net()
    rec = Recorder(model, "body", _writer(tmp_path / "run", y), head="head", train_pass=True)
    with pytest.raises(CaptureError, match=r"no training batch was recorded this epoch; wrap the training forward "
                                           r"pass in `with recorder.batch\(index\):`"):
        _train(rec, model, [(x, y, torch.arange(N))], 1, record=False)
    with pytest.raises(CaptureError, match="the training batch has 3 sample indices but the model saw 40 rows"):
        with rec.batch(torch.arange(3)):
            model(x)
    rec.close()
    eval_rec = Recorder(model, "body", _writer(tmp_path / "eval", y), tensor_loader(x, y), head="head")
    with pytest.raises(CaptureError, match="create the Recorder with train_pass=True"):
        with eval_rec.batch(torch.arange(N)):
            model(x)
    with pytest.raises(CaptureError, match="eval_loader is required"):
        Recorder(model, "body", _writer(tmp_path / "e2", y), head="head")
    with pytest.raises(CaptureError, match="eval_every only applies with train_pass=True"):
        Recorder(model, "body", _writer(tmp_path / "e3", y), tensor_loader(x, y), eval_every=3)


def test_labels_of_a_training_batch_are_checked(tmp_path):
    x, y = _data()
    model = _Net()
    rec = Recorder(model, "body", _writer(tmp_path / "run", y), head="head", train_pass=True)
    with rec.batch(torch.arange(N), (y + 1) % K):
        model(x)
    with pytest.raises(CaptureError, match="the training batch yields labels that differ from the store's labels"):
        rec.wait()


def test_record_batch_takes_rows_computed_elsewhere(tmp_path):
    x, y = _data()
    rec = Recorder(_Net(), "body", _writer(tmp_path / "run", y), head="head", train_pass=True)
    emb, logits = torch.randn(N, D), torch.randn(N, K)
    rec.record_batch(torch.arange(N).flip(0), emb, logits)
    rec.capture(0)
    rec.close()
    store = RunStore(tmp_path / "run")
    np.testing.assert_allclose(store.embedding(0), emb.flip(0).numpy(), rtol=1e-6)
    with pytest.raises(CaptureError, match=r"record_batch needs embedding \(B, 5\) and logits \(B, 3\)"):
        rec.record_batch(torch.arange(2), torch.zeros(2, 4), torch.zeros(2, K))


def test_store_says_how_each_epoch_was_recorded(tmp_path):
    y = np.arange(6) % K
    writer = RunWriter.create(tmp_path / "run", labels=y, n_classes=K, embedding_dim=D, heldout_labels=y[:2])
    head = (np.zeros((K, D)), np.zeros(K))
    writer.write_epoch(0, np.ones((6, D)), np.ones((6, K)), head=head, heldout=(np.ones((2, D)), np.ones((2, K))))
    assert "epoch_passes" not in writer.manifest  # runs recorded only by eval passes keep their old manifest
    with writer.begin_epoch(1) as ew:
        ew.write(0, np.ones((6, D)), np.ones((6, K)))
        ew.set_head(*head)
        ew.set_pass("train", np.array([True] * 5 + [False]))
        ew.commit()
    store = RunStore(tmp_path / "run")
    assert [store.epoch_pass(e) for e in (0, 1)] == ["eval", "train"]
    assert store.has_heldout(0) and not store.has_heldout(1)
    assert store.observed(0) is None and store.observed(1).tolist() == [True] * 5 + [False]
    with pytest.raises(StoreError, match="epoch 1 was recorded by a train pass without the held-out set"):
        store.embedding(1, "heldout")
    with pytest.raises(StoreError, match="pass must be one of"):
        writer.begin_epoch(2).set_pass("test")


def test_channels_first_thumbnails_are_transposed(tmp_path):
    y = np.arange(4) % K
    rgb = np.random.default_rng(0).integers(0, 255, (4, 3, 5, 7), dtype=np.uint8)
    RunWriter.create(tmp_path / "a", labels=y, n_classes=K, embedding_dim=D, thumbs=rgb)
    np.testing.assert_array_equal(RunStore(tmp_path / "a").thumbs, rgb.transpose(0, 2, 3, 1))
    RunWriter.create(tmp_path / "b", labels=y, n_classes=K, embedding_dim=D, thumbs=rgb[:, :1])
    assert RunStore(tmp_path / "b").thumbs.shape == (4, 5, 7)
    with pytest.raises(StoreError, match=r"thumbs must be \(4, H, W\) or \(4, H, W, 3\) uint8"):
        RunWriter.create(tmp_path / "c", labels=y, n_classes=K, embedding_dim=D,
                         thumbs=np.zeros((4, 5, 7, 4), np.uint8))


@pytest.fixture
def one_thread():
    """Two threads sharing the intra-op pool round training differently; one thread keeps runs identical."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_background_eval_passes_in_train_pass_mode_match_the_synchronous_ones(tmp_path, one_thread):
    x, y = _data()
    stores = []
    for background in (False, True):
        torch.manual_seed(0)
        model = _Net()
        path = tmp_path / f"run-{background}"
        rec = Recorder(model, "body", _writer(path, y), tensor_loader(x, y, batch_size=16), head="head",
                       train_pass=True, eval_every=2, background=background)
        _train(rec, model, _shuffled(x, y, 8, 3), 4)
        rec.close()
        stores.append(RunStore(path))
    sync, bg = stores
    assert [bg.epoch_pass(e) for e in bg.epochs] == ["train", "eval", "train", "eval"]
    for e in sync.epochs:
        np.testing.assert_allclose(bg.logits(e), sync.logits(e), rtol=1e-6)
        np.testing.assert_allclose(bg.train_margin(e), sync.train_margin(e), rtol=1e-6)


@pytest.mark.parametrize("options", [dict(), dict(background=True), dict(train_pass=True, eval_every=2),
                                     dict(train_pass=True, eval_every=2, background=True)])
def test_recording_leaves_the_training_as_it_was(tmp_path, one_thread, options):
    """No recorder pass draws from torch's global random stream (dropout, shuffling stay the same)."""
    x, y = _data()
    weights = []
    for record in (False, True):
        torch.manual_seed(0)
        model = _Net()
        loader = tensor_loader(x, y, batch_size=8, shuffle=True, with_index=True)  # shuffled by the global stream
        rec = Recorder(model, "body", _writer(tmp_path / "run", y), tensor_loader(x, y, batch_size=16),
                       head="head", **options) if record else None
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for epoch in range(3):
            model.train()
            for xb, yb, idx in loader:
                if rec is not None and rec.train_pass:
                    with rec.batch(idx):
                        logits = model(xb)
                else:
                    logits = model(xb)
                opt.zero_grad()
                F.cross_entropy(logits, yb).backward()
                opt.step()
            if rec is not None:
                rec.capture(epoch)
        if rec is not None:
            rec.close()
        weights.append(model.head.weight.detach().clone())
    torch.testing.assert_close(weights[1], weights[0], rtol=0, atol=0)


def test_recorder_is_exported_lazily():
    import subprocess
    import sys

    import timetravel

    assert timetravel.Recorder is Recorder
    code = "import sys, timetravel; assert 'torch' not in sys.modules; timetravel.Recorder; assert 'torch' in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_app_caption_says_how_a_mixed_run_recorded_each_epoch(tmp_path):
    from types import SimpleNamespace

    from timetravel.server_app.timeline import caption

    x, y = _data()
    model = _Net()
    rec = Recorder(model, "body", _writer(tmp_path / "run", y), tensor_loader(x, y), head="head", train_pass=True)
    _train(rec, model, tensor_loader(x, y, batch_size=10, with_index=True), 2)
    rec.close()
    store = RunStore(tmp_path / "run")
    data = SimpleNamespace(store=store, epochs=store.epochs)
    assert caption(data, 0).startswith("epoch 0 (1 of 2, train pass)")
    assert caption(data, 1).startswith("epoch 1 (2 of 2, eval pass)")


def test_rows_go_to_the_writer_in_chunks_and_its_error_stops_the_next_batch(tmp_path, monkeypatch):
    from timetravel.capture import recorder as recorder_module

    x, y = _data()
    model = _Net()
    handed = []
    rec = Recorder(model, "body", _writer(tmp_path / "run", y), head="head", train_pass=True)
    monkeypatch.setattr(recorder_module, "HANDOFF_ROWS", 2 * (N // 5))
    add = rec.sink.add_batches
    monkeypatch.setattr(rec.sink, "add_batches", lambda batches: (handed.append(len(batches)), add(batches)))
    for part in torch.arange(N).chunk(5):
        with rec.batch(part):
            model(x[part])
    rec.capture(0)
    rec.wait()
    assert handed == [2, 2, 1]  # two batches per hand-off, the rest at capture()
    assert RunStore(tmp_path / "run").epochs == [0]
    monkeypatch.setattr(recorder_module, "HANDOFF_ROWS", 1)
    with rec.batch(torch.arange(N), (y + 1) % K):  # wrong labels: the writer thread fails on them
        model(x)
    with pytest.raises(CaptureError, match="differ from the store's labels"):
        for _ in range(50):  # the writer thread reports it by the next batch at the latest once it ran
            time.sleep(0.01)
            with rec.batch(torch.arange(N)):
                model(x)
