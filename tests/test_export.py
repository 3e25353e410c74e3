"""Export of accepted samples: the shared logic (timetravel.export) and `timetravel export RUN`."""

from __future__ import annotations

import csv
import io
import json
import os
import stat

import numpy as np
import pytest

from timetravel.cli import main as cli
from timetravel.errors import TimetravelError
from timetravel.export import (
    FIELDS,
    SOURCE_PREDICTION,
    SOURCE_RECOMMENDER,
    SOURCE_RUNNER_UP,
    accepted_records,
    render,
    suggest_labels,
    write_export,
)
from timetravel.feedback import FeedbackLog, FeedbackState


def _last_probs(store):
    return store.probabilities(store.epochs[-1])


def test_suggestion_is_the_prediction_or_the_runner_up(tiny_run):
    samples = np.arange(tiny_run.n_samples)
    labels, probs, sources = suggest_labels(tiny_run, samples)
    p = _last_probs(tiny_run)
    order = np.argsort(-p, axis=1)
    for i in samples:
        if order[i, 0] != tiny_run.labels[i]:
            assert (labels[i], sources[i]) == (order[i, 0], SOURCE_PREDICTION)
        else:
            assert (labels[i], sources[i]) == (order[i, 1], SOURCE_RUNNER_UP)
        assert labels[i] != tiny_run.labels[i]
        assert probs[i] == pytest.approx(p[i, labels[i]], rel=1e-5)


def test_suggestions_keep_the_order_of_unsorted_samples(tiny_run):
    samples = np.array([17, 3, 42, 0])
    labels, _, _ = suggest_labels(tiny_run, samples)
    singles = [suggest_labels(tiny_run, np.array([i]))[0][0] for i in samples]
    assert labels.tolist() == singles


def test_records_follow_the_standing_decisions_in_order(tiny_run):
    log = FeedbackLog(tiny_run.path, tiny_run.n_samples)
    for sample, decision in [(5, "accept"), (9, "reject"), (2, "accept"), (5, "undo"), (7, "accept"), (5, "accept")]:
        log.append(sample, decision)
    records = accepted_records(tiny_run)
    assert [r.index for r in records] == [2, 7, 5]
    for r in records:
        assert r.given_label == tiny_run.labels[r.index]
        assert r.given_name == tiny_run.class_names[r.given_label]
        assert r.suggested_name == tiny_run.class_names[r.suggested_label]


def test_detector_suggestions_override_the_prediction(tiny_run):
    state = FeedbackState(decisions={4: True, 8: True, 6: False})
    other = (tiny_run.labels[4] + 2) % tiny_run.n_classes
    records = accepted_records(tiny_run, state, suggestions={4: int(other)})
    by_index = {r.index: r for r in records}
    assert set(by_index) == {4, 8}
    assert by_index[4].suggested_label == other
    assert by_index[4].suggestion_source == SOURCE_RECOMMENDER
    assert by_index[4].suggested_probability == pytest.approx(_last_probs(tiny_run)[4, other], abs=1e-6)
    assert by_index[8].suggestion_source != SOURCE_RECOMMENDER


def test_no_accepted_samples_gives_an_empty_export(tiny_run):
    records = accepted_records(tiny_run, FeedbackState(decisions={1: False}))
    assert records == []
    assert render(records, tiny_run, "csv").strip() == ",".join(FIELDS)
    assert json.loads(render(records, tiny_run, "json"))["accepted"] == []


def test_csv_and_json_round_trip(tiny_run, tmp_path):
    records = accepted_records(tiny_run, FeedbackState(decisions={3: True, 11: True}))
    rows = list(csv.DictReader(io.StringIO(render(records, tiny_run, "csv"))))
    assert [int(r["index"]) for r in rows] == [3, 11]
    assert tuple(rows[0]) == FIELDS
    payload = json.loads(render(records, tiny_run, "json"))
    assert payload["n_accepted"] == 2 and payload["n_samples"] == tiny_run.n_samples
    assert [r["index"] for r in payload["accepted"]] == [3, 11]
    path = write_export(tmp_path / "out" / "a.csv", render(records, tiny_run, "csv"))
    assert path.read_text().startswith("index,")


def test_unknown_format_is_refused(tiny_run):
    with pytest.raises(TimetravelError, match="export format must be one of"):
        render([], tiny_run, "xml")


def test_cli_writes_csv_and_reports_corrupt_lines(tiny_run, tmp_path, capsys):
    log = FeedbackLog(tiny_run.path, tiny_run.n_samples)
    log.append(1, "accept")
    with open(log.path, "a") as fh:
        fh.write("{not json\n")
    log.append(2, "accept")
    out = tmp_path / "accepted.csv"
    assert cli(["export", str(tiny_run.path), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "line 2 skipped" in captured.err
    assert "wrote 2 accepted samples" in captured.out
    assert [int(r["index"]) for r in csv.DictReader(out.open())] == [1, 2]


def test_cli_prints_json_to_stdout(tiny_run, capsys):
    FeedbackLog(tiny_run.path, tiny_run.n_samples).append(7, "accept")
    assert cli(["export", str(tiny_run.path), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [r["index"] for r in payload["accepted"]] == [7]


def test_cli_uses_the_detectors_suggestion_when_the_run_has_one(tmp_path, capsys):
    from timetravel.server_app._testing import write_synthetic_run
    from timetravel.detection import detect
    from timetravel.store import RunStore

    store = RunStore(write_synthetic_run(tmp_path / "run", n_samples=120, n_epochs=3))
    detection = detect(store, verbose=False)
    FeedbackLog(store.path, store.n_samples).append(5, "accept")
    assert cli(["export", str(store.path), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["accepted"]
    assert row["suggested_label"] == int(detection.features.suggested[5])
    assert row["suggestion_source"] == SOURCE_RECOMMENDER


def test_cli_on_a_missing_run_fails_clearly(tmp_path, capsys):
    assert cli(["export", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_cli_exports_each_decision_with_the_label_retraining_uses(tiny_run, capsys):
    log = FeedbackLog(tiny_run.path, tiny_run.n_samples, tiny_run.n_classes)
    new = int((tiny_run.labels[3] + 1) % tiny_run.n_classes)
    log.append(3, "relabel", label=new)
    log.append(4, "drop")
    log.append(5, "flag")
    log.append(6, "accept")
    log.append(8, "reject")
    assert cli(["export", str(tiny_run.path), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    rows = {r["index"]: r for r in payload["accepted"]}
    assert set(rows) == {3, 4, 5, 6}
    assert (rows[3]["decision"], rows[3]["corrected_label"]) == ("relabel", new)
    assert rows[3]["corrected_name"] == tiny_run.class_names[new]
    assert (rows[4]["decision"], rows[4]["corrected_label"], rows[4]["corrected_name"]) == ("drop", "", "")
    assert (rows[5]["decision"], rows[5]["corrected_label"]) == ("flag", int(tiny_run.labels[5]))
    assert rows[6]["decision"] == "accept"
    assert payload["n_by_decision"] == {"accept": 1, "relabel": 1, "drop": 1, "flag": 1}


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory", "under a file"])
def test_export_never_replaces_what_is_not_a_regular_file(tmp_path, kind):
    from timetravel.export import write_export

    target = tmp_path / "out.csv"
    if kind == "symlink":
        (tmp_path / "precious").write_text("keep")
        target.symlink_to(tmp_path / "precious")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "directory":
        target.mkdir()
    else:
        (tmp_path / "file").write_text("keep")
        target = tmp_path / "file" / "out.csv"
    with pytest.raises(TimetravelError, match=r"cannot write the export to .*out.csv: .*; choose a regular file"):
        write_export(target, "index\n")
    if kind == "symlink":
        assert target.is_symlink() and (tmp_path / "precious").read_text() == "keep"
    elif kind == "fifo":
        assert stat.S_ISFIFO(os.lstat(target).st_mode)
    assert not [p for p in tmp_path.rglob(".*.tmp")]
