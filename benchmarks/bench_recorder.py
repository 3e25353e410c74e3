"""Recording overhead, store size and detection quality of the Recorder (``timetravel bench recorder``).

For each scenario the same model is trained from the same initial weights and
batch order in four recording modes, interleaved in one process (recording
consumes no random numbers, so every mode trains the same trajectory):

* ``none``: training alone;
* ``train_pass``: train-pass capture (rows copied from the training forward
  passes, written by the background thread), plus the eval pass of the last
  epoch at ``close()``;
* ``eval_every_1``: an eval pass over the training and held-out sets after
  every epoch, plus training-mode margins (the plain loop);
* ``eval_every_5``: train-pass capture with an eval pass every 5th epoch and
  at the end.

The overhead is the extra wall-clock (and process CPU) time over training
alone, median over repeats. Detection quality: one more training run of each
scenario per label noise (``--quality-noise``, default 20% symmetric and 30%
pair-flip) is recorded by four recorders at once
(train pass only, train pass + final eval pass, train pass + eval every 5,
eval pass every epoch), so all four see the very same training; ``detect`` then
ranks each, and the precision of the first reviews (as many as half the
mislabelled samples, the budget of 10 review rounds of the recommender
benchmark, and as many as all of them) and the AUPRC are compared.

Scenarios: ``digits`` (MLP on 8x8 digits), ``synthetic`` (MLP, 50,000 samples,
D = 512), ``seq1d`` (a 1-D CNN on sequences) and ``resnet32`` (a small ResNet
on 3x32x32 images), the last two with generated data whose forward pass is a
real share of training time (the images are the generated shapes of
``benchmarks/subjects.py``).

Writes ``benchmarks/results/recorder.json``, ``recorder.md`` and ``recorder.png``.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, median, timed, timed_cpu, write_results  # noqa: E402

logger = logging.getLogger("bench_recorder")

MODES = ("none", "train_pass", "eval_every_1", "eval_every_5")
LR = 3e-3
NOISE = "symmetric:0.2"  # of the timed runs; the quality runs take --quality-noise
SCENARIOS = ("digits", "synthetic", "seq1d", "resnet32")
# Recorders of the quality run: (name, Recorder keyword arguments, given an eval loader)
QUALITY = (
    ("train pass only", dict(train_pass=True), False),
    ("train pass + final eval", dict(train_pass=True), True),
    ("train pass + eval every 5", dict(train_pass=True, eval_every=5), True),
    ("eval pass every epoch", dict(), True),
)


@dataclass
class Scenario:
    """Tensors, labels and a model builder of one benchmark scenario."""

    name: str
    x: Any
    y: Any  # the noisy labels trained on
    x_test: Any
    y_test: Any
    true_labels: Any
    n_classes: int
    embedding_dim: int
    batch_size: int
    make_model: Callable[[], Any]


def _sequences(n: int, n_classes: int, length: int, seed: int):
    """Noisy periodic signals: class c is a wave of c + 2 cycles with a class-specific harmonic."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    t = np.linspace(0, 1, length, endpoint=False)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    freq = (y + 2)[:, None]
    x = np.sin(2 * np.pi * freq * t + phase) + 0.5 * np.sin(2 * np.pi * (y % 3 + 5)[:, None] * t + 2 * phase)
    x += rng.normal(0, 1.2, x.shape)
    return x[:, None, :].astype(np.float32), y.astype(np.int64)


def _seq_model(n_classes: int, dim: int):
    from torch import nn

    from timetravel.models import SubjectModel

    features = nn.Sequential(
        nn.Conv1d(1, 32, 7, padding=3), nn.BatchNorm1d(32), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(32, 64, 5, padding=2), nn.BatchNorm1d(64), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(64, 64, 3, padding=1), nn.BatchNorm1d(64), nn.ReLU(),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, dim), nn.ReLU(),
    )
    return SubjectModel(features, dim, n_classes, name="cnn1d")


def _scenario(name: str, n_samples: int | None) -> Scenario:
    import numpy as np
    import torch

    from timetravel.models import make_model
    from timetravel.noise import inject_noise
    from timetravel.train import auto_batch_size

    if name in ("digits", "synthetic"):
        from timetravel.data import load_dataset

        dim = 64 if name == "digits" else 512
        splits = load_dataset(name, seed=0, n_samples=n_samples or (None if name == "digits" else 50000))
        x, y, xt, yt, k = splits.train.x, splits.train.y, splits.test.x, splits.test.y, splits.train.n_classes
        build = lambda: make_model("auto", x.shape[1:], k, dim)  # noqa: E731
    elif name == "seq1d":
        k, dim, n = 10, 64, n_samples or 8000
        x, y = _sequences(n, k, 128, seed=0)
        xt, yt = _sequences(n // 4, k, 128, seed=1)
        build = lambda: _seq_model(k, dim)  # noqa: E731
    elif name == "resnet32":
        from subjects import make_shapes

        k, dim, n = 10, 64, n_samples or 6000
        x, y = make_shapes(n, seed=0)
        xt, yt = make_shapes(n // 4, seed=1)
        build = lambda: make_model("resnet", (3, 32, 32), k, dim, width=16)  # noqa: E731
    else:
        raise ValueError(f"unknown scenario {name!r}; choose from {SCENARIOS}")
    return _with_noise(Scenario(name, torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y),
                                torch.from_numpy(np.ascontiguousarray(xt)), torch.from_numpy(yt), y, k, dim,
                                auto_batch_size(len(y)), build), NOISE)


def _with_noise(s: Scenario, spec: str) -> Scenario:
    """The scenario with its clean labels corrupted by the noise ``spec`` (e.g. ``"pairflip:0.3"``)."""
    import dataclasses

    import torch

    from timetravel.noise import class_similarity, inject_noise, parse_noise_spec

    kind, rate = parse_noise_spec(spec)
    x = s.x.numpy()
    similarity = class_similarity(x.reshape(len(x), -1), s.true_labels, s.n_classes) if kind == "matrix" else None
    noisy = inject_noise(s.true_labels, s.n_classes, kind, rate, seed=0, similarity=similarity)
    return dataclasses.replace(s, y=torch.from_numpy(noisy.labels), true_labels=noisy.true_labels)


def _store_kwargs(s: Scenario, dtype: str = "float16") -> dict[str, Any]:
    return dict(labels=s.y.numpy(), n_classes=s.n_classes, embedding_dim=s.embedding_dim, true_labels=s.true_labels,
                heldout_labels=s.y_test.numpy(), embedding_dtype=dtype, overwrite=True)


def _recorder(s: Scenario, model: Any, path: Path, mode: str, dtype: str = "float16"):
    from timetravel.capture import Recorder, tensor_loader
    from timetravel.models import inference_batch_size

    eval_loader = tensor_loader(s.x, s.y, batch_size=inference_batch_size(model))
    heldout = tensor_loader(s.x_test, s.y_test, batch_size=inference_batch_size(model))
    options = {"train_pass": dict(train_pass=True), "eval_every_1": {},
               "eval_every_5": dict(train_pass=True, eval_every=5)}[mode]
    return Recorder(model, "features", path, eval_loader, heldout, head="head", store_kwargs=_store_kwargs(s, dtype),
                    **options)


def _epoch(model, optimizer, loader, recorders, margin_recorders=()) -> None:
    import torch.nn.functional as F
    from contextlib import ExitStack

    model.train()
    for x, y, idx in loader:
        with ExitStack() as stack:
            for rec in recorders:
                stack.enter_context(rec.batch(idx))
            logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for rec in margin_recorders:
            rec.record_train_margins(idx, logits, y)


def _start(s: Scenario):
    import torch

    from timetravel.capture import tensor_loader

    torch.manual_seed(0)
    model = s.make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loader = tensor_loader(s.x, s.y, batch_size=s.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0),
                           with_index=True)
    return model, optimizer, loader


class _Run:
    """One training run in one recording mode, stepped an epoch at a time, so the modes interleave epoch by epoch.

    An epoch's time is its training loop, ``capture()`` and the wait for the writer thread to
    commit it, so no recorder's work spills into another run's epoch. That wait is also kept
    apart (``commit_seconds``): in real use the commit overlaps the next epoch, so the overhead
    lies between the epoch time without the wait (the commit fully overlapped, as when the
    writer thread has a core to itself) and with it (no overlap at all).
    """

    def __init__(self, s: Scenario, mode: str, store: Path, dtype: str = "float16") -> None:
        self.mode, self.store = mode, store
        self.model, self.optimizer, self.loader = _start(s)
        self.rec = _recorder(s, self.model, store, mode, dtype) if mode != "none" else None
        self.epoch_seconds: list[float] = []
        self.commit_seconds: list[float] = []  # of each epoch: waiting for the writer thread to commit it
        self.cpu_seconds = 0.0
        self.blocking: list[float] = []  # time the training thread spends in capture()
        self.close_seconds = 0.0  # close(): the last epoch's eval pass (train-pass modes)

    def epoch(self, epoch: int) -> None:
        rec = self.rec

        def work() -> None:
            _epoch(self.model, self.optimizer, self.loader, [rec] if rec is not None and rec.train_pass else [],
                   [rec] if rec is not None and not rec.train_pass else [])
            if rec is not None:
                self.blocking.append(timed(lambda: rec.capture(epoch))[0])
                self.commit_seconds.append(timed(rec.wait)[0])

        wall, cpu, _ = timed_cpu(work)
        self.epoch_seconds.append(wall)
        self.cpu_seconds += cpu

    def close(self) -> dict[str, Any]:
        """Finish the run; its timings (and, recorded, what the store holds)."""
        from timetravel import RunStore

        if self.rec is not None:
            self.close_seconds, cpu, _ = timed_cpu(self.rec.close)
            self.cpu_seconds += cpu
        epochs = len(self.epoch_seconds)
        result: dict[str, Any] = {"mode": self.mode, "seconds": sum(self.epoch_seconds) + self.close_seconds,
                                  "epoch_seconds": self.epoch_seconds, "cpu_seconds": self.cpu_seconds,
                                  "final_flush_seconds": self.close_seconds,
                                  "commit_wait_seconds": sum(self.commit_seconds)}
        if self.rec is not None:
            result["blocking_seconds_per_epoch"] = sum(self.blocking) / epochs
            run = RunStore(self.store, verify="headers")
            assert run.epochs == list(range(epochs)), f"{self.mode}: recorded epochs {run.epochs}"
            result["passes"] = [run.epoch_pass(e) for e in run.epochs]
            result["epoch_bytes"] = _epoch_bytes(run, epochs - 1)
        return result


def _train(s: Scenario, mode: str, epochs: int, store: Path, dtype: str = "float16") -> dict[str, Any]:
    """Train ``epochs`` epochs from seed 0 in one recording mode, alone."""
    run = _Run(s, mode, store, dtype)
    for epoch in range(epochs):
        run.epoch(epoch)
    return run.close()


def _epoch_bytes(run: Any, epoch: int) -> dict[str, int]:
    files = {f.name: f.stat().st_size for f in run.epoch_dir(epoch).iterdir()}
    return {"total": sum(files.values()), **files}


def _timing(s: Scenario, epochs: int, repeats: int, tmp: Path) -> dict[str, Any]:
    """Every mode trained side by side, epoch by epoch (a slow minute of the machine hits all modes alike)."""
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for r in range(repeats):
        trainers = {mode: _Run(s, mode, tmp / f"{s.name}-{mode}") for mode in MODES}
        for epoch in range(epochs):
            k = (r * epochs + epoch) % len(MODES)  # rotate, so no mode always runs first
            for mode in MODES[k:] + MODES[:k]:
                trainers[mode].epoch(epoch)
        for mode, trainer in trainers.items():
            result = trainer.close()
            runs[mode].append(result)
            logger.info("  %s repeat %d %-12s %.2f s", s.name, r, mode, result["seconds"])
            shutil.rmtree(tmp / f"{s.name}-{mode}", ignore_errors=True)
    sizes = {}
    for dtype in ("float16", "float32"):  # one eval-pass epoch on disk (train + held-out rows)
        sizes[dtype] = _train(s, "eval_every_1", 1, tmp / f"{s.name}-{dtype}", dtype)["epoch_bytes"]
        shutil.rmtree(tmp / f"{s.name}-{dtype}", ignore_errors=True)
    base = median(r["seconds"] for r in runs["none"])
    base_cpu = median(r["cpu_seconds"] for r in runs["none"])
    summary = {}
    for mode in MODES:
        rs = runs[mode]
        summary[mode] = {
            "seconds_median": median(r["seconds"] for r in rs),
            "seconds_all": [r["seconds"] for r in rs],
            "cpu_seconds_all": [r["cpu_seconds"] for r in rs],
            "overhead_percent": 100.0 * (median(r["seconds"] for r in rs) - base) / base,
            "cpu_overhead_percent": 100.0 * (median(r["cpu_seconds"] for r in rs) - base_cpu) / base_cpu,
            # what the epochs cost without the final close() (the last eval pass, paid once per run)
            "overhead_percent_excluding_close": 100.0 * (
                median(r["seconds"] - r["final_flush_seconds"] for r in rs) - base) / base,
            # the same with each epoch's commit fully overlapped by the next epoch (the writer thread's own core)
            "overhead_percent_commit_overlapped": 100.0 * (
                median(r["seconds"] - r["final_flush_seconds"] - r["commit_wait_seconds"] for r in rs) - base) / base,
            "commit_wait_seconds_per_epoch": median(r["commit_wait_seconds"] for r in rs) / epochs,
            **({"blocking_seconds_per_epoch": median(r["blocking_seconds_per_epoch"] for r in rs),
                "close_seconds": median(r["final_flush_seconds"] for r in rs), "passes": rs[0]["passes"]}
               if mode != "none" else {}),
        }
    return {"modes": summary, "epoch_bytes": sizes}


def _precision_at(scores, mask, budget: int) -> float:
    import numpy as np

    top = np.argsort(-np.asarray(scores), kind="stable")[:budget]
    return float(np.asarray(mask)[top].mean())


def _quality(s: Scenario, epochs: int, tmp: Path) -> dict[str, Any]:
    """One training run recorded four ways at once; detection precision of each."""
    import numpy as np

    from timetravel import RunStore, detect
    from timetravel.capture import Recorder, tensor_loader
    from timetravel.models import inference_batch_size
    from timetravel.simulate import ranking_quality, review_k

    model, optimizer, loader = _start(s)
    eval_loader = tensor_loader(s.x, s.y, batch_size=inference_batch_size(model))
    recorders = {}
    for name, options, with_eval in QUALITY:
        path = tmp / f"{s.name}-q-{len(recorders)}"
        recorders[name] = Recorder(model, "features", path, eval_loader if with_eval else None, head="head",
                                   store_kwargs={**_store_kwargs(s), "heldout_labels": None}, **options)
    train_recs = [r for r in recorders.values() if r.train_pass]
    eval_recs = [r for r in recorders.values() if not r.train_pass]
    for epoch in range(epochs):
        _epoch(model, optimizer, loader, train_recs, eval_recs)
        for rec in recorders.values():
            rec.capture(epoch)
    mask = np.asarray(s.y.numpy() != s.true_labels)
    n, n_noisy = len(mask), int(mask.sum())
    budget = 10 * review_k(n, n_noisy)
    out = {"n_noisy": n_noisy, "budget": budget, "epochs": epochs, "recordings": {}}
    for name, rec in recorders.items():
        rec.close()
        store = RunStore(rec.writer.path)
        scores = detect(store, verbose=False).scores
        out["recordings"][name] = {
            "precision": _precision_at(scores, mask, budget),
            "precision_at_n_noisy": _precision_at(scores, mask, n_noisy), **ranking_quality(scores, mask),
            "passes": "".join(store.epoch_pass(e)[0] for e in store.epochs),
            "final_eval_train_acc": store.history[-1].get("clean_train_acc", store.history[-1].get(
                "clean_train_pass_acc")),
        }
        shutil.rmtree(rec.writer.path, ignore_errors=True)
    ref = out["recordings"]["eval pass every epoch"]
    for r in out["recordings"].values():
        r["precision_minus_eval_every_epoch"] = r["precision"] - ref["precision"]
        r["precision_at_n_noisy_minus_eval_every_epoch"] = r["precision_at_n_noisy"] - ref["precision_at_n_noisy"]
    return out


def _plot(path: Path, results: dict[str, Any]) -> None:
    """Overhead % per mode and scenario, as grouped bars (PIL only: no plotting library is a dependency)."""
    from PIL import Image, ImageDraw

    rows = [(name, r["timing"]["modes"]) for name, r in results.items() if "timing" in r]
    if not rows:
        return
    modes = MODES[1:]
    top_value = max([5.0] + [max(m[mode]["overhead_percent"], 0) for _, m in rows for mode in modes])
    w, h, left, bottom, top = 160 + 150 * len(rows), 420, 70, 60, 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    py = lambda v: h - bottom - (h - top - bottom) * max(v, 0) / (1.1 * top_value)  # noqa: E731
    palette = [(44, 160, 44), (214, 39, 40), (255, 127, 14)]
    d.line([left, py(5), w - 20, py(5)], fill=(150, 150, 150))
    d.text((left - 60, py(5) - 6), "5% aim", fill=(90, 90, 90))
    d.text((left, 12), "recording overhead, % of training time", fill="black")
    for i, (name, m) in enumerate(rows):
        x0 = left + 20 + 150 * i
        for j, mode in enumerate(modes):
            v = m[mode]["overhead_percent"]
            d.rectangle([x0 + 35 * j, py(v), x0 + 35 * j + 28, py(0)], fill=palette[j])
            d.text((x0 + 35 * j, py(v) - 14), f"{v:.0f}", fill="black")
        d.text((x0, h - bottom + 8), name, fill="black")
    for j, mode in enumerate(modes):
        d.rectangle([w - 150, top + 18 * j, w - 138, top + 18 * j + 10], fill=palette[j])
        d.text((w - 132, top + 18 * j), mode, fill="black")
    img.save(path)


def _carry_over(results: dict[str, Any], previous: Path) -> str:
    """Fill the parts this invocation skipped (``--no-timing``, ``--quality-epochs 0``) from ``previous``.

    Returns a sentence naming what was carried and from which commit ("" when nothing was).
    """
    import json

    if not previous.exists():
        return ""
    old = json.loads(previous.read_text(encoding="utf-8"))
    carried = []
    for name, r in results.items():
        before = old.get("results", {}).get(name, {})
        for part in ("timing", "quality"):
            if part not in r and part in before:
                r[part] = before[part]
                r.setdefault("carried_over", {})[part] = old.get("git_commit", "unknown")
                carried.append(f"{name} {part}")
    return f"{', '.join(carried)} (commit {old.get('git_commit', 'unknown')[:12]})" if carried else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timetravel bench recorder", description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--epochs", type=int, default=10, help="epochs per timed training run (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each mode (default 3)")
    parser.add_argument("--quality-epochs", type=int, default=20,
                        help="epochs of the detection-quality run (default 20; 0 skips it)")
    parser.add_argument("--quality-noise", nargs="+", default=["symmetric:0.2", "pairflip:0.3"],
                        help="label noise of the quality runs, one run each (default symmetric:0.2 pairflip:0.3)")
    parser.add_argument("--no-timing", action="store_true", help="only the detection-quality run")
    parser.add_argument("--n-samples", type=int, default=None, help="training samples per scenario (smoke runs)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for training (default 1: what `timetravel train` uses on 2 cores)")
    parser.add_argument("--results-dir", type=Path, default=None, help="where to write (default benchmarks/results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tt-bench-recorder-") as tmp:
        for name in args.scenarios:
            s = _scenario(name, args.n_samples)
            logger.info("%s: %d samples, D=%d, batch %d", name, len(s.y), s.embedding_dim, s.batch_size)
            r: dict[str, Any] = {"n_samples": len(s.y), "n_heldout": len(s.y_test), "embedding_dim": s.embedding_dim,
                                 "n_classes": s.n_classes, "batch_size": s.batch_size, "epochs": args.epochs,
                                 "repeats": args.repeats, "torch_threads": torch.get_num_threads()}
            if not args.no_timing:
                r["timing"] = _timing(s, args.epochs, args.repeats, Path(tmp))
            if args.quality_epochs:
                r["quality"] = {spec: _quality(_with_noise(s, spec), args.quality_epochs, Path(tmp))
                                for spec in args.quality_noise}
            results[name] = r
    carried = _carry_over(results, Path(args.results_dir or RESULTS_DIR) / "recorder.json")
    rows, size_rows, quality_rows = [], [], []
    for name, r in results.items():
        for mode, m in r.get("timing", {}).get("modes", {}).items():
            rows.append({
                "scenario": name, "N (+held-out)": f"{r['n_samples']} (+{r['n_heldout']})", "D": r["embedding_dim"],
                "epochs": r["epochs"], "mode": mode, "train s/epoch": m["seconds_median"] / r["epochs"],
                "overhead %": m["overhead_percent"] if mode != "none" else 0.0,
                "overhead % w/o close()": m["overhead_percent_excluding_close"] if mode != "none" else 0.0,
                "overhead % w/o close(), commit overlapped": (m["overhead_percent_commit_overlapped"]
                                                              if mode != "none" else 0.0),
                "commit wait s/epoch": m["commit_wait_seconds_per_epoch"] if mode != "none" else "",
                "CPU-time overhead %": m["cpu_overhead_percent"] if mode != "none" else 0.0,
                "training thread blocked s/epoch": m.get("blocking_seconds_per_epoch", ""),
                "epochs by eval pass": sum(p == "eval" for p in m.get("passes", [])) if mode != "none" else "",
            })
        for dtype, b in r.get("timing", {}).get("epoch_bytes", {}).items():
            size_rows.append({"scenario": name, "embedding dtype": dtype, "MB/epoch": b["total"] / 1e6,
                              "of which embeddings MB": (b.get("embedding.npy", 0)
                                                         + b.get("heldout_embedding.npy", 0)) / 1e6})
        for spec, q in r.get("quality", {}).items():
            for rec_name, m in q["recordings"].items():
                quality_rows.append({
                    "scenario": name, "noise": spec, "recording": rec_name,
                    "epochs (t = train pass, e = eval pass)": m["passes"],
                    "precision, first reviews": m["precision"], "- eval every epoch": m[
                        "precision_minus_eval_every_epoch"],
                    "precision, as many reviews as mislabelled": m["precision_at_n_noisy"],
                    "- eval every epoch ": m["precision_at_n_noisy_minus_eval_every_epoch"],
                    "AUPRC": m["auprc"], "reviews": q["budget"], "mislabelled": q["n_noisy"],
                })
    notes = [
        "Overhead = extra wall-clock time of the training loop with the recorder over the same training without "
        f"it; the four modes train side by side, epoch by epoch in rotating order, {args.epochs} epochs, median of "
        f"{args.repeats} repeats; each epoch's time includes `capture()` and the wait for the writer thread to "
        "commit it, so no run's writing lands in another run's epoch; `close()` included (the last epoch's eval "
        "pass for the train-pass modes) unless the column says otherwise. In real use the commit overlaps the "
        "next epoch: the overhead lies between the column with the commit wait and the one where it is fully "
        "overlapped (the writer thread has a core to itself; training uses --threads).",
        "`train_pass`: rows copied from the training forward passes (`with recorder.batch(idx)`), committed by the "
        "background writer thread; `eval_every_1`: an eval pass over train + held-out set after every epoch, plus "
        "`record_train_margins`; `eval_every_5`: train pass with an eval pass every 5th epoch and at the end.",
        f"Training uses {args.threads} torch thread(s); Adam lr {LR}; batch size ~200 steps/epoch; label noise "
        f"{NOISE} in the timed runs. The writer thread shares the cores: on a machine with other jobs "
        "the wall-clock numbers vary; CPU-time overhead is the work the recorder adds.",
        "Detection quality: one training run per scenario recorded by four recorders at once (same weights, same "
        f"batches), {args.quality_epochs} epochs, for each noise; `detect` ranks each recording; precision = "
        "fraction of truly mislabelled samples among the top of the ranking (without feedback), for as many "
        "reviews as 10 rounds of the recommender benchmark (half the mislabelled samples on small runs) and for "
        "as many reviews as there are mislabelled samples; `- eval every epoch` is the difference to the "
        "recording by an eval pass every epoch.",
        "Store size: one eval-pass epoch's files on disk (train + held-out embeddings and logits, head, margins); "
        "a train-pass epoch has no held-out rows.",
        "Eval passes use `timetravel.models.inference_batch_size(model)` (64 for convolutional models, 256 for "
        "others: larger batches are slower per sample on a CPU).",
        *([f"Carried over from an earlier run of this benchmark (not measured now): {carried}."] if carried else []),
    ]
    out = Path(args.results_dir or RESULTS_DIR)
    write_results("recorder", results, rows, title="Recorder overhead, store size and detection quality",
                  sections=[("Store size per epoch", size_rows), ("Detection quality: train pass vs eval pass",
                                                                  quality_rows)],
                  notes=notes, results_dir=out)
    _plot(out / "recorder.png", results)
    for row in rows + quality_rows:
        logger.info("%s", row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
