"""Helpers shared by the app's browser tests and its benchmark.

* :func:`write_synthetic_run`: a run store with a projection written directly in the
  ``projection/`` format of ``docs/run-store.md`` (the app only reads it), so tests and
  benchmarks do not depend on fitting a projector;
* :func:`serve`: the real ``timetravel serve`` in a subprocess on a free port;
* :func:`launch_chromium`: Debian's Chromium through Playwright (never a downloaded browser).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from timetravel.store import RunWriter

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _class_images(rng: np.random.Generator, n_classes: int, size: int) -> np.ndarray:
    """One smooth random pattern per class (uint8), so thumbnails of a class look alike."""
    base = rng.random((n_classes, size // 2, size // 2))
    return np.kron(base, np.ones((2, 2)))


def write_synthetic_run(
    path: str | Path,
    *,
    n_samples: int = 600,
    n_classes: int = 4,
    n_epochs: int = 5,
    embedding_dim: int = 16,
    noise_rate: float = 0.1,
    grid: int = 64,
    seed: int = 0,
    project: bool = True,
    image_size: int = 8,
    flip: np.ndarray | None = None,
    metadata: dict | None = None,
    n_heldout: int = 0,
    n_pool: int = 0,
    pool_thumbs: bool = True,
    pool_epochs: list[int] | None = None,
    spread: float = 0.9,
) -> Path:
    """Write a run whose dots move from a cloud into class clusters over the epochs.

    Mislabelled samples sit with their true class early and get pulled towards
    their given label late (memorisation), as in real training. Logits come from
    the stored linear head, and the territories from the same head on the canvas,
    so predictions, territories and positions agree.

    Parameters
    ----------
    path : path-like
        Run directory to create (replaced if it exists).
    n_samples, n_classes, n_epochs, embedding_dim : int
        Size of the run.
    noise_rate : float
        Fraction of labels flipped to another class.
    grid : int
        Territory grid size G.
    seed : int
        Random seed; the run is a deterministic function of the arguments.
    project : bool
        Write ``projection/``; without it the app must say to run ``timetravel project``.
    image_size : int
        Thumbnail side in pixels.
    flip : bool array of shape (N,), optional
        Exactly which labels to flip (then ``noise_rate`` is ignored).
    metadata : dict, optional
        Per-sample metadata columns (``RunWriter.create(metadata=...)``).
    n_heldout : int
        Size of a held-out set (clean labels) recorded alongside.
    n_pool : int
        Size of an unlabelled pool recorded alongside (its true labels saved as a benchmark run's
        ``pool_true_labels``); pool samples sit farther from their class centre than training samples,
        so the final model mispredicts some of them.
    pool_thumbs : bool
        Save the pool's thumbnails (``pool_thumbs.npy``) when there is a pool.
    pool_epochs : list of int, optional
        The epochs whose rows include the pool (default: all), as a run whose other epochs were recorded
        by train passes.
    spread : float
        Spread of the held-out samples around their class centre (the pool's is twice it); at 1.5 and
        more the final model gets some held-out samples wrong, so an error model can be learned.

    Returns
    -------
    Path
    """
    rng = np.random.default_rng(seed)
    path = Path(path)
    true = rng.integers(0, n_classes, n_samples)
    labels = true.copy()
    if flip is None:
        flipped = rng.choice(n_samples, int(round(noise_rate * n_samples)), replace=False)
    else:
        flipped = np.flatnonzero(flip)
        noise_rate = len(flipped) / n_samples
    labels[flipped] = (labels[flipped] + rng.integers(1, n_classes, len(flipped))) % n_classes
    angles = 2 * np.pi * np.arange(n_classes) / n_classes
    centres = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    # An isometric lift of the canvas into the embedding space keeps head and canvas consistent.
    lift = np.linalg.qr(rng.normal(size=(embedding_dim, 2)))[0].T  # (2, D), orthonormal rows
    start = rng.normal(scale=2.5, size=(n_samples, 2))
    offset = rng.normal(scale=0.9, size=(n_samples, 2))
    patterns = _class_images(rng, n_classes, image_size)
    noise_img = rng.random((n_samples, image_size, image_size))
    thumbs = np.clip(255 * (0.75 * patterns[true] + 0.25 * noise_img), 0, 255).astype(np.uint8)
    held_rng = np.random.default_rng([seed, 1])  # its own stream: runs without a held-out set stay as they were
    held_true = held_rng.integers(0, n_classes, n_heldout)
    held_start = held_rng.normal(scale=2.5, size=(n_heldout, 2))
    held_offset = held_rng.normal(scale=spread, size=(n_heldout, 2))
    pool_rng = np.random.default_rng([seed, 3])  # its own stream too
    pool_true = pool_rng.integers(0, n_classes, n_pool)
    pool_start = pool_rng.normal(scale=2.5, size=(n_pool, 2))
    pool_offset = pool_rng.normal(scale=2 * spread, size=(n_pool, 2))
    pool_images = np.clip(255 * (0.75 * patterns[pool_true] + 0.25 * pool_rng.random((n_pool, image_size, image_size))),
                          0, 255).astype(np.uint8)  # fmt: skip
    writer = RunWriter.create(
        path,
        labels=labels,
        n_classes=n_classes,
        embedding_dim=embedding_dim,
        class_names=[f"class {k}" for k in range(n_classes)],
        dataset=f"synthetic-app-{n_samples}",
        true_labels=true,
        noise={"kind": "symmetric", "rate": noise_rate, "seed": seed},
        thumbs=thumbs,
        metadata=metadata,
        heldout_labels=held_true if n_heldout else None,
        n_pool=n_pool,
        pool_true_labels=pool_true if n_pool else None,
        pool_thumbs=pool_images if n_pool and pool_thumbs else None,
        overwrite=True,
    )
    scale = 1.5
    weight = scale * centres @ lift  # (K, D)
    bias = -scale * 0.5 * (centres**2).sum(axis=1)
    positions, pool_positions = [], []
    for e in range(n_epochs):
        t = (e + 1) / n_epochs
        memorise = np.clip((t - 0.6) / 0.4, 0, 1)
        home = centres[true] + offset
        home[flipped] = (1 - memorise) * home[flipped] + memorise * (centres[labels[flipped]] + 0.5 * offset[flipped])
        xy = (1 - t) * start + t * home + rng.normal(scale=0.05, size=(n_samples, 2))
        emb = xy @ lift + rng.normal(scale=0.02, size=(n_samples, embedding_dim))
        logits = (emb @ weight.T + bias).astype(np.float32)
        acc = float(np.mean(logits.argmax(1) == labels))
        heldout = None
        if n_heldout:
            held_emb = ((1 - t) * held_start + t * (centres[held_true] + held_offset)) @ lift
            heldout = (held_emb, (held_emb @ weight.T + bias).astype(np.float32))
        pool = pool_xy = None
        if n_pool and (pool_epochs is None or e in pool_epochs):
            pool_xy = (1 - t) * pool_start + t * (centres[pool_true] + pool_offset)
            pool_emb = pool_xy @ lift
            pool = (pool_emb, (pool_emb @ weight.T + bias).astype(np.float32))
        writer.write_epoch(
            e, emb, logits, head=(weight, bias), heldout=heldout, pool=pool,
            metrics={"train_loss": float(1.5 * (1 - t) + 0.1), "train_acc": acc,
                     "test_acc": float(np.mean(logits.argmax(1) == true))},
        )  # fmt: skip
        positions.append(xy.astype(np.float32))
        pool_positions.append(None if pool_xy is None else pool_xy.astype(np.float32))
    if project:
        write_projection(path, positions, weight, bias, lift, grid=grid, pool_positions=pool_positions)
    return path


def write_sliced_run(
    path: str | Path, *, n_samples: int = 2000, slice_noise: float = 0.5, base_noise: float = 0.05,
    seed: int = 0, **kwargs,
) -> Path:  # fmt: skip
    """A :func:`write_synthetic_run` with metadata and a planted bad slice.

    Columns: ``source`` (scanner / phone / web; "web", a fifth of the samples, has
    ``slice_noise`` label noise, everything else ``base_noise``), ``annotator`` (five
    values, unrelated to the noise) and ``brightness`` (numeric, unrelated).
    """
    rng = np.random.default_rng([seed, 2])
    source = rng.choice(np.array(["scanner", "phone", "web"]), n_samples, p=[0.45, 0.35, 0.2])
    annotator = rng.choice(np.array(["ann-a", "ann-b", "ann-c", "ann-d", "ann-e"]), n_samples)
    brightness = rng.uniform(0.0, 1.0, n_samples)
    flip = rng.random(n_samples) < np.where(source == "web", slice_noise, base_noise)
    metadata = {"source": source, "annotator": annotator, "brightness": brightness}
    return write_synthetic_run(path, n_samples=n_samples, seed=seed, flip=flip, metadata=metadata, **kwargs)


def write_projection(
    path: Path, positions: list[np.ndarray], weight: np.ndarray, bias: np.ndarray, lift: np.ndarray, *, grid: int,
    pool_positions: list[np.ndarray | None] | None = None,
) -> None:  # fmt: skip
    """Write ``projection/`` through its format's owner: xy (and pool xy) per epoch, territories from the head."""
    from timetravel.projection import store as projection_files

    directory = projection_files.projection_dir(path)
    manifest = projection_files.new_manifest("synthetic (test fixture)", {})
    for e, xy in enumerate(positions):
        x0, y0 = xy.min(axis=0) - 0.5
        x1, y1 = xy.max(axis=0) + 0.5
        gx, gy = np.meshgrid(np.linspace(x0, x1, grid), np.linspace(y0, y1, grid))  # row 0 = bottom (y0)
        cells = np.stack([gx.ravel(), gy.ravel()], axis=1) @ lift
        logits = cells @ weight.T + bias
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
        arrays = {
            "xy": xy,
            "territory_class": probs.argmax(1).reshape(grid, grid).astype(np.uint8),
            "territory_confidence": np.rint(255 * probs.max(1)).reshape(grid, grid).astype(np.uint8),
        }
        if pool_positions is not None and pool_positions[e] is not None:
            arrays["pool_xy"] = pool_positions[e]
        entry = {"extent": [float(x0), float(x1), float(y0), float(y1)], "grid": grid, "metrics": {}}
        projection_files.write_epoch(directory, manifest, e, arrays, {}, entry)


# --------------------------------------------------------------------------- browser-side timing

# Installed with page.add_init_script before the app loads; what it measures is described in the file.
INSTRUMENT_JS = (Path(__file__).resolve().parent / "assets" / "instrument.js").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- server


class AppServer:
    """A ``timetravel serve`` subprocess (``args``: more command-line options); ``url`` is where it listens."""

    def __init__(self, run: str | Path, *, args: list[str] | None = None, timeout: float = 60.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "timetravel.cli", "serve", str(run), "--port", "0", "--no-browser", *(args or [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        found: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, args=(found,), daemon=True).start()
        try:
            self.url = found.get(timeout=timeout)
        except queue.Empty:
            self.stop()
            raise RuntimeError("timetravel serve did not print its URL:\n" + "".join(self.lines)) from None

    def _read(self, found: queue.Queue) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            match = re.search(r"(http://\S+/)", line)
            if match and "timetravel app" in line:
                found.put(match.group(1))

    def stop(self, timeout: float = 15.0) -> int:
        """Stop the server (SIGTERM, then SIGKILL) and return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    @property
    def output(self) -> str:
        return "".join(self.lines)


@contextlib.contextmanager
def serve(run: str | Path, **kwargs) -> Iterator[AppServer]:
    """Run ``timetravel serve RUN --port 0`` for the duration of the block."""
    server = AppServer(run, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def launch_chromium(playwright):
    """Launch Debian's headless Chromium; a clear error when it is not installed."""
    executable = shutil.which("chromium")
    if executable is None:
        raise RuntimeError(
            "chromium is not installed: the browser tests and the app benchmark need Debian's chromium "
            "(apt-get install -y --no-install-recommends chromium); .ci/run installs it"
        )
    return playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05):
    """Poll ``predicate()`` until it returns something truthy; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(interval)
