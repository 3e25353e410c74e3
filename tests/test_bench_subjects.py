"""The benchmark's subject runs: generated tasks, and recording them through the public Recorder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import subjects  # noqa: E402

from timetravel.store import RunStore  # noqa: E402


def test_shapes_are_colour_images_of_ten_balanced_classes():
    x, y = subjects.make_shapes(200, seed=3)
    assert x.shape == (200, 3, 32, 32) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.bincount(y).tolist() == [20] * 10


def test_shape_classes_differ_in_shape_not_only_in_colour():
    x, y = subjects.make_shapes(400, seed=0)
    mean_colour = x.mean(axis=(2, 3))
    # the two colour families are told apart by mean colour; the five shapes of one family are not
    warm = y % 2 == 0
    assert mean_colour[warm, 0].mean() > mean_colour[~warm, 0].mean()
    shape_means = np.array([mean_colour[(y // 2 == s) & warm].mean(axis=0) for s in range(5)])
    assert np.ptp(shape_means, axis=0).max() < 0.1


def test_text_documents_carry_their_topic_keywords():
    from sklearn.naive_bayes import MultinomialNB

    tokens, y = subjects.make_text(800, seed=1)
    assert tokens.shape == (800, subjects.SEQ_LEN) and tokens.dtype == np.int64
    assert 0 <= tokens.min() and tokens.max() < subjects.VOCAB
    assert np.bincount(y).tolist() == [800 // subjects.N_TOPICS] * subjects.N_TOPICS
    bags = np.zeros((800, subjects.VOCAB))
    np.add.at(bags, (np.repeat(np.arange(800), subjects.SEQ_LEN), tokens.ravel()), 1.0)
    test_tokens, test_y = subjects.make_text(400, seed=2)
    test_bags = np.zeros((400, subjects.VOCAB))
    np.add.at(test_bags, (np.repeat(np.arange(400), subjects.SEQ_LEN), test_tokens.ravel()), 1.0)
    accuracy = MultinomialNB().fit(bags, y).score(test_bags, test_y)
    assert 0.6 < accuracy < 1.0  # learnable from the keywords, but neighbouring topics overlap


@pytest.mark.parametrize("kind", ["symmetric", "class-conditional"])
def test_record_run_writes_the_long_run_and_its_snapshot(tmp_path, kind):
    paths = subjects.record_run("tabular", kind, 0.2, 0, 3, tmp_path, snapshots=[2])
    assert sorted(paths) == [2, 3]
    long, short = RunStore(paths[3]), RunStore(paths[2])
    assert long.epochs == [0, 1, 2] and short.epochs == [0, 1]
    assert abs(float(long.noise_mask.mean()) - 0.2) < 0.02
    np.testing.assert_array_equal(long.labels, short.labels)
    # the snapshot is the long run's first epochs, not a second training
    np.testing.assert_array_equal(long.logits(1), short.logits(1))
    assert long.train_margin(2) is not None
    assert long.manifest["subject"]["model"] == "mlp"


def test_record_pool_run_trains_on_the_labelled_share_and_records_the_pool(tmp_path):
    path = subjects.record_pool_run("tabular", 0.1, 0, 2, tmp_path)
    store = RunStore(path)
    assert store.n_samples + store.n_pool == subjects.N_TRAIN and abs(store.n_samples - 300) <= 3
    assert store.logits(1, "pool").shape == (store.n_pool, 6)
    assert store.pool_true_labels is not None and store.n_heldout == subjects.N_TEST
    full = np.bincount(np.concatenate([store.labels, store.pool_true_labels]))
    np.testing.assert_array_equal(np.bincount(store.labels), np.round(0.1 * full))  # stratified
