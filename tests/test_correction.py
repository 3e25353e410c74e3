"""Corrections: the standing decisions of a review as corrected labels and a keep-mask."""

from __future__ import annotations

import json

import numpy as np
import pytest

import timetravel
from timetravel.correction import (
    CORRECTIONS_FILE,
    CorrectionsError,
    apply_decisions,
    corrections_record,
    read_corrections,
    write_corrections,
)
from timetravel.feedback import FeedbackEvent, FeedbackLog, FeedbackState


def _state(*events):
    state = FeedbackState()
    for sample, decision, label in events:
        state.apply(FeedbackEvent(sample, decision, 0.0, label=label))
    return state


def test_each_decision_kind_maps_to_its_correction():
    labels = np.array([0, 1, 2, 0, 1, 2])
    fix = apply_decisions(labels, _state((0, "relabel", 2), (1, "drop", None), (2, "flag", None),
                                         (3, "accept", None), (4, "reject", None)))
    assert fix.labels.tolist() == [2, 1, 2, 0, 1, 2]
    assert fix.keep.tolist() == [True, False, True, True, True, True]
    assert fix.flagged.tolist() == [False, False, True, False, False, False]
    assert fix.relabeled.tolist() == [0] and fix.dropped.tolist() == [1]
    assert fix.summary() == {"relabeled": 1, "dropped": 1, "flagged": 1, "kept": 5}
    assert labels.tolist() == [0, 1, 2, 0, 1, 2]  # the input is not modified


def test_only_the_standing_decision_counts():
    fix = apply_decisions(np.zeros(3, dtype=int), _state((1, "relabel", 2), (1, "undo", None), (2, "drop", None),
                                                         (2, "relabel", 1)))
    assert fix.labels.tolist() == [0, 0, 1] and fix.keep.all()


def test_a_relabel_brings_back_an_inherited_drop():
    keep = np.array([True, False, False])
    fix = apply_decisions(np.zeros(3, dtype=int), _state((1, "relabel", 1)), keep=keep)
    assert fix.keep.tolist() == [True, True, False]


def test_out_of_range_decisions_and_shapes_are_refused():
    with pytest.raises(CorrectionsError, match="decision on sample 5 is out of range for 3 samples"):
        apply_decisions(np.zeros(3, dtype=int), _state((5, "drop", None)))
    with pytest.raises(CorrectionsError, match="keep has shape"):
        apply_decisions(np.zeros(3, dtype=int), FeedbackState(), keep=np.ones(2, dtype=bool))


def test_corrections_of_a_run_read_its_log(tiny_run):
    log = FeedbackLog(tiny_run.path, tiny_run.n_samples, tiny_run.n_classes)
    new = int((tiny_run.labels[4] + 1) % tiny_run.n_classes)
    log.append(4, "relabel", label=new)
    log.append(7, "drop")
    fix = timetravel.corrections(tiny_run.path)
    assert fix.labels[4] == new and not fix.keep[7]
    assert np.array_equal(np.delete(fix.labels, 4), np.delete(tiny_run.labels, 4))
    assert repr(fix).startswith(f"Corrections(n_samples={tiny_run.n_samples}, relabeled=1, dropped=1")


def test_a_fixed_run_inherits_its_corrections(tiny_run, tmp_path):
    state = _state((2, "relabel", int((tiny_run.labels[2] + 1) % tiny_run.n_classes)), (3, "drop", None),
                   (5, "flag", None))
    first = apply_decisions(tiny_run.labels, state)
    record = corrections_record(first, tiny_run.path)
    assert record["relabeled"] == [[2, int(tiny_run.labels[2]), int(first.labels[2])]]
    assert record["dropped"] == [3] and record["flagged"] == [5]
    assert record["feedback"] == {"events": 0, "sha256": None}
    # a run trained on first.labels, with its corrections file, then reviewed again
    fixed = tmp_path / "fixed"
    timetravel.RunWriter.create(fixed, labels=first.labels, n_classes=tiny_run.n_classes,
                                embedding_dim=tiny_run.embedding_dim)
    write_corrections(fixed, record)
    assert read_corrections(fixed) == json.loads((fixed / CORRECTIONS_FILE).read_text())
    FeedbackLog(fixed, tiny_run.n_samples, tiny_run.n_classes).append(2, "relabel", label=int(tiny_run.labels[2]))
    FeedbackLog(fixed).append(9, "drop")
    again = timetravel.corrections(fixed)
    assert again.relabeled.tolist() == []  # relabelled back to the original label
    assert again.dropped.tolist() == [3, 9] and np.flatnonzero(again.flagged).tolist() == [5]
    assert np.array_equal(again.base_labels, tiny_run.labels)


def test_a_damaged_corrections_file_says_what_to_do(tmp_path):
    (tmp_path / CORRECTIONS_FILE).write_text("{")
    with pytest.raises(CorrectionsError, match="cannot be read .*fix the run again"):
        read_corrections(tmp_path)
    (tmp_path / CORRECTIONS_FILE).write_text('{"format_version": 9}')
    with pytest.raises(CorrectionsError, match="not a corrections file of format version 1"):
        read_corrections(tmp_path)


def test_drop_suspects_leaves_out_only_unreviewed_doubted_samples():
    from timetravel.correction import drop_suspects

    labels = np.zeros(6, dtype=int)
    state = _state((1, "reject", None), (2, "relabel", 1))
    confidence = np.array([0.9, 0.1, 0.2, 0.3, 0.5, 0.9])
    suspicion = np.array([-3.0, 4.0, 4.2, -3.1, -2.9, 3.9])  # log-odds: two clear modes
    fix = drop_suspects(apply_decisions(labels, state), state, confidence=confidence)
    assert fix.keep.tolist() == [True, True, True, False, True, True]  # 1 and 2 were decided by the user
    assert fix.labels.tolist() == [0, 0, 1, 0, 0, 0]
    fix = drop_suspects(apply_decisions(labels, state), state, confidence=confidence, suspicion=suspicion)
    assert fix.keep.tolist() == [True, True, True, False, True, False]  # 5: in the suspicious mode
    # before any decision the recommender knows nothing: only the confidence counts
    empty = FeedbackState()
    assert drop_suspects(apply_decisions(labels, empty), empty, confidence=confidence,
                         suspicion=suspicion).dropped.tolist() == [1, 2, 3]
    # the detector's own mode is averaged in: 5 is suspicious to the review (posterior 1) but not to the
    # detector (0), a mean of one half is not above it; 4 is suspicious to both and dropped
    prior = np.array([-1.0, 2.0, 2.1, -1.1, 2.2, -0.9])
    fix = drop_suspects(apply_decisions(labels, state), state, confidence=confidence, suspicion=suspicion,
                        prior=prior)
    assert fix.keep.tolist() == [True, True, True, False, True, True]
    prior[4], suspicion[4] = 2.2, 4.1
    assert drop_suspects(apply_decisions(labels, state), state, confidence=confidence, suspicion=suspicion,
                         prior=prior).dropped.tolist() == [3, 4]
    with pytest.raises(CorrectionsError, match="confidence has shape"):
        drop_suspects(fix, state, confidence=np.ones(3))
    with pytest.raises(CorrectionsError, match="suspicion has shape"):
        drop_suspects(fix, state, confidence=confidence, suspicion=np.ones(3))
    with pytest.raises(CorrectionsError, match="prior has shape"):
        drop_suspects(fix, state, confidence=confidence, suspicion=suspicion, prior=np.ones(3))


def test_the_suspicious_mode_ends_where_the_scores_do_not_where_the_review_did():
    from timetravel.correction import suspicious_mode

    # after a review that accepted everything it saw, the recommender's log-odds are above 0 for far more
    # samples than are mislabelled (its intercept was fitted on the reviewed top only); the mixture finds
    # the 100 of the upper mode
    rng = np.random.default_rng(0)
    scores = np.r_[rng.normal(0.5, 1.0, 900), rng.normal(6.0, 1.0, 100)]
    posterior = suspicious_mode(scores)
    assert (scores > 0).sum() > 600 and 95 <= (posterior > 0.5).sum() <= 105
    assert (posterior[900:] > 0.5).mean() > 0.95
    assert suspicious_mode(np.ones(5)).tolist() == [0.0] * 5  # no second mode to find


def test_suspects_need_the_runs_detection(tiny_run):
    from timetravel import StoreError, detect
    from timetravel.correction import suspicious_mode

    with pytest.raises(StoreError, match="run `timetravel detect"):
        timetravel.corrections(tiny_run, suspects=True)
    detection = detect(tiny_run, verbose=False)
    assert np.array_equal(timetravel.corrections(tiny_run, suspects=True).keep,
                          detection.features.column("confidence") >= 0.5)
    FeedbackLog(tiny_run.path).append(int(np.argmin(detection.features.column("confidence"))), "accept")
    state = FeedbackLog(tiny_run.path).read()
    mode = (suspicious_mode(detection.recommender(feedback=state, random_state=0).log_odds())
            + suspicious_mode(detection.scores)) / 2
    expected = (detection.features.column("confidence") < 0.5) | (mode > 0.5)
    expected[list(state.standing)] = False
    assert np.array_equal(~timetravel.corrections(tiny_run, suspects=True).keep, expected)
