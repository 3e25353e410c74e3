"""``timetravel demo --no-serve``: train, project and rank end to end, then reuse everything."""

from __future__ import annotations

import json

import pytest

from timetravel.cli import main
from timetravel.detection import load_detection
from timetravel.store import RunStore


@pytest.mark.slow
def test_demo_writes_a_complete_run_and_reuses_it(tmp_path, capsys, monkeypatch):
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
    printed = capsys.readouterr().out
    assert f"serve it with: timetravel serve {out}" in printed
    assert (f"timetravel fix {out} --out {out}-fixed --drop-suspects && timetravel serve {out} --compare {out}-fixed"
            in printed)

    manifest = json.loads((out / "projection" / "manifest.json").read_text())
    manifest["params"]["min_dist"] = 0.5  # as if an older timetravel had projected with other defaults
    (out / "projection" / "manifest.json").write_text(json.dumps(manifest))
    mtime = (out / "epochs" / "0002" / "embedding.npy").stat().st_mtime_ns
    served = []
    monkeypatch.setattr("timetravel.commands.serve.run", lambda args: served.append(args) or 0)
    assert main(argv[:-1] + ["--no-browser", "--port", "0"]) == 0  # the second demo reuses the run, then serves
    assert (out / "epochs" / "0002" / "embedding.npy").stat().st_mtime_ns == mtime
    assert json.loads((out / "projection" / "manifest.json").read_text())["params"]["min_dist"] == 0.1  # re-projected
    (args,) = served
    assert (args.run, args.port, args.host, args.no_browser) == (str(out), 0, "127.0.0.1", True)
