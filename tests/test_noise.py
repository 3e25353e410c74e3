"""Tests of timetravel.noise: label-noise injection with known ground truth."""

from __future__ import annotations

import json

import numpy as np
import pytest

from timetravel.errors import NoiseError, TimetravelError
from timetravel.noise import (
    class_similarity,
    inject_noise,
    make_transition_matrix,
    parse_noise_spec,
    validate_transition_matrix,
)


def _labels(n: int = 1000, k: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, size=n)


# --------------------------------------------------------------------------- spec parsing


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("symmetric:0.2", ("symmetric", 0.2)),
        ("pairflip:0.1", ("pairflip", 0.1)),
        (" Symmetric:1 ", ("symmetric", 1.0)),
        ("matrix:0.3", ("matrix", 0.3)),
        ("class-conditional:0.3", ("matrix", 0.3)),
        ("none", ("none", 0.0)),
        ("none:0", ("none", 0.0)),
        ("pairflip:0", ("pairflip", 0.0)),
    ],
)
def test_parse_noise_spec(spec, expected):
    assert parse_noise_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("pairflip:1.5", "noise spec 'pairflip:1.5': rate must be in [0, 1], got 1.5"),
        ("symmetric:-0.1", "rate must be in [0, 1], got -0.1"),
        ("symmetric:nan", "rate must be in [0, 1], got nan"),
        ("foo:0.1", "unknown noise kind 'foo'; expected one of none, symmetric, pairflip, matrix"),
        ("symmetric", "noise spec 'symmetric' has no rate; expected 'symmetric:RATE', e.g. 'symmetric:0.2'"),
        ("symmetric:", "has no rate"),
        ("symmetric:abc", "noise spec 'symmetric:abc': rate 'abc' is not a number"),
        ("none:0.1", "'none' takes no rate"),
        ("", "noise spec must be a string like 'symmetric:0.2'"),
    ],
)
def test_parse_noise_spec_errors(spec, message):
    with pytest.raises(NoiseError) as info:
        parse_noise_spec(spec)
    assert message in str(info.value)
    assert isinstance(info.value, (TimetravelError, ValueError))


# --------------------------------------------------------------------------- symmetric and pairflip


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
@pytest.mark.parametrize(
    ("n", "rate", "expected"), [(1000, 0.2, 200), (997, 0.37, 369), (10, 0.25, 3), (50, 0.0, 0), (40, 1.0, 40)]
)
def test_exact_number_of_flips(kind, n, rate, expected):
    y = _labels(n)
    noisy = inject_noise(y, 10, kind, rate, seed=0)
    assert noisy.mask.sum() == expected
    assert noisy.info["n_flipped"] == expected and noisy.info["rate_actual"] == expected / n
    np.testing.assert_array_equal(noisy.true_labels, y)
    np.testing.assert_array_equal(noisy.mask, noisy.labels != noisy.true_labels)
    # samples outside the mask keep their label; none inside keeps it
    np.testing.assert_array_equal(noisy.labels[~noisy.mask], y[~noisy.mask])
    assert noisy.labels.dtype == np.int64 and noisy.labels.min() >= 0 and noisy.labels.max() < 10


def test_symmetric_draws_uniformly_among_the_other_classes():
    k = 5
    y = _labels(60000, k)
    noisy = inject_noise(y, k, "symmetric", 0.5, seed=1)
    shift = (noisy.labels[noisy.mask] - y[noisy.mask]) % k
    counts = np.bincount(shift, minlength=k)
    assert counts[0] == 0
    expected = noisy.mask.sum() / (k - 1)
    assert np.abs(counts[1:] - expected).max() < 0.03 * expected
    # which samples flip does not depend on their class
    per_class = np.array([noisy.mask[y == c].mean() for c in range(k)])
    assert np.abs(per_class - 0.5).max() < 0.02


def test_pairflip_moves_to_the_next_class():
    y = _labels(500, 4)
    noisy = inject_noise(y, 4, "pairflip", 0.3, seed=2)
    np.testing.assert_array_equal(noisy.labels[noisy.mask], (y[noisy.mask] + 1) % 4)


def test_binary_symmetric_flips_to_the_other_class():
    y = np.array([0, 1] * 50)
    noisy = inject_noise(y, 2, "symmetric", 0.2, seed=0)
    np.testing.assert_array_equal(noisy.labels[noisy.mask], 1 - y[noisy.mask])


@pytest.mark.parametrize("kind", ["symmetric", "pairflip", "matrix"])
def test_deterministic_under_seed_and_seeds_differ(kind):
    y = _labels(2000)
    a, b, c = (inject_noise(y, 10, kind, 0.2, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.info == b.info
    assert not np.array_equal(a.labels, c.labels)


def test_info_is_json_serialisable_for_the_manifest():
    y = _labels(100)
    for kind in ("none", "symmetric", "pairflip", "matrix"):
        info = inject_noise(y, 10, kind, 0.0 if kind == "none" else 0.2, seed=3).info
        assert json.loads(json.dumps(info)) == info
        assert {"kind", "rate", "rate_actual", "n_flipped", "seed"} <= info.keys()
        assert info["kind"] == kind and info["seed"] == 3
    assert "matrix" in inject_noise(y, 10, "matrix", 0.2, seed=3).info


def test_none_keeps_labels():
    y = _labels(100)
    for rate in (None, 0, 0.0):
        noisy = inject_noise(y, 10, "none", rate, seed=0)
        np.testing.assert_array_equal(noisy.labels, y)
        assert not noisy.mask.any() and noisy.info["rate_actual"] == 0.0


def test_labels_given_as_list_are_accepted():
    noisy = inject_noise([0, 1, 2, 0, 1, 2], 3, "pairflip", 0.5, seed=0)
    assert noisy.mask.sum() == 3


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((np.zeros(5, int), 2, "nope", 0.1), {}, "unknown noise kind 'nope'"),
        ((np.zeros(5, int), 2, "symmetric", 1.5), {}, "rate must be in [0, 1], got 1.5"),
        ((np.zeros(5, int), 2, "symmetric", None), {}, "kind 'symmetric' needs a rate in [0, 1], got None"),
        ((np.zeros(5, int), 2, "none", 0.2), {}, "kind 'none' takes rate None or 0, got 0.2"),
        ((np.array([0, 1, 3]), 3, "symmetric", 0.1), {}, "labels must lie in [0, 3), got values from 0 to 3"),
        ((np.array([0.0, 1.0]), 2, "symmetric", 0.1), {}, "labels must be a 1-D integer array, got float64"),
        ((np.zeros((2, 2), int), 2, "symmetric", 0.1), {}, "labels must be a 1-D integer array"),
        ((np.zeros(5, int), 1, "symmetric", 0.1), {}, "n_classes must be an integer >= 2, got 1"),
        ((np.zeros(5, int), 2, "symmetric", 0.1), {"seed": -1}, "seed must be a non-negative integer, got -1"),
        ((np.zeros(5, int), 2, "symmetric", 0.1), {"matrix": np.eye(2)}, "only used with kind 'matrix'"),
        ((np.zeros(5, int), 2, "matrix", 0.1), {"matrix": np.eye(2)}, "either a rate (and optional similarity)"),
        ((np.zeros(5, int), 2, "matrix", None), {}, "kind 'matrix' needs a rate"),
    ],
)
def test_inject_noise_errors(args, kwargs, message):
    kwargs = {"seed": 0, **kwargs}
    with pytest.raises(NoiseError) as info:
        inject_noise(*args, **kwargs)
    assert message in str(info.value)


# --------------------------------------------------------------------------- class-conditional (matrix)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.ones((2, 3)) / 3, "transition matrix must be square, got shape (2, 3)"),
        (np.eye(4), "transition matrix is 4 x 4 but n_classes is 3"),
        (np.array([[1.2, -0.2, 0.0], [0, 1, 0], [0, 0, 1]]), "must be non-negative, got -0.2 at row 0, column 1"),
        (np.array([[0.9, 0.0, 0.0], [0, 1, 0], [0, 0, 1]]), "row 0 sums to 0.9"),
        (np.array([[np.nan, 0.5, 0.5], [0, 1, 0], [0, 0, 1]]), "contains NaN or inf"),
        ([["a", "b", "c"]] * 3, "must be a numeric K x K array"),
    ],
)
def test_matrix_validation_errors(matrix, message):
    with pytest.raises(NoiseError) as info:
        validate_transition_matrix(matrix, 3)
    assert message in str(info.value)
    with pytest.raises(NoiseError):
        inject_noise(np.array([0, 1, 2]), 3, "matrix", None, matrix=matrix, seed=0)


def test_matrix_noise_follows_the_matrix_per_class():
    k = 4
    matrix = np.array(
        [
            [0.7, 0.3, 0.0, 0.0],
            [0.0, 0.9, 0.05, 0.05],
            [0.1, 0.1, 0.6, 0.2],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    y = _labels(40000, k, seed=5)
    noisy = inject_noise(y, k, "matrix", None, matrix=matrix, seed=0)
    counts = np.zeros((k, k))
    np.add.at(counts, (y, noisy.labels), 1)
    empirical = counts / counts.sum(axis=1, keepdims=True)
    # exact per-class counts up to rounding: within one sample of the matrix
    np.testing.assert_allclose(empirical, matrix, atol=1.0 / counts.sum(axis=1).min())
    freq = np.bincount(y, minlength=k) / len(y)
    assert noisy.info["rate"] == pytest.approx(float(freq @ (1 - np.diag(matrix))))
    assert noisy.info["rate_actual"] == pytest.approx(noisy.info["rate"], abs=1e-3)
    assert noisy.info["matrix"] == matrix.tolist()


def test_matrix_noise_flips_are_spread_over_samples_at_random():
    y = np.zeros(1000, dtype=np.int64)
    matrix = np.array([[0.5, 0.5], [0.0, 1.0]])
    a = inject_noise(y, 2, "matrix", None, matrix=matrix, seed=0).mask
    # not simply the first half of the class
    assert 0.35 < a[:500].mean() < 0.65


@pytest.mark.parametrize(("k", "rate", "n_targets"), [(10, 0.2, 2), (10, 0.8, 1), (3, 0.4, 2), (2, 0.1, 1)])
def test_make_transition_matrix_is_row_stochastic_with_the_average_rate(k, rate, n_targets):
    matrix = make_transition_matrix(k, rate, seed=1, n_targets=n_targets)
    validate_transition_matrix(matrix, k)
    flip = 1 - np.diag(matrix)
    assert flip.mean() == pytest.approx(rate)
    assert flip.min() >= rate - 0.5 * min(rate, 1 - rate) - 1e-12
    assert flip.max() <= rate + 0.5 * min(rate, 1 - rate) + 1e-12
    off = matrix - np.diag(np.diag(matrix))
    assert ((off > 0).sum(axis=1) == n_targets).all()
    if n_targets == 2:  # the main confusion takes twice the share of the second
        top = np.sort(off, axis=1)[:, -2:]
        np.testing.assert_allclose(top[:, 1], 2 * top[:, 0])


def test_make_transition_matrix_uses_similarity():
    # classes 0 and 1 look alike, 2 and 3 look alike
    centroids = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.0, 5.2]])
    y = np.repeat(np.arange(4), 50)
    x = centroids[y] + np.random.default_rng(0).normal(scale=0.01, size=(200, 2))
    similarity = class_similarity(x, y, 4)
    assert np.isneginf(np.diag(similarity)).all()
    matrix = make_transition_matrix(4, 0.3, seed=0, n_targets=1, similarity=similarity)
    assert [int(np.argmax(matrix[c] - np.diag(np.diag(matrix))[c])) for c in range(4)] == [1, 0, 3, 2]
    noisy = inject_noise(y, 4, "matrix", 0.3, seed=0, similarity=similarity)
    # two targets by default: the most similar class takes two thirds of each class's flips
    for c, partner in enumerate([1, 0, 3, 2]):
        flipped_to = noisy.labels[noisy.mask & (y == c)]
        assert np.bincount(flipped_to, minlength=4).argmax() == partner


def test_make_transition_matrix_errors():
    with pytest.raises(NoiseError, match=r"n_targets must be an integer in \[1, 2\], got 3"):
        make_transition_matrix(3, 0.2, n_targets=3)
    with pytest.raises(NoiseError, match=r"similarity must have shape \(3, 3\)"):
        make_transition_matrix(3, 0.2, similarity=np.zeros((2, 2)))
    with pytest.raises(NoiseError, match=r"rate must be in \[0, 1\], got 2"):
        make_transition_matrix(3, 2)


def test_matrix_kind_builds_a_matrix_from_the_rate():
    y = _labels(20000, 10)
    noisy = inject_noise(y, 10, "class-conditional", 0.25, seed=4)
    assert noisy.info["kind"] == "matrix" and noisy.info["rate"] == 0.25
    np.testing.assert_array_equal(noisy.info["matrix"], make_transition_matrix(10, 0.25, seed=4))
    assert noisy.info["rate_actual"] == pytest.approx(0.25, abs=0.01)
