"""Clean test accuracy after retraining on labels corrected by R rounds of review.

``timetravel bench fix [--quick]``. For every dataset x noise kind x seed a run
is trained and recorded (cached under ``runs/bench/``, as the recommendation
benchmark does), its features and detector computed, and a simulated user
reviews R = 1, 2, 5, 10 rounds of k recommendations (k as in ``bench
recommend``: ceil(n_noisy / 20) below 20,000 samples). Each accepted sample is
relabelled, through :func:`timetravel.correction.apply_decisions`: to its true
class when it is mislabelled (the user sees what it is), to the detector's
suggested label when a mistaken user accepts a correct one. The subject model
is then retrained from scratch with the run's settings and seed
(:func:`timetravel.train.train_accuracy`) and its clean test accuracy at the
last epoch is reported.

Who reviews:

- ``timetravel``: the detector's ranking with the feedback recommender, perfect
  user, then ``timetravel fix --drop-suspects``: the unreviewed samples in the
  suspicious mode of the recommender's scores fitted on the review and of the
  detector's scores (the mean of the two posteriors), or whose given label got
  < 50% mean probability over training, are left out
  (:func:`timetravel.correction.drop_suspects`; at R = 0 the second rule alone);
  ``timetravel_mistaken``: the same with 10% of the answers wrong (mean over
  ``--user-draws`` draws of which answers are wrong);
  ``timetravel_review_only``: the perfect user's relabels without the drop;
- ``random`` and ``aum`` (static area-under-the-margin ranking), perfect user,
  relabels only;
- ``cleanlab``: no human; ``cleanlab.filter.find_label_issues`` on K-fold
  out-of-sample probabilities of the same subject model, every flagged sample
  dropped (one retraining, independent of R);
- ``oracle``: every noisy label fixed (= the clean labels), the ceiling.

``gap recovered`` = (accuracy - noisy) / (clean - noisy), where ``noisy`` is
the accuracy of training on the noisy labels. Accuracy does not depend on the
machine's load. Results: ``benchmarks/results/fix.json``, ``fix.md`` and
``fix.png``.
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, git_commit, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# name: (ranker, mistaken user, drop the unreviewed suspects)
REVIEWERS = {
    "timetravel": ("timetravel", True, True),
    "timetravel_mistaken": ("timetravel", False, True),
    "timetravel_review_only": ("timetravel", True, False),
    "random": ("random", True, False),
    "aum": ("aum", True, False),
}
logger = logging.getLogger("bench_fix")


def _session_decisions(ranker, store, suggested: np.ndarray, k: int, rounds: list[int], mistake: float,
                       seed: int) -> dict[int, FeedbackState]:
    """The review's decisions after each number of rounds in ``rounds`` of one simulated session."""
    from timetravel.feedback import FeedbackEvent, FeedbackState
    from timetravel.simulate import SimulatedUser, run_session

    mask = np.asarray(store.noise_mask)
    true = np.asarray(store.true_labels)
    session = run_session(ranker, SimulatedUser(mask, mistake, random_state=seed), k=k, rounds=max(rounds),
                          update="per_round")
    state, out = FeedbackState(), {}
    for r, (batch, answers) in enumerate(zip(session.rounds, session.answers), start=1):
        for i, accepted in zip(batch.tolist(), answers.tolist()):
            if accepted:
                label = int(true[i]) if mask[i] else int(suggested[i])
                state.apply(FeedbackEvent(i, "relabel", float(r), label=label))
            else:
                state.apply(FeedbackEvent(i, "reject", float(r)))
        if r in rounds:
            out[r] = copy.deepcopy(state)
    return out


def _cleanlab_keep(store, cv_probs: np.ndarray) -> np.ndarray:
    from cleanlab.filter import find_label_issues

    probs = np.clip(np.asarray(cv_probs, dtype=np.float64), 1e-12, None)
    probs /= probs.sum(axis=1, keepdims=True)
    return ~find_label_issues(np.asarray(store.labels), probs)


def _evaluate(store, path: Path, args, seed: int) -> dict:
    from bench_recommend import _cv_probabilities

    from timetravel.correction import apply_decisions, drop_suspects
    from timetravel.detector import AbnormalityDetector
    from timetravel.feedback import FeedbackState
    from timetravel.features import extract_features
    from timetravel.recommend import FeedbackRecommender
    from rankers import RankingInput, make_ranker
    from timetravel.simulate import review_k
    from timetravel.train import TrainConfig, train_accuracy

    config = TrainConfig.from_manifest(store.manifest["train"])
    mask = np.asarray(store.noise_mask)
    k = review_k(store.n_samples, int(mask.sum()), rounds=10)

    def acc(labels=None, keep=None) -> float:
        return float(train_accuracy(config, labels, keep, threads=args.threads)[-1])

    def corrected(state: FeedbackState, suspects: bool):
        """What `timetravel fix [--drop-suspects]` trains on after the review ``state``."""
        fix = apply_decisions(store.labels, state)
        if not suspects:
            return fix
        score = FeedbackRecommender(random_state=0).fit(table, prior).restore(state.decisions).log_odds()
        return drop_suspects(fix, state, confidence=table.column("confidence"), suspicion=score, prior=prior)

    table = extract_features(store, verbose=False)
    prior = AbnormalityDetector().fit(table).scores_
    data = RankingInput(store, table, prior, random_state=seed)
    rounds = [int(r) for r in args.rounds.split(",")]
    result = {"k": k, "n_samples": store.n_samples, "n_noisy": int(mask.sum()), "rounds": rounds,
              "noisy": acc(), "clean": acc(np.asarray(store.true_labels))}
    result["oracle"] = result["clean"]
    keep = _cleanlab_keep(store, _cv_probabilities(store, path, args.cv_folds, args.threads))
    result["cleanlab"] = {"accuracy": acc(keep=keep), "dropped": int((~keep).sum()),
                          "dropped_noisy": int((~keep & mask).sum())}
    alone = corrected(FeedbackState(), True)
    result["suspects_only"] = {"accuracy": acc(keep=alone.keep), "dropped": len(alone.dropped),
                               "dropped_noisy": int(mask[alone.dropped].sum())}
    result["reviewers"], sessions = {}, {}
    for name, (ranker_name, perfect, suspects) in REVIEWERS.items():
        mistake, draws = (0.0, 1) if perfect else (args.mistake, args.user_draws)
        per_draw = []
        for draw in range(draws):
            if (ranker_name, mistake, draw) not in sessions:
                ranker = make_ranker(ranker_name).fit(data)
                sessions[ranker_name, mistake, draw] = _session_decisions(
                    ranker, store, table.suggested, k, rounds, mistake, seed * 1000 + draw)
            fixes = {r: corrected(state, suspects) for r, state in sessions[ranker_name, mistake, draw].items()}
            per_draw.append({r: {"accuracy": acc(f.labels, f.keep),
                                 "fixed": int(((f.labels == store.true_labels) | ~f.keep)[mask].sum()),
                                 "broken": int(((f.labels != store.true_labels) | ~f.keep)[~mask].sum())}
                             for r, f in fixes.items()})
        result["reviewers"][name] = {str(r): {m: float(np.mean([d[r][m] for d in per_draw])) for m in per_draw[0][r]}
                                     for r in rounds}
        logger.info("%s %s: %s", path.name, name,
                    ", ".join(f"R={r} {result['reviewers'][name][str(r)]['accuracy']:.4f}" for r in rounds))
    return result


@functools.cache
def _code_fingerprint() -> str:
    """A hash of the code a cached result depends on: the timetravel package and this benchmark's modules."""
    import hashlib

    digest = hashlib.sha256()
    sources = sorted((ROOT / "timetravel").rglob("*.py"))
    sources += [Path(__file__).with_name(name) for name in ("bench_fix.py", "bench_recommend.py", "rankers.py")]
    for source in sources:
        digest.update(str(source.relative_to(ROOT)).encode() + b"\0" + source.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _cached_result(store, path: Path, args: argparse.Namespace, seed: int, setting: dict) -> dict:
    """One run's result, kept beside the run (an interrupted benchmark keeps the runs it finished).

    The key holds the settings and a fingerprint of the code (:func:`_code_fingerprint`): a
    result measured with other code is measured again, never reported as this code's.
    """
    import json

    from timetravel._io import write_json_atomic

    key = {**setting, "rounds": args.rounds, "mistake": args.mistake, "user_draws": args.user_draws,
           "cv_folds": args.cv_folds, "reviewers": list(REVIEWERS), "epochs": list(store.epochs),
           "code": _code_fingerprint()}
    cached = path / "bench_fix_result.json"
    if cached.exists():
        saved = json.loads(cached.read_text())
        if saved.get("key") == key:
            return saved["result"]
    t0 = time.perf_counter()
    result = _evaluate(store, path, args, seed)
    result.update(setting, run=path.name, seconds=time.perf_counter() - t0)
    write_json_atomic(cached, {"key": key, "result": result})
    return result


def _gap(acc: float, noisy: float, clean: float) -> float:
    return (acc - noisy) / (clean - noisy) if clean > noisy else float("nan")


def _aggregate(runs: list[dict]) -> dict:
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(f"{r['dataset']}/{r['noise']}", []).append(r)
    table = {}
    for key, items in groups.items():
        entry = {"k": items[0]["k"], "n_samples": items[0]["n_samples"], "seeds": [i["seed"] for i in items],
                 "rounds": items[0]["rounds"]}
        for m in ("noisy", "clean", "oracle"):
            entry[m] = float(np.mean([i[m] for i in items]))
        entry["cleanlab"] = float(np.mean([i["cleanlab"]["accuracy"] for i in items]))
        entry["cleanlab_gap"] = float(np.mean([_gap(i["cleanlab"]["accuracy"], i["noisy"], i["clean"]) for i in items]))
        entry["cleanlab_dropped"] = float(np.mean([i["cleanlab"]["dropped"] for i in items]))
        entry["suspects_only"] = float(np.mean([i["suspects_only"]["accuracy"] for i in items]))
        entry["suspects_dropped"] = float(np.mean([i["suspects_only"]["dropped"] for i in items]))
        for name in REVIEWERS:
            entry[name] = {}
            for r in entry["rounds"]:
                cells = [i["reviewers"][name][str(r)] for i in items]
                entry[name][str(r)] = {
                    "accuracy": float(np.mean([c["accuracy"] for c in cells])),
                    "gap": float(np.mean([_gap(c["accuracy"], i["noisy"], i["clean"]) for c, i in zip(cells, items)])),
                    "fixed": float(np.mean([c["fixed"] for c in cells])),
                    "broken": float(np.mean([c["broken"] for c in cells])),
                }
        table[key] = entry
    return table


def _rows(table: dict) -> tuple[list[dict], list[dict], list[dict]]:
    headline, full, targets = [], [], []
    for key, e in table.items():
        last = str(max(e["rounds"]))
        row = {"setting": key, "k": e["k"], "noisy": e["noisy"], "clean (oracle)": e["clean"]}
        for name in REVIEWERS:
            row[f"{name} R={last}"] = f"{e[name][last]['accuracy']:.4f} ({e[name][last]['gap']:.0%})"
        row["cleanlab drop"] = f"{e['cleanlab']:.4f} ({e['cleanlab_gap']:.0%})"
        row["suspects only (R=0)"] = f"{e['suspects_only']:.4f} ({_gap(e['suspects_only'], e['noisy'], e['clean']):.0%})"
        headline.append(row)
        for r in e["rounds"]:
            full.append({"setting": key, "R": r, "reviews": r * e["k"],
                         **{name: f"{e[name][str(r)]['accuracy']:.4f} ({e[name][str(r)]['gap']:.0%}; "
                                  f"{e[name][str(r)]['fixed']:.0f} noisy fixed or dropped, {e[name][str(r)]['broken']:.0f} clean lost)"
                            for name in REVIEWERS}})
        ours = e["timetravel"][last]["gap"]
        baselines = {"random": e["random"][last]["gap"], "aum": e["aum"][last]["gap"], "cleanlab": e["cleanlab_gap"]}
        best = max(baselines, key=baselines.get)
        targets.append({"setting": key, "timetravel gap": f"{ours:.0%}", "target >= 70%": ours >= 0.7,
                        "best baseline": f"{best} {baselines[best]:.0%}", "beats every baseline": ours > baselines[best],
                        "with 10% mistakes": f"{e['timetravel_mistaken'][last]['gap']:.0%}"})
    return headline, full, targets


def _plot(path: Path, table: dict) -> None:
    """Accuracy against reviews, one panel per setting (PIL only: no plotting library is a dependency)."""
    from PIL import Image, ImageDraw

    colours = {"timetravel": (214, 39, 40), "timetravel_mistaken": (255, 152, 150),
               "timetravel_review_only": (255, 127, 14), "random": (127, 127, 127),
               "aum": (31, 119, 180), "cleanlab": (44, 160, 44), "noisy": (0, 0, 0), "clean (oracle)": (148, 103, 189)}
    pw, ph, cols = 600, 380, 2
    rows = (len(table) + cols - 1) // cols
    img = Image.new("RGB", (pw * cols, ph * rows + 40), "white")
    d = ImageDraw.Draw(img)
    for n, (name, colour) in enumerate(colours.items()):
        x = 10 + n * 145
        d.line([x, 20, x + 24, 20], fill=colour, width=3)
        d.text((x + 28, 14), name, fill="black")
    for p, (key, e) in enumerate(table.items()):
        ox, oy = (p % cols) * pw, 40 + (p // cols) * ph
        left, right, top, bottom = ox + 60, ox + pw - 15, oy + 30, oy + ph - 40
        reviews = [0] + [r * e["k"] for r in e["rounds"]]
        curves = {name: [e["suspects_only"] if REVIEWERS[name][2] else e["noisy"]]
                  + [e[name][str(r)]["accuracy"] for r in e["rounds"]] for name in REVIEWERS}
        flat = {"noisy": e["noisy"], "clean (oracle)": e["clean"], "cleanlab": e["cleanlab"]}
        values = [v for c in curves.values() for v in c] + list(flat.values())
        lo, hi = min(values) - 0.005, max(values) + 0.005
        px = lambda x: left + (right - left) * x / reviews[-1]  # noqa: E731
        py = lambda y: bottom - (bottom - top) * (y - lo) / (hi - lo)  # noqa: E731
        d.rectangle([left, top, right, bottom], outline="black")
        for y in np.linspace(lo, hi, 5):
            d.line([left, py(y), right, py(y)], fill=(230, 230, 230))
            d.text((ox + 8, py(y) - 6), f"{y:.3f}", fill="black")
        for x in reviews:
            d.text((px(x) - 8, bottom + 6), str(x), fill="black")
        d.text((left, oy + 10), f"{key}: clean test accuracy vs reviews (k = {e['k']})", fill="black")
        d.text(((left + right) // 2 - 20, bottom + 22), "reviews", fill="black")
        for name, value in flat.items():
            for x in range(left, right, 10):
                d.line([x, py(value), x + 5, py(value)], fill=colours[name], width=2)
        for name, curve in curves.items():
            pts = [(px(x), py(v)) for x, v in zip(reviews, curve)]
            d.line(pts, fill=colours[name], width=3 if name == "timetravel" else 2)
            for x, y in pts:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colours[name])
    img.save(path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="timetravel bench fix", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits, symmetric 20%%, one seed, R = 1, 10 (smoke test)")
    p.add_argument("--datasets", default="digits,synthetic")
    p.add_argument("--noise", default="symmetric,pairflip")
    p.add_argument("--rate", type=float, default=0.2)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--rounds", default="1,2,5,10", help="numbers of review rounds to retrain after")
    p.add_argument("--mistake", type=float, default=0.1, help="share of wrong answers of the mistaken user")
    p.add_argument("--user-draws", type=int, default=2, help="mistaken-user sessions averaged per run")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--synthetic-samples", type=int, default=5000)
    p.add_argument("--cv-folds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the small models train fastest on one)")
    p.add_argument("--cache", default=str(ROOT / "runs" / "bench"), help="where recorded runs are cached")
    p.add_argument("--out", default=str(RESULTS_DIR))
    p.add_argument("--name", default="fix", help="basename of the result files")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="only combine the runs of result files of partial runs (e.g. one per dataset, run side by "
                        "side) into --name's table and plot")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.quick:
        args.datasets, args.noise, args.seeds, args.rounds, args.user_draws = "digits", "symmetric", "0", "1,10", 1
        args.name = "fix_quick" if args.name == "fix" else args.name
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from bench_recommend import _run_dir, _train

    if args.merge:
        import json

        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        runs = [r for part in parts for r in part["results"]["runs"]]
        commits = sorted({part["results"].get("commit", part["git_commit"]) for part in parts})
        minutes = sum(part["results"].get("minutes", 0.0) for part in parts)
        return _report(runs, args, ", ".join(commits), minutes, merged=[Path(p).name for p in args.merge])
    started, commit = time.time(), git_commit()  # the code that runs is the code at the start
    runs = []
    for dataset in args.datasets.split(","):
        n = args.synthetic_samples if dataset == "synthetic" else None
        for kind in args.noise.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                path = _run_dir(Path(args.cache), dataset, kind, args.rate, seed, n)
                store = _train(path, dataset, kind, args.rate, seed, args.epochs, n, args.threads)
                runs.append(_cached_result(store, path, args, seed, dict(dataset=dataset, noise=kind,
                                                                          rate=args.rate, seed=seed)))
    return _report(runs, args, commit, (time.time() - started) / 60)


def _report(runs: list[dict], args: argparse.Namespace, commit: str, minutes: float,
            merged: list[str] | None = None) -> int:
    table = _aggregate(runs)
    headline, full, targets = _rows(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{args.name}.png"
    _plot(png, table)
    sizes = ", ".join(f"{key}: {e['n_samples']} training samples, k = {e['k']}" for key, e in table.items())
    dropped = ", ".join(f"{key}: {e['cleanlab_dropped']:.0f}" for key, e in table.items())
    notes = [
        f"Mean of seeds {args.seeds}; {args.epochs} epochs; noise rate {args.rate:.0%}; {sizes}. "
        f"Cells: clean test accuracy at the last epoch after retraining (gap recovered, see below).",
        "gap recovered = (accuracy - noisy) / (clean - noisy): noisy = trained on the noisy labels, clean = on "
        "the true labels (= the oracle, every noisy label fixed).",
        f"timetravel_mistaken: 10% of the answers wrong, mean of {args.user_draws} draws per run; a wrongly "
        "accepted correct sample is relabelled to the detector's suggestion.",
        "cleanlab drop: no human; find_label_issues on "
        f"{args.cv_folds}-fold out-of-sample probabilities of the same model, every flagged sample dropped "
        f"({dropped} dropped on average).",
        f"Plot: [{png.name}]({png.name}). Measured with the code of commit `{commit}`; total time "
        f"{minutes:.1f} min (accuracy does not depend on the machine's load)"
        + (f"; merged from {', '.join(merged)}." if merged else "."),
    ]
    results = {"table": table, "runs": runs, "settings": vars(args), "commit": commit, "minutes": minutes}
    write_results(args.name, results, headline,
                  title="Accuracy after fixing the labels found in review (`timetravel bench fix`)",
                  sections=[("Targets after the last round", targets), ("Every round", full)], notes=notes,
                  results_dir=out)
    print((out / f"{args.name}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
