"""Random streams for internal subsampling, independent of the user's own ``default_rng(seed)`` streams.

``np.random.default_rng(0).choice(n, k, replace=False)`` draws the same first
indices for any ``k``: a metric or a reference sample seeded with 0 would be
exactly the samples a label-noise generator seeded with 0 flipped. Each
internal purpose therefore gets its own stream, keyed by the seed and a name.
"""

from __future__ import annotations

import zlib

import numpy as np


def rng_for(seed: int, purpose: str) -> np.random.Generator:
    """A generator for ``purpose`` (e.g. ``"metric-rows"``), reproducible for a given ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode())]))


def subsample(n: int, size: int, seed: int, purpose: str) -> np.ndarray:
    """Sorted indices of ``min(n, size)`` distinct rows out of ``n`` (all rows when ``size >= n``)."""
    if size >= n:
        return np.arange(n)
    return np.sort(rng_for(seed, purpose).choice(n, size, replace=False))
