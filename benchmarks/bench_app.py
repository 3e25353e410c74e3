"""Browser benchmark of the debugger app: first render, epoch step, accept -> re-ranked queue.

For each run size, a synthetic run is written with ``RunWriter`` (projection files per
docs/run-store.md, detection by ``timetravel.detect``), the real ``timetravel serve`` is
started in a subprocess and driven by Debian's headless Chromium through Playwright.
Every time is measured in the browser (``performance.now()``), see
``server_app._testing.INSTRUMENT_JS``:

* first render: page request (navigation start) to the end of the first canvas paint
  showing all points; the first load after the server starts and later loads are
  reported separately;
* epoch step: slider value set to the new frame painted plus one animation frame,
  for adjacent epochs (stepping, as the player does) and random jumps (scrubbing);
* accept / reject: button click to the re-ranked queue's new first row on screen.

Usage: ``timetravel bench app [--sizes 10000,50000,200000] [--epochs 20]``.
Results: ``benchmarks/results/app.json`` and ``app.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SCRATCH = RESULTS / "_scratch"
TARGETS = {"first_render_s": 3.0, "step_median_ms": 150.0, "accept_median_ms": 300.0, "target_size": 50000}


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def _proc_memory(pid: int) -> dict[str, float]:
    """Resident memory of a process in MiB: peak (VmHWM), now, and anonymous (not file-backed mmaps)."""
    fields = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon"):
                fields[key] = int(value.split()[0]) / 1024
    return {"peak_rss_mib": fields.get("VmHWM"), "rss_mib": fields.get("VmRSS"), "anon_rss_mib": fields.get("RssAnon")}


def _prepare_run(n: int, epochs: int, grid: int) -> tuple[Path, dict]:
    from server_app._testing import write_synthetic_run
    from timetravel.detect import detect
    from timetravel.store import RunStore

    path = SCRATCH / f"app-{n}"
    params = {"n_samples": n, "n_epochs": epochs, "grid": grid, "n_classes": 10, "embedding_dim": 32}
    stamp = path / "bench_params.json"
    timings = {}
    if not (stamp.exists() and json.loads(stamp.read_text()) == params):
        t = time.perf_counter()
        write_synthetic_run(path, noise_rate=0.1, seed=0, **params)
        timings["write_run_s"] = time.perf_counter() - t
        t = time.perf_counter()
        detect(RunStore(path), verbose=False)
        timings["detect_s"] = time.perf_counter() - t
        stamp.write_text(json.dumps(params))
    (path / "feedback.jsonl").unlink(missing_ok=True)
    return path, timings


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


def _measure(run: Path, *, loads: int, steps: int, jumps: int, decisions: int, seed: int) -> dict:
    from playwright.sync_api import sync_playwright

    from server_app._testing import INSTRUMENT_JS, launch_chromium, serve

    rng = np.random.default_rng(seed)
    out: dict = {}
    with serve(run, timeout=600) as server, sync_playwright() as pw:
        browser = launch_chromium(pw)
        first = []
        page = None
        for _ in range(loads):
            if page is not None:
                page.context.close()
            context = browser.new_context(viewport={"width": 1500, "height": 950})
            page = context.new_page()
            page.add_init_script(INSTRUMENT_JS)
            page.goto(server.url)
            page.wait_for_function("() => window.__tt.first != null", timeout=120_000)
            first.append(page.evaluate("() => window.__tt.first") / 1000.0)
        webgl = page.evaluate("() => window.__tt.models().view.canvas_view.webgl != null")
        n_epochs = page.evaluate("() => window.__tt.models().doc.get_model_by_name('epoch_slider').end") + 1
        position = n_epochs - 1
        step_times = []
        for _ in range(steps):
            position = position - 1 if position > 0 else n_epochs - 1
            step_times.append(page.evaluate("(p) => window.__tt.step(p)", position))
            time.sleep(0.05)
        jump_times = []
        for _ in range(jumps):
            target = int(rng.integers(0, n_epochs))
            while target == position:
                target = int(rng.integers(0, n_epochs))
            position = target
            jump_times.append(page.evaluate("(p) => window.__tt.step(p)", position))
            time.sleep(0.05)
        page.wait_for_function("() => window.__tt.queueTop() != null", timeout=300_000)
        decide_times = {"accept": [], "reject": []}
        for i in range(decisions):
            kind = "accept" if i % 2 == 0 else "reject"
            decide_times[kind].append(page.evaluate("(n) => window.__tt.decide(n)", kind)["shown_ms"])
            time.sleep(0.05)
        out["server_memory"] = _proc_memory(server.proc.pid)
        browser.close()
    out.update(
        webgl=webgl,
        first_render_s={"cold": first[0], "warm": first[1:], "warm_median": _median(first[1:])},
        step_ms={
            "median": _median([s["drawn_ms"] for s in step_times]),
            "p95": _p95([s["drawn_ms"] for s in step_times]),
            "data_median": _median([s["data_ms"] for s in step_times]),
            "all": [round(s["drawn_ms"], 1) for s in step_times],
        },
        jump_ms={
            "median": _median([s["drawn_ms"] for s in jump_times]),
            "p95": _p95([s["drawn_ms"] for s in jump_times]),
            "data_median": _median([s["data_ms"] for s in jump_times]),
            "all": [round(s["drawn_ms"], 1) for s in jump_times],
        },
        accept_ms={"median": _median(decide_times["accept"]), "p95": _p95(decide_times["accept"]),
                   "all": [round(t, 1) for t in decide_times["accept"]]},
        reject_ms={"median": _median(decide_times["reject"]), "p95": _p95(decide_times["reject"]),
                   "all": [round(t, 1) for t in decide_times["reject"]]},
    )  # fmt: skip
    return out


def _markdown(results: dict) -> str:
    t = results["targets"]
    lines = [
        "# App benchmark (headless Chromium, real `timetravel serve`)",
        "",
        f"Commit `{results['commit'][:10]}`, {results['date']}, {results['machine']['cores']} cores, "
        f"{results['machine']['browser']}; WebGL through Chromium's software rasteriser (no GPU). "
        f"Other jobs may have shared the CPU. Runs: {results['params']['epochs']} epochs, 10 classes, "
        f"territory grid {results['params']['grid']}.",
        "",
        "| samples | first render, first load (s) | first render, later loads (s) | epoch step median / p95 (ms) "
        "| random jump median / p95 (ms) | accept -> queue median / p95 (ms) | reject -> queue median (ms) "
        "| server peak RSS / anon (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, r in results["sizes"].items():
        m = r["server_memory"]
        lines.append(
            f"| {int(n):,} | {r['first_render_s']['cold']:.2f} | {r['first_render_s']['warm_median']:.2f} "
            f"| {r['step_ms']['median']:.0f} / {r['step_ms']['p95']:.0f} "
            f"| {r['jump_ms']['median']:.0f} / {r['jump_ms']['p95']:.0f} "
            f"| {r['accept_ms']['median']:.0f} / {r['accept_ms']['p95']:.0f} | {r['reject_ms']['median']:.0f} "
            f"| {m['peak_rss_mib']:.0f} / {m['anon_rss_mib']:.0f} |"
        )
    lines += [
        "",
        f"Targets at {t['target_size']:,} samples: first render < {t['first_render_s']} s, epoch step median "
        f"< {t['step_median_ms']:.0f} ms, accept -> re-ranked queue shown median < {t['accept_median_ms']:.0f} ms.",
        "",
        "First render: navigation start to the end of the first canvas paint with every point. Epoch step: "
        "slider value set in the page to the canvas repainted with the new positions plus one animation frame "
        "(adjacent epochs, as when stepping or playing; the server prefetches neighbours). Random jump: the "
        "same for a random epoch (often not in the server's frame cache). Accept/reject: button click to the "
        "queue table's new first row read from the DOM on the next animation frame; it includes the fsynced "
        "append to feedback.jsonl and the recommender's re-rank.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timetravel bench app", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,200000", help="comma-separated run sizes")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--grid", type=int, default=200, help="territory grid size G")
    parser.add_argument("--loads", type=int, default=4, help="page loads per size (the first is cold)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--jumps", type=int, default=10)
    parser.add_argument("--decisions", type=int, default=20, help="alternating accept / reject clicks")
    parser.add_argument("--out", default=str(RESULTS), help="directory for app.json and app.md")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    browser = subprocess.run(["chromium", "--version"], capture_output=True, text=True).stdout.strip()
    results = {
        "benchmark": "app",
        "commit": _git_commit(),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                    "browser": browser},
        "params": vars(args),
        "targets": TARGETS,
        "sizes": {},
    }  # fmt: skip
    for n in sizes:
        print(f"app benchmark: {n:,} samples: preparing the run", flush=True)
        run, prep = _prepare_run(n, args.epochs, args.grid)
        print(f"app benchmark: {n:,} samples: measuring in the browser", flush=True)
        measured = _measure(run, loads=args.loads, steps=args.steps, jumps=args.jumps,
                            decisions=args.decisions, seed=0)  # fmt: skip
        results["sizes"][str(n)] = {**measured, "prepare": prep}
        r = measured
        print(
            f"  first render {r['first_render_s']['cold']:.2f} s (later {r['first_render_s']['warm_median']:.2f} s), "
            f"step {r['step_ms']['median']:.0f} ms, jump {r['jump_ms']['median']:.0f} ms, "
            f"accept {r['accept_ms']['median']:.0f} ms",
            flush=True,
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "app.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "app.md").write_text(_markdown(results))
    print(f"wrote {out / 'app.json'} and {out / 'app.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
