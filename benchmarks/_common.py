"""Shared helpers of the benchmark scripts: provenance, timing, and result files.

Every benchmark writes ``benchmarks/results/<name>.json`` (all numbers plus the
git commit, date and machine) and ``<name>.md`` (a Markdown table of the
headline numbers) through :func:`write_results`.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from timetravel._io import write_bytes_atomic, write_json_atomic

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def git_commit() -> str:
    """``git rev-parse HEAD`` of the checkout, with ``-dirty`` when tracked files have changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    """Cores, platform, library versions and the current load, for the results file."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    for module in ("numpy", "torch"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            pass
    return info


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``fn()`` once; return ``(seconds, result)`` measured with ``perf_counter``."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def timed_cpu(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Run ``fn()`` once; return ``(wall seconds, process CPU seconds of all threads, result)``.

    CPU time counts the work done, so it is far less sensitive than wall time
    to other jobs sharing the machine.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def median(values: Iterable[float]) -> float:
    """Median of the values (the robust summary used for repeated timings)."""
    return float(statistics.median(list(values)))


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of ``rows`` (dicts), floats shown with 4 significant digits."""
    if not rows:
        return "_no rows_\n"
    columns = list(columns or rows[0].keys())

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(
    name: str,
    results: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    *,
    title: str,
    columns: Sequence[str] | None = None,
    sections: Sequence[tuple[str, Sequence[dict[str, Any]]]] = (),
    notes: Sequence[str] = (),
    results_dir: Path | None = None,
) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.md`` under ``benchmarks/results/`` (atomically).

    Parameters
    ----------
    name : str
        Benchmark name (file stem).
    results : dict
        Everything measured; stored under ``"results"`` next to the provenance.
    rows : sequence of dict
        The headline table (also stored in the JSON as ``"table"``).
    title : str
        Heading of the Markdown file.
    columns : sequence of str, optional
        Column order of the table.
    sections : sequence of (str, rows)
        More tables, each under its own heading (also stored in the JSON under ``"sections"``).
    notes : sequence of str
        Bullet points under the table (settings, caveats).
    results_dir : Path, optional
        Where to write; default ``benchmarks/results``.

    Returns
    -------
    (Path, Path)
        The JSON and Markdown paths.
    """
    out = Path(results_dir or RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    provenance = {
        "benchmark": name,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "machine": machine_info(),
    }
    json_path, md_path = out / f"{name}.json", out / f"{name}.md"
    write_json_atomic(
        json_path,
        {**provenance, "table": list(rows), "sections": {t: list(r) for t, r in sections}, "results": results},
    )
    machine = provenance["machine"]
    header = [
        f"# {title}",
        "",
        f"Commit `{provenance['git_commit']}`, {provenance['date']}, {machine['cores']} cores "
        f"({machine.get('processor')}), load average {machine.get('load_average_1m', 'n/a')} at the end. "
        f"Raw numbers: `{json_path.name}`.",
        "",
        "",
    ]
    body = markdown_table(rows, columns)
    for heading, section_rows in sections:
        body += f"\n## {heading}\n\n" + markdown_table(section_rows)
    tail = ["", *[f"- {note}" for note in notes]] if notes else []
    write_bytes_atomic(md_path, ("\n".join(header) + body + "\n".join(tail) + "\n").encode("utf-8"))
    return json_path, md_path
