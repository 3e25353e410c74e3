"""DDP: two gloo processes on CPU, a DistributedSampler, train-pass capture; rank 0 commits each epoch once."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from timetravel import RunStore

N, K, D, WORLD, EPOCHS = 45, 3, 6, 2, 3  # N odd: the sampler pads one rank with a repeated sample


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, D), nn.ReLU(),
                         nn.Linear(D, K))


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, 2, 4, generator=g), torch.randint(0, K, (N,), generator=g)


def _rank(rank: int, path: str, port: int) -> None:
    from timetravel.capture import Recorder, tensor_loader

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        x, y = _data()
        model = nn.parallel.DistributedDataParallel(_net())
        data = TensorDataset(x, y, torch.arange(N))
        sampler = DistributedSampler(data, num_replicas=WORLD, rank=rank, shuffle=True, seed=0)
        loader = DataLoader(data, batch_size=8, sampler=sampler)
        rec = Recorder(model, "5", path, tensor_loader(x, y, batch_size=16), head="6", train_pass=True, eval_every=2,
                       store_kwargs=dict(labels=y.numpy(), n_classes=K, embedding_dim=D, embedding_dtype="float32"))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        seen = {}
        for epoch in range(EPOCHS):
            sampler.set_epoch(epoch)
            model.train()
            for xb, yb, idx in loader:
                with rec.batch(idx, yb):
                    logits = model(xb)
                seen.update({f"{epoch}-{int(i)}": row for i, row in zip(idx, logits.detach().numpy())})
                opt.zero_grad()
                F.cross_entropy(logits, yb).backward()
                opt.step()
            rec.capture(epoch)
        rec.close()
        np.savez(f"{path}-rank{rank}.npz", **seen)
        if rank == 0:
            torch.save(model.module.state_dict(), f"{path}-final.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_record_one_complete_epoch_each(tmp_path):
    path = str(tmp_path / "run")
    mp.spawn(_rank, args=(path, _free_port()), nprocs=WORLD, join=True)
    store = RunStore(path)
    assert store.epochs == [0, 1, 2]
    assert [store.epoch_pass(e) for e in store.epochs] == ["train", "eval", "eval"]
    # epoch 0 came from the training passes of both ranks, each sample by its index
    seen = {}
    for rank in range(WORLD):
        with np.load(f"{path}-rank{rank}.npz", allow_pickle=False) as f:
            seen.update({k: f[k] for k in f.files})
    ranks_rows = np.stack([seen[f"0-{i}"] for i in range(N)])
    assert store.observed(0) is None
    np.testing.assert_allclose(store.logits(0), ranks_rows, rtol=1e-5, atol=1e-6)
    # the last epoch is the final model in eval mode (rank 0's eval pass)
    model = _net()
    model.load_state_dict(torch.load(f"{path}-final.pt", weights_only=True))
    model.eval()
    x, _ = _data()
    with torch.no_grad():
        np.testing.assert_allclose(store.logits(2), model(x).numpy(), rtol=1e-5, atol=1e-6)
    assert not list((tmp_path / "run" / "epochs").glob(".*tmp*"))  # nothing half-written left behind
