"""The recommendation and active-learning benchmarks run end to end on their --quick settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

pytestmark = pytest.mark.slow


def test_bench_active_quick_writes_its_tables(tmp_path):
    import bench_active

    assert bench_active.main(["--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "runs")]) == 0
    result = json.loads((tmp_path / "active_quick.json").read_text())
    (run,) = result["runs"]
    assert 0.0 <= run["rankers"]["timetravel"]["precision"] <= 1.0
    assert {"random", "least_confidence", "timetravel_static"} <= set(run["rankers"])


def test_bench_recommend_quick_writes_its_tables(tmp_path):
    import bench_recommend

    assert bench_recommend.main(["--quick", "--rankers", "loss,aum,aum_early_stop,timetravel_static,timetravel",
                                 "--out", str(tmp_path), "--cache", str(tmp_path / "runs")]) == 0  # fmt: skip
    result = json.loads((tmp_path / "recommend_quick.json").read_text())
    assert len(result["runs"]) == 2  # digits (timetravel train) and the tabular subject (the public Recorder)
    for run in result["runs"]:  # both record a held-out set, so the early-stopped AUM is there
        assert set(run["rankers"]) == {"loss", "aum", "aum_early_stop", "timetravel_static", "timetravel"}
    assert result["targets"] and all("target_feedback" in row for row in result["targets"])
