"""Fault injection at the process level: kills and interrupts of the commands, and what they leave behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
