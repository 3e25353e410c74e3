"""The inverse map of one epoch: a small torch decoder from the canvas back to embedding space.

The decoder predicts the embedding's coordinates in that epoch's top
principal components (``components`` of them); the embedding is
``mean + z @ basis``. Working in the principal subspace keeps the network
small and its training fast whatever the embedding width, and lets the
classification head be folded into the subspace (``logits = z @ (W basis^T)^T
+ W mean + b``).

Its input is the normalised canvas position together with random Fourier
features of it (``sin``/``cos`` of random projections), which let it carve
the small islands a model makes around samples it memorised. It is trained
with three terms:

- the squared reconstruction error of the samples (relative to the
  embedding's variance);
- the cross-entropy between the head applied to the reconstruction and the
  model's own prediction, so the class read off a sample's canvas position is
  the model's prediction (prediction preservation);
- a smoothness penalty (squared finite-difference gradient at random canvas
  points), which keeps the map, and so the territories, smooth wherever the
  data do not ask for detail.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from timetravel.errors import TimetravelError
from timetravel.numerics import principal_axes

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecoderParams:
    """Training settings of :func:`fit_inverse_map` (see :class:`TemporalProjector`)."""

    components: int = 64
    hidden: int = 128
    steps: int = 1000
    batch_size: int = 512
    learning_rate: float = 5e-3
    prediction_weight: float = 1.0
    max_samples: int = 20000
    fourier_features: int = 32
    fourier_scale: float = 12.0
    smoothness: float = 0.02


@contextlib.contextmanager
def torch_threads(n: int):
    """Run torch on ``n`` threads inside the block (the decoder is too small to gain from more,
    and spare threads spin against the other jobs)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _decoder(n_out: int, hidden: int, n_frequencies: int):
    """The decoder network; its random frequencies are a buffer, saved with the weights."""
    import torch
    from torch import nn

    class Decoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("frequencies", torch.zeros(2, n_frequencies))
            width = 2 + 2 * n_frequencies
            self.net = nn.Sequential(
                nn.Linear(width, hidden),
                nn.SiLU(),
                nn.Linear(hidden, hidden),
                nn.SiLU(),
                nn.Linear(hidden, hidden),
                nn.SiLU(),
                nn.Linear(hidden, n_out),
            )

        def forward(self, u: torch.Tensor) -> torch.Tensor:
            phase = (2.0 * np.pi) * (u @ self.frequencies)
            return self.net(torch.cat([u, torch.sin(phase), torch.cos(phase)], dim=1))

    return Decoder()


class InverseMap:
    """Maps canvas positions of one epoch back to that epoch's embedding space.

    Parameters
    ----------
    decoder : torch.nn.Module
        Network from normalised 2D positions to principal-component coordinates.
    mean : ndarray of shape (D,)
        Mean embedding.
    basis : ndarray of shape (r, D)
        Orthonormal principal directions.
    center : ndarray of shape (2,), scale : float
        Canvas normalisation applied before the decoder.
    """

    def __init__(self, decoder, mean: np.ndarray, basis: np.ndarray, center: np.ndarray, scale: float) -> None:
        self.decoder = decoder.eval()
        self.mean = np.asarray(mean, dtype=np.float32)
        self.basis = np.asarray(basis, dtype=np.float32)
        self.center = np.asarray(center, dtype=np.float32)
        self.scale = float(scale)

    def components(self, xy: np.ndarray, batch: int = 65536) -> np.ndarray:
        """Principal-component coordinates ``(N, r)`` of the embeddings at canvas positions ``xy``."""
        import torch

        xy = np.asarray(xy, dtype=np.float32)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"xy must have shape (N, 2), got {xy.shape}")
        out = np.empty((len(xy), len(self.basis)), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(xy), batch):
                u = torch.from_numpy((xy[start : start + batch] - self.center) / self.scale)
                out[start : start + batch] = self.decoder(u).numpy()
        return out

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        """Embeddings ``(N, D)`` float32 at canvas positions ``xy`` ``(N, 2)``."""
        return self.components(xy) @ self.basis + self.mean

    def logits(self, xy: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """Logits ``(N, K)`` of the head ``(weight, bias)`` applied to the embeddings at ``xy``."""
        w_sub, b_sub = _head_in_subspace(weight, bias, self.mean, self.basis)
        return self.components(xy) @ w_sub.T + b_sub

    def files(self) -> tuple[dict[str, np.ndarray], dict[str, bytes]]:
        """The arrays and blobs :meth:`load` reads back: ``decoder_basis``, ``decoder_mean``, ``decoder.pt``."""
        import torch

        buf = io.BytesIO()
        torch.save(self.decoder.state_dict(), buf)
        return {"decoder_basis": self.basis, "decoder_mean": self.mean}, {"decoder.pt": buf.getvalue()}

    @property
    def shape(self) -> dict[str, int]:
        """What :meth:`load` needs to rebuild the network: hidden width and number of frequencies."""
        return {"hidden": self.decoder.net[0].out_features, "n_frequencies": self.decoder.frequencies.shape[1]}

    @classmethod
    def load(
        cls, directory: Path, *, hidden: int, n_frequencies: int, center: np.ndarray, scale: float
    ) -> InverseMap:
        """Read an inverse map saved from :meth:`files` (weights loaded with ``weights_only=True``)."""
        import torch

        directory = Path(directory)
        try:
            basis = np.load(directory / "decoder_basis.npy", allow_pickle=False)
            mean = np.load(directory / "decoder_mean.npy", allow_pickle=False)
            state = torch.load(directory / "decoder.pt", weights_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise TimetravelError(f"{directory}: cannot read the inverse map ({exc})") from None
        decoder = _decoder(len(basis), hidden, n_frequencies)
        try:
            decoder.load_state_dict(state)
        except RuntimeError as exc:
            raise TimetravelError(
                f"{directory / 'decoder.pt'}: does not match a decoder of width {hidden} "
                f"with {n_frequencies} frequencies ({exc})"
            ) from None
        return cls(decoder, mean, basis, center, scale)


def _init_weights(module, rng: np.random.Generator) -> None:
    """torch's default Linear initialisation, drawn from ``rng`` (no global RNG: thread-safe, reproducible)."""
    import torch
    from torch import nn

    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                bound = 1.0 / np.sqrt(layer.in_features)
                layer.weight.copy_(torch.from_numpy(rng.uniform(-bound, bound, layer.weight.shape).astype(np.float32)))
                layer.bias.copy_(torch.from_numpy(rng.uniform(-bound, bound, layer.bias.shape).astype(np.float32)))


def _head_in_subspace(weight, bias, mean, basis) -> tuple[np.ndarray, np.ndarray]:
    weight = np.asarray(weight, dtype=np.float32)
    return weight @ basis.T, weight @ mean + np.asarray(bias, dtype=np.float32)


def canvas_normalisation(xy: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and scale that map a layout to roughly unit spread."""
    center = xy.mean(axis=0).astype(np.float32)
    scale = float(np.abs(xy - center).max()) or 1.0
    return center, scale


def fit_inverse_map(
    x: np.ndarray,
    xy: np.ndarray,
    predictions: np.ndarray,
    head: tuple[np.ndarray, np.ndarray],
    params: DecoderParams,
    *,
    seed: int,
) -> InverseMap:
    """Train the decoder of one epoch.

    Parameters
    ----------
    x : ndarray of shape (N, D)
        The epoch's embeddings (a memory map is fine; at most
        ``params.max_samples`` rows are read).
    xy : ndarray of shape (N, 2)
        Their canvas positions.
    predictions : ndarray of shape (N,), int
        The model's predicted class per sample.
    head : (weight (K, D), bias (K,))
        The epoch's classification head.
    params : DecoderParams
    seed : int
        Seeds the subsample, the initial weights and the batch order.

    Returns
    -------
    InverseMap
    """
    import torch
    import torch.nn.functional as F

    n = len(x)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, min(n, params.max_samples), replace=False))
    sample = np.asarray(x[rows], dtype=np.float32)
    mean, basis = principal_axes(sample, params.components)
    z = torch.from_numpy((sample - mean) @ basis.T)
    center, scale = canvas_normalisation(xy)
    u = torch.from_numpy((np.asarray(xy[rows], dtype=np.float32) - center) / scale)
    target = torch.from_numpy(np.asarray(predictions[rows], dtype=np.int64))
    w_sub, b_sub = (torch.from_numpy(a) for a in _head_in_subspace(*head, mean, basis))
    z_var = float((z * z).sum(dim=1).mean()) or 1.0

    gen = torch.Generator().manual_seed(seed)
    decoder = _decoder(basis.shape[0], params.hidden, params.fourier_features)
    _init_weights(decoder, rng)
    with torch.no_grad():
        freq = rng.normal(0.0, params.fourier_scale, decoder.frequencies.shape).astype(np.float32)
        decoder.frequencies.copy_(torch.from_numpy(freq))
    opt = torch.optim.Adam(decoder.parameters(), lr=params.learning_rate)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=params.learning_rate, total_steps=params.steps)
    batch = min(params.batch_size, len(rows))
    eps = 0.02  # finite-difference step on the normalised canvas (which spans [-1, 1])
    for _ in range(params.steps):
        idx = torch.randint(0, len(rows), (batch,), generator=gen)
        z_hat = decoder(u[idx])
        loss = ((z_hat - z[idx]) ** 2).sum(dim=1).mean() / z_var
        if params.prediction_weight:
            loss = loss + params.prediction_weight * F.cross_entropy(z_hat @ w_sub.T + b_sub, target[idx])
        if params.smoothness:
            probe = torch.rand(max(batch // 4, 1), 2, generator=gen) * 2.2 - 1.1  # a noisy estimate is enough
            step = eps * torch.randn(len(probe), 2, generator=gen)
            jump = ((decoder(probe + step) - decoder(probe)) ** 2).sum(dim=1).mean()
            loss = loss + params.smoothness * jump / (z_var * eps**2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return InverseMap(decoder, mean, basis, center, scale)
