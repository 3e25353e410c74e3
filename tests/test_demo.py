"""``timetravel demo --no-serve``: train, project and rank end to end, then reuse everything."""

from __future__ import annotations

import pytest

from timetravel.cli import main
from timetravel.detect import load_detection
from timetravel.store import RunStore


@pytest.mark.slow
def test_demo_writes_a_complete_run_and_reuses_it(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--epochs", "3", "--no-serve"]
    assert main(argv) == 0
    store = RunStore(out)
    assert store.epochs == [0, 1, 2]
    assert store.projected_epochs == [0, 1, 2]
    assert store.projection(2).shape == (store.n_samples, 2)
    assert store.territory(2).classes.shape == (200, 200)
    detection = load_detection(store)
    assert detection.scores.shape == (store.n_samples,)
    assert f"serve it with: timetravel serve {out}" in capsys.readouterr().out

    mtime = (out / "epochs" / "0002" / "embedding.npy").stat().st_mtime_ns
    assert main(argv) == 0  # the second demo reuses the trained run
    assert (out / "epochs" / "0002" / "embedding.npy").stat().st_mtime_ns == mtime
