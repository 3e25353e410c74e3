"""Fault injection: kills and interrupts of the commands, a corrupt-store corpus, the server's surface.

The harness is ``benchmarks/faults.py``; ``timetravel bench reliability`` runs it with more
tries and writes ``benchmarks/results/reliability.md``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import faults
from conftest import build_run


def _children(pid: int) -> set[int]:
    """Every descendant process of ``pid`` (from /proc)."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo += list(kids - found)
            found |= kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_projection(run: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "timetravel", "-q", "project", str(run), "--n-jobs", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        # as a terminal's foreground job: a test run started in the background (`cmd &` in a script) ignores
        # SIGINT, and a child would inherit that, so Ctrl+C would do nothing
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for_workers(proc: subprocess.Popen, n: int, timeout: float = 60.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        kids = _children(proc.pid)
        workers = {k for k in kids if b"loky" in Path(f"/proc/{k}/cmdline").read_bytes()} if kids else set()
        if len(workers) >= n:
            return kids
        time.sleep(0.2)
    raise AssertionError(f"no {n} loky workers after {timeout} s")


@pytest.fixture
def long_run(tmp_path: Path) -> Path:
    """A run whose projection takes long enough to be killed in the middle of it."""
    build_run(tmp_path / "run", n_samples=3000, n_classes=5, embedding_dim=32, n_heldout=0, epochs=12)
    return tmp_path / "run"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
@pytest.mark.parametrize("how", ["kill -9", "Ctrl+C"])
def test_no_worker_outlives_a_killed_or_interrupted_projection(long_run, how):
    proc = _start_projection(long_run)
    try:
        kids = _wait_for_workers(proc, 2)
        time.sleep(2)  # the workers are busy with epochs
        if how == "kill -9":
            proc.kill()
        else:
            os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl+C does: the whole foreground group
        proc.wait(timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.2)
        left = [k for k in kids if _alive(k)]
        assert not left, f"{len(left)} of {len(kids)} child processes still alive after {how} of the parent"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if how == "Ctrl+C":
        out = proc.stdout.read().decode()
        assert "Traceback" not in out and "Warning" not in out, out
        assert proc.returncode != 0


# ---------------------------------------------------------------- the harness of benchmarks/faults.py

CORPUS = faults.corpus()


@pytest.fixture(scope="module")
def damaged_base(tmp_path_factory) -> Path:
    return faults.base_run(tmp_path_factory.mktemp("faults") / "run")


@pytest.mark.slow
@pytest.mark.parametrize("corruption", CORPUS, ids=[c.name for c in CORPUS])
def test_every_corruption_is_refused_naming_the_file_by_every_reader(damaged_base, tmp_path, corruption):
    tally = faults.run_corpus(damaged_base, tmp_path, [corruption])
    assert tally.counts["clear"] == tally.tries == len(faults.TARGETS), "\n".join(tally.findings)


def _clean(tally: faults.Tally) -> None:
    assert tally.tries and tally.counts["clear"] == tally.tries, "\n".join(tally.findings)


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_run(tmp_path):
    _clean(faults.kill_train_loop(tmp_path, 2, np.random.default_rng(1)))


@pytest.mark.slow
def test_killed_projection_resumes_to_the_uninterrupted_projection(tmp_path):
    _clean(faults.kill_project_loop(faults.unprojected_run(tmp_path / "run"), tmp_path, 2, np.random.default_rng(2)))


@pytest.mark.slow
def test_a_killed_feedback_writer_loses_no_acknowledged_decision(tmp_path):
    _clean(faults.kill_appender_loop(tmp_path, 3, np.random.default_rng(3)))


@pytest.mark.slow
def test_server_surface_and_concurrent_sessions(damaged_base, tmp_path):
    run = shutil.copytree(damaged_base, tmp_path / "run")
    tally, timings = faults.server_surface(run, sessions=3, decisions=4)
    _clean(tally)
    assert timings["decisions_in_log"] == timings["decisions"] > 0
