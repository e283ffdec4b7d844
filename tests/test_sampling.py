from __future__ import annotations

import numpy as np
import pytest

from basins import initial_conditions


def test_sample_depends_on_seed_and_index():
    whole = initial_conditions(42, 0, 1000, 5, 4)
    for start, count in ((0, 1), (1, 7), (333, 100), (999, 1)):
        part = initial_conditions(42, start, count, 5, 4)
        assert part.tobytes() == whole[start : start + count].tobytes()


def test_seeds_and_indices_differ():
    first = initial_conditions(1, 0, 100, 3, 3)
    second = initial_conditions(2, 0, 100, 3, 3)
    assert not np.allclose(first, second)
    assert len({row.tobytes() for row in first}) == 100


def test_tokens_are_unit_vectors():
    states = initial_conditions(3, 10**12, 200, 7, 5)
    assert np.abs(np.linalg.norm(states, axis=-1) - 1.0).max() < 1e-15


@pytest.mark.parametrize("dim", [2, 3, 6])
def test_tokens_are_uniform_on_the_sphere(dim):
    tokens = initial_conditions(4, 0, 40000, 1, dim)[:, 0]
    # On the uniform sphere every coordinate has mean 0 and second moment 1/d,
    # and distinct coordinates are uncorrelated.
    standard_error = 1.0 / np.sqrt(len(tokens))
    assert np.abs(tokens.mean(axis=0)).max() < 5 * standard_error
    second = tokens.T @ tokens / len(tokens)
    assert np.abs(np.diag(second) - 1.0 / dim).max() < 5 * standard_error
    off_diagonal = second[~np.eye(dim, dtype=bool)]
    assert np.abs(off_diagonal).max() < 5 * standard_error


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="seed"):
        initial_conditions(-1, 0, 1, 2, 2)
    with pytest.raises(ValueError, match="start"):
        initial_conditions(0, -5, 1, 2, 2)
