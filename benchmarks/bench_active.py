"""Active learning (DeepDebugger's second task): find the unlabelled pool samples the final model mispredicts.

``timetravel bench active [--quick]``. For every subject x labelled share x seed,
:func:`subjects.record_pool_run` trains the subject on the labelled share of its
training set (10 / 20 / 30%) and records the rest as the run's unlabelled pool
(cached under ``runs/bench/``). The targets are the pool samples the final
model mispredicts; every ranker meets the same simulated user, who labels the
k recommended samples per round (k = ceil(n_targets / 20), 10 rounds, as in
the recommendation benchmark), which tells the ranker whether each was a
target.

Rankers: ``random``; the uncertainty baselines ``least_confidence``,
``margin``, ``entropy`` (last epoch); ``deepdebugger`` (its recommender on the
pool: BIRCH clusters of the pool trajectories' acceleration + uncertainty,
then kernel ridge regression on the feedback); ``timetravel_static``
(:func:`timetravel.active.pool_scores`, no feedback) and ``timetravel``
(:func:`timetravel.active.pool_recommender`, learning from every answer).

Results: ``benchmarks/results/active.json``, ``active.md`` and
``active_<subject>_<labelled>.png`` (recall of the targets against labels
given, mean over seeds).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
UNCERTAINTY = ("least_confidence", "margin", "entropy")

logger = logging.getLogger("bench_active")


@dataclass
class PoolInput:
    """What a pool ranker may use: the run (never the pool's true labels)."""

    store: object
    random_state: int = 0
    notes: dict = field(default_factory=dict)


def _uncertainty(kind: str):
    def score(data: PoolInput) -> np.ndarray:
        p = np.sort(np.asarray(data.store.probabilities(data.store.epochs[-1], "pool"), dtype=np.float64), axis=1)
        if kind == "least_confidence":
            return 1.0 - p[:, -1]
        if kind == "margin":
            return p[:, -2] - p[:, -1]
        return -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)

    return score


class PoolRecommender:
    """timetravel's pool recommender behind the ranker interface."""

    protocol = "per_decision"  # re-ranked after every label, as in the app's Pool tab

    def fit(self, data: PoolInput) -> PoolRecommender:
        from timetravel.active import pool_recommender

        self.recommender_ = pool_recommender(data.store, random_state=data.random_state)
        self.initial_scores_ = self.recommender_.log_odds()
        return self

    def recommend(self, k: int) -> np.ndarray:
        return self.recommender_.recommend(k)

    def update(self, indices, accepted) -> PoolRecommender:
        self.recommender_.update(indices, accepted)
        return self


def make_pool_ranker(name: str):
    """A new, unfitted pool ranker by name."""
    from rankers import DeepDebuggerRanker, ScoreRanker

    from timetravel.active import pool_scores

    if name in UNCERTAINTY:
        return ScoreRanker(name, _uncertainty(name))
    makers = {
        "random": lambda: ScoreRanker("random", lambda d: np.random.default_rng(d.random_state + 1).random(d.store.n_pool)),
        "deepdebugger": lambda: DeepDebuggerRanker(split="pool"),
        "timetravel_static": lambda: ScoreRanker("timetravel_static", lambda d: pool_scores(d.store)),
        "timetravel": PoolRecommender,
    }
    return makers[name]()


RANKERS = ("random", *UNCERTAINTY, "deepdebugger", "timetravel_static", "timetravel")


def _pool_store(cache: Path, subject: str, labelled: float, seed: int, epochs: int, threads: int):
    import subjects

    from timetravel.errors import StoreError
    from timetravel.store import RunStore

    path = cache / subjects.pool_run_name(subject, labelled, seed, epochs)
    try:
        store = RunStore(path, verify="headers")
        if len(store.epochs) == epochs and store.n_pool:
            return store
    except StoreError:
        pass
    logger.info("recording %s", path.name)
    subjects.record_pool_run(subject, labelled, seed, epochs, cache, threads=threads)
    return RunStore(path, verify="headers")


def _evaluate(store, rankers: list[str], seed: int, rounds: int) -> dict:
    from bench_recommend import _session

    from timetravel.simulate import ranking_quality, review_k

    final = np.asarray(store.probabilities(store.epochs[-1], "pool")).argmax(axis=1)
    targets = final != np.asarray(store.pool_true_labels)
    k = review_k(store.n_pool, int(targets.sum()), rounds=rounds)
    out = {"k": k, "n_pool": store.n_pool, "n_targets": int(targets.sum()), "n_labelled": store.n_samples,
           "pool_accuracy": float(1 - targets.mean()), "rankers": {}}
    for name in rankers:
        t0 = time.perf_counter()
        data = PoolInput(store, random_state=seed)
        ranker = make_pool_ranker(name).fit(data)
        fit_s = time.perf_counter() - t0
        metrics = _session(ranker, targets, k, 0.0, seed, rounds, ranker.protocol)
        metrics.update(ranking_quality(np.asarray(ranker.initial_scores_), targets), fit_seconds=fit_s)
        out["rankers"][name] = metrics
    return out


def _aggregate(runs: list[dict]) -> dict:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["subject"], r["labelled"]), []).append(r)
    table = {}
    for (subject, labelled), items in groups.items():
        entry = {"subject": subject, "labelled": labelled, "k": sorted({i["k"] for i in items}),
                 "seeds": [i["seed"] for i in items], "n_pool": items[0]["n_pool"],
                 "pool_accuracy": float(np.mean([i["pool_accuracy"] for i in items])), "rankers": {}}
        for name in items[0]["rankers"]:
            ms = [i["rankers"][name] for i in items]
            entry["rankers"][name] = {m: float(np.mean([x[m] for x in ms])) for m in ("precision", "auroc", "auprc")}
        table[f"{subject}/{labelled:.0%}"] = entry
    return table


def _markdown(result: dict) -> str:
    from bench_recommend import _fmt

    meta, table = result["meta"], result["table"]
    rankers = meta["rankers"]
    lines = ["# Active learning: finding the pool samples the final model mispredicts", "",
             f"Commit `{meta['commit']}`, {meta['date']}, {meta['cpus']} CPU cores; {meta['elapsed_minutes']:.1f} min. "
             f"Subjects {meta['subjects']}, labelled shares {meta['labelled']}, seeds {meta['seeds']}, "
             f"{meta['epochs']} epochs, {meta['rounds']} rounds of k = ceil(targets / 20); perfect user. Targets: "
             "pool samples the final model mispredicts. Values are means over seeds.", "",
             "## Cumulative precision after 10 rounds", "",
             "| setting | pool | final pool accuracy | k | " + " | ".join(rankers)
             + " | best uncertainty | timetravel − best |",
             "|---|---|---|---|" + "---|" * (len(rankers) + 2)]
    for key, e in table.items():
        r = e["rankers"]
        best = max(UNCERTAINTY, key=lambda n: r[n]["precision"])
        cells = [_fmt(r[n]["precision"]) for n in rankers]
        margin = r["timetravel"]["precision"] - r[best]["precision"] if "timetravel" in r else None
        lines.append(f"| {key} | {e['n_pool']} | {_fmt(e['pool_accuracy'])} | {','.join(map(str, e['k']))} | "
                     + " | ".join(cells) + f" | {best} {_fmt(r[best]['precision'])} | {_fmt(margin)} |")
    lines += ["", "## Initial ranking AUROC", "", "| setting | " + " | ".join(rankers) + " |",
              "|---|" + "---|" * len(rankers)]
    for key, e in table.items():
        lines.append(f"| {key} | " + " | ".join(_fmt(e["rankers"][n]["auroc"], 2) for n in rankers) + " |")
    lines.append("")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timetravel bench active", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tabular subject, 10%% labelled, one seed, 8 epochs")
    p.add_argument("--subjects", default="shapes,text,tabular")
    p.add_argument("--labelled", default="0.1,0.2,0.3", help="labelled shares of the training set")
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--rankers", default=",".join(RANKERS))
    p.add_argument("--cache", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--name", default="active")
    p.add_argument("--threads", type=int, default=1)
    return p


def main(argv: list[str] | None = None) -> int:
    from bench_recommend import _jsonable, _plot

    from timetravel._io import write_bytes_atomic

    args = _parser().parse_args(argv)
    if args.quick:
        args.subjects, args.labelled, args.seeds, args.epochs = "tabular", "0.1", "0", 8
        args.name = "active_quick" if args.name == "active" else args.name
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    subjects = [s for s in args.subjects.split(",") if s]
    shares = [float(s) for s in args.labelled.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    rankers = args.rankers.split(",")
    cache, out = Path(args.cache), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    runs = []
    for subject in subjects:
        for share in shares:
            for seed in seeds:
                store = _pool_store(cache, subject, share, seed, args.epochs, args.threads)
                result = _evaluate(store, rankers, seed, args.rounds)
                result.update(subject=subject, labelled=share, seed=seed, run=store.path.name)
                runs.append(result)
                logger.info("%s: %d targets of %d, timetravel %.3f", store.path.name, result["n_targets"],
                            result["n_pool"], result["rankers"].get("timetravel", {}).get("precision", float("nan")))
    result = {"meta": {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "cpus": os.cpu_count(),
                       "load_average_end": list(os.getloadavg()), "subjects": subjects, "labelled": shares,
                       "seeds": seeds, "epochs": args.epochs, "rounds": args.rounds, "rankers": rankers,
                       "elapsed_minutes": (time.time() - started) / 60},
              "table": _aggregate(runs), "runs": runs}
    plots = []
    for key, e in result["table"].items():
        items = [r for r in runs if r["subject"] == e["subject"] and r["labelled"] == e["labelled"]]
        curves = {}
        for name in rankers:
            cs = [np.asarray(i["rankers"][name]["recall_curve"]) for i in items]
            length = min(len(c) for c in cs)
            curves[name] = np.mean([c[:length] for c in cs], axis=0)
        path = out / f"{args.name}_{e['subject']}_{int(round(e['labelled'] * 100)):02d}.png"
        _plot(path, f"{key} labelled: recall of mispredicted pool samples vs labels given (mean of {len(items)} seeds)",
              curves, items[0]["n_targets"], 10 * items[0]["k"])
        plots.append(path.name)
    result["plots"] = plots
    for run in runs:
        for metrics in run["rankers"].values():
            metrics["recall_curve"] = np.asarray(metrics["recall_curve"])[run["k"] - 1 :: run["k"]]
    write_bytes_atomic(out / f"{args.name}.json", (json.dumps(_jsonable(result), indent=1) + "\n").encode())
    write_bytes_atomic(out / f"{args.name}.md", _markdown(result).encode())
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
