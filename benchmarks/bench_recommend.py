"""Recommendation accuracy of timetravel against baselines, with simulated users; and update latency.

``timetravel bench recommend [--quick]``. For every dataset x noise kind x rate x
seed, a run is trained with :func:`timetravel.train.train_run` (cached under
``runs/bench/``), its features and detector are computed, and every ranker in
:data:`rankers.RANKERS` (``benchmarks/rankers.py``) meets the same simulated user: 10 rounds of
k recommendations (k = 50 on runs of 20,000 samples or more, else
ceil(n_noisy / 20)), answered correctly except for a mistake rate. Static
rankers ignore feedback, so their results do not depend on the mistake rate
and they are run once. Sessions of the perfect user continue past the 10 rounds
(up to 2 x n_noisy reviews) only to measure the reviews needed for 50% / 80%
recall.

Confident learning with out-of-sample probabilities (``cleanlab_cv``) trains
the same subject model on K folds; that costs K trainings per run, so it is
done for the datasets in ``--cv-datasets`` (digits by default).

Latency: one ``update`` + ``recommend`` of the FeedbackRecommender,
measured inside every real session, and at 50,000 and 200,000 samples on
feature matrices of the same width (random values: the cost does not depend on
them).

Results: ``benchmarks/results/recommend.json`` (everything, per round),
``recommend.md`` (tables) and ``recommend_<dataset>_<noise>_<rate>.png``
(recall against reviews, perfect user, mean over seeds).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STATIC_MISTAKE = 0.0
FEEDBACK_RANKERS = ("timetravel", "deepdebugger")

logger = logging.getLogger("bench_recommend")


# --------------------------------------------------------------------------- runs


def _run_dir(cache: Path, dataset: str, kind: str, rate: float, seed: int, n: int | None) -> Path:
    size = f"-n{n}" if n else ""
    return cache / f"{dataset}{size}-{kind}-{int(round(rate * 100)):02d}-s{seed}"


def _cached(path: Path, epochs: int):
    """The run at ``path`` when it is complete (``epochs`` epochs, a noise mask), else None."""
    from timetravel.errors import StoreError
    from timetravel.store import RunStore

    try:
        store = RunStore(path, verify="headers")
    except StoreError:
        return None
    return store if len(store.epochs) == epochs and store.noise_mask is not None else None


def _train(path: Path, dataset: str, kind: str, rate: float, seed: int, epochs: int, n: int | None,
           threads: int | None):
    from timetravel.train import train_run

    store = _cached(path, epochs)
    if store is not None:
        return store
    logger.info("training %s", path.name)
    return train_run(dataset, f"{kind}:{rate}", epochs, path, seed=seed, n_samples=n, overwrite=True,
                     threads=threads, verbose=False)


def _cv_probabilities(store, path: Path, folds: int, threads: int) -> np.ndarray:
    """Out-of-sample probabilities from K-fold cross-validation of the run's own subject model and settings."""
    cached = path / "bench_cv_probabilities.npy"
    if cached.exists():
        probs = np.load(cached, allow_pickle=False)
        if probs.shape == (store.n_samples, store.n_classes):
            return probs
    import torch

    from timetravel.capture import tensor_loader
    from timetravel.data import load_dataset
    from timetravel.models import make_model
    from timetravel.train import train_epoch

    cfg = store.manifest["train"]
    splits = load_dataset(cfg["dataset"], root=cfg["root"], seed=cfg["seed"], n_samples=cfg["n_samples"])
    if store.true_labels is None or not np.array_equal(splits.train.y, store.true_labels):
        raise RuntimeError(f"{path}: cannot rebuild the run's training set for cross-validation")
    x = torch.from_numpy(splits.train.x)
    y = torch.from_numpy(np.asarray(store.labels))
    n = len(y)
    order = np.random.default_rng(cfg["seed"]).permutation(n)
    probs = np.zeros((n, store.n_classes), dtype=np.float32)
    torch.set_num_threads(threads)
    for f in range(folds):
        held = np.sort(order[f::folds])
        keep = np.setdiff1d(np.arange(n), held)
        torch.manual_seed(cfg["seed"] * 100 + f)
        net = make_model(cfg["model"], splits.train.x.shape[1:], store.n_classes, cfg["embedding_dim"])
        opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"])
        gen = torch.Generator().manual_seed(cfg["seed"] * 100 + f)
        xi, yi = x[keep], y[keep]
        loader = tensor_loader(xi, yi, batch_size=cfg["batch_size"], shuffle=True, generator=gen, with_index=True)
        for _ in range(cfg["epochs"]):
            train_epoch(net, opt, loader)
        net.eval()
        with torch.no_grad():
            probs[held] = torch.softmax(net(x[held]), dim=1).numpy()
    np.save(cached, probs, allow_pickle=False)
    return probs


def _names(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def _ints(text: str) -> list[int]:
    return [int(t) for t in _names(text)]


def _floats(text: str) -> list[float]:
    return [float(t) for t in _names(text)]


def _subject_store(cache: Path, subject: str, kind: str, rate: float, seed: int, epochs: int, all_epochs: list[int],
                   threads: int):
    """The cached subject run of ``epochs`` epochs, recording it (and its shorter snapshots) when missing."""
    import subjects

    from timetravel.store import RunStore

    path = cache / subjects.run_name(subject, epochs, kind, rate, seed)
    store = _cached(path, epochs)
    if store is not None:
        return store
    logger.info("recording %s (%d epochs, snapshots %s)", subject, max(all_epochs), all_epochs)
    subjects.record_run(subject, kind, rate, seed, max(all_epochs), cache, snapshots=all_epochs, threads=threads)
    return RunStore(path, verify="headers")


def _settings(args: argparse.Namespace, cache: Path):
    """(label, noise kind, rate, seed, run path, store factory, cross-validation possible) of every run.

    Bundled datasets are trained with ``timetravel train``; subjects (``benchmarks/subjects.py``) are
    recorded from a plain PyTorch loop through the public ``Recorder``, as a user records their own.
    """
    import subjects

    kinds = args.noise.split(",")
    for dataset in _names(args.datasets):
        n = args.synthetic_samples if dataset == "synthetic" else None
        for kind in kinds:
            for rate in _floats(args.rates):
                for seed in _ints(args.seeds):
                    path = _run_dir(cache, dataset, kind, rate, seed, n)
                    yield (dataset, kind, rate, seed, path, lambda p=path, d=dataset, k=kind, r=rate, s=seed, n=n:
                           _train(p, d, k, r, s, args.epochs, n, args.threads), True)
    epochs = _ints(args.subject_epochs)
    for subject in _names(args.subjects):
        for kind in kinds:
            for rate in _floats(args.subject_rates):
                for seed in _ints(args.subject_seeds):
                    for e in epochs:
                        path = cache / subjects.run_name(subject, e, kind, rate, seed)
                        yield (f"{subject}-{subjects.SUBJECTS[subject].model_kind}-{e}ep", kind, rate, seed, path,
                               lambda sub=subject, k=kind, r=rate, s=seed, e=e:
                               _subject_store(cache, sub, k, r, s, e, epochs, args.threads), False)


# --------------------------------------------------------------------------- sessions


def _session(ranker, mask: np.ndarray, k: int, mistake: float, seed: int, rounds: int, update: str) -> dict:
    from timetravel.simulate import SimulatedUser, reviews_for_recall, run_session, session_metrics

    n_target = int(mask.sum())
    cap_rounds = max(rounds, math.ceil(2 * n_target / k))
    user = SimulatedUser(mask, mistake, random_state=seed)
    head = run_session(ranker, user, k=k, rounds=rounds, update=update)
    metrics = session_metrics(head, mask)
    order = list(head.rounds)
    found = int(mask[np.concatenate(order)].sum()) if order else 0
    # the reviews-for-recall metrics are reported for the perfect user, so only that session goes on
    if mistake == 0 and found < math.ceil(0.8 * n_target) and cap_rounds > rounds:
        tail = run_session(ranker, user, k=k, rounds=cap_rounds - rounds, update="per_round")
        order += tail.rounds
    reviewed = np.concatenate(order) if order else np.empty(0, dtype=np.int64)
    metrics["reviews_for_50"] = reviews_for_recall(reviewed, mask, 0.5)
    metrics["reviews_for_80"] = reviews_for_recall(reviewed, mask, 0.8)
    metrics["recall_curve"] = (np.cumsum(mask[reviewed]) / max(n_target, 1)).astype(np.float32)
    return metrics


def _mean_metrics(sessions: list[dict]) -> dict:
    """Element-wise mean of the sessions' metrics (the first session's value where one is None)."""
    out = {}
    for key, first in sessions[0].items():
        values = [m[key] for m in sessions]
        if len(sessions) == 1 or any(v is None for v in values) or isinstance(first, (bool, str)):
            out[key] = first
        elif isinstance(first, (int, float)):
            out[key] = float(np.mean(values))
        else:
            out[key] = np.mean(np.asarray(values, dtype=np.float64), axis=0)
            out[key] = out[key].astype(np.float32) if isinstance(first, np.ndarray) else out[key].tolist()
    return out


def _evaluate_run(store, data, rankers: list[str], mistakes: list[float], seed: int, rounds: int,
                  user_draws: int = 1) -> dict:
    from rankers import make_ranker
    from timetravel.simulate import ranking_quality, review_k

    mask = np.asarray(store.noise_mask)
    k = review_k(store.n_samples, int(mask.sum()), rounds=rounds)
    out = {"k": k, "n_samples": store.n_samples, "n_noisy": int(mask.sum()), "rankers": {}}
    for name in rankers:
        ranker = make_ranker(name)
        if not ranker.available(data):
            continue
        per_mistake = {}
        t0 = time.perf_counter()
        fitted = ranker.fit(data)
        fit_s = time.perf_counter() - t0
        for mistake in mistakes if name in FEEDBACK_RANKERS else [STATIC_MISTAKE]:
            # every user meets the same freshly fitted ranker, `user_draws` times where sessions are random
            # (which answers a mistaken user gets wrong; the ranker's exploration draws): one draw of 10 rounds
            # is a noisy estimate. Draw d of every mistake rate explores alike, so the drop compares like with like.
            draws = user_draws if mistake > 0 or fitted.stochastic else 1
            sessions = [
                _session(copy.deepcopy(fitted).reseed(seed * 1000 + draw) if draw else copy.deepcopy(fitted),
                         mask, k, mistake, seed * 1000 + draw, rounds, ranker.protocol)
                for draw in range(draws)
            ]  # fmt: skip
            metrics = _mean_metrics(sessions)
            metrics["fit_seconds"] = fit_s
            metrics.update(ranking_quality(fitted.initial_scores_, mask))
            per_mistake[str(mistake)] = metrics
        out["rankers"][name] = per_mistake
    out["notes"] = dict(data.notes)
    return out


# --------------------------------------------------------------------------- latency at scale


def _latency(sizes: list[int], n_features: int, updates: int, seed: int = 0) -> list[dict]:
    from timetravel.recommend import FeedbackRecommender

    rows = []
    rng = np.random.default_rng(seed)
    for n in sizes:
        x = rng.normal(size=(n, n_features)).astype(np.float32)
        target = rng.random(n) < 0.2
        x[target, :3] += 1.0
        prior = x[:, :3].sum(axis=1) + rng.normal(size=n)
        labels = rng.integers(0, 10, n)
        groups = labels * 10 + rng.integers(0, 10, n)
        neighbors = rng.integers(0, n, (n, 10)).astype(np.int32)
        t0 = time.perf_counter()
        rec = FeedbackRecommender(random_state=seed).fit(x, prior, neighbors=neighbors, groups=groups, labels=labels)
        fit_s = time.perf_counter() - t0
        lat = []
        for _ in range(updates):
            i = int(rec.recommend(1)[0])
            t = time.perf_counter()
            rec.update([i], [bool(target[i])])
            rec.recommend(50)
            lat.append((time.perf_counter() - t) * 1e3)
        lat = np.asarray(lat)
        rows.append({"n_samples": n, "n_features": n_features, "updates": updates, "fit_seconds": fit_s,
                     "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
                     "max_ms": float(lat.max()), "load_average_1m": os.getloadavg()[0], "nice": os.nice(0)})
        logger.info("latency at %d samples: p50 %.2f ms, p95 %.2f ms", n, rows[-1]["p50_ms"], rows[-1]["p95_ms"])
    return rows


# --------------------------------------------------------------------------- aggregation and output


def _mean(values):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def _aggregate(runs: list[dict]) -> dict:
    """Mean over seeds per (dataset, noise, rate, ranker, mistake)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["noise"], r["rate"]), []).append(r)
    table = {}
    for (dataset, noise, rate), items in groups.items():
        key = f"{dataset}/{noise}/{rate}"
        entry = {"dataset": dataset, "noise": noise, "rate": rate, "k": sorted({i["k"] for i in items}),
                 "n_samples": items[0]["n_samples"], "seeds": [i["seed"] for i in items], "rankers": {}}
        for name in items[0]["rankers"]:
            entry["rankers"][name] = {}
            for mistake in items[0]["rankers"][name]:
                ms = [i["rankers"][name][mistake] for i in items if name in i["rankers"]]
                agg = {m: _mean([x[m] for x in ms]) for m in
                       ("precision", "auroc", "auprc", "reviews_for_50", "reviews_for_80", "latency_p50_ms",
                        "latency_p95_ms")}
                agg["precision_sd"] = float(np.std([x["precision"] for x in ms]))
                agg["never_reached_80"] = sum(x["reviews_for_80"] is None for x in ms)
                agg["recall_per_round"] = np.mean([x["recall"] for x in ms], axis=0).tolist()
                agg["hit_rate_per_round"] = np.mean([x["hit_rate"] for x in ms], axis=0).tolist()
                entry["rankers"][name][mistake] = agg
        table[key] = entry
    return table


STATIC_BASELINES = ("random", "loss", "aum", "aum_early_stop", "confidence", "forgetting", "cleanlab", "cleanlab_cv")
FIVE_LINE_BASELINES = ("aum", "loss", "confidence")  # what a user computes from their own logits


def _targets(table: dict) -> list[dict]:
    """Issue 11's targets per setting (perfect user unless stated).

    * static: the detector's ranking >= the best of AUM, last-epoch loss and data-map confidence - 0.01;
    * feedback: >= the best static baseline + 0.05 where that baseline is below 0.95, never below it;
    * mistakes: cumulative precision drops by at most 0.05 with 10% wrong answers.
    """
    checks = []
    for key, e in table.items():
        r = e["rankers"]
        perfect = {name: v[str(STATIC_MISTAKE)]["precision"] for name, v in r.items()}
        ours = perfect.get("timetravel")
        if ours is None:
            continue
        static = {n: perfect[n] for n in STATIC_BASELINES if n in perfect}
        best_name = max(static, key=static.get)
        best = static[best_name]
        row = {"setting": key, "k": e["k"], "timetravel": ours, "best_baseline": best_name,
               "best_baseline_precision": best, "margin": ours - best}
        if "timetravel_static" in perfect:
            five = {n: perfect[n] for n in FIVE_LINE_BASELINES if n in perfect}
            five_name = max(five, key=five.get)
            row.update(static=perfect["timetravel_static"], best_five_line=five_name,
                       best_five_line_precision=five[five_name],
                       static_margin=perfect["timetravel_static"] - five[five_name],
                       feedback_gain=ours - perfect["timetravel_static"])
            row["target_static"] = _at_least(row["static_margin"], -0.01)
        row["target_feedback"] = _at_least(row["margin"], 0.05 if best < 0.95 else 0.0)
        mist = r["timetravel"].get("0.1")
        if mist is not None:
            row["drop_at_10pct_mistakes"] = ours - mist["precision"]
            row["target_drop_le_0.05"] = _at_least(0.05, row["drop_at_10pct_mistakes"])
        checks.append(row)
    return checks


def _at_least(value: float, bound: float) -> bool:
    """``value >= bound`` up to float rounding (precisions are counts over reviews: 0.9467 - 0.9567 is -0.01)."""
    return round(value - bound, 9) >= 0


def _pair_table(table: dict, rankers: list[str], title: str, keys: tuple[str, str], digits: int) -> list[str]:
    """Markdown lines of a settings x rankers table whose cells are two perfect-user values "a / b"."""
    lines = ["", f"## {title}", "", "| setting | " + " | ".join(rankers) + " |", "|---|" + "---|" * len(rankers)]
    for key, e in table.items():
        cells = []
        for n in rankers:
            v = e["rankers"].get(n, {}).get(str(STATIC_MISTAKE))
            cells.append("–" if v is None else f"{_fmt(v[keys[0]], digits)} / {_fmt(v[keys[1]], digits)}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def _fmt(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _markdown(result: dict) -> str:
    table, checks, meta = result["table"], result["targets"], result["meta"]
    rankers = [n for n in meta["rankers"] if any(n in e["rankers"] for e in table.values())]
    lines = [
        "# Recommendation accuracy (simulated users)",
        "",
        f"Commit `{meta['commit']}`, {meta['date']}, {meta['cpus']} CPU cores ({meta['machine']}); "
        f"{meta['elapsed_minutes']:.1f} min in all"
        + (f" (summed over {len(meta['merged_from'])} partial runs, some side by side)" if "merged_from" in meta
           else "")
        + "; load average "
        f"{meta['load_average_start'][0]:.1f} at the start, {meta['load_average_end'][0]:.1f} at the end. "
        f"Settings: datasets {meta['datasets']}, noise {meta['noise']}, rates {meta['rates']}, seeds {meta['seeds']}, "
        f"{meta['epochs']} epochs, {meta['rounds']} rounds of k (k = 50 for runs of 20,000+ samples, else "
        f"ceil(n_noisy / 20)). Values are means over seeds"
        + ("." if meta.get("user_draws", 1) <= 1
           else f"; timetravel's sessions also over {meta['user_draws']} draws of its exploration and of which "
           "answers a mistaken user gets wrong." if meta.get("exploration_draws")
           else f"; with a mistaken user, also over {meta['user_draws']} draws of which answers are wrong."),
        "",
        *([meta["note"], ""] if meta.get("note") else []),
        "DeepDebugger trajectories: " + ", ".join(sorted({s for e in result["runs"] for s in
                                                          [e["notes"].get("deepdebugger_space", "?")]})) +
        " (`canvas` = 2D projection; `embedding-pca` = no projection in the run, so each epoch's embedding "
        "under one PCA fitted over all epochs).",
        "",
        "## Cumulative precision after 10 rounds, perfect user",
        "",
        "| setting | k | seeds | " + " | ".join(rankers) + " |",
        "|---|---|---|" + "---|" * len(rankers),
    ]
    for key, e in table.items():
        cells = [_fmt(e["rankers"].get(n, {}).get(str(STATIC_MISTAKE), {}).get("precision")) for n in rankers]
        lines.append(f"| {key} | {','.join(map(str, e['k']))} | {len(e['seeds'])} | " + " | ".join(cells) + " |")
    lines += ["", "## Targets (issue 11)", "",
              "Static: the detector's ranking (`timetravel static`) against the best of AUM, last-epoch loss and "
              "data-map confidence, target >= -0.01. Feedback: `timetravel` against the best static baseline, target "
              ">= +0.05 where that baseline is below 0.95, else >= 0. Mistakes: drop with 10% wrong answers <= 0.05.",
              "",
              "| setting | k | static | best of AUM / loss / conf. | static margin | ok | timetravel | best static "
              "baseline | margin | ok | drop at 10% mistakes | ok |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in checks:
        lines.append(
            f"| {c['setting']} | {','.join(map(str, c['k']))} | {_fmt(c.get('static'))} | "
            f"{c.get('best_five_line', '–')} {_fmt(c.get('best_five_line_precision'))} | {_fmt(c.get('static_margin'))} | "
            f"{_fmt(c.get('target_static'))} | {_fmt(c['timetravel'])} | {c['best_baseline']} "
            f"{_fmt(c['best_baseline_precision'])} | {_fmt(c['margin'])} | {_fmt(c.get('target_feedback'))} | "
            f"{_fmt(c.get('drop_at_10pct_mistakes'))} | {_fmt(c.get('target_drop_le_0.05'))} |")
    met = {t: [c[t] for c in checks if t in c] for t in ("target_static", "target_feedback", "target_drop_le_0.05")}
    lines += ["", "Met: " + ", ".join(f"{t.removeprefix('target_')} {sum(v)} of {len(v)}" for t, v in met.items()) + "."]
    mistakes = meta["mistakes"]
    for name in FEEDBACK_RANKERS:
        lines += ["", f"## {name}: cumulative precision by user mistake rate", "",
                  "| setting | " + " | ".join(f"{m:.0%}" for m in mistakes) + " |", "|---|" + "---|" * len(mistakes)]
        for key, e in table.items():
            if name in e["rankers"]:
                cells = [_fmt(e["rankers"][name].get(str(m), {}).get("precision")) for m in mistakes]
                lines.append(f"| {key} | " + " | ".join(cells) + " |")
    lines += _pair_table(table, rankers, "Initial ranking quality: AUROC / AUPRC", ("auroc", "auprc"), 2)
    lines += _pair_table(table, rankers, "Reviews needed for 50% / 80% recall (perfect user; – = not within "
                         "2 × n_noisy reviews)", ("reviews_for_50", "reviews_for_80"), 0)
    lines += ["", "## Update latency of the FeedbackRecommender (one update + recommend)", "",
              "| where | samples | p50 ms | p95 ms | load average (1 min) |", "|---|---|---|---|---|"]
    for key, e in table.items():
        v = e["rankers"].get("timetravel", {}).get(str(STATIC_MISTAKE))
        if v and v["latency_p50_ms"] is not None:
            lines.append(f"| sessions {key} | {e['n_samples']} | {_fmt(v['latency_p50_ms'], 2)} | "
                         f"{_fmt(v['latency_p95_ms'], 2)} | see above |")
    for row in result["latency"]:
        priority = f", nice {row['nice']}" if row.get("nice") else ""
        lines.append(f"| {row['updates']} updates, {row['n_features']} features{priority} | {row['n_samples']} | "
                     f"{row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {_fmt(row.get('load_average_1m'), 1)} |")
    lines.append("")
    return "\n".join(lines)


def _plot(path: Path, title: str, curves: dict[str, np.ndarray], n_noisy: int, ten_rounds: int,
          step: int = 1) -> None:  # fmt: skip
    """Recall against reviews, one line per ranker (PIL only: no plotting library is a dependency).

    ``curves`` hold the recall after every ``step`` reviews (1: after every review).
    """
    from PIL import Image, ImageDraw

    w, h, left, right, top, bottom = 900, 560, 70, 190, 40, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    max_x = max((len(c) * step for c in curves.values()), default=1)
    px = lambda x: left + (w - left - right) * x / max(max_x, 1)  # noqa: E731
    py = lambda y: h - bottom - (h - top - bottom) * y  # noqa: E731
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for frac in (0.25, 0.5, 0.75, 1.0):
        d.line([left, py(frac), w - right, py(frac)], fill=(225, 225, 225))
        d.text((left - 40, py(frac) - 6), f"{frac:.2f}", fill="black")
    for x in np.linspace(0, max_x, 5):
        d.text((px(x) - 10, h - bottom + 8), f"{int(x)}", fill="black")
    d.line([px(0), py(0), px(n_noisy), py(1)], fill=(200, 200, 200))  # a perfect ranker
    for y in range(top, h - bottom, 8):  # the 10 rounds the precision targets are measured on
        d.line([px(ten_rounds), y, px(ten_rounds), y + 4], fill=(120, 120, 120))
    d.text((px(ten_rounds) + 4, top + 4), "10 rounds", fill=(90, 90, 90))
    d.text((left, 12), title, fill="black")
    d.text((w // 2 - 60, h - 22), "reviews", fill="black")
    d.text((8, top - 20), "recall", fill="black")
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
    for i, (name, curve) in enumerate(curves.items()):
        colour = palette[i % len(palette)]
        pts = [(px((j + 1) * step), py(float(v))) for j, v in enumerate(curve)]
        if len(pts) > 1:
            d.line(pts, fill=colour, width=3 if name == "timetravel" else 1)
        d.line([w - right + 10, top + 18 * i + 6, w - right + 30, top + 18 * i + 6], fill=colour, width=3)
        d.text((w - right + 35, top + 18 * i), name, fill="black")
    img.save(path)


def _plots(runs: list[dict], out: Path, prefix: str) -> list[str]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["noise"], r["rate"]), []).append(r)
    written = []
    for (dataset, noise, rate), items in groups.items():
        curves = {}
        # a merged report's parts were written already: their curves hold recall after every round of k
        step = next(iter(items[0]["rankers"].values()))[str(STATIC_MISTAKE)].get("recall_curve_step", 1)
        for name in items[0]["rankers"]:
            cs = [np.asarray(i["rankers"][name][str(STATIC_MISTAKE)]["recall_curve"]) for i in items]
            length = min(len(c) for c in cs)
            curves[name] = np.mean([c[:length] for c in cs], axis=0)
        path = out / f"{prefix}_{dataset}_{noise}_{int(round(rate * 100)):02d}.png"
        _plot(path, f"{dataset}, {noise} noise {rate:.0%}: recall vs reviews (perfect user, "
                    f"mean of {len(items)} seeds)", curves, items[0]["n_noisy"], 10 * items[0]["k"], step)
        written.append(path.name)
    return written


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [round(float(v), 5) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timetravel bench recommend", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="a small subset for development and CI smoke tests (digits and the tabular subject, symmetric "
                        "20%%, one seed, 10 and 8 epochs, mistake rates 0 and 10%%, latency at 50k only)")
    p.add_argument("--datasets", default="digits,synthetic",
                   help="bundled datasets trained with `timetravel train` (empty: none)")
    p.add_argument("--subjects", default="shapes,text,tabular",
                   help="subject runs recorded from a plain loop (benchmarks/subjects.py): shapes (CNN on 3x32x32 "
                        "images), text (EmbeddingBag), tabular (MLP); empty: none")
    p.add_argument("--subject-epochs", default="8,30", help="training lengths of the subject runs")
    p.add_argument("--subject-rates", default="0.1,0.2,0.4")
    p.add_argument("--subject-seeds", default="0,1")
    p.add_argument("--noise", default="symmetric,pairflip,class-conditional")
    p.add_argument("--rates", default="0.05,0.1,0.2,0.4")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--mistakes", default="0,0.03,0.05,0.1,0.2")
    p.add_argument("--user-draws", type=int, default=5,
                   help="sessions averaged per run: different mistaken answers for each mistake rate > 0, "
                   "and different exploration draws for rankers that explore (timetravel)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--synthetic-samples", type=int, default=20000)
    p.add_argument("--cv-datasets", default="digits", help="datasets whose runs get K-fold cleanlab_cv")
    p.add_argument("--cv-folds", type=int, default=5)
    p.add_argument("--rankers", default=",".join(
        ["random", "loss", "aum", "aum_early_stop", "confidence", "forgetting", "cleanlab", "cleanlab_cv",
         "deepdebugger", "timetravel_static", "timetravel"]))
    p.add_argument("--latency-sizes", default="50000,200000")
    p.add_argument("--latency-updates", type=int, default=500)
    p.add_argument("--latency-features", type=int, default=13, help="feature columns in --latency-only mode")
    p.add_argument("--cache", default=str(ROOT / "runs" / "bench"), help="where trained runs are cached")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--name", default="recommend", help="basename of the result files")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for training and cross-validation; the small subject models train "
                        "fastest on one, and multi-threaded kernels stall when other jobs share the CPU")
    p.add_argument("--latency-only", action="store_true",
                   help="only measure the update latency at --latency-sizes (no runs), e.g. on a quiet machine")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="only combine result files of partial runs (e.g. one per dataset, run side by side) "
                        "into --name's tables and plots")
    p.add_argument("--note", help="a sentence added under the title of a merged report")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.datasets, args.noise, args.rates, args.seeds = "digits", "symmetric", "0.2", "0"
        args.mistakes, args.epochs, args.latency_sizes, args.latency_updates = "0,0.1", 10, "50000", 200
        args.subjects, args.subject_epochs, args.subject_rates, args.subject_seeds = "tabular", "8", "0.2", "0"
        args.name = "recommend_quick" if args.name == "recommend" else args.name
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.merge:
        return _merge([Path(p) for p in args.merge], Path(args.out), args.name, args.note)
    if args.latency_only:
        return _latency_only(args)
    from timetravel.detector import AbnormalityDetector
    from timetravel.features import extract_features
    from rankers import RankingInput

    datasets, subjects = _names(args.datasets), _names(args.subjects)
    kinds = args.noise.split(",")
    rates = [float(r) for r in args.rates.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    mistakes = [float(m) for m in args.mistakes.split(",")]
    rankers = args.rankers.split(",")
    cv_datasets = set(args.cv_datasets.split(",")) if args.cv_datasets else set()
    cache, out = Path(args.cache), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    load_start = list(os.getloadavg())
    # the code that runs is the code at the start; later commits in a shared checkout must not be named
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    runs = []
    for label, kind, rate, seed, path, make_store, cv_ok in _settings(args, cache):
        t0 = time.perf_counter()
        store = make_store()
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        table = extract_features(store, verbose=False)
        scores = AbnormalityDetector().fit(table).scores_
        n_features = table.values.shape[1]
        t_detect = time.perf_counter() - t0
        t0 = time.perf_counter()
        cv = _cv_probabilities(store, path, args.cv_folds, args.threads) if cv_ok and label in cv_datasets else None
        t_cv = time.perf_counter() - t0
        data = RankingInput(store, table, scores, cv_probabilities=cv, random_state=seed)
        t0 = time.perf_counter()
        result = _evaluate_run(store, data, rankers, mistakes, seed, args.rounds, args.user_draws)
        result.update(dataset=label, noise=kind, rate=rate, seed=seed, run=path.name,
                      seconds={"train_or_cache": t_train, "features_and_detector": t_detect,
                               "cross_validation": t_cv, "sessions": time.perf_counter() - t0})
        runs.append(result)
        tt = result["rankers"].get("timetravel", {}).get(str(STATIC_MISTAKE), {})
        logger.info("%s k=%d timetravel precision %s (%.0f s)", path.name, result["k"],
                    _fmt(tt.get("precision")), sum(result["seconds"].values()))
    latency = _latency([int(s) for s in args.latency_sizes.split(",") if s], n_features, args.latency_updates)
    result = {
        "meta": {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
                 "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
                 "machine": platform.platform(), "python": sys.version.split()[0],
                 "elapsed_minutes": (time.time() - started) / 60, "datasets": datasets, "noise": kinds,
                 "rates": rates, "seeds": seeds, "subjects": subjects, "subject_epochs": _ints(args.subject_epochs),
                 "subject_rates": _floats(args.subject_rates), "subject_seeds": _ints(args.subject_seeds),
                 "mistakes": mistakes, "epochs": args.epochs, "rounds": args.rounds,
                 "rankers": rankers, "synthetic_samples": args.synthetic_samples, "cv_datasets": sorted(cv_datasets),
                 "cv_folds": args.cv_folds, "quick": args.quick, "user_draws": args.user_draws,
                 "exploration_draws": True},
        "table": _aggregate(runs),
        "latency": latency,
        "runs": runs,
    }
    result["meta"]["elapsed_minutes"] = (time.time() - started) / 60
    _write(result, out, args.name)
    return 0


def _write(result: dict, out: Path, name: str, note: str | None = None) -> None:
    from timetravel._io import write_bytes_atomic

    if note:
        result["meta"]["note"] = note
    result["targets"] = _targets(result["table"])
    result["plots"] = _plots(result["runs"], out, name)
    for run in result["runs"]:  # the JSON keeps recall after each round of k, not after every review
        for per_mistake in run["rankers"].values():
            for metrics in per_mistake.values():
                if "recall_curve_step" not in metrics:  # not yet thinned (a merged part was)
                    metrics["recall_curve"] = np.asarray(metrics["recall_curve"])[run["k"] - 1 :: run["k"]]
                    metrics["recall_curve_step"] = run["k"]
    write_bytes_atomic(out / f"{name}.json", (json.dumps(_jsonable(result), indent=1) + "\n").encode())
    write_bytes_atomic(out / f"{name}.md", _markdown(result).encode())
    print(_markdown(result))


def _latency_only(args: argparse.Namespace) -> int:
    """Write ``<name>.json`` holding only latency rows, in the format ``--merge`` combines."""
    from timetravel._io import write_bytes_atomic

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    load_start = list(os.getloadavg())
    latency = _latency([int(s) for s in args.latency_sizes.split(",") if s], args.latency_features,
                       args.latency_updates)
    result = {"meta": {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
                       "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
                       "datasets": [], "seeds": [], "rates": [], "elapsed_minutes": 0.0},
              "latency": latency, "runs": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / f"{args.name}.json", (json.dumps(_jsonable(result), indent=1) + "\n").encode())
    for row in latency:
        print(f"{row['n_samples']} samples: p50 {row['p50_ms']:.2f} ms, p95 {row['p95_ms']:.2f} ms "
              f"(load {row['load_average_1m']:.1f})")
    return 0


def _merge(paths: list[Path], out: Path, name: str, note: str | None) -> int:
    """Combine partial results (same settings apart from datasets and seeds) into one report.

    Parts measured on different commits are merged with every commit named in
    the report, so the reader can check what changed between them.
    """
    parts = [json.loads(p.read_text()) for p in paths]
    meta = dict(next(p for p in parts if p["runs"])["meta"])
    meta["commit"] = ", ".join(sorted({p["meta"]["commit"] for p in parts}))
    meta["seeds"] = sorted({s for p in parts for s in p["meta"]["seeds"]})
    meta["rates"] = sorted({r for p in parts for r in p["meta"]["rates"]})
    meta["datasets"] = sorted({d for p in parts for d in p["meta"]["datasets"]})
    meta["elapsed_minutes"] = sum(p["meta"]["elapsed_minutes"] for p in parts)
    meta["merged_from"] = [p.name for p in paths]
    meta["load_average_end"] = max((p["meta"]["load_average_end"] for p in parts), key=lambda v: v[0])
    runs = [r for p in parts for r in p["runs"]]
    result = {"meta": meta, "table": _aggregate(runs), "latency": [r for p in parts for r in p["latency"]],
              "runs": runs}
    _write(result, out, name, note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
