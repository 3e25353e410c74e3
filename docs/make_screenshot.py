"""Regenerate the README screenshot: the app on a run, after a few review decisions.

Usage (after ``timetravel demo --no-serve``, which leaves the demo run in ``runs/demo``)::

    python docs/make_screenshot.py runs/demo --decisions 8 --out docs/img/app-review.png
    python docs/make_screenshot.py runs/sliced --decisions 0 --tab Groups --out docs/img/app-groups.png

It serves a copy of the run (the run's own feedback log is left alone), opens it in
Debian's headless Chromium, accepts or rejects the first recommendations as the
benchmark's simulated user would (accept exactly the samples whose label was
flipped, when the run knows them), optionally opens a side tab (``--tab Groups`` also
clicks the first suggested subgroup), and saves a screenshot of the page.
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
    parser.add_argument("--tab", choices=("Review", "Confusion", "Groups", "Activations"), default="Review")
    parser.add_argument("--out", type=Path, default=Path("docs/img/app-review.png"))
    args = parser.parse_args(argv)

    from playwright.sync_api import sync_playwright

    from timetravel.store import RunStore

    mask = RunStore(args.run, verify="headers").noise_mask
    with tempfile.TemporaryDirectory() as tmp:
        run = shutil.copytree(args.run, Path(tmp) / args.run.name, ignore=shutil.ignore_patterns("feedback.jsonl"))
        with serve(run) as server, sync_playwright() as pw:
            browser = launch_chromium(pw)
            page = browser.new_context(viewport={"width": 1500, "height": 950}).new_page()
            page.add_init_script(INSTRUMENT_JS)
            page.goto(server.url)
            page.wait_for_function("() => window.__tt.first != null && window.__tt.queueTop() != null", timeout=60_000)
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
            page.wait_for_timeout(500)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
