"""The framework callbacks against the real packages: a Lightning CNN and a tiny Hugging Face BERT, recorded end to end.

No weights are downloaded: the BERT is built from a ``BertConfig``, and the
hub is switched off (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is imported
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

import timetravel  # noqa: E402
from timetravel.capture import CaptureError  # noqa: E402
from timetravel.integrations import IndexedDataset  # noqa: E402

pytestmark = pytest.mark.slow

N, K = 96, 3


def _images(seed: int = 0) -> TensorDataset:
    """N grey 8x8 images whose class is the brightest quadrant, with a little noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(N) % K
    x = torch.rand(N, 1, 8, 8, generator=g) * 0.3
    for k in range(K):
        x[y == k, :, (k // 2) * 4:(k // 2) * 4 + 4, (k % 2) * 4:(k % 2) * 4 + 4] += 0.7
    return TensorDataset(x, y)


# --------------------------------------------------------------------------- IndexedDataset


def test_indexed_dataset_appends_the_index_and_finds_labels():
    tuples = IndexedDataset(_images())
    assert tuples[5][2] == 5 and len(tuples[5]) == 3 and tuples.labels().tolist() == (np.arange(N) % K).tolist()

    class Dicts(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"input_ids": torch.tensor([i]), "labels": i % 2}

    dicts = IndexedDataset(Dicts())
    assert set(dicts[3]) == {"input_ids", "labels", "index"} and dicts[3]["index"] == 3
    assert dicts.labels().tolist() == [0, 1, 0, 1]
    batch = next(iter(DataLoader(dicts, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))))
    assert sorted(batch["index"].tolist()) == [0, 1, 2, 3]
    assert IndexedDataset([torch.zeros(2)] * 3)[1][1] == 1
    with pytest.raises(timetravel.TimetravelError, match="holds no label"):
        IndexedDataset([torch.zeros(2)] * 3).labels()


# --------------------------------------------------------------------------- Lightning


def _lightning_module(lr: float):
    import lightning.pytorch as pl

    class SmallCNN(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                          nn.Linear(4 * 16, 12), nn.ReLU())  # fmt: skip
            self.classifier = nn.Linear(12, K)

        def forward(self, x):
            return self.classifier(self.features(x))

        def training_step(self, batch, batch_idx):
            x, y, _ = batch  # the index IndexedDataset adds
            loss = F.cross_entropy(self(x), y)
            self.log("train_loss", loss, on_epoch=True, on_step=False)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=lr)

    return SmallCNN()


def _fit_lightning(tmp_path, callback, lr: float = 0.5, epochs: int = 3, dataset=None):
    import lightning.pytorch as pl

    pl.seed_everything(0, verbose=False)
    module = _lightning_module(lr)
    loader = DataLoader(dataset if dataset is not None else IndexedDataset(_images()), batch_size=16, shuffle=True)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         callbacks=[callback],
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))  # fmt: skip
    trainer.fit(module, loader)
    return module


def test_lightning_records_the_training_steps_by_index(tmp_path):
    """With lr=0 the weights never change, so the shuffled train-pass rows must equal the final eval pass's."""
    from timetravel.integrations.lightning import TimetravelCallback

    out = tmp_path / "run"
    _fit_lightning(tmp_path, TimetravelCallback(out, layer="features", class_names=["a", "b", "c"]), lr=0.0)
    store = timetravel.RunStore(out)
    assert store.epochs == [0, 1, 2] and [store.epoch_pass(e) for e in store.epochs] == ["train", "train", "eval"]
    assert (store.n_samples, store.n_classes, store.embedding_dim) == (N, K, 12)
    assert store.class_names == ["a", "b", "c"] and store.manifest["recorded_by"] == "lightning"
    np.testing.assert_allclose(store.logits(0), store.logits(2), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(store.embedding(1), store.embedding(2), rtol=2e-3, atol=2e-3)  # float16
    assert "train_loss" in store.history[0]


def test_lightning_run_learns_and_goes_through_detect(tmp_path):
    from timetravel.integrations.lightning import TimetravelCallback

    out = tmp_path / "run"
    _fit_lightning(tmp_path, TimetravelCallback(out, layer="features", eval_every=2, heldout=_images(seed=1)),
                   epochs=4)  # fmt: skip
    store = timetravel.RunStore(out)
    assert [store.epoch_pass(e) for e in store.epochs] == ["train", "eval", "train", "eval"]
    assert store.n_heldout == N and store.history[-1]["test_acc"] > 0.9
    detection = timetravel.detect(store, verbose=False)
    assert len(detection.ranking()) == N


def test_lightning_step_calling_a_submodule(tmp_path):
    """training_step calls self.net(x): model="net" records that module's forward passes."""
    import lightning.pytorch as pl

    from timetravel.integrations.lightning import TimetravelCallback

    class Wrapper(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU(), nn.Linear(10, K))

        def training_step(self, batch, batch_idx):
            x, y, _ = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    out = tmp_path / "run"
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[TimetravelCallback(out, model="net")])  # fmt: skip
    trainer.fit(Wrapper(), DataLoader(IndexedDataset(_images()), batch_size=16, shuffle=True))
    store = timetravel.RunStore(out)
    assert store.epochs == [0, 1] and store.embedding_dim == 10 and store.epoch_pass(0) == "train"


DDP_SCRIPT = """
import sys, torch, torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
import lightning.pytorch as pl
from timetravel.integrations import IndexedDataset
from timetravel.integrations.lightning import TimetravelCallback


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU())
        self.classifier = nn.Linear(12, 3)

    def forward(self, x):
        return self.classifier(self.features(x))

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


if __name__ == "__main__":
    x, y = torch.rand(96, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(96) % 3
    loader = DataLoader(IndexedDataset(TensorDataset(x, y)), batch_size=16, shuffle=True)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[TimetravelCallback(sys.argv[1], layer="features")])
    trainer.fit(Net(), loader)
"""


def test_lightning_ddp_two_processes(tmp_path):
    """Two gloo ranks, each training on half the samples (DistributedSampler): rank 0 writes every sample's row.

    Under DDP Lightning calls the module with its forward redirected to training_step; the callback must read
    the inner self(x), not the loss. With lr=0 the train-pass epoch equals the final eval pass.
    """
    import subprocess

    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    store = timetravel.RunStore(out)
    assert store.epochs == [0, 1] and [store.epoch_pass(e) for e in store.epochs] == ["train", "eval"]
    np.testing.assert_allclose(store.logits(0), store.logits(1), rtol=1e-5, atol=1e-5)


def test_lightning_without_indexed_dataset_says_how_to_wrap(tmp_path):
    from timetravel.integrations.lightning import TimetravelCallback

    with pytest.raises(CaptureError, match=r"wrap it as timetravel.integrations.IndexedDataset\(train_set\)"):
        _fit_lightning(tmp_path, TimetravelCallback(tmp_path / "run"), dataset=_images())


# --------------------------------------------------------------------------- Hugging Face


class _TokenData(torch.utils.data.Dataset):
    """Sequences of 8 random tokens; the label is which of three marker tokens the sequence holds."""

    def __init__(self, n: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = (torch.arange(n) % K).tolist()
        self.ids = torch.randint(5, 40, (n, 8), generator=g)
        self.ids[:, 3] = torch.tensor(self.labels) + 1  # markers 1, 2, 3

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=K,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    return BertForSequenceClassification(config)


@pytest.fixture(autouse=True)
def _no_checkout_datasets_folder(monkeypatch):
    """Hide the checkout's ``datasets/`` data folder from ``import datasets``.

    ``python -m pytest`` puts the checkout on sys.path, where ``datasets/`` is a
    namespace package; transformers would take it for Hugging Face's ``datasets``.
    """
    def shadows(entry: str) -> bool:
        folder = Path(entry or ".").resolve() / "datasets"
        return folder.is_dir() and not (folder / "__init__.py").exists()

    monkeypatch.setattr(sys, "path", [p for p in sys.path if not shadows(p)])
    if "datasets" in sys.modules and getattr(sys.modules["datasets"], "__file__", None) is None:
        monkeypatch.delitem(sys.modules, "datasets")


def _train_bert(tmp_path, callback, *, lr: float, epochs: int = 2, remove_unused_columns: bool = False,
                eval_dataset=None):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "hf"), num_train_epochs=epochs, per_device_train_batch_size=16,
                             learning_rate=lr, report_to=[], save_strategy="no", logging_steps=1, use_cpu=True,
                             disable_tqdm=True, seed=0, remove_unused_columns=remove_unused_columns,
                             eval_strategy="epoch" if eval_dataset is not None else "no")  # fmt: skip
    trainer = Trainer(model=_bert(), args=args, train_dataset=IndexedDataset(_TokenData(N)), callbacks=[callback],
                      eval_dataset=eval_dataset)
    trainer.train()
    return trainer


def test_huggingface_records_the_trainer_steps_by_index(tmp_path):
    from timetravel.integrations.huggingface import TimetravelTrainerCallback

    out = tmp_path / "run"
    _train_bert(tmp_path, TimetravelTrainerCallback(out, dataset_name="tokens"), lr=0.0)
    store = timetravel.RunStore(out)
    assert store.epochs == [0, 1] and [store.epoch_pass(e) for e in store.epochs] == ["train", "eval"]
    assert (store.n_samples, store.n_classes, store.embedding_dim) == (N, K, 16)  # the pooled [CLS] vector
    assert store.manifest["dataset"] == "tokens" and store.manifest["recorded_by"] == "transformers"
    np.testing.assert_allclose(store.logits(0), store.logits(1), rtol=1e-4, atol=1e-4)
    assert "train_loss" in store.history[0]


def test_huggingface_run_learns(tmp_path):
    from timetravel.integrations.huggingface import TimetravelTrainerCallback

    out = tmp_path / "run"
    held = _TokenData(30, seed=1)
    trainer = _train_bert(tmp_path, TimetravelTrainerCallback(out, heldout=held), lr=5e-3, epochs=4, eval_dataset=held)
    assert any("eval_loss" in entry for entry in trainer.state.log_history)  # the Trainer's own evaluation ran too
    store = timetravel.RunStore(out)
    assert store.epochs == [0, 1, 2, 3] and store.epoch_pass(3) == "eval"
    assert store.history[-1]["eval_train_acc"] > store.history[0]["train_pass_acc"]
    assert store.n_heldout == 30 and "test_acc" in store.history[-1]


def test_huggingface_needs_the_index_column_kept(tmp_path):
    from timetravel.integrations.huggingface import TimetravelTrainerCallback

    with pytest.raises(CaptureError, match=r"remove_unused_columns=False"):
        _train_bert(tmp_path, TimetravelTrainerCallback(tmp_path / "run"), lr=0.0, remove_unused_columns=True)
