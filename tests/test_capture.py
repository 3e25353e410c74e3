"""Recorder: the right layer, rows in sample order, eval mode without grad, heads, margins, errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from timetravel import RunStore, RunWriter
from timetravel.capture import CaptureError, Recorder, label_margins, tensor_loader
from timetravel.models import make_model

N, M, K, D = 50, 14, 3, 6


class _Net(nn.Module):
    """Dropout before the embedding, so a train-mode pass would give different rows."""

    def __init__(self, head: nn.Module | None = None) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Dropout(0.5), nn.ReLU(), nn.Linear(12, D), nn.Tanh())
        self.head = head if head is not None else nn.Linear(D, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 4, generator=g), torch.randint(0, K, (n,), generator=g)


@pytest.fixture
def data():
    x, y = _data(N, 0)
    xh, yh = _data(M, 1)
    return x, y, xh, yh


def _writer(path, y, yh=None, **kw) -> RunWriter:
    return RunWriter.create(path, labels=y.numpy(), n_classes=K, embedding_dim=D,
                            heldout_labels=None if yh is None else yh.numpy(), embedding_dtype="float32", overwrite=True,
                            **kw)


def _recorder(path, data, model=None, *, heldout=True, **kw) -> Recorder:
    torch.manual_seed(0)
    x, y, xh, yh = data
    model = model or _Net()
    writer = _writer(path / "run", y, yh if heldout else None)
    kw.setdefault("head", "head")
    return Recorder(model, kw.pop("layer", "body"), writer, kw.pop("loader", tensor_loader(x, y, batch_size=16)),
                    tensor_loader(xh, yh, batch_size=16) if heldout else None, **kw)


def _expected(model: nn.Module, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    with torch.no_grad():
        emb = model.body(x)
        return emb.numpy(), model.head(emb).numpy()


def test_captures_the_hooked_layer_in_eval_mode(tmp_path, data):
    rec = _recorder(tmp_path, data)
    rec.model.train()
    rec.capture(0)
    store = RunStore(tmp_path / "run")
    emb, logits = _expected(rec.model, data[0])
    np.testing.assert_allclose(store.embedding(0), emb, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(store.logits(0), logits, rtol=1e-5, atol=1e-6)
    # an inner layer by module object: the hook takes that module's output, flattened
    inner = rec.model.body[1]
    with pytest.raises(CaptureError, match="layer 'body.1' outputs 12 features per sample, the store expects 6"):
        Recorder(rec.model, inner, _writer(tmp_path / "inner", data[1]), tensor_loader(data[0], data[1]), head=None)


@pytest.mark.parametrize("start_training", [True, False])
def test_mode_restored_and_no_grad(tmp_path, data, start_training):
    rec = _recorder(tmp_path, data)
    rec.model.train(start_training)
    grad_enabled, modes = [], []

    def spy(module, inputs, output):
        grad_enabled.append(torch.is_grad_enabled())
        modes.append(module.training)

    rec.model.body.register_forward_hook(spy)
    rec.capture(0)
    assert rec.model.training is start_training
    assert all(m.training is start_training for m in rec.model.modules())
    assert grad_enabled and not any(grad_enabled) and not any(modes)
    assert all(p.grad is None for p in rec.model.parameters())
    assert len(rec.model.body._forward_hooks) == 1  # the recorder's own hook was removed


def test_rows_follow_indices_of_a_shuffled_loader(tmp_path, data):
    x, y, _, _ = data
    shuffled = tensor_loader(x, y, batch_size=7, shuffle=True, generator=torch.Generator().manual_seed(3),
                             with_index=True)
    rec = _recorder(tmp_path, data, loader=shuffled, heldout=False)
    rec.capture(0)
    emb, logits = _expected(rec.model, x)
    store = RunStore(tmp_path / "run")
    np.testing.assert_allclose(store.embedding(0), emb, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(store.logits(0), logits, rtol=1e-5, atol=1e-6)


def test_plain_dataloader_in_order(tmp_path, data):
    x, y, _, _ = data
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)
    rec = _recorder(tmp_path, data, loader=loader, heldout=False)
    rec.capture(0)
    np.testing.assert_allclose(RunStore(tmp_path / "run").embedding(0), _expected(rec.model, x)[0], atol=1e-6)


def test_heldout_and_accuracies_recorded(tmp_path, data):
    x, y, xh, yh = data
    rec = _recorder(tmp_path, data)
    metrics = rec.capture(0, metrics={"train_loss": 0.5})
    store = RunStore(tmp_path / "run")
    emb_h, logits_h = _expected(rec.model, xh)
    np.testing.assert_allclose(store.embedding(0, "heldout"), emb_h, atol=1e-6)
    np.testing.assert_allclose(store.logits(0, "heldout"), logits_h, rtol=1e-5, atol=1e-6)
    assert metrics["test_acc"] == pytest.approx(np.mean(logits_h.argmax(1) == yh.numpy()))
    train_logits = _expected(rec.model, x)[1]
    assert metrics["eval_train_acc"] == pytest.approx(np.mean(train_logits.argmax(1) == y.numpy()))
    assert metrics["train_loss"] == 0.5 and "clean_train_acc" not in metrics
    assert store.history[0]["test_acc"] == metrics["test_acc"]


def test_clean_accuracy_when_store_has_true_labels(tmp_path, data):
    x, y, _, _ = data
    true = y.clone()
    true[:10] = (true[:10] + 1) % K
    writer = _writer(tmp_path / "run", y, true_labels=true.numpy())
    model = _Net()
    metrics = Recorder(model, "body", writer, tensor_loader(x, y), head="head").capture(0)
    pred = _expected(model, x)[1].argmax(1)
    assert metrics["clean_train_acc"] == pytest.approx(np.mean(pred == true.numpy()))


def test_head_weights_equal_the_model(tmp_path, data):
    rec = _recorder(tmp_path, data)
    rec.capture(0)
    w, b = RunStore(tmp_path / "run").head(0)
    np.testing.assert_array_equal(w, rec.model.head.weight.detach().numpy())
    np.testing.assert_array_equal(b, rec.model.head.bias.detach().numpy())
    assert "head_r2" not in rec.last_capture_


def test_surrogate_head_when_head_is_not_linear(tmp_path, data, caplog):
    model = _Net(head=nn.Sequential(nn.Linear(D, K), nn.Tanh()))
    rec = _recorder(tmp_path, data, model=model, head=None)
    with caplog.at_level(logging.WARNING, logger="timetravel.capture"):
        metrics = rec.capture(0)
    assert "least-squares surrogate" in caplog.text
    store = RunStore(tmp_path / "run")
    w, b = store.head(0)
    emb, logits = np.asarray(store.embedding(0), np.float64), np.asarray(store.logits(0), np.float64)
    fitted = emb @ w.T + b
    # the recorded R^2 is the surrogate's fit to the logits, and a least-squares fit beats the mean
    r2 = 1 - ((logits - fitted) ** 2).sum() / ((logits - logits.mean(0)) ** 2).sum()
    assert metrics["head_r2"] == pytest.approx(r2, abs=1e-4)
    assert 0.5 < r2 < 1.0
    beta = np.linalg.lstsq(np.c_[emb, np.ones(N)], logits, rcond=None)[0]
    np.testing.assert_allclose(w, beta[:-1].T, atol=1e-3)
    np.testing.assert_allclose(b, beta[-1], atol=1e-3)


def test_linear_head_found_by_itself_when_head_is_none(tmp_path, data):
    rec = _recorder(tmp_path, data, head=None)
    metrics = rec.capture(0)
    assert rec.head_name == "head" and "head_r2" not in metrics
    w, _ = RunStore(tmp_path / "run").head(0)
    np.testing.assert_array_equal(w, rec.model.head.weight.detach().numpy())


def test_surrogate_recovers_a_linear_map_hidden_in_a_custom_head(tmp_path, data):
    class Doubler(nn.Module):  # not a Linear: the head is fitted
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(D, K)

        def forward(self, e):
            return 2 * self.inner(e)

    rec = _recorder(tmp_path, data, model=_Net(head=Doubler()), head=None)
    metrics = rec.capture(0)
    assert metrics["head_r2"] == pytest.approx(1.0, abs=1e-6)
    w, _ = RunStore(tmp_path / "run").head(0)
    np.testing.assert_allclose(w, 2 * rec.model.head.inner.weight.detach().numpy(), atol=1e-3)


def test_linear_head_that_does_not_make_the_logits_falls_back(tmp_path, data, caplog):
    class Scaled(_Net):
        def forward(self, x):
            return 3.0 * super().forward(x)

    rec = _recorder(tmp_path, data, model=Scaled())
    with caplog.at_level(logging.WARNING, logger="timetravel.capture"):
        metrics = rec.capture(0)
    assert "does not reproduce the model's logits" in caplog.text
    assert metrics["head_r2"] == pytest.approx(1.0, abs=1e-6)
    w, _ = RunStore(tmp_path / "run").head(0)
    np.testing.assert_allclose(w, 3.0 * rec.model.head.weight.detach().numpy(), atol=1e-3)


def test_train_margins_are_epoch_means(tmp_path, data, caplog):
    x, y, _, _ = data
    rec = _recorder(tmp_path, data, heldout=False)
    rng = np.random.default_rng(0)
    l1, l2 = rng.normal(size=(N, K)), rng.normal(size=(N - 5, K))
    rec.record_train_margins(torch.arange(N), torch.tensor(l1, requires_grad=True), y)
    rec.record_train_margins(np.arange(N - 5), l2, y[: N - 5])
    with caplog.at_level(logging.WARNING, logger="timetravel.capture"):
        rec.capture(0)
    assert "no training forward pass" not in caplog.text
    yy = y.numpy()
    m1, m2 = label_margins(l1, yy), label_margins(l2, yy[: N - 5])
    expected = m1.copy()
    expected[: N - 5] = (m1[: N - 5] + m2) / 2
    np.testing.assert_allclose(RunStore(tmp_path / "run").train_margin(0), expected, rtol=1e-6)
    # the next epoch starts afresh; samples without a training pass get their eval-mode margin
    rec.record_train_margins(np.arange(10), l1[:10], y[:10])
    with caplog.at_level(logging.WARNING, logger="timetravel.capture"):
        rec.capture(1)
    assert "40 of 50 samples had no training forward pass" in caplog.text
    store = RunStore(tmp_path / "run")
    margin = store.train_margin(1)
    np.testing.assert_allclose(margin[:10], label_margins(l1[:10], yy[:10]), rtol=1e-6)
    np.testing.assert_allclose(margin[10:], label_margins(store.logits(1)[10:], yy[10:]), rtol=1e-5)


def test_label_margins_definition():
    logits = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 5.0], [1.0, 4.0, -2.0]])
    np.testing.assert_allclose(label_margins(logits, np.array([0, 1, 2])), [1.0, 0.0, -6.0])


def test_no_margins_recorded_without_calls(tmp_path, data):
    _recorder(tmp_path, data).capture(0)
    assert RunStore(tmp_path / "run").train_margin(0) is None


def test_store_from_path(tmp_path, data):
    x, y, _, _ = data
    model = _Net()
    kwargs = dict(labels=y.numpy(), n_classes=K, embedding_dim=D)
    Recorder(model, "body", tmp_path / "r", tensor_loader(x, y), head="head", store_kwargs=kwargs).capture(0)
    Recorder(model, "body", tmp_path / "r", tensor_loader(x, y), head="head").capture(1)  # resumes the run
    assert RunStore(tmp_path / "r").epochs == [0, 1]
    with pytest.raises(CaptureError, match="holds no run; pass store_kwargs"):
        Recorder(model, "body", tmp_path / "none", tensor_loader(x, y))


def test_bundled_model_records_its_head(tmp_path, data):
    x, y, _, _ = data
    model = make_model("cnn", (1, 4, 4), K, embedding_dim=D)
    rec = Recorder(model, model.embedding_layer, _writer(tmp_path / "run", y), tensor_loader(x, y), head=model.head)
    rec.capture(0)
    w, _ = RunStore(tmp_path / "run").head(0)
    np.testing.assert_array_equal(w, model.head.weight.detach().numpy())


# --------------------------------------------------------------------------- errors


def test_bad_layer_name(tmp_path, data):
    with pytest.raises(CaptureError, match=r"layer='bodyy' is not a module of _Net; known names include: body"):
        _recorder(tmp_path, data, layer="bodyy")
    with pytest.raises(CaptureError, match=r"head='nohead' is not a module"):
        _recorder(tmp_path, data, head="nohead")
    with pytest.raises(CaptureError, match="not part of the model"):
        _recorder(tmp_path, data, layer=nn.Linear(2, 2))
    with pytest.raises(CaptureError, match="must be an nn.Module or a dotted module name, got int"):
        _recorder(tmp_path, data, layer=3)


def test_shuffled_loader_without_indices_is_refused(tmp_path, data):
    x, y, _, _ = data
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    with pytest.raises(CaptureError, match="eval_loader shuffles its samples .* use shuffle=False or yield"):
        _recorder(tmp_path, data, loader=loader, heldout=False)
    assert RunStore(tmp_path / "run").epochs == []  # nothing half-written was committed


@pytest.mark.parametrize(
    ("loader", "message"),
    [
        (lambda x, y: tensor_loader(x[:-3], y[:-3]), "covered 47 of the 50 train samples"),
        (lambda x, y: [(x, y, torch.zeros(N, dtype=torch.long))], "eval_loader yielded sample 0 twice in one pass"),
        (lambda x, y: [(x, y, torch.arange(N) + 1)], "eval_loader: sample index 50 is outside the store's 50 samples"),
        (lambda x, y: tensor_loader(x.flip(0), y.flip(0)), "yields labels that differ from the store's labels"),
        (lambda x, y: [{"pixels": x}], r"calling the model with the batch's inputs failed: model\(pixels=Tensor\(50, 1, "
                                       r"4, 4\)\) raised TypeError"),
        (lambda x, y: [(x, y, x, x)], "cannot read a batch of type tuple with 4 items; .* describe yours with inputs="),
    ],
)
def test_loader_contract_errors(tmp_path, data, loader, message):
    """Each mistake is reported when the recorder is created, or at the latest by the first capture."""
    with pytest.raises(CaptureError, match=message):
        _recorder(tmp_path, data, loader=loader(data[0], data[1]), heldout=False).capture(0)


def test_heldout_loader_needs_a_heldout_store(tmp_path, data):
    x, y, xh, yh = data
    with pytest.raises(CaptureError, match="has no held-out set; create it with heldout_labels"):
        Recorder(_Net(), "body", _writer(tmp_path / "r", y), tensor_loader(x, y), tensor_loader(xh, yh))


def test_layer_running_twice_is_refused(tmp_path, data):
    class Twice(_Net):
        def forward(self, x):
            self.body(x)
            return super().forward(x)

    with pytest.raises(CaptureError, match="ran 2 times in 1 forward passes"):
        _recorder(tmp_path, data, model=Twice(), heldout=False)


def test_head_shape_mismatch(tmp_path, data):
    with pytest.raises(CaptureError, match=r"head 'head' is Linear\(6, 4\) but the store expects embedding_dim=6 and "
                                           "n_classes=3"):
        _recorder(tmp_path, data, model=_Net(head=nn.Linear(D, K + 1)), heldout=False)
    with pytest.raises(CaptureError, match=r"the model's output Tensor\(16, 4\) holds no \(B, 3\) logits tensor"):
        _recorder(tmp_path, data, model=_Net(head=nn.Linear(D, K + 1)), heldout=False, head=None)


def test_margin_argument_errors(tmp_path, data):
    rec = _recorder(tmp_path, data, heldout=False)
    with pytest.raises(CaptureError, match=r"indices must lie in \[0, 50\), got range \[0, 50\]"):
        rec.record_train_margins(np.array([0, 50]), np.zeros((2, K)), np.zeros(2, dtype=int))
    with pytest.raises(CaptureError, match="one entry per logits row"):
        rec.record_train_margins(np.arange(3), np.zeros((2, K)), np.zeros(2, dtype=int))


# --------------------------------------------------------------------------- background capture


def test_background_capture_records_the_weights_at_capture_time(tmp_path, data):
    x, y, xh, yh = data
    sync = _recorder(tmp_path / "sync", data)
    expected_emb, expected_logits = _expected(sync.model, x)
    committed = []
    rec = Recorder(sync.model, "body", _writer(tmp_path / "bg", y, yh), tensor_loader(x, y, batch_size=16),
                   tensor_loader(xh, yh), head="head", background=True)
    rec.model.train()
    weight = rec.model.head.weight.detach().clone()
    assert rec.capture(0, on_commit=lambda: committed.append(RunStore(tmp_path / "bg").epochs)) is None
    with torch.no_grad():  # the training goes on while epoch 0 is recorded
        for p in rec.model.parameters():
            p.add_(1.0)
    metrics = rec.wait()
    assert committed == [[0]]  # on_commit ran once the epoch was committed
    assert rec.model.training and "test_acc" in metrics
    store = RunStore(tmp_path / "bg")
    np.testing.assert_allclose(store.embedding(0), expected_emb, atol=1e-6)
    np.testing.assert_allclose(store.logits(0), expected_logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(store.head(0)[0], weight.numpy())
    rec.capture(1)  # the next capture sees the updated weights
    rec.close()
    np.testing.assert_array_equal(RunStore(tmp_path / "bg").head(1)[0], rec.model.head.weight.detach().numpy())


def test_background_error_surfaces_on_wait(tmp_path, data):
    x, y, _, _ = data
    rec = Recorder(_Net(), "body", _writer(tmp_path / "run", y), tensor_loader(x[:-1], y[:-1]), head="head",
                   background=True, check=False)
    rec.capture(0)
    with pytest.raises(CaptureError, match="covered 49 of the 50 train samples"):
        rec.close()
    assert RunStore(tmp_path / "run").epochs == []
