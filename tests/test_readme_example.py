"""The README's "Recording your own training loop" runs as it is, and records what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from timetravel import RunStore, detect

ROOT = Path(__file__).resolve().parents[1]
# Blocks for the framework callbacks run in their own tests, with those packages.
_FRAMEWORKS = ("lightning", "transformers")


def _blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("### Recording your own training loop")
    end = min(readme.find(h, start + 1) % (len(readme) + 1) for h in ("\n## ", "\n### "))
    blocks = re.findall(r"```python\n(.*?)```", readme[start:end], flags=re.S)
    return [b for b in blocks if not any(f"import {f}" in b or f"from {f}" in b for f in _FRAMEWORKS)]


@pytest.mark.slow
def test_readme_recording_example_runs(tmp_path, monkeypatch):
    blocks = _blocks()
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    plain, train_pass = RunStore("runs/mine"), RunStore("runs/mine-train-pass")
    assert plain.epochs == train_pass.epochs == [0, 1, 2, 3, 4]
    assert {plain.epoch_pass(e) for e in plain.epochs} == {"eval"}
    assert [train_pass.epoch_pass(e) for e in train_pass.epochs] == ["train"] * 4 + ["eval"]
    for store in (plain, train_pass):
        assert store.class_names == ["circle", "square", "cross"]
        assert store.thumbs.shape == (300, 16, 16, 3) and store.has_heldout(4)
        assert store.train_margin(0) is not None and "test_acc" in store.history[-1]
        assert "head_r2" not in store.history[-1]  # the classifier's Linear was found inside the Sequential
    assert detect(train_pass, verbose=False).scores.shape == (300,)
