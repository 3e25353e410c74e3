"""Group numerics shared by the app and notebooks (timetravel/groups.py, activations.py, selections.py)."""

from __future__ import annotations

import numpy as np
import pytest

from timetravel.activations import SAMPLE_ROWS, activation_pattern
from timetravel.errors import StoreError
from timetravel.groups import (
    Column,
    GroupAnalysis,
    bin_numeric,
    confusion,
    row_normalised,
    suggest_subgroups,
)
from timetravel.selections import delete_selection, read_selections, save_selection
from timetravel.server_app._testing import write_sliced_run


@pytest.fixture(scope="module")
def sliced(tmp_path_factory):
    return write_sliced_run(tmp_path_factory.mktemp("groups") / "run", n_samples=2000, n_epochs=6, grid=8,
                            n_heldout=80)  # fmt: skip


@pytest.mark.parametrize("epoch", [None, 2])
def test_the_planted_bad_slice_is_suggested_first(sliced, epoch):
    """source = web has 50% label noise, the rest 5%: it is the subgroup worst on accuracy."""
    analysis = GroupAnalysis(sliced)
    table = analysis.suggest("accuracy", epoch)
    assert table["subgroup"][0] == "source = web"
    top = analysis.suggestions("accuracy", epoch)[0]
    web = np.asarray(analysis.store.metadata["source"].as_strings()) == "web"
    np.testing.assert_array_equal(top.indices, np.flatnonzero(web))
    assert top.gap > 0.04 and top.lower > 0


def test_a_metric_without_data_says_what_to_run(sliced):
    with pytest.raises(Exception, match="timetravel detect"):
        GroupAnalysis(sliced).suggest("suspicion")


def test_intersections_are_kept_only_when_worse_than_both_parts():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 4000).astype(np.int32)
    b = rng.integers(0, 2, 4000).astype(np.int32)
    correct = rng.random(4000) > 0.1
    correct[(a == 1) & (b == 1)] = rng.random(int(((a == 1) & (b == 1)).sum())) > 0.6  # only the intersection is bad
    cols = [Column("a", a, ("a0", "a1")), Column("b", b, ("b0", "b1"))]
    found = suggest_subgroups(cols, correct.astype(float), higher_is_better=True, min_size=50)
    assert found[0].name == "a = a1 ∧ b = b1"
    assert found[0].size == int(((a == 1) & (b == 1)).sum())
    assert all(s.lower > 0 for s in found)
    assert suggest_subgroups(cols, correct.astype(float), higher_is_better=True, min_size=5000) == []


def test_confusion_and_its_row_normalisation():
    m = confusion(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 0]), 3)
    np.testing.assert_array_equal(m, [[1, 1, 0], [1, 2, 0], [0, 0, 0]])
    np.testing.assert_allclose(row_normalised(m)[1], [1 / 3, 2 / 3, 0])


def test_confusion_over_time_and_group_metrics_table(sliced):
    analysis = GroupAnalysis(sliced)
    over_time = analysis.confusion_over_time()
    assert over_time.shape == (6, 4, 4) and (over_time.sum(axis=(1, 2)) == 2000).all()
    held = analysis.confusion(5, "heldout")
    assert held.sum() == 80
    table = analysis.metrics()
    frame = table.to_dicts()
    web = [r for r in frame if r["group"] == "source = web"]
    assert len(web) == 6 and {r["kind"] for r in web} == {"metadata"}
    phone = [r for r in frame if r["group"] == "source = phone"]
    assert web[2]["accuracy"] < phone[2]["accuracy"]
    assert {"class 0", "source = web"} <= set(table["group"])
    assert any(r["kind"] == "pair" for r in frame)


def test_numeric_columns_are_binned_by_quantiles():
    codes, names = bin_numeric(np.array([0.0, 1, 2, 3, 4, 5, 6, 7, np.nan]), 4)
    assert codes[-1] == -1 and len(names) == 4
    assert np.bincount(codes[:-1]).tolist() == [2, 2, 2, 2]
    codes, names = bin_numeric(np.array([1.0, 2, 1, 2]), 4)
    assert names == ("1", "2")


def test_activation_pattern_finds_the_units_that_set_a_class_apart(sliced):
    from timetravel.store import RunStore

    store = RunStore(sliced)
    selection = np.flatnonzero(store.labels == 1)[:40]
    reference = np.flatnonzero(store.labels == 2)
    pattern = activation_pattern(store, 5, selection, reference, reference_name="class 2", top=8)
    assert pattern.reference == "class 2" and pattern.n_selection == 40
    assert np.all(np.abs(pattern.separation[:-1]) >= np.abs(pattern.separation[1:]))
    assert abs(pattern.separation[0]) > 2  # classes sit apart in the embedding by construction
    assert pattern.rows.shape == (2 + 12, 8) and pattern.row_names[0] == "selection (mean)"
    np.testing.assert_allclose(pattern.selection_hist.sum(axis=1), 1.0)
    # against its own class: the selection is part of class 1, so it separates far less
    own = activation_pattern(store, 5, selection, top=8)
    assert own.reference == "its classes" and abs(own.separation[0]) < abs(pattern.separation[0])
    whole = activation_pattern(store, 5, np.flatnonzero(store.labels == 1), top=8)  # the whole class
    assert whole.reference == "the rest of the run" and whole.n_reference == 2000 - whole.n_selection
    assert SAMPLE_ROWS < 2000 or whole.n_reference > 0


def test_saved_selections_round_trip(tmp_path):
    save_selection(tmp_path, "pocket", [5, 3, 3], 10)
    save_selection(tmp_path, "edge", [9], 10)
    assert {k: v.tolist() for k, v in read_selections(tmp_path, 10).items()} == {"pocket": [3, 5], "edge": [9]}
    assert list(delete_selection(tmp_path, "pocket", 10)) == ["edge"]
    with pytest.raises(StoreError, match="outside"):
        save_selection(tmp_path, "bad", [10], 10)
    with pytest.raises(StoreError, match="needs a name"):
        save_selection(tmp_path, " ", [1], 10)
