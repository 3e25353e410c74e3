"""Models and loaders as users write them, each recorded end to end: record -> detect -> project -> app data.

A tutorial CNN with an ``nn.Sequential`` head, an LSTM, an encoder that returns
a tuple, a forward that returns a dict (Hugging Face style, with dict batches)
and a two-input ``model(tokens, offsets)``; each trained a few epochs with
train-pass capture (eval pass every other epoch and at the end), then
detected, projected and opened by the app's data layer.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from timetravel import RunStore, detect
from timetravel.capture import CaptureError, Recorder, tensor_loader

N, K, D, V, T = 48, 3, 8, 20, 6  # samples, classes, embedding width, vocabulary, sequence length
EPOCHS = 3


class TutorialCNN(nn.Module):
    """As in the PyTorch tutorials: in-place ReLUs, a Sequential classifier with dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(4 * 4 * 4, D), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(D, K))

    def forward(self, x):
        return self.classifier(self.features(x))


class LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, 8)
        self.lstm = nn.LSTM(8, D, batch_first=True)
        self.fc = nn.Linear(D, K)

    def forward(self, tokens):
        _, (h, _) = self.lstm(self.embed(tokens))
        return self.fc(h[-1])


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(48, D), nn.Tanh())
        self.attention = nn.Linear(D, T)

    def forward(self, x):
        features = self.net(x)
        return features, torch.softmax(self.attention(features), dim=1)


class TupleEncoderModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.head = nn.Linear(D, K)

    def forward(self, x):
        features, _ = self.encoder(x)
        return self.head(features)


class DictOutputModel(nn.Module):
    """Hugging Face style: keyword inputs, a dict-like output with ``logits``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(V, D)
        self.pooler = nn.Sequential(nn.Linear(D, D), nn.Tanh())
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(D, K)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask[..., None].float()
        pooled = self.pooler((self.embed(input_ids) * mask).sum(1) / mask.sum(1))
        return {"logits": self.classifier(self.dropout(pooled)), "pooled": pooled}


class BagModel(nn.Module):
    """The text-classification tutorial: ``model(tokens, offsets)`` over an EmbeddingBag."""

    def __init__(self) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(V, D, mode="mean")
        self.fc = nn.Linear(D, K)

    def forward(self, tokens, offsets):
        return self.fc(self.bag(tokens, offsets))


def _labels(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, K, (N,), generator=torch.Generator().manual_seed(seed))


def _tokens(y: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.randint(0, V // K, (N, T), generator=g) + (V // K) * y[:, None]).clamp(max=V - 1)


class _DictDataset(Dataset):
    def __init__(self, tokens, y):
        self.tokens, self.y = tokens, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"input_ids": self.tokens[i], "attention_mask": torch.ones(T, dtype=torch.long),
                "labels": self.y[i], "index": i}


class _BagDataset(Dataset):
    def __init__(self, tokens, y):
        self.tokens, self.y = tokens, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.tokens[i, : 2 + i % 4], int(self.y[i]), i  # sequences of different lengths


def _bag_collate(items):
    tokens = [t for t, _, _ in items]
    offsets = torch.tensor([0] + [len(t) for t in tokens[:-1]]).cumsum(0)
    return torch.cat(tokens), offsets, torch.tensor([y for _, y, _ in items]), torch.tensor([i for _, _, i in items])


def _images(y):
    g = torch.Generator().manual_seed(2)
    return torch.randn(N, 3, 8, 8, generator=g) + y[:, None, None, None].float()


def _case(kind: str):
    """(model, Recorder keyword arguments, training loader, eval loader, forward(batch) -> logits, labels of batch)."""
    y = _labels()
    if kind == "cnn":
        x = _images(y)
        return (TutorialCNN(), dict(layer="features", head="classifier"),
                tensor_loader(x, y, batch_size=8, shuffle=True, with_index=True), tensor_loader(x, y, batch_size=16),
                lambda m, b: m(b[0]), lambda b: (b[1], b[2]))
    if kind == "lstm":
        tokens = _tokens(y)
        return (LSTMClassifier(), dict(layer="lstm", embedding=lambda out: out[1][0][-1], head="fc"),
                tensor_loader(tokens, y, batch_size=8, shuffle=True, with_index=True),
                tensor_loader(tokens, y, batch_size=16), lambda m, b: m(b[0]), lambda b: (b[1], b[2]))
    if kind == "lstm-head-input":  # no layer: the embedding is what goes into the head, found by itself
        tokens = _tokens(y)
        return (LSTMClassifier(), dict(layer=None),
                tensor_loader(tokens, y, batch_size=8, shuffle=True, with_index=True),
                tensor_loader(tokens, y, batch_size=16), lambda m, b: m(b[0]), lambda b: (b[1], b[2]))
    if kind == "tuple":
        x = _images(y)[:, :, :4, :4]
        return (TupleEncoderModel(), dict(layer="encoder"),
                tensor_loader(x, y, batch_size=8, shuffle=True, with_index=True), tensor_loader(x, y, batch_size=16),
                lambda m, b: m(b[0]), lambda b: (b[1], b[2]))
    if kind == "dict":
        ds = _DictDataset(_tokens(y), y)
        return (DictOutputModel(), dict(layer="pooler", head="classifier"),
                DataLoader(ds, batch_size=8, shuffle=True), DataLoader(ds, batch_size=16),
                lambda m, b: m(input_ids=b["input_ids"], attention_mask=b["attention_mask"])["logits"],
                lambda b: (b["labels"], b["index"]))
    if kind == "two-input":
        ds = _BagDataset(_tokens(y), y)
        return (BagModel(), dict(layer="bag", head="fc", inputs=(0, 1), target=2, index=3),
                DataLoader(ds, batch_size=8, shuffle=True, collate_fn=_bag_collate),
                DataLoader(ds, batch_size=16, collate_fn=_bag_collate),
                lambda m, b: m(b[0], b[1]), lambda b: (b[2], b[3]))
    raise ValueError(kind)


KINDS = ("cnn", "lstm", "lstm-head-input", "tuple", "dict", "two-input")


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_model_kind_end_to_end(tmp_path, kind):
    from timetravel.projection import TemporalProjector
    from timetravel.server_app.data import RunData

    torch.manual_seed(0)
    model, kwargs, train_loader, eval_loader, forward, target_index = _case(kind)
    y = _labels()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no random-transform warning, no surrogate warning
        rec = Recorder(model, kwargs.pop("layer"), tmp_path / "run", eval_loader, train_pass=True, eval_every=2,
                       store_kwargs=dict(labels=y.numpy(), n_classes=K, embedding_dim=D), **kwargs)
    assert rec._head.linear is not None, "the model's own linear head is recorded, not a surrogate"
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for epoch in range(EPOCHS):
        model.train()
        for batch in train_loader:
            labels, index = target_index(batch)
            with rec.batch(index, labels):
                logits = forward(model, batch)
            loss = F.cross_entropy(logits, labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        rec.capture(epoch, {"train_loss": loss.item()})
    rec.close()
    store = RunStore(tmp_path / "run")
    assert [store.epoch_pass(e) for e in store.epochs] == ["train", "eval", "eval"]
    w, b = store.head(EPOCHS - 1)
    linear = rec._head.linear
    np.testing.assert_array_equal(w, linear.weight.detach().numpy())
    model.eval()
    with torch.no_grad():  # the last epoch is the final model in eval mode, row by sample index
        expected = torch.cat([forward(model, batch) for batch in eval_loader]).numpy()
    np.testing.assert_allclose(store.logits(EPOCHS - 1), expected, rtol=1e-4, atol=1e-5)
    detection = detect(store, n_neighbors=5, verbose=False)
    assert detection.scores.shape == (N,) and np.isfinite(detection.scores).all()
    TemporalProjector(decoder_steps=30, grid_size=12, init_epochs=40, max_epochs=20, min_epochs=5, metric_samples=20,
                      verbose=False).fit(store)
    data = RunData(tmp_path / "run")
    assert data.epochs == [0, 1, 2]
    frame = data.frame(EPOCHS - 1)
    assert frame.x.shape == (N,) and np.isfinite(frame.x).all()
    np.testing.assert_array_equal(frame.pred, expected.argmax(1))


def test_head_inside_a_sequential_is_found_by_itself(tmp_path):
    y = _labels()
    x = _images(y)
    model = TutorialCNN()
    store_kwargs = dict(labels=y.numpy(), n_classes=K, embedding_dim=D, overwrite=True)
    rec = Recorder(model, "features", tmp_path / "a", tensor_loader(x, y), head="classifier", store_kwargs=store_kwargs)
    assert rec.head_name == "classifier.1" and rec._head.linear is model.classifier[1]
    rec = Recorder(model, "features", tmp_path / "b", tensor_loader(x, y), store_kwargs=store_kwargs)  # head=None
    assert rec.head_name == "classifier.1"
    rec.capture(0)
    assert "head_r2" not in rec.last_capture_


def test_dict_batches_default_layout(tmp_path):
    y = _labels()
    ds = _DictDataset(_tokens(y), y)
    model = DictOutputModel()
    rec = Recorder(model, "pooler", tmp_path / "run", DataLoader(ds, batch_size=16, shuffle=True),
                   store_kwargs=dict(labels=y.numpy(), n_classes=K, embedding_dim=D))
    rec.capture(0)  # shuffled, but the batches carry "index": rows land by sample
    model.eval()
    with torch.no_grad():
        expected = model(ds.tokens, torch.ones(N, T, dtype=torch.long))["pooled"].numpy()
    np.testing.assert_allclose(RunStore(tmp_path / "run").embedding(0), expected, atol=2e-3)  # float16


def test_checks_at_construction(tmp_path):
    y = _labels()
    tokens = _tokens(y)
    kw = dict(store_kwargs=dict(labels=y.numpy(), n_classes=K, embedding_dim=D, overwrite=True))
    with pytest.raises(CaptureError, match=r"layer 'lstm' returns tuple\(Tensor\(16, 6, 8\), tuple\(Tensor\(1, 16, 8\), "
                                           r"Tensor\(1, 16, 8\)\)\), with no tensor of 8 values per sample; pass "
                                           "embedding="):
        Recorder(LSTMClassifier(), "lstm", tmp_path / "r", tensor_loader(tokens, y, batch_size=16), **kw)
    with pytest.raises(CaptureError, match=r"logits='scores' selects nothing in an output dict\(logits=Tensor\(48, 3\), "
                                           r"pooled=Tensor\(48, 8\)\)"):
        Recorder(DictOutputModel(), "pooler", tmp_path / "r",
                 [{"input_ids": tokens, "attention_mask": tokens * 0 + 1, "index": torch.arange(N)}],
                 logits="scores", **kw)
    ds = _BagDataset(tokens, y)
    with pytest.raises(CaptureError, match="cannot read a batch of type tuple with 4 items"):
        Recorder(BagModel(), "bag", tmp_path / "r", DataLoader(ds, batch_size=16, collate_fn=_bag_collate), **kw)


def test_random_transforms_in_the_eval_loader_warn(tmp_path):
    y = _labels()
    x = _images(y)

    class Augmented(Dataset):
        def __len__(self):
            return N

        def __getitem__(self, i):
            flip = torch.rand(()) < 0.5  # a random horizontal flip, as in a training transform
            return (x[i].flip(-1) if flip else x[i]) + 0.01 * torch.randn(x[i].shape), y[i]

    with pytest.warns(UserWarning, match="eval_loader gives different inputs for the same samples on two passes"):
        Recorder(TutorialCNN(), "features", tmp_path / "r", DataLoader(Augmented(), batch_size=16),
                 store_kwargs=dict(labels=y.numpy(), n_classes=K, embedding_dim=D))
