"""``timetravel bench NAME [ARGS...]``: run a benchmark script from the checkout's ``benchmarks/``."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

# Import names of the packages of the `bench` extra (pyproject.toml).
BENCH_EXTRA = frozenset({"cleanlab", "umap", "psutil"})
HELP = "run a benchmark from benchmarks/ (recorder, projection, recommend, active, app, fix, reliability); results go to benchmarks/results/"


def _benchmarks_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "benchmarks"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="benchmark name: runs benchmarks/bench_NAME.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark")


def run(args: argparse.Namespace) -> int:
    from timetravel.errors import TimetravelError

    script = _benchmarks_dir() / f"bench_{args.name}.py"
    if not script.exists():
        known = sorted(p.stem.removeprefix("bench_") for p in _benchmarks_dir().glob("bench_*.py"))
        raise TimetravelError(
            f"no benchmark named {args.name!r} in {_benchmarks_dir()} (known: {', '.join(known) or 'none'}); "
            "benchmarks run from a source checkout installed with `pip install -e .`"
        )
    sys.argv = [str(script), *args.args]
    try:
        namespace = runpy.run_path(str(script), run_name="__timetravel_bench__")
        return int(namespace["main"](args.args) or 0)
    except ModuleNotFoundError as exc:
        if exc.name not in BENCH_EXTRA:
            raise
        raise TimetravelError(
            f"the {args.name} benchmark needs {exc.name}, which only the benchmarks use: "
            "install them with `pip install -e \".[bench]\"`"
        ) from None
