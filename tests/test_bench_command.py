"""``timetravel bench``: runs benchmarks/bench_NAME.py and says how to install what only the benchmarks need."""

from __future__ import annotations

import sys

from timetravel.cli import main
from timetravel.commands import bench


def test_missing_bench_extra_is_named_with_the_install_command(tmp_path, monkeypatch, capsys):
    (tmp_path / "bench_fake.py").write_text("import cleanlab\n\ndef main(argv):\n    return 0\n")
    monkeypatch.setattr(bench, "_benchmarks_dir", lambda: tmp_path)
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # as if the bench extra were not installed
    assert main(["bench", "fake"]) == 2
    err = capsys.readouterr().err
    assert "the fake benchmark needs cleanlab" in err and 'pip install -e ".[bench]"' in err


def test_unknown_benchmark_lists_the_known_ones(capsys):
    assert main(["bench", "nope"]) == 2
    assert "known: active, app, fix, projection, recommend, recorder" in capsys.readouterr().err
