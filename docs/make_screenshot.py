"""Regenerate the README screenshot: the app on a run, after a few review decisions.

Usage (after ``timetravel demo --no-serve``, which leaves the demo run in ``runs/demo``)::

    python docs/make_screenshot.py runs/demo --decisions 8 --out docs/img/app-review.png
    python docs/make_screenshot.py runs/sliced --decisions 0 --tab Groups --out docs/img/app-groups.png
    python docs/make_screenshot.py runs/pool --decisions 0 --tab Pool --labels 6 --out docs/img/app-pool.png

It serves a copy of the run (the run's own feedback log is left alone), opens it in
Debian's headless Chromium, accepts or rejects the first recommendations as the
benchmark's simulated user would (accept exactly the samples whose label was
flipped, when the run knows them), optionally opens a side tab (``--tab Groups`` also
clicks the first suggested subgroup; ``--tab Pool --labels N`` labels the first N pool
samples with their true class, from ``pool_true_labels``, as a perfect user), and saves a
screenshot of the page. ``runs/pool`` is a synthetic run with a pool::

    python -c "from timetravel.server_app._testing import write_synthetic_run as w; \
        w('runs/pool', n_samples=800, n_classes=5, n_epochs=8, n_heldout=300, n_pool=400, spread=1.6, image_size=16)"
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from timetravel.server_app._testing import INSTRUMENT_JS, launch_chromium, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--decisions", type=int, default=8)
    parser.add_argument("--tab", choices=("Review", "Confusion", "Groups", "Activations", "Pool"), default="Review")
    parser.add_argument("--labels", type=int, default=0, help="pool samples to label (--tab Pool)")
    parser.add_argument("--out", type=Path, default=Path("docs/img/app-review.png"))
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from timetravel.store import RunStore

    store = RunStore(args.run, verify="headers")
    mask, pool_truth = store.noise_mask, store.pool_true_labels
    with tempfile.TemporaryDirectory() as tmp:
        run = shutil.copytree(args.run, Path(tmp) / args.run.name, ignore=shutil.ignore_patterns("feedback.jsonl"))
        with serve(run) as server, sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_context(viewport={"width": 1500, "height": 950}).new_page()
            page.add_init_script(INSTRUMENT_JS)
            page.goto(server.url)
            ready = "window.__tt.queueTop() != null" if args.decisions else "true"
            page.wait_for_function(f"() => window.__tt.first != null && {ready}", timeout=60_000)
            for _ in range(args.decisions):
                top = int(page.evaluate("() => window.__tt.queueTop()"))
                accept = mask is None or bool(mask[top])
                page.evaluate("(n) => window.__tt.decide(n)", "accept" if accept else "reject")
            if args.tab != "Review":
                page.locator(".bk-tab", has_text=args.tab).click()
                page.wait_for_timeout(2000)
            if args.tab == "Groups":
                table = "Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name('suggestions_table'))"
                page.wait_for_function(f"() => {table}.shadow_el.querySelectorAll('.slick-row').length > 0")
                page.evaluate(f"() => {table}.shadow_el.querySelector('.slick-row .slick-cell')"
                              ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")
                page.wait_for_timeout(1500)
            if args.tab == "Pool":
                _label_pool(page, pool_truth, args.labels)
            page.wait_for_timeout(500)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
    print(f"wrote {args.out}")
    return 0


def _label_pool(page, truth, n: int) -> None:
    """Label the chosen pool sample with its true class ``n`` times, waiting for each confirmation."""
    model = "Bokeh.documents[0].get_model_by_name"
    page.wait_for_function(f"() => {model}('pool_source') != null && {model}('pool_source').data.row.length > 0",
                           timeout=60_000)
    for k in range(n):
        row = int(page.evaluate(f"() => {model}('pool_source').data.row[0]"))
        label = 0 if truth is None else int(truth[row])
        page.evaluate(f"(v) => {{ {model}('pool_label_to').value = v; }}", str(label))
        page.wait_for_function(f"() => !{model}('pool_label').disabled")
        page.evaluate(f"() => Bokeh.index.find_one({model}('pool_label')).click()")
        page.wait_for_function(f"(k) => {model}('pool_counters').text.includes(\"name='pool_labelled'>\" + k + '<')",
                               arg=k + 1, timeout=30_000)
    page.wait_for_timeout(1000)


if __name__ == "__main__":
    raise SystemExit(main())
