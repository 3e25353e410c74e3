"""Feedback recommender: never repeats a reviewed sample, learns in the right direction, is deterministic,
undoes and restores from the feedback log, and rejects bad input clearly."""

from __future__ import annotations

import numpy as np
import pytest

from timetravel.detector import AbnormalityDetector
from timetravel.feedback import FeedbackLog
from timetravel.features import extract_features
from timetravel.recommend import FeedbackRecommender, RecommenderError, rank_normal_scores
from timetravel.simulate import SimulatedUser, run_session, session_metrics, simulate_run


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    store = simulate_run(tmp_path_factory.mktemp("r") / "run", n_samples=500, noise_rate=0.1, seed=7)
    table = extract_features(store, verbose=False)
    return store, table, AbnormalityDetector().fit(table).scores_


def _synthetic(n=400, seed=0):
    """Features where column 0 marks the targets; the prior score is uninformative noise."""
    rng = np.random.default_rng(seed)
    target = rng.random(n) < 0.15
    x = rng.normal(size=(n, 4))
    x[:, 0] += 2.5 * target
    prior = rng.normal(size=n)
    return x, prior, target


def test_starts_from_the_prior_ranking(toy):
    _, table, scores = toy
    rec = FeedbackRecommender(random_state=0).fit(table, scores)
    np.testing.assert_array_equal(rec.recommend(20), np.argsort(-scores, kind="stable")[:20])


def test_never_returns_a_reviewed_sample(toy):
    store, table, scores = toy
    rec = FeedbackRecommender(random_state=1, exploration=1.0).fit(table, scores)
    user = SimulatedUser(store.noise_mask, mistake_rate=0.2, random_state=0)
    reviewed: set[int] = set()
    for _ in range(30):
        batch = rec.recommend(7)
        assert len(batch) == 7 and len(set(batch.tolist())) == 7
        assert not reviewed & set(batch.tolist())
        rec.update(batch[:3], user.answer(batch[:3]))
        reviewed |= set(batch[:3].tolist())
    assert set(rec.decisions_) == reviewed


def test_returns_fewer_when_few_remain():
    x, prior, _ = _synthetic(n=10)
    rec = FeedbackRecommender().fit(x, prior)
    rec.update(np.arange(8), [True] * 8)
    assert sorted(rec.recommend(5).tolist()) == [8, 9]
    rec.update([8, 9], [False, False])
    assert rec.recommend(5).size == 0


def test_update_moves_ranking_towards_accepted_kind():
    x, prior, target = _synthetic()
    rec = FeedbackRecommender(random_state=0, exploration=0.0).fit(x, prior)
    before = rec.log_odds()
    # the user accepts samples high in column 0 and rejects others
    seen = np.arange(60)
    rec.update(seen, target[seen])
    after = rec.log_odds()
    unseen = np.arange(60, len(x))
    gap_before = before[unseen][target[unseen]].mean() - before[unseen][~target[unseen]].mean()
    gap_after = after[unseen][target[unseen]].mean() - after[unseen][~target[unseen]].mean()
    assert gap_after > gap_before + 0.5
    assert rec.coef_[2] > 0.2, "the weight of the feature the accepted samples share went up"
    top = rec.recommend(20)
    assert target[top].mean() > 2 * target[unseen].mean()


def test_learns_a_class_pair_from_accepts():
    # groups carry the intent: the user wants group 3; features are pure noise
    rng = np.random.default_rng(0)
    n = 600
    groups = rng.integers(0, 10, n)
    x = rng.normal(size=(n, 3))
    prior = rng.normal(size=n)
    rec = FeedbackRecommender(random_state=0, exploration=0.0).fit(x, prior, groups=groups)
    first = rec.recommend(30)
    rec.update(first, groups[first] == 3)
    assert (groups[rec.recommend(20)] == 3).mean() > 0.8


def test_neighbour_evidence_spreads_to_same_label_neighbours():
    n = 200
    labels = np.zeros(n, dtype=np.int64)
    labels[100:] = 1
    neighbors = np.array([[(i + d) % 100 + (100 if i >= 100 else 0) for d in (1, 2, 3)] for i in range(n)])
    x = np.zeros((n, 2))
    prior = np.zeros(n)  # no opinion: only the feedback can order the samples
    rec = FeedbackRecommender(random_state=0, exploration=0.0).fit(x, prior, neighbors=neighbors, labels=labels)
    rec.update([10, 11, 12, 13, 50, 60, 150, 160], [True] * 4 + [False] * 4)
    top = rec.recommend(4)
    assert set(top.tolist()) <= {7, 8, 9, 14, 15, 16}, top
    assert rec.coef_[rec._col_same] > 0


def test_deterministic_under_seed(toy):
    store, table, scores = toy

    def session(seed):
        rec = FeedbackRecommender(random_state=seed, exploration=0.5).fit(table, scores)
        s = run_session(rec, SimulatedUser(store.noise_mask, 0.1, random_state=3), k=5, rounds=6)
        return np.concatenate(s.rounds)

    np.testing.assert_array_equal(session(4), session(4))
    assert not np.array_equal(session(4), session(5))


def test_undo_and_restore_from_the_feedback_log(toy, tmp_path):
    store, table, scores = toy
    log = FeedbackLog(tmp_path, n_samples=store.n_samples)
    live = FeedbackRecommender(random_state=0).fit(table, scores)
    events = [(5, "accept"), (9, "reject"), (5, "reject"), (12, "accept"), (12, "undo"), (40, "accept"),
              (41, "accept"), (41, "reject"), (41, "undo")]
    for i, decision in events:
        log.append(i, decision)
        if decision == "undo":
            live.undo(i)
        else:
            live.update([i], [decision == "accept"])
    state = log.read()
    assert state.decisions == {9: False, 5: False, 40: True, 41: True}
    assert live.decisions_ == state.decisions
    restored = FeedbackRecommender.from_feedback(state, table, scores, random_state=0)
    np.testing.assert_allclose(restored.coef_, live.coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(restored.log_odds(), live.log_odds(), rtol=1e-5, atol=1e-5)
    # undo everything (5 had two decisions, so it needs two undos): back to the prior exactly
    fresh = FeedbackRecommender(random_state=0).fit(table, scores)
    live.undo(5)
    assert live.decisions_[5] is True, "undoing the reject brings back the earlier accept, as in the log"
    while live.decisions_:
        live.undo(next(iter(live.decisions_)))
    np.testing.assert_allclose(live.log_odds(), fresh.log_odds(), atol=1e-5)
    np.testing.assert_array_equal(live.recommend(10), fresh.recommend(10))


def test_tolerates_mistaken_clicks(toy):
    store, table, scores = toy
    precision = {}
    for rate in (0.0, 0.1):
        rec = FeedbackRecommender(random_state=0).fit(table, scores)
        s = run_session(rec, SimulatedUser(store.noise_mask, rate, random_state=1), k=5, rounds=5)
        precision[rate] = session_metrics(s, store.noise_mask)["precision"]
    assert precision[0.1] >= precision[0.0] - 0.1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.update([500], [True]), r"sample index 500 is out of range for 500 samples"),
        (lambda r: r.update([-1], [True]), r"sample index -1 is out of range"),
        (lambda r: r.update([1, 2], [True]), r"accepted must be 2 booleans"),
        (lambda r: r.update([1.5], [True]), r"indices must be sample numbers"),
        (lambda r: r.recommend(0), r"k must be a positive integer, got 0"),
        (lambda r: r.undo(3), r"sample 3 has no decision to undo"),
    ],
)
def test_bad_input_is_a_clear_error(toy, call, message):
    _, table, scores = toy
    rec = FeedbackRecommender().fit(table, scores)
    with pytest.raises(RecommenderError, match=message):
        call(rec)


def test_fit_validation(toy):
    _, table, scores = toy
    with pytest.raises(RecommenderError, match="not fitted yet"):
        FeedbackRecommender().recommend(3)
    with pytest.raises(RecommenderError, match=r"prior_scores has shape \(3,\) but features have 500 rows"):
        FeedbackRecommender().fit(table, scores[:3])
    with pytest.raises(RecommenderError, match=r"mistake_rate must be in \[0, 0.5\), got 0.7"):
        FeedbackRecommender(mistake_rate=0.7).fit(table, scores)
    with pytest.raises(RecommenderError, match=r"neighbors must index samples in \[0, 500\)"):
        FeedbackRecommender().fit(table.values, scores, neighbors=np.full((500, 2), 500))
    with pytest.raises(RecommenderError, match="need at least 2 samples"):
        FeedbackRecommender().fit(np.zeros((1, 2)), np.zeros(1))


def test_rank_normal_scores_ties_and_order():
    z = rank_normal_scores(np.array([3.0, 1.0, 1.0, 2.0]))
    assert z[1] == z[2] and z[1] < z[3] < z[0]
    assert z.dtype == np.float32
