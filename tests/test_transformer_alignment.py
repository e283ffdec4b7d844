"""Leading eigenvalues of value maps, the random baseline and the alignment table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from basins.transformer.alignment import (
    leading_eigenvalue,
    mean_alignment,
    random_baseline,
    value_alignment,
)


def factors_with_spectrum(eigenvalues, dim, seed=0):
    """Factors W_O (dim, r), W_V (r, dim) whose product has the given nonzero spectrum.

    The spectrum is given as a real block matrix ``M`` (r x r): ``W_V W_O = M``.
    """
    rng = np.random.default_rng(seed)
    block = np.array(eigenvalues, dtype=float)
    r = len(block)
    output, _ = np.linalg.qr(rng.standard_normal((dim, r)))
    value = block @ output.T
    return output, value


def test_line_baseline_near_asymptote():
    assert random_baseline(384) == pytest.approx(
        math.sqrt(2 / (math.pi * 384)), rel=2e-3
    )
    assert random_baseline(384) == pytest.approx(0.0407, abs=5e-5)


@pytest.mark.parametrize("k", [1, 2])
def test_baseline_matches_monte_carlo(k):
    dim = 10
    samples = np.random.default_rng(k).standard_normal((200_000, dim))
    samples /= np.linalg.norm(samples, axis=1, keepdims=True)
    estimate = np.mean(np.linalg.norm(samples[:, :k], axis=1))
    assert estimate == pytest.approx(random_baseline(dim, k), abs=3e-3)


def test_real_dominant_eigenvalue():
    output, value = factors_with_spectrum(np.diag([2.0, 0.5, -1.0]), dim=6)
    leading = leading_eigenvalue(output, value)
    assert leading.eigenvalue == pytest.approx(2.0)
    assert not leading.is_complex
    assert leading.dominant
    assert not leading.null_dominated
    assert leading.positive == 2
    V = output @ value
    v1 = leading.basis[:, 0]
    assert np.allclose(V @ v1, 2.0 * v1, atol=1e-12)
    assert leading.flags == ""


def test_complex_leading_pair_gives_a_plane():
    rotation = [[1.0, -0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 0.2]]
    output, value = factors_with_spectrum(rotation, dim=5)
    leading = leading_eigenvalue(output, value)
    assert leading.eigenvalue == pytest.approx(1.0 + 0.5j)
    assert leading.is_complex
    assert leading.basis.shape == (5, 2)
    V = output @ value
    # The plane is invariant under V.
    image = V @ leading.basis
    assert np.allclose(leading.basis @ (leading.basis.T @ image), image, atol=1e-12)
    assert "complex" in leading.flags


def test_non_dominant_eigenvalue_is_flagged():
    output, value = factors_with_spectrum(np.diag([0.3, -2.0]), dim=4)
    leading = leading_eigenvalue(output, value)
    assert leading.eigenvalue == pytest.approx(0.3)
    assert not leading.dominant
    assert leading.largest_modulus == pytest.approx(2.0)
    assert "not dominant" in leading.flags


def test_null_dominated_head_is_reported_not_aligned():
    output, value = factors_with_spectrum(np.diag([-0.3, -2.0]), dim=4)
    leading = leading_eigenvalue(output, value)
    assert leading.null_dominated
    assert leading.basis.shape == (4, 0)
    assert leading.second == pytest.approx(-0.3)
    assert math.isnan(mean_alignment(np.eye(4), leading.basis))
    assert leading.flags == "null-dominated"


def test_full_rank_negative_map_is_not_null_dominated():
    output, value = factors_with_spectrum(np.diag([-0.3, -2.0]), dim=2)
    leading = leading_eigenvalue(output, value)
    assert not leading.null_dominated
    assert leading.eigenvalue == pytest.approx(-0.3)


def test_mean_alignment_of_eigenvector_is_one():
    basis = np.zeros((4, 1))
    basis[2, 0] = 1.0
    states = np.array([[0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert mean_alignment(states, basis) == pytest.approx(0.5)


@pytest.mark.slow
def test_minilm_alignment_table(minilm):
    table = value_alignment(minilm, ["The river runs past the old mill."])
    assert len(table.rows) == 6 * 13
    assert table.n_tokens == 10
    for row in table.rows:
        k = row.leading.basis.shape[1]
        assert row.baseline == pytest.approx(random_baseline(384, max(k, 1)))
        if row.leading.null_dominated:
            assert math.isnan(row.entering)
        else:
            assert 0.0 <= row.entering <= 1.0
            assert 0.0 <= row.leaving <= 1.0
    # Head 2 of layer 2 has only eigenvalues with negative real part besides its
    # null space.
    row = next(r for r in table.rows if (r.layer, r.head) == (2, 2))
    assert row.leading.null_dominated
    layer_row = next(r for r in table.rows if (r.layer, r.head) == (0, None))
    dense = minilm.attention(0).value_map(None)
    assert layer_row.leading.eigenvalue.real == pytest.approx(
        np.linalg.eigvals(dense).real.max(), rel=1e-9
    )
