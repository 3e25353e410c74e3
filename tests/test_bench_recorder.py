"""The recorder benchmark runs end to end at a tiny size and reports every mode and recording."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench_recorder  # noqa: E402


@pytest.mark.slow
def test_recorder_benchmark_smoke(tmp_path):
    assert bench_recorder.main(["--scenarios", "seq1d", "--epochs", "1", "--repeats", "1", "--quality-epochs", "2",
                                "--n-samples", "160", "--quality-noise", "pairflip:0.3", "--results-dir",
                                str(tmp_path)]) == 0
    result = json.loads((tmp_path / "recorder.json").read_text())["results"]["seq1d"]
    modes = result["timing"]["modes"]
    assert set(modes) == {"none", "train_pass", "eval_every_1", "eval_every_5"}
    assert modes["train_pass"]["passes"] == ["eval"]  # one epoch: close() records it by an eval pass
    recordings = result["quality"]["pairflip:0.3"]["recordings"]
    assert {name: r["passes"] for name, r in recordings.items()} == {
        "train pass only": "tt", "train pass + final eval": "te", "train pass + eval every 5": "te",
        "eval pass every epoch": "ee"}
    assert all(0.0 <= r["precision"] <= 1.0 for r in recordings.values())
    assert (tmp_path / "recorder.md").exists() and (tmp_path / "recorder.png").exists()
