"""The fix benchmark's per-run cache never reports a result measured with other code."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_a_cached_result_is_measured_again_when_the_code_changes(tmp_path, monkeypatch):
    import bench_fix

    calls = []

    def evaluate(store, path, args, seed):
        calls.append(seed)
        return {"accuracy": 0.5 + len(calls)}

    monkeypatch.setattr(bench_fix, "_evaluate", evaluate)
    args = argparse.Namespace(rounds="1,2", mistake=0.1, user_draws=2, cv_folds=5)
    store, setting = SimpleNamespace(epochs=[0, 1, 2]), {"dataset": "digits", "noise": "symmetric", "seed": 0}
    first = bench_fix._cached_result(store, tmp_path, args, 0, setting)
    assert bench_fix._cached_result(store, tmp_path, args, 0, setting) == first and len(calls) == 1
    assert len(bench_fix._code_fingerprint()) == 16
    monkeypatch.setattr(bench_fix, "_code_fingerprint", lambda: "other code")
    again = bench_fix._cached_result(store, tmp_path, args, 0, setting)
    assert len(calls) == 2 and again["accuracy"] != first["accuracy"]
