"""Recording under ``torch.distributed`` (DDP): each rank records its own samples, rank 0 commits every epoch.

With a ``DistributedSampler`` each rank's training pass sees a disjoint shard
of the samples (padded with a few repeats to equal length). Each rank keeps
the rows it recorded, by sample index; at the end of the epoch the rows are
gathered to rank 0 (one collective per array), which writes and commits the
epoch once, complete and atomic. Eval passes run on rank 0 alone, on the
unwrapped module, so no rank waits on another's forward pass.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Shard(NamedTuple):
    """Rows one rank recorded: sample indices, embeddings, logits (host arrays)."""

    index: np.ndarray
    embedding: np.ndarray
    logits: np.ndarray


class Ranks:
    """The process group the recorder runs in; a single process when torch.distributed is not in use."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.active else 0
        self.world_size = dist.get_world_size() if self.active else 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the store (rank 0)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (a no-op in a single process)."""
        if self.active:
            self._dist.barrier()

    def _device(self) -> torch.device:
        if self._dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def gather(self, shard: Shard) -> Shard | None:
        """Every rank's rows, concatenated on rank 0 (None on the other ranks). Collective: all ranks call it."""
        dist, device = self._dist, self._device()
        size = torch.tensor([len(shard.index)], dtype=torch.int64, device=device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        dist.all_gather(sizes, size)
        counts = [int(s) for s in sizes]
        longest = max(max(counts), 1)
        width = shard.embedding.shape[1] + shard.logits.shape[1]
        index = torch.zeros(longest, dtype=torch.int64, device=device)
        data = torch.zeros(longest, width, dtype=torch.float32, device=device)
        if counts[self.rank]:
            index[: counts[self.rank]] = torch.from_numpy(shard.index)
            data[: counts[self.rank]] = torch.from_numpy(
                np.hstack([shard.embedding.astype(np.float32), shard.logits]))
        main = self.is_main
        index_parts = [torch.zeros_like(index) for _ in counts] if main else None
        data_parts = [torch.zeros_like(data) for _ in counts] if main else None
        dist.gather(index, index_parts, dst=0)
        dist.gather(data, data_parts, dst=0)
        if not main:
            return None
        d = shard.embedding.shape[1]
        all_index = torch.cat([p[:c] for p, c in zip(index_parts, counts)]).cpu().numpy()
        all_data = torch.cat([p[:c] for p, c in zip(data_parts, counts)]).cpu().numpy()
        return Shard(all_index, all_data[:, :d].astype(shard.embedding.dtype), all_data[:, d:].copy())
