"""Feedback log: append, replay with undo, corrupt lines, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from timetravel.errors import FeedbackLogError
from timetravel.feedback import FeedbackLog


def test_append_and_replay(tmp_path):
    log = FeedbackLog(tmp_path, n_samples=10)
    log.append(3, "accept", session="s1")
    log.append(5, "reject", session="s1")
    log.append(7, "accept", session="s2")
    state = log.read()
    assert state.decisions == {3: True, 5: False, 7: True}
    assert state.accepted == [3, 7] and state.rejected == [5]
    assert [e.session for e in state.events] == ["s1", "s1", "s2"]
    assert state.errors == []


def test_undo_restores_previous_decision(tmp_path):
    log = FeedbackLog(tmp_path / "feedback.jsonl")
    log.append(1, "reject")
    log.append(1, "accept")
    log.append(2, "accept")
    log.append(1, "undo")
    assert log.read().decisions == {2: True, 1: False}
    log.append(1, "undo")
    assert log.read().decisions == {2: True}
    log.append(1, "undo")  # nothing left to undo: harmless
    assert log.read().decisions == {2: True}


def test_corrupt_lines_are_reported_and_skipped(tmp_path):
    log = FeedbackLog(tmp_path, n_samples=10)
    log.append(1, "accept")
    with open(log.path, "a") as fh:
        fh.write("{not json\n")
        fh.write(json.dumps({"sample": 99, "decision": "accept"}) + "\n")
        fh.write(json.dumps({"sample": 2, "decision": "maybe"}) + "\n")
        fh.write(json.dumps({"decision": "accept"}) + "\n")
    log.append(4, "reject")
    state = log.read()
    assert state.decisions == {1: True, 4: False}
    assert len(state.errors) == 4
    assert "line 2 skipped (Expecting property name" in state.errors[0]
    assert "line 3 skipped (sample 99 is out of range for a run of 10 samples)" in state.errors[1]
    assert "line 4 skipped (decision must be one of" in state.errors[2]
    assert "line 5 skipped (missing field 'sample')" in state.errors[3]


def test_append_validates(tmp_path):
    log = FeedbackLog(tmp_path, n_samples=5)
    with pytest.raises(FeedbackLogError, match="sample 5 is out of range for a run of 5 samples"):
        log.append(5, "accept")
    with pytest.raises(FeedbackLogError, match="decision must be one of"):
        log.append(0, "yes")
    assert not log.path.exists()


def _writer(path: str, start: int) -> None:
    log = FeedbackLog(path)
    for i in range(start, start + 200):
        log.append(i, "accept" if i % 2 else "reject", session=str(start))


def test_concurrent_writers_never_corrupt_the_log(tmp_path):
    path = str(tmp_path / "feedback.jsonl")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, s)) for s in (0, 1000, 2000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    state = FeedbackLog(path).read()
    assert state.errors == []
    assert len(state.decisions) == 600


def test_correction_kinds_count_as_accepted_and_keep_their_label(tmp_path):
    log = FeedbackLog(tmp_path, n_samples=10, n_classes=3)
    log.append(1, "relabel", label=2)
    log.append(2, "drop")
    log.append(3, "flag")
    log.append(4, "reject")
    state = log.read()
    assert state.decisions == {1: True, 2: True, 3: True, 4: False}
    assert {i: (e.decision, e.label) for i, e in state.standing.items()} == {
        1: ("relabel", 2), 2: ("drop", None), 3: ("flag", None), 4: ("reject", None)}
    assert json.loads(log.path.read_text().splitlines()[0])["label"] == 2


def test_undo_of_a_relabel_restores_the_earlier_choice(tmp_path):
    log = FeedbackLog(tmp_path, n_samples=10, n_classes=3)
    log.append(1, "drop")
    log.append(1, "relabel", label=0)
    log.append(1, "undo")
    state = log.read()
    assert state.standing[1].decision == "drop" and state.decisions == {1: True}
    log.append(1, "undo")
    assert log.read().standing == {}


@pytest.mark.parametrize(
    ("decision", "label", "message"),
    [("relabel", None, "a relabel needs the new label"), ("relabel", -1, "a relabel needs the new label"),
     ("relabel", 3, "label 3 is out of range for a run of 3 classes"), ("drop", 1, "only a relabel takes a label")],
)
def test_relabel_labels_are_validated(tmp_path, decision, label, message):
    log = FeedbackLog(tmp_path, n_samples=10, n_classes=3)
    with pytest.raises(FeedbackLogError, match=message):
        log.append(0, decision, label=label)
    assert not log.path.exists()


def test_a_relabel_line_without_a_label_is_skipped(tmp_path):
    log = FeedbackLog(tmp_path, n_samples=10, n_classes=3)
    with open(log.path, "a") as fh:
        fh.write(json.dumps({"sample": 1, "decision": "relabel"}) + "\n")
        fh.write(json.dumps({"sample": 2, "decision": "relabel", "label": 7}) + "\n")
    log.append(3, "relabel", label=1)
    state = log.read()
    assert list(state.standing) == [3] and len(state.errors) == 2
    assert "line 2 skipped (label 7 is out of range" in state.errors[1]


def test_seeds_are_logged_as_one_batch_and_replayed_apart_from_decisions(tmp_path):
    from timetravel.feedback import FeedbackLog

    log = FeedbackLog(tmp_path, n_samples=10)
    log.append(1, "accept", "s")
    events = log.append_seeds([2, 3], "pocket", "s")
    assert {e.batch for e in events} == {events[0].batch} and events[0].group == "pocket"
    state = log.read()
    assert state.decisions == {1: True} and list(state.seeds) == [2, 3]
    assert state.accepted == [1]  # a seed is no acceptance: it is neither exported nor corrected
    log.append_undos([2, 3], "s")
    assert log.read().seeds == {}
    with pytest.raises(FeedbackLogError, match="names its group"):
        log.append(4, "seed", "s")


# --------------------------------------------------------------------------- robustness (issue 14)


def test_a_torn_last_line_never_swallows_the_next_decision(tmp_path):
    log = FeedbackLog(tmp_path, n_samples=100)
    log.path.write_bytes(b'{"sample": 20, "decision": "acc')  # a writer killed mid-line
    log.append(84, "accept")
    log.append(85, "reject")
    state = FeedbackLog(tmp_path, n_samples=100).read()
    assert state.decisions == {84: True, 85: False}
    assert len(state.errors) == 1 and "line 1 skipped" in state.errors[0]
    assert log.path.read_bytes().count(b"\n") == 3  # the torn line ended by the first append, in the same write


def test_a_record_glued_to_a_torn_line_by_an_older_version_is_kept(tmp_path):
    log = FeedbackLog(tmp_path, n_samples=100)
    log.path.write_bytes(b'{"sample": 20, "decision": "acc{"sample": 84, "decision": "accept", "time": 1.0}\n')
    state = log.read()
    assert state.decisions == {84: True}
    assert "the complete record at its end was kept" in state.errors[0]


def test_appends_refuse_a_symlinked_log_and_leave_its_target_alone(tmp_path):
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "feedback.jsonl").symlink_to(target)
    log = FeedbackLog(tmp_path / "run", n_samples=10)
    with pytest.raises(FeedbackLogError, match=r"feedback.jsonl: is a symbolic link; .*the decision was not saved"):
        log.append(1, "accept")
    assert target.read_text() == ""


def test_a_log_that_is_a_directory_gives_one_clear_error(tmp_path):
    (tmp_path / "feedback.jsonl").mkdir()
    log = FeedbackLog(tmp_path, n_samples=10)
    with pytest.raises(FeedbackLogError, match=r"feedback.jsonl: is a directory, not a feedback log"):
        log.append(1, "accept")
    with pytest.raises(FeedbackLogError, match=r"feedback.jsonl: cannot be read \(Is a directory\)"):
        log.read()
