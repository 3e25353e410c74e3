"""Reliability under faults (``timetravel bench reliability``): corrupt stores, kills, bad arguments, the server.

Runs the fault-injection harness of ``benchmarks/faults.py`` with more tries than the tests:
every corruption of the corpus through ``RunStore``, ``check``, ``detect``, ``project``,
``export`` and the app; ``kill -9`` of ``train``, ``project`` and a feedback writer at random
moments, each resumed and compared with an uninterrupted run; the bad-argument corpus of
``tests/test_cli_errors.py``; and the server's surface with 10 concurrent sessions.
The target is 0 tracebacks, 0 silent acceptances, 0 lost.

Writes ``benchmarks/results/reliability.json`` and ``reliability.md``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import faults  # noqa: E402
from _common import write_results  # noqa: E402

logger = logging.getLogger("bench_reliability")


def _cli_corpus(tmp: Path) -> faults.Tally:
    """The bad-argument corpus of the tests, through the same classification."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import test_cli_errors as corpus

    tally = faults.Tally("bad command-line arguments")
    base = faults.base_run(tmp / "cli-base" / "run")
    for k, (line, message) in enumerate(corpus.CASES):
        case = tmp / f"cli-{k}"
        case.mkdir()
        corpus.prepare_case(case, base)
        argv = line.format(run=case / "run", tmp=case, file=case / "afile").split()
        code, output = faults._run_cli(["-q", *argv])
        outcome = faults.classify(code, output, True, message)
        tally.add(outcome, f"{line}: exit {code}: {output.strip()[:200]}")
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="timetravel bench reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="kills of each kind (default 10)")
    parser.add_argument("--sessions", type=int, default=10, help="concurrent app sessions (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results-dir", type=Path, default=None, help="where to write (default benchmarks/results)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("timetravel", "bokeh", "tornado"):  # the corpus makes them warn hundreds of times, as it should
        logging.getLogger(name).setLevel(logging.CRITICAL)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="tt-bench-reliability-") as tmp_name:
        tmp = Path(tmp_name)
        base = faults.base_run(tmp / "base" / "run")
        tallies = []
        logger.info("corrupt-store corpus: %d corruptions x %d targets", len(faults.corpus()), len(faults.TARGETS))
        tallies.append(faults.run_corpus(base, tmp / "corpus"))
        logger.info("bad-argument corpus")
        tallies.append(_cli_corpus(tmp / "cli"))
        logger.info("kill loops: %d of each", args.kills)
        tallies.append(faults.kill_train_loop(tmp / "kill-train", args.kills, rng))
        tallies.append(faults.kill_project_loop(faults.unprojected_run(tmp / "kill-project-run"), tmp / "kill-project",
                                                args.kills, rng))
        tallies.append(faults.kill_appender_loop(tmp / "kill-appender", args.kills, rng))
        logger.info("server surface, %d sessions", args.sessions)
        surface, timings = faults.server_surface(faults.base_run(tmp / "server" / "run"), args.sessions)
        tallies.append(surface)
    for t in tallies:
        logger.info("%s: %s", t.name, t.row())
    rows = [t.row() for t in tallies]
    total = {"family": "all", **{k: sum(r[k] for r in rows) for k in ("tries", *faults.OUTCOMES)}}
    findings = [{"family": t.name, "finding": f} for t in tallies for f in t.findings]
    notes = [
        "clear = refused with one sentence naming the damaged file or argument (kills: nothing lost, the resumed "
        "result equal to an uninterrupted one bit for bit); traceback = a Python traceback reached the user; "
        "silent = a command that reads the damaged file succeeded without a word; vague = refused without naming "
        "it; lost = a committed epoch or acknowledged decision missing, or a resume that differs.",
        f"corpus: {len(faults.corpus())} corruptions of a projected, detected run with a feedback log, each "
        f"through {', '.join(faults.TARGETS)} (open = `RunStore(path)`, app = a session's document built as the "
        "server builds it, after the server's warm-up); a target that does not read the damaged file only has to "
        "stay traceback-free.",
        f"kills: `kill -9` at a uniformly random moment of `train` (digits, 300 samples, 5 epochs), `project` (1,500 samples, 4 "
        f"epochs) and a process appending decisions; {args.kills} of each.",
        f"server: `timetravel serve` on 127.0.0.1; websocket upgrades from foreign origins; {len(faults.SECRET_PATHS)}"
        f" paths to run files (traversals included); {args.sessions} sessions opened at once with `bokeh.client`; "
        f"decision round-trip = `Review.decide` (what the accept button calls: fsynced append, re-rank, every "
        f"session told) from {args.sessions} threads at once: median {timings['decision_median_ms']:.1f} ms, p95 "
        f"{timings['decision_p95_ms']:.1f} ms over {timings['decisions']} decisions ({timings['decisions_in_log']} "
        f"new lines in the log); {args.sessions} sessions opened in {timings['open_sessions_s']:.2f} s.",
    ]
    write_results("reliability", {"families": rows, "total": total, "findings": findings, "server": timings},
                  [*rows, total], title="Reliability under faults", columns=["family", "tries", *faults.OUTCOMES],
                  sections=[("Findings (every try that was not clear)", findings)] if findings else (),
                  notes=notes, results_dir=args.results_dir)
    return 0 if all(total[k] == 0 for k in ("traceback", "silent", "lost")) else 1


if __name__ == "__main__":
    sys.exit(main())
