"""A bad-argument corpus for the command line: every case is one line naming the problem, exit 2, nothing written.

Each case runs the real command in-process (``timetravel.cli.main``) against a small
projected and detected run the module writes once; cases that change the run get a copy.
"""

from __future__ import annotations

import math
import shutil
import struct
from pathlib import Path

import pytest

from faults import base_run
from timetravel.cli import main as cli

# (command line with {run} / {tmp} / {file} placeholders, a piece of the one-line error)
CASES = [
    # train: where it writes, checked before the data are loaded
    ("train --epochs 1 --out {file}", "a file is there, and a run is a folder; give a new path"),
    ("train --epochs 1 --out {file}/run", "is a file, not a folder"),
    ("train --epochs 1 --out /proc/tt-run", "cannot make the run folder /proc/tt-run"),
    ("train --epochs 1 --out {run}", "a run already exists here; pass overwrite (--overwrite) or resume (--resume)"),
    ("train --epochs 1 --out {tmp}/none --resume", "there is no run to resume"),
    # train: settings
    ("train --epochs 1 --lr inf --out {tmp}/r", "lr must be a positive finite number, got inf"),
    ("train --epochs 1 --lr 0 --out {tmp}/r", "lr must be a positive finite number, got 0.0"),
    ("train --epochs 1 --lr nan --out {tmp}/r", "lr must be a positive finite number, got nan"),
    ("train --epochs 0 --out {tmp}/r", "epochs must be a positive integer, got 0"),
    ("train --epochs 1 --batch-size 0 --out {tmp}/r", "batch_size must be a positive integer, got 0"),
    ("train --epochs 1 --dataset nope --out {tmp}/r", "nope"),
    ("train --epochs 1 --noise sideways:0.2 --out {tmp}/r", "sideways"),
    ("train --epochs 1 --noise symmetric:1.5 --out {tmp}/r", "1.5"),
    ("train --epochs 1 --dataset mnist --root {tmp}/empty --out {tmp}/r", "timetravel never downloads data"),
    ("train --epochs 1 --dataset mnist --root {tmp}/mnist0 --out {tmp}/r", "the training split holds no samples"),
    ("train --epochs 1 --dataset mnist --root {tmp}/mnisthuge --out {tmp}/r",
     "the header promises 9903520300447984150353281023 data bytes for shape (2147483647, 2147483647, 2147483647)"),
    # project
    ("project {tmp}/missing", "no such run directory"),
    ("project {run} --n-jobs 0", "n_jobs must not be 0"),
    ("project {run} --until -1", "--until -1 is before every recorded epoch"),
    ("project {run} --grid-size 0", "grid_size"),
    ("project {run} --n-neighbors 0", "n_neighbors"),
    ("project {run} --scheduler tcp://127.0.0.1:1", "--scheduler is only used with --backend dask"),
    ("project {run} --align-to {tmp}/missing", "no such run directory"),
    # detect
    ("detect {tmp}/missing", "no such run directory"),
    ("detect {run} --top 0", "--top must be at least 1, got 0"),
    ("detect {run} --neighbors 0", "neighbors"),
    # export
    ("export {run} --out {tmp}", "a directory, which is never replaced"),
    ("export {run} --out {file}/x.csv", "is a file, not a folder"),
    ("export {run} --out /proc/tt-export.csv", "cannot write the export to /proc/tt-export.csv"),
    ("export {run} --out /dev/null", "never replaced"),
    # fix, check
    ("fix {tmp}/missing --out {tmp}/r2", "no such run directory"),
    ("fix {run} --out {tmp}/r2", "this run was not made by `timetravel train`, so timetravel cannot retrain"),
    # check lists problems on standard output and exits 1 (tested in test_store.py); these are usage errors

    # serve (its address corpus is in test_app_serve.py)
    ("serve {tmp}/missing --no-browser", "no such run directory"),
]


def _write_idx(folder: Path, n_train: int, dims: tuple[int, ...] | None = None) -> None:
    folder.mkdir()
    for name, shape in [("train-images-idx3-ubyte", dims or (n_train, 28, 28)), ("train-labels-idx1-ubyte", (n_train,)),
                        ("t10k-images-idx3-ubyte", (2, 28, 28)), ("t10k-labels-idx1-ubyte", (2,))]:  # fmt: skip
        body = b"" if dims and "train-images" in name else bytes(math.prod(shape))
        (folder / name).write_bytes(struct.pack(">BBBB", 0, 0, 8, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
                                    + body)  # fmt: skip


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A projected, detected run with a feedback log (the one the fault corpus damages)."""
    return base_run(tmp_path_factory.mktemp("cli") / "run")


def prepare_case(tmp: Path, base: Path) -> None:
    """The files the cases refer to: a copy of the run, a plain file, an empty and two broken MNIST folders."""
    shutil.copytree(base, tmp / "run")
    (tmp / "afile").write_text("not a run")
    (tmp / "empty").mkdir()
    _write_idx(tmp / "mnist0", 0)
    _write_idx(tmp / "mnisthuge", 2, dims=(2**31 - 1,) * 3)


@pytest.mark.parametrize("line, message", CASES, ids=[c[0] for c in CASES])
def test_bad_argument_is_one_line_naming_it(base, tmp_path, capsys, line, message):
    prepare_case(tmp_path, base)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    argv = line.format(run=tmp_path / "run", tmp=tmp_path, file=tmp_path / "afile").split()
    try:
        code = cli(["-q", *argv])
    except SystemExit as exc:  # argparse's own refusals (a type or choice error)
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines[0].startswith("usage:") or (lines[0].startswith(f"timetravel {argv[0]}: error: ")
                                             and err.count("error:") == 1), err  # one error (perhaps with a list)
    assert message in err, err
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before, "a refused command left files behind"
