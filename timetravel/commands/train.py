"""``timetravel train``: train a bundled model with injected label noise, recording every epoch."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

HELP = "train a bundled model on a dataset with injected label noise, recording every epoch into a run store"

# Flags that map 1:1 onto timetravel.train.TrainConfig fields (None = not given).
_SETTINGS = ("dataset", "noise", "epochs", "seed", "model", "embedding_dim", "batch_size", "lr", "root", "n_samples",
             "image_size", "heldout", "embedding_dtype")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="digits (default), synthetic, mnist, fashion-mnist, cifar10, "
                        "folder:PATH (your images in PATH/<class>/), arrays:PATH (your .npz with x and y)")
    parser.add_argument("--noise", help="label noise: symmetric:RATE, pairflip:RATE, matrix:RATE or none "
                        "(default symmetric:0.2; none for folder:/arrays: data)")
    parser.add_argument("--epochs", type=int, help="epochs to train and record (default 30)")
    parser.add_argument("--out", required=True, help="run store directory to write")
    parser.add_argument("--seed", type=int, help="seed of the split, noise, weights and batch order (default 0)")
    parser.add_argument("--model", choices=("auto", "mlp", "cnn", "resnet"), help="subject model (default auto)")
    parser.add_argument("--embedding-dim", type=int, help="width of the recorded embedding (default 64)")
    parser.add_argument("--batch-size", type=int, help="training batch size (default: ~200 steps per epoch)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default 3e-3)")
    parser.add_argument("--root", help="folder with the files of mnist, fashion-mnist or cifar10")
    parser.add_argument("--n-samples", type=int, help="training-set size (subsample, or synthetic count)")
    parser.add_argument("--image-size", type=_image_size, metavar="N|HxW",
                        help="resize folder:/arrays: images to N x N or H x W pixels (needed when their sizes differ)")
    parser.add_argument("--heldout", action=argparse.BooleanOptionalAction,
                        help="record the test split as held-out set (default on)")
    parser.add_argument("--embedding-dtype", choices=("float16", "float32"), help="storage of embeddings (default float16)")
    parser.add_argument("--threads", type=int, help="torch threads for training (default: cores - 1, at least 1)")
    parser.add_argument("--sync-capture", action="store_true",
                        help="record each epoch in the training thread instead of alongside the next epoch")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing run at --out")
    mode.add_argument("--resume", action="store_true",
                      help="continue the run at --out from its last finished epoch (settings not given are kept)")


def _image_size(text: str) -> int | list[int]:
    """``"32"`` -> 32, ``"48x64"`` -> [48, 64] (height x width)."""
    try:
        sizes = [int(part) for part in text.lower().split("x")]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW with positive integers, got {text!r}")
    return sizes[0] if len(sizes) == 1 else sizes


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then (with --resume) the run's stored settings, then the flags given."""
    from timetravel.errors import TimetravelError
    from timetravel.train import TrainConfig

    defaults = TrainConfig.defaults()
    given = {k: getattr(args, k) for k in _SETTINGS if getattr(args, k) is not None}
    if not args.resume:
        return {**defaults, **given}

    manifest = Path(args.out) / "run.json"
    try:
        stored = json.loads(manifest.read_text(encoding="utf-8")).get("train", {})
    except FileNotFoundError:
        raise TimetravelError(f"{args.out}: there is no run to resume (no run.json)") from None
    except json.JSONDecodeError as exc:
        raise TimetravelError(f"{manifest}: not valid JSON ({exc})") from None
    return {**defaults, **{k: v for k, v in stored.items() if k in defaults}, **given}


def run(args: argparse.Namespace) -> int:
    from timetravel.train import train_run

    started = time.perf_counter()
    settings = _settings(args)
    store = train_run(
        out=args.out,
        overwrite=args.overwrite,
        resume=args.resume,
        threads=args.threads,
        background_capture=not args.sync_capture,
        verbose=not args.quiet,
        **settings,
    )
    _print_summary(store, time.perf_counter() - started)
    return 0


def _print_summary(store: Any, seconds: float) -> None:
    history = store.history
    last = history[-1] if history else {}
    size = sum(f.stat().st_size for f in store.path.rglob("*") if f.is_file())
    noise = store.manifest.get("noise") or {}
    lines = [
        f"run:        {store.path} ({size / 2**20:.1f} MiB, {seconds:.0f} s)",
        f"data:       {store.manifest.get('dataset')}: {store.n_samples} train, {store.n_heldout} held-out samples, "
        f"{store.n_classes} classes",
        f"noise:      {noise.get('kind', 'none')}, {100 * store.manifest.get('noise_rate_actual', 0.0):.1f}% of labels "
        "changed",
        f"model:      {store.manifest.get('model', {}).get('name')}, embedding {store.embedding_dim}-d, "
        f"epochs {store.epochs[0] if store.epochs else '-'}..{store.epochs[-1] if store.epochs else '-'}",
    ]
    with_test = [h for h in history if "test_acc" in h]
    if with_test:
        best = max(with_test, key=lambda h: h["test_acc"])
        lines.append(
            f"clean test: best {best['test_acc']:.4f} (epoch {best['epoch']}), last {with_test[-1]['test_acc']:.4f}"
        )
    if "train_acc" in last:
        clean = f", eval-mode vs true labels {last['clean_train_acc']:.4f}" if "clean_train_acc" in last else ""
        lines.append(f"train acc:  {last['train_acc']:.4f} on the (noisy) training labels{clean}")
    print("\n".join(lines))
