"""Fault injection: a corrupt-store corpus through every command and the app, kill loops, the server's surface.

One harness, two users: ``tests/test_faults.py`` runs every corruption and a few kills of
each kind in CI, ``timetravel bench reliability`` runs more kills and writes
``benchmarks/results/reliability.md``. Every try ends in one outcome:

- ``clear``: refused with one sentence naming the damaged file (or, for kills: nothing lost);
- ``traceback``: a Python traceback or "internal error" reached the user;
- ``silent``: a command that reads the damaged file succeeded as if nothing were wrong;
- ``vague``: refused, but without naming the file;
- ``lost``: a kill lost a committed epoch or an acknowledged decision, or a resume differed
  from an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

OUTCOMES = ("clear", "traceback", "silent", "vague", "lost")
TARGETS = ("open", "check", "detect", "project", "export", "app")


@dataclass
class Tally:
    """Outcome counts of one family of tries, and a line per try that was not ``clear``."""

    name: str
    counts: Counter = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)

    def add(self, outcome: str, what: str) -> None:
        self.counts[outcome] += 1
        if outcome != "clear":
            self.findings.append(f"{outcome}: {what}")

    @property
    def tries(self) -> int:
        return sum(self.counts.values())

    def row(self) -> dict[str, object]:
        return {"family": self.name, "tries": self.tries, **{k: self.counts.get(k, 0) for k in OUTCOMES}}


# ------------------------------------------------------------------ the corrupt-store corpus


@dataclass(frozen=True)
class Corruption:
    """One way to damage a run: what it does, the file an error must name, the targets that must refuse it."""

    name: str
    damage: Callable[[Path], None]
    names: str | tuple[str, ...]  # a piece of the path every refusal must contain (one of these)
    refused_by: tuple[str, ...]


def _edit_json(path: Path, **fields) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        manifest = json.loads((run / path).read_text())
        manifest.update(fields)
        (run / path).write_text(json.dumps(manifest))

    return damage


def _truncate(path: str, keep: float = 0.5) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        data = (run / path).read_bytes()
        (run / path).write_bytes(data[: int(len(data) * keep)])

    return damage


def _flip(path: str, n: int = 8) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        data = bytearray((run / path).read_bytes())
        for k in range(n):
            data[-1 - 3 * k] ^= 0x5A
        (run / path).write_bytes(bytes(data))

    return damage


def _append(path: str, extra: bytes) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        with open(run / path, "ab") as f:
            f.write(extra)

    return damage


def _replace_array(path: str, make: Callable[[np.ndarray], np.ndarray], pickle: bool = False) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        array = np.load(run / path, allow_pickle=False)
        np.save(run / path, make(array), allow_pickle=pickle)

    return damage


def _with_inf(array: np.ndarray) -> np.ndarray:
    array = array.copy()
    array.flat[len(array.flat) // 2] = np.inf
    return array


def _symlink(path: str) -> Callable[[Path], None]:
    def damage(run: Path) -> None:
        target = run.parent / f"elsewhere-{Path(path).name}"
        shutil.move(run / path, target)
        (run / path).symlink_to(target)

    return damage


def _remove(path: str) -> Callable[[Path], None]:
    return lambda run: (run / path).unlink()


def _write(path: str, text: str) -> Callable[[Path], None]:
    return lambda run: (run / path).write_text(text)


ALL = TARGETS
RUN_READERS = ("open", "check", "detect", "project", "export", "app")  # everything opens the run
EPOCH_READERS = ("open", "check", "detect", "project", "app")  # export reads labels and decisions only


def corpus() -> list[Corruption]:
    """Every corruption the suite applies to a projected, detected run (3 epochs, with a feedback log)."""
    c: list[Corruption] = []
    fields = {"n_samples": [None, "abc", -1, 1.5], "n_classes": [0, "x"], "embedding_dim": [None, 0],
              "epochs": [["x"], {"a": 1}, [0, 1, 1], [0, 1, 7]], "class_names": [["a"], "abc", [1, 2, 3, 4]],
              "history": [5, ["x"]], "format_version": [99, "1"], "n_heldout": [-3], "embedding_dtype": ["int8"],
              "checksums": ["crc"]}  # fmt: skip
    for key, values in fields.items():
        for value in values:
            names = ("run.json", "0007") if value == [0, 1, 7] else "run.json"  # a listed epoch without its files
            c.append(Corruption(f"run.json {key} = {json.dumps(value)}", _edit_json(Path("run.json"), **{key: value}),
                                names, RUN_READERS))
    c += [
        Corruption("run.json truncated", _truncate("run.json"), "run.json", RUN_READERS),
        Corruption("run.json missing", _remove("run.json"), "run.json", RUN_READERS),
        Corruption("run.json a symlink (read through; writes refuse it)", _symlink("run.json"), "run.json", ()),
    ]
    for name in ("labels.npy", "thumbs.npy", "true_labels.npy"):
        c += [
            Corruption(f"{name} truncated", _truncate(name), name, RUN_READERS),
            Corruption(f"{name} flipped bytes", _flip(name), name, RUN_READERS),
            Corruption(f"{name} trailing bytes", _append(name, b"\0" * 64), name, RUN_READERS),
            Corruption(f"{name} missing", _remove(name), name, RUN_READERS),
        ]
    c += [
        Corruption("labels.npy out of range", _replace_array("labels.npy", lambda a: a + 100), "labels.npy",
                   RUN_READERS),
        Corruption("labels.npy pickled", _replace_array("labels.npy", lambda a: a.astype(object), pickle=True),
                   "labels.npy", RUN_READERS),
        Corruption("labels.npy as float", _replace_array("labels.npy", lambda a: a.astype(np.float32)),
                   "labels.npy", RUN_READERS),
        Corruption("thumbs.npy float32", _replace_array("thumbs.npy", lambda a: a.astype(np.float32)),
                   "thumbs.npy", RUN_READERS),
        Corruption("thumbs.npy wrong count", _replace_array("thumbs.npy", lambda a: a[:-1]), "thumbs.npy",
                   RUN_READERS),
    ]
    for name in ("embedding.npy", "logits.npy", "head_weight.npy"):
        path = f"epochs/0001/{name}"
        c += [
            Corruption(f"epoch 1 {name} truncated", _truncate(path), path, EPOCH_READERS),
            Corruption(f"epoch 1 {name} flipped bytes", _flip(path), path, EPOCH_READERS),
            Corruption(f"epoch 1 {name} trailing bytes", _append(path, b"\0" * 64), path, EPOCH_READERS),
            Corruption(f"epoch 1 {name} holds inf", _replace_array(path, _with_inf), path, EPOCH_READERS),
            Corruption(f"epoch 1 {name} missing", _remove(path), path, EPOCH_READERS),
            Corruption(f"epoch 1 {name} wrong shape", _replace_array(path, lambda a: a[:, :-1]), path, EPOCH_READERS),
        ]
    c += [
        Corruption("epoch 1 checksums.json garbled", _write("epochs/0001/checksums.json", "{oops"),
                   "epochs/0001/checksums.json", EPOCH_READERS),
        Corruption("epoch 1 folder missing", lambda run: shutil.rmtree(run / "epochs/0001"), "0001", EPOCH_READERS),
        Corruption("projection manifest truncated", _truncate("projection/manifest.json"),
                   "projection/manifest.json", ("check", "detect", "app")),
        Corruption("projection manifest version 99", _edit_json(Path("projection/manifest.json"), format_version=99),
                   "projection/manifest.json", ("check", "detect", "app")),
        Corruption("projection xy truncated", _truncate("projection/0002/xy.npy"), "projection/0002/xy.npy",
                   ("check", "detect", "app")),
        Corruption("projection xy holds inf", _replace_array("projection/0002/xy.npy", _with_inf),
                   "projection/0002/xy.npy", ("check", "detect", "app")),
        Corruption("features manifest truncated", _truncate("features/manifest.json"), "features/manifest.json",
                   ("check", "app")),
        Corruption("features scores truncated", _truncate("features/scores.npy"), "features/scores.npy",
                   ("check", "app")),
        Corruption("features neighbors out of range",
                   _replace_array("features/neighbors.npy", lambda a: a + 10_000), "features/neighbors.npy",
                   ("check", "app")),
        Corruption("feedback.jsonl a directory", lambda run: ((run / "feedback.jsonl").unlink(),
                                                             (run / "feedback.jsonl").mkdir()),
                   "feedback.jsonl", ("check", "export", "app")),
        Corruption("feedback.jsonl binary garbage", _write("feedback.jsonl", "\x00\x01garbage\n" * 3),
                   "feedback.jsonl", ("check", "export", "app")),
        Corruption("feedback.jsonl a symlink (read through; appends refuse it)", _symlink("feedback.jsonl"),
                   "feedback.jsonl", ()),
    ]
    return c


def base_run(path: Path) -> Path:
    """The run the corpus damages: projected, detected, three decisions in its feedback log."""
    from timetravel.detection import detect
    from timetravel.feedback import FeedbackLog
    from timetravel.server_app._testing import write_synthetic_run
    from timetravel.store import RunStore

    run = write_synthetic_run(path, n_samples=120, n_epochs=3, grid=8)
    detect(RunStore(run), verbose=False)
    log = FeedbackLog(run)
    for i, decision in ((3, "accept"), (5, "reject"), (8, "drop")):
        log.append(i, decision)
    return Path(run)


def unprojected_run(path: Path) -> Path:
    """A run whose projection takes a few seconds (for the kills of ``timetravel project``)."""
    from timetravel.simulate import simulate_run

    return Path(simulate_run(path, n_samples=1500, n_epochs=4, seed=1).path)


def _run_cli(argv: list[str]) -> tuple[int, str]:
    """A command in-process: its exit code and everything it printed (an escaped exception is a traceback)."""
    from timetravel.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - what escapes main is what a user would see as a traceback
        import traceback

        return 1, out.getvalue() + err.getvalue() + "Traceback\n" + "".join(traceback.format_exception(exc))
    return int(code or 0), out.getvalue() + err.getvalue()


def _open(run: Path) -> tuple[int, str]:
    from timetravel.errors import TimetravelError
    from timetravel.store import RunStore

    try:
        RunStore(run)
    except TimetravelError as exc:
        return 2, str(exc)
    except Exception as exc:  # noqa: BLE001
        return 1, f"Traceback\n{type(exc).__name__}: {exc}"
    return 0, ""


def _app(run: Path) -> tuple[int, str]:
    """Build a session's document as the server would; a message page counts as a refusal."""
    from bokeh.document import Document
    from bokeh.models import Div

    from timetravel.server_app import main as app
    from timetravel.server_app._testing import wait_until
    from timetravel.server_app.context import AppContext

    try:
        context = AppContext([str(run)])
        context.warm()  # what the server's on_server_loaded hook does
        doc = Document()
        app.main(doc, context)
        text = " ".join(d.text for d in doc.select({"type": Div}))
        if "tt-message" in text:
            return 2, text
        _, review = context.open()
        wait_until(lambda: review.snapshot().status != "loading", timeout=30)
        snap = review.snapshot()
        problems = [snap.message] if snap.status == "failed" else []
        problems += list(snap.log_errors)
        context.close()
        return (2, " ".join(problems)) if problems else (0, text)
    except Exception as exc:  # noqa: BLE001
        return 1, f"Traceback\n{type(exc).__name__}: {exc}"


def _target(name: str, run: Path) -> tuple[int, str]:
    if name == "open":
        return _open(run)
    if name == "app":
        return _app(run)
    # project recomputes from the epochs (small settings: the corpus is about reading, not quality)
    extra = {"project": ["--n-jobs", "1", "--overwrite", "--decoder-steps", "5", "--grid-size", "8"],
             "export": ["--format", "json"]}.get(name, [])
    return _run_cli(["-q", name, str(run), *extra])


def classify(code: int, output: str, must_refuse: bool, names: str | tuple[str, ...]) -> str:
    """The outcome of one target on one corruption (see the module docstring).

    Success with a warning naming the file (e.g. export skipping unreadable log lines) is clear.
    """
    if "Traceback" in output or "internal error" in output:
        return "traceback"
    named = any(n in output for n in ((names,) if isinstance(names, str) else names))
    if code == 0:
        return "silent" if must_refuse and not named else "clear"
    return "clear" if named else "vague"


def run_corpus(base: Path, tmp: Path, corruptions: list[Corruption] | None = None,
               targets: tuple[str, ...] = TARGETS) -> Tally:
    """Run every target on its own freshly damaged copy of ``base`` (detect and project rewrite what they own)."""
    tally = Tally("corrupt-store corpus")
    for k, corruption in enumerate(corruptions or corpus()):
        for target in targets:
            run = tmp / f"c{k:03d}-{target}" / "run"
            shutil.copytree(base, run, symlinks=True)
            corruption.damage(run)
            code, output = _target(target, run)
            outcome = classify(code, output, target in corruption.refused_by, corruption.names)
            tally.add(outcome, f"{corruption.name} -> {target}: exit {code}: {output.strip()[:300]}")
            shutil.rmtree(run.parent, ignore_errors=True)
    return tally


# ------------------------------------------------------------------ kill loops


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "timetravel", "-q", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _arrays(run: Path, sub: str) -> dict[str, bytes]:
    """Every array under RUN/SUB as raw data (for bit-for-bit comparisons)."""
    return {str(p.relative_to(run)): np.load(p, allow_pickle=False).tobytes()
            for p in sorted((run / sub).rglob("*.npy")) if not p.parent.name.startswith(".")}


def _kill_after(cmd: list[str], delay: float) -> tuple[int, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode, proc.stdout.read().decode()


def _judge_resume(tally: Tally, k: int, resumed: subprocess.CompletedProcess, equal: bool) -> None:
    """One kill's outcome: the resume must succeed without a traceback and give the uninterrupted result."""
    what = f"try {k}: resume exit {resumed.returncode}: {resumed.stderr.strip()[-300:]}"
    if "Traceback" in resumed.stderr:
        tally.add("traceback", what)
    else:
        tally.add("clear" if resumed.returncode == 0 and equal else "lost", what)


TRAIN_ARGS = ("--dataset", "digits", "--n-samples", "300", "--epochs", "5", "--embedding-dim", "16", "--threads", "1")


def kill_train_loop(tmp: Path, tries: int, rng: np.random.Generator) -> Tally:
    """``kill -9`` of ``timetravel train`` at random moments, resumed; every resumed run equals an uninterrupted one."""
    tally = Tally("kill -9 of train, then --resume")
    tmp.mkdir(parents=True, exist_ok=True)
    reference = tmp / "train-reference"
    started = time.perf_counter()
    subprocess.run(_command("train", *TRAIN_ARGS, "--out", str(reference)), check=True, env=_env(),
                   capture_output=True)
    seconds = time.perf_counter() - started
    expected = _arrays(reference, "epochs")
    for k in range(tries):
        run = tmp / f"train-killed-{k}"
        _kill_after(_command("train", *TRAIN_ARGS, "--out", str(run)), float(rng.uniform(0.3, seconds)))
        resumed = subprocess.run(_command("train", *TRAIN_ARGS, "--out", str(run), "--resume"), env=_env(),
                                 capture_output=True, text=True)
        if not (run / "run.json").exists():  # killed before the run was created: a fresh start is the resume
            resumed = subprocess.run(_command("train", *TRAIN_ARGS, "--out", str(run)), env=_env(),
                                     capture_output=True, text=True)
        _judge_resume(tally, k, resumed, _arrays(run, "epochs") == expected)
        shutil.rmtree(run, ignore_errors=True)
    return tally


def kill_project_loop(run: Path, tmp: Path, tries: int, rng: np.random.Generator) -> Tally:
    """``kill -9`` of ``timetravel project`` at random moments, resumed; the projection equals an uninterrupted one."""
    tally = Tally("kill -9 of project, then resume")
    tmp.mkdir(parents=True, exist_ok=True)
    reference = tmp / "project-reference"
    shutil.copytree(run, reference)
    started = time.perf_counter()
    subprocess.run(_command("project", str(reference), "--n-jobs", "2"), check=True, env=_env(), capture_output=True)
    seconds = time.perf_counter() - started
    expected = _arrays(reference, "projection")
    for k in range(tries):
        copy = tmp / f"project-killed-{k}"
        shutil.copytree(run, copy)
        _kill_after(_command("project", str(copy), "--n-jobs", "2"), float(rng.uniform(0.3, seconds)))
        resumed = subprocess.run(_command("project", str(copy), "--n-jobs", "2"), env=_env(), capture_output=True,
                                 text=True)
        _judge_resume(tally, k, resumed, _arrays(copy, "projection") == expected)
        shutil.rmtree(copy, ignore_errors=True)
    return tally


_APPENDER = """
import sys
from timetravel.feedback import FeedbackLog
log = FeedbackLog(sys.argv[1])
for i in range(int(sys.argv[2]), 10**9):
    log.append(i % 100000, "accept" if i % 3 else "reject", session="killed")
    print(i, flush=True)  # acknowledged: the append returned, so the line is fsynced
"""


def kill_appender_loop(tmp: Path, tries: int, rng: np.random.Generator) -> Tally:
    """``kill -9`` of a process appending decisions; every acknowledged decision is in the log after it."""
    from timetravel.feedback import FeedbackLog

    tally = Tally("kill -9 of a feedback writer")
    log_dir = tmp / "appender"
    log_dir.mkdir(parents=True)
    start = 0
    for k in range(tries):
        proc = subprocess.Popen([sys.executable, "-c", _APPENDER, str(log_dir), str(start)], stdout=subprocess.PIPE,
                                env=_env(), start_new_session=True)
        time.sleep(float(rng.uniform(0.5, 1.5)))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        acknowledged = [int(x) for x in proc.stdout.read().decode().split()]
        state = FeedbackLog(log_dir).read()
        lost = [i for i in acknowledged if state.decisions.get(i % 100000) != bool(i % 3)]
        what = f"try {k}: {len(acknowledged)} acknowledged, {len(lost)} missing, {len(state.errors)} unreadable lines"
        tally.add("lost" if lost or len(state.errors) > 1 else "clear", what)  # a torn last line is expected
        start = (acknowledged[-1] + 1) if acknowledged else start
    return tally


# ------------------------------------------------------------------ the server's surface


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _websocket_status(url: str, origin: str) -> int:
    """The HTTP status of a websocket upgrade to the app's /ws with ``Origin: origin``."""
    import base64
    import http.client
    from urllib.parse import urlparse

    u = urlparse(url)
    connection = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    key = base64.b64encode(os.urandom(16)).decode()
    connection.request("GET", "/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket", "Origin": origin,
                                              "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": key})
    status = connection.getresponse().status
    connection.close()
    return status


SECRET_PATHS = ("/run.json", "/labels.npy", "/epochs/0000/embedding.npy", "/feedback.jsonl", "/static/../run.json",
                "/%2e%2e/run.json", "/static/%2e%2e/%2e%2e/run.json", "/..%2frun.json", "/autoload.js/../run.json")


def server_surface(run: Path, sessions: int = 10, decisions: int = 10) -> tuple[Tally, dict[str, float]]:
    """What ``timetravel serve`` exposes: the bind address, foreign origins, run files, concurrent sessions.

    Returns the tally and the measured times: seconds to open ``sessions`` documents at once
    (``bokeh.client``), and the decision round-trip (``Review.decide``, the call the accept button
    makes: fsynced to the log, re-ranked, every session told) from ``sessions`` threads at once.
    """
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import urlparse

    from bokeh.client import pull_session

    from timetravel.server_app._testing import serve

    tally = Tally("server surface")
    timings: dict[str, float] = {}
    with serve(run) as server:
        host = urlparse(server.url).hostname
        tally.add("clear" if host == "127.0.0.1" else "silent", f"bound to {host}")
        status, page = _get(server.url)
        tally.add("clear" if status == 200 and b"bokeh" in page.lower() else "lost", f"GET / -> {status}")
        for origin in ("http://evil.example", "null", f"http://127.0.0.1:{urlparse(server.url).port + 1}"):
            code = _websocket_status(server.url, origin)
            tally.add("clear" if code == 403 else "silent", f"websocket from Origin {origin} -> {code}")
        for path in SECRET_PATHS:
            code, body = _get(server.url.rstrip("/") + path)
            leaked = code == 200 and (b"n_samples" in body or body[:6] == b"\x93NUMPY" or b"decision" in body)
            tally.add("silent" if leaked else "clear", f"GET {path} -> {code}")
        started = time.perf_counter()
        with ThreadPoolExecutor(sessions) as pool:
            opened = list(pool.map(lambda _: pull_session(url=server.url), range(sessions)))
        timings["open_sessions_s"] = time.perf_counter() - started
        for s in opened:
            # the canvas itself comes once the browser has reported its WebGL (a client has none)
            ok = all(s.document.select_one({"name": n}) is not None for n in ("epoch_slider", "queue_table"))
            tally.add("clear" if ok else "lost", f"session {s.id}: document with its slider and queue")
            s.close()
    timings.update(_decision_round_trips(run, sessions, decisions))
    return tally, timings


def _decision_round_trips(run: Path, sessions: int, decisions: int) -> dict[str, float]:
    from concurrent.futures import ThreadPoolExecutor

    from timetravel.server_app._testing import wait_until
    from timetravel.server_app.data import RunData
    from timetravel.server_app.review import Review

    from timetravel.feedback import FeedbackLog

    before = len(FeedbackLog(run).read().events)
    review = Review(RunData(run))
    review.start()
    wait_until(lambda: review.snapshot().status != "loading", timeout=60)
    seconds: list[float] = []

    def session(k: int) -> None:
        for _ in range(decisions):
            queue = review.snapshot().queue
            if not queue:
                return
            sample = queue[k % min(5, len(queue))]
            started = time.perf_counter()
            review.decide(sample, "accept" if k % 2 else "reject", f"s{k}")
            seconds.append(time.perf_counter() - started)

    with ThreadPoolExecutor(sessions) as pool:
        list(pool.map(session, range(sessions)))
    logged = len(FeedbackLog(run).read().events) - before  # every acknowledged decision is a line of the log
    ordered = sorted(seconds)
    if not seconds:
        raise RuntimeError(f"{run}: no decision could be made (an empty queue: run `timetravel detect` first)")
    return {"decisions": len(seconds), "decisions_in_log": logged,
            "decision_median_ms": 1000 * ordered[len(ordered) // 2],
            "decision_p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))]}
