"""Browser benchmark of the debugger app: first render, epoch step, accept -> re-ranked queue.

For each run size, a synthetic run is written with ``RunWriter`` (projection files per
docs/run-store.md, detection by ``timetravel.detection``), the real ``timetravel serve`` is
started in a subprocess and driven by Debian's headless Chromium through Playwright.
Every time is measured in the browser (``performance.now()``), see
``server_app/assets/instrument.js``:

* first render: page request (navigation start) to the end of the first canvas paint
  showing all points; the first load after the server starts and later loads are
  reported separately;
* epoch step: slider value set to the new frame painted plus one animation frame,
  for adjacent epochs (stepping, as the player does) and random jumps (scrubbing);
* accept / reject: button click to the re-ranked queue's new first row on screen;
* group views (with ``--views``, the default, for the first renderer): each side tab
  (confusion, groups, activations) from an epoch step, and the activation patterns from a
  new canvas selection, to the view's data source updated plus two animation frames.

Usage: ``timetravel bench app [--sizes 10000,50000,200000] [--epochs 20]``.
Results: ``benchmarks/results/app.json`` and ``app.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, median, write_results  # noqa: E402

SCRATCH = RESULTS_DIR / "_scratch"
TARGETS = {"first_render_s": 3.0, "step_median_ms": 150.0, "accept_median_ms": 300.0, "view_ms": 150.0,
           "target_size": 50000}


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
    """Write (or reuse) the synthetic run of ``n`` samples and its detection; returns timings of what was done."""
    from timetravel.server_app._testing import write_sliced_run
    from timetravel.detection import detect, load_detection
    from timetravel.store import RunStore

    path = SCRATCH / f"app-{n}"
    params = {"n_samples": n, "n_epochs": epochs, "grid": grid, "n_classes": 10, "embedding_dim": 32,
              "metadata": True}
    stamp = path / "bench_params.json"
    timings = {}
    if not (stamp.exists() and json.loads(stamp.read_text()) == params):
        t = time.perf_counter()
        shape = {k: v for k, v in params.items() if k != "metadata"}
        write_sliced_run(path, seed=0, **shape)  # metadata columns and a noisier slice, for the group views
        timings["write_run_s"] = time.perf_counter() - t
        stamp.write_text(json.dumps(params))
    try:
        load_detection(RunStore(path))
    except Exception:  # noqa: BLE001 - missing, or written by an older timetravel: compute it again
        t = time.perf_counter()
        detect(RunStore(path), verbose=False)
        timings["detect_s"] = time.perf_counter() - t
    (path / "feedback.jsonl").unlink(missing_ok=True)
    return path, timings


def _median(values: list[float]) -> float:
    return median(values) if values else float("nan")


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


VIEWS = (("Confusion", "confusion_source"), ("Groups", "groups_source"), ("Activations", "activation_source"))


def _measure_views(page, n_epochs: int, steps: int, rng: np.random.Generator) -> dict:
    """Each group tab's update after an epoch step, and the activation patterns' after a new selection."""
    out: dict = {}
    position = n_epochs - 1
    labels = np.asarray(page.evaluate("() => Array.from(window.__tt.models().src.data.label)"))
    first = np.flatnonzero(labels == 0)
    page.evaluate("(i) => { window.__tt.models().src.selected.indices = i; }", first[:500].tolist())
    for tab, source in VIEWS:
        page.locator(".bk-tab", has_text=tab).click()
        page.wait_for_function("(n) => { const m = Bokeh.documents[0].get_model_by_name(n);"
                               " return m != null && (m.data[Object.keys(m.data)[0]] || []).length > 0; }",
                               arg=source, timeout=300_000)  # fmt: skip
        times = []
        for _ in range(steps):
            position = position - 1 if position > 0 else n_epochs - 1
            times.append(page.evaluate("([p, s]) => window.__tt.viewStep(p, s)", [position, source])["shown_ms"])
            time.sleep(0.05)
        out[tab.lower()] = {"median": _median(times), "p95": _p95(times), "all": [round(t, 1) for t in times]}
    select_times = []
    for _ in range(steps):
        cls = int(rng.integers(0, labels.max() + 1))
        members = np.flatnonzero(labels == cls)
        chosen = np.sort(rng.choice(members, min(500, len(members)), replace=False)).tolist()
        select_times.append(page.evaluate("([i, s]) => window.__tt.viewSelect(i, s)",
                                          [chosen, "activation_source"])["shown_ms"])  # fmt: skip
        time.sleep(0.05)
    out["activations_selection"] = {"median": _median(select_times), "p95": _p95(select_times),
                                    "all": [round(t, 1) for t in select_times]}  # fmt: skip
    page.locator(".bk-tab", has_text="Review").click()
    page.evaluate("() => { window.__tt.models().src.selected.indices = []; }")
    return out


def _measure(run: Path, renderer: str, *, loads: int, steps: int, jumps: int, decisions: int, seed: int,
             views: bool = False) -> dict:  # fmt: skip
    from playwright.sync_api import sync_playwright

    from timetravel.server_app._testing import INSTRUMENT_JS, launch_chromium, serve

    rng = np.random.default_rng(seed)
    out: dict = {}
    with serve(run, args=["--renderer", renderer], timeout=600) as server, sync_playwright() as pw:
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
        backend = page.evaluate("() => window.__tt.models().dots != null ? 'raster' "
                                ": window.__tt.models().plot.output_backend")
        gl_renderer = page.evaluate("() => Bokeh.documents[0].get_model_by_name('gl_probe')?.value || ''")
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
        if views:
            out["views_ms"] = _measure_views(page, n_epochs, steps, rng)
        decide_times = {"accept": [], "reject": []}
        for i in range(decisions):
            kind = "accept" if i % 2 == 0 else "reject"
            decide_times[kind].append(page.evaluate("(n) => window.__tt.decide(n)", kind)["shown_ms"])
            time.sleep(0.05)
        out["server_memory"] = _proc_memory(server.proc.pid)
        browser.close()
    out.update(
        renderer=renderer,
        backend=backend,
        browser_webgl=gl_renderer,
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


_COMPARE_DRAWN = """() => { const d = window.Bokeh && Bokeh.documents[0]; if (!d) return false;
  const all = [...d._all_models.values()];
  const named = (n) => all.filter((m) => m.name == n), dots = named('dots_source');
  const pts = named('positions_source').length ? named('positions_source') : named('points_source');
  return pts.length == 2 && pts.every((p) => p.get_length() > 0)
    && dots.every((s) => (s.data.image || []).length > 0); }"""

_COMPARE_STEP = """(p) => new Promise((resolve) => {
  const d = Bokeh.documents[0], all = [...d._all_models.values()];
  const named = (n) => all.filter((m) => m.name == n), dots = named('dots_source');
  const pts = named('positions_source').length ? named('positions_source') : named('points_source');
  const before = pts.map((s) => s.data.x), dotsBefore = dots.map((s) => s.data);
  const slider = d.get_model_by_name('compare_slider');
  const t0 = performance.now();
  slider.value = p; slider.value_throttled = p;
  const check = () => {
    const moved = pts.every((s, i) => s.data.x !== before[i]) && dots.every((s, i) => s.data !== dotsBefore[i]);
    if (moved) { requestAnimationFrame(() => resolve(performance.now() - t0)); } else { requestAnimationFrame(check); }
  };
  requestAnimationFrame(check);
})"""


def _measure_compare(run: Path, *, loads: int, steps: int, jumps: int, seed: int) -> dict:
    """The comparison page (two epochs of ``run``: two canvases of all its samples): first render, epoch step
    (adjacent epochs, as the player and the arrow buttons move) and random jump."""
    from playwright.sync_api import sync_playwright

    from timetravel.server_app._testing import launch_chromium, serve

    rng = np.random.default_rng(seed)
    with serve(run, args=["--compare", str(run)], timeout=600) as server, sync_playwright() as pw:
        browser = launch_chromium(pw)
        first, page = [], None
        for _ in range(loads):
            if page is not None:
                page.context.close()
            page = browser.new_context(viewport={"width": 1500, "height": 1100}).new_page()
            page.goto(server.url)
            page.wait_for_function(_COMPARE_DRAWN, timeout=120_000, polling="raf")
            first.append(page.evaluate("() => performance.now()") / 1000.0)
        last = page.evaluate("() => Bokeh.documents[0].get_model_by_name('compare_slider').end")  # right = left + 1
        position = page.evaluate("() => Bokeh.documents[0].get_model_by_name('compare_slider').value")
        step_times, jump_times = [], []
        for _ in range(steps):
            position = position - 1 if position > 0 else last - 1
            step_times.append(page.evaluate(_COMPARE_STEP, position))
            time.sleep(0.05)
        for _ in range(jumps):
            position = int(rng.choice([p for p in range(last) if p != position]))
            jump_times.append(page.evaluate(_COMPARE_STEP, position))
            time.sleep(0.05)
        backend = page.evaluate("() => [...Bokeh.documents[0]._all_models.values()].some((m) => m.name == "
                                "'dots_source') ? 'raster' : 'canvas'")  # fmt: skip
    return {"backend": backend, "first_render_s": {"cold": first[0], "warm_median": _median(first[1:] or first)},
            "step_ms": {"median": _median(step_times), "p95": _p95(step_times), "all": step_times},
            "jump_ms": {"median": _median(jump_times), "p95": _p95(jump_times), "all": jump_times}}


def _pair(a: float, b: float, fmt: str) -> str:
    return f"{a:{fmt}} / {b:{fmt}}"


def _row(n: int, r: dict) -> dict:
    memory = r["server_memory"]
    return {
        "samples": f"{n:,}",
        "renderer": f"{r['renderer']} -> {r['backend']}",
        "first render, first / later loads (s)": _pair(
            r["first_render_s"]["cold"], r["first_render_s"]["warm_median"], ".2f"
        ),
        "epoch step median / p95 (ms)": _pair(r["step_ms"]["median"], r["step_ms"]["p95"], ".0f"),
        "step: positions in page (ms)": f"{r['step_ms']['data_median']:.0f}",
        "random jump median / p95 (ms)": _pair(r["jump_ms"]["median"], r["jump_ms"]["p95"], ".0f"),
        "accept -> queue median / p95 (ms)": _pair(r["accept_ms"]["median"], r["accept_ms"]["p95"], ".0f"),
        "reject -> queue median (ms)": f"{r['reject_ms']['median']:.0f}",
        "server peak RSS / anon (MiB)": _pair(memory["peak_rss_mib"], memory["anon_rss_mib"], ".0f"),
        "step -> confusion / groups / activations median (ms)": (
            " / ".join(f"{r['views_ms'][k]['median']:.0f}" for k in ("confusion", "groups", "activations"))
            if "views_ms" in r else "–"
        ),
        "selection -> activations median (ms)": (
            f"{r['views_ms']['activations_selection']['median']:.0f}" if "views_ms" in r else "–"
        ),
    }


NOTES = [
    "Real `timetravel serve` in a subprocess, Debian's headless Chromium (--headless --disable-gpu): the "
    "browser has no GPU, so WebGL runs in SwiftShader on the CPU. The default renderer `auto` detects this "
    "and draws the dots with canvas 2D: Bokeh's scatter up to 5,000 dots (`canvas`), above that the "
    "`raster` renderer (the page rasterises the dots into one image; a transparent scatter keeps hover and "
    "selection). `canvas` and `webgl` force those renderers. With a GPU, `auto` picks WebGL.",
    "First render: navigation start to the end of the first canvas paint with every point (auto includes "
    "the GPU probe round trip). The first load after the server starts is reported apart from later loads.",
    "Epoch step: slider value set in the page to the canvas repainted with the new positions plus one "
    "animation frame, stepping through adjacent epochs (the server prefetches neighbours). 'Positions in "
    "page' is when the new positions reached the browser's data source (server round trip, transfer, "
    "decoding); the rest is the browser drawing. Random jump: the same for a random epoch, often not in the "
    "server's frame cache.",
    "Accept/reject: button click to the queue table's new first row read from the DOM on the next animation "
    "frame; it includes the fsynced append to feedback.jsonl and the recommender's re-rank.",
    "Server anon RSS excludes the memory-mapped run files; the frame cache holds at most a few epochs.",
    "Group views (first renderer only): with 500 samples of one class selected, each side tab is opened and "
    "the slider stepped; the time is from the slider change to the tab's data source updated in the page plus "
    "two animation frames (confusion matrix, groups table at the epoch, activation heatmap). 'Selection -> "
    "activations': a new 500-sample selection of a random class set in the page to the heatmap updated.",
    "Nothing else ran on the 2 CPU cores unless the load average says so.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timetravel bench app", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,200000", help="comma-separated run sizes")
    parser.add_argument("--renderers", default="auto,canvas,webgl", help="comma-separated: auto, webgl, canvas, raster")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--grid", type=int, default=200, help="territory grid size G")
    parser.add_argument("--loads", type=int, default=4, help="page loads per size (the first is cold)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--jumps", type=int, default=10)
    parser.add_argument("--decisions", type=int, default=20, help="alternating accept / reject clicks")
    parser.add_argument("--no-views", action="store_true", help="skip the group views' timings")
    parser.add_argument("--compare", action="store_true",
                        help="also time the comparison page (serve RUN --compare RUN: two canvases of every sample)")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="directory for app.json and app.md")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    renderers = [r for r in args.renderers.split(",") if r]
    browser = subprocess.run(["chromium", "--version"], capture_output=True, text=True).stdout.strip()
    measured: dict[str, dict] = {}
    rows, compare_rows = [], []
    for n in sizes:
        print(f"app benchmark: {n:,} samples: preparing the run", flush=True)
        run, prep = _prepare_run(n, args.epochs, args.grid)
        measured[str(n)] = {"prepare": prep}
        for j, renderer in enumerate(renderers):
            print(f"app benchmark: {n:,} samples, renderer {renderer}: measuring in the browser", flush=True)
            r = _measure(run, renderer, loads=args.loads, steps=args.steps, jumps=args.jumps,
                         decisions=args.decisions, seed=0, views=j == 0 and not args.no_views)  # fmt: skip
            measured[str(n)][renderer] = r
            rows.append(_row(n, r))
            print(
                f"  {r['backend']}: first render {r['first_render_s']['cold']:.2f} s "
                f"(later {r['first_render_s']['warm_median']:.2f} s), step {r['step_ms']['median']:.0f} ms, "
                f"jump {r['jump_ms']['median']:.0f} ms, accept {r['accept_ms']['median']:.0f} ms",
                flush=True,
            )
            if "views_ms" in r:
                v = r["views_ms"]
                print("  group views after a step: " + ", ".join(f"{k} {v[k]['median']:.0f} ms" for k in
                      ("confusion", "groups", "activations")) + f"; activations after a selection "
                      f"{v['activations_selection']['median']:.0f} ms", flush=True)  # fmt: skip
        if args.compare:
            print(f"app benchmark: {n:,} samples: comparison page", flush=True)
            c = _measure_compare(run, loads=args.loads, steps=args.steps, jumps=args.jumps, seed=0)
            measured[str(n)]["compare"] = c
            compare_rows.append({"points per side": f"{n:,}", "renderer": c["backend"],
                                 "first render": f"{c['first_render_s']['cold']:.2f} s (later "
                                                 f"{c['first_render_s']['warm_median']:.2f} s)",
                                 "epoch step (median / p95)": f"{c['step_ms']['median']:.0f} / "
                                                              f"{c['step_ms']['p95']:.0f} ms",
                                 "random jump (median / p95)": f"{c['jump_ms']['median']:.0f} / "
                                                               f"{c['jump_ms']['p95']:.0f} ms"})
            print(f"  compare ({c['backend']}): first render {c['first_render_s']['cold']:.2f} s, step "
                  f"{c['step_ms']['median']:.0f} ms, jump {c['jump_ms']['median']:.0f} ms", flush=True)
    results = {"browser": browser, "params": vars(args), "targets": TARGETS, "sizes": measured}
    t = TARGETS
    notes = [
        f"Targets at {t['target_size']:,} samples: first render < {t['first_render_s']} s, epoch step median "
        f"< {t['step_median_ms']:.0f} ms, accept -> re-ranked queue shown median < {t['accept_median_ms']:.0f} ms, "
        f"each group view updated within {t['view_ms']:.0f} ms of an epoch step or a selection.",
        f"Runs: synthetic, {args.epochs} epochs, 10 classes, 32-d embeddings, territory grid {args.grid}; "
        f"{args.steps} steps, {args.jumps} jumps, {args.decisions} decisions per setting. Browser: {browser}.",
        *NOTES,
    ]
    sections = [("Comparison page (serve RUN --compare RUN; target: first render < 3 s, step < 150 ms at 50k)",
                 compare_rows)] if compare_rows else []
    json_path, md_path = write_results("app", results, rows, title="App benchmark (headless Chromium)",
                                       notes=notes, sections=sections, results_dir=Path(args.out))  # fmt: skip
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
