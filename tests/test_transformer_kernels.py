"""The multi-head low-rank kernels against the dense single-head kernel and NumPy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from basins import Integration, System, initial_conditions, integrate, vector_field
from basins.kernels import STATUS_CONVERGED
from basins.transformer.dynamics import integrate_heads, uses_reduced_coordinates
from basins.transformer.system import MultiHeadSystem


def random_factors(seed, n_heads, d_head, dim):
    rng = np.random.default_rng(seed)
    return {
        "query": rng.standard_normal((n_heads, d_head, dim)) / dim**0.25,
        "key": rng.standard_normal((n_heads, d_head, dim)) / dim**0.25,
        "value": rng.standard_normal((n_heads, d_head, dim)) / math.sqrt(dim),
        "output": rng.standard_normal((n_heads, dim, d_head)) / math.sqrt(d_head),
    }


def dense_twin(system: MultiHeadSystem) -> System:
    """The single-head system with A = W_Q^T W_K / sqrt(d_head) and V = W_O W_V."""
    A, V = system.head_matrices(0)
    return System(
        n_tokens=system.n_tokens,
        dim=system.dim,
        beta=system.beta,
        Q=np.eye(system.dim),
        K=A,
        V=V,
        weighting=system.weighting,
    )


def numpy_multihead_field(X, system: MultiHeadSystem) -> np.ndarray:
    """The multi-head field from its equation, each head with its own softmax."""
    Y = np.zeros_like(X)
    n = len(X)
    for head in range(system.n_heads):
        A, V = system.head_matrices(head)
        logits = system.beta * X @ A @ X.T
        if system.weighting == "softmax":
            weights = np.exp(logits - logits.max(axis=1, keepdims=True))
            weights /= weights.sum(axis=1, keepdims=True)
        elif system.weighting == "unnormalized":
            weights = np.exp(logits) / n
        else:
            weights = np.full((n, n), 1.0 / n)
        Y += weights @ (X @ V.T)
    return Y - np.sum(X * Y, axis=1, keepdims=True) * X


@pytest.mark.parametrize("weighting", ["softmax", "unnormalized", "oja"])
def test_one_head_field_equals_dense_kernel(weighting):
    system = MultiHeadSystem(
        n_tokens=5, dim=7, beta=1.3, weighting=weighting, **random_factors(1, 1, 2, 7)
    )
    dense = dense_twin(system)
    for state in initial_conditions(4, 0, 6, 5, 7):
        low_rank = vector_field(system, state)
        assert np.abs(low_rank - vector_field(dense, state)).max() < 1e-12


@pytest.mark.parametrize("reduced", [False, True])
def test_one_head_trajectory_equals_dense_kernel(reduced):
    system = MultiHeadSystem(n_tokens=4, dim=6, beta=2.0, **random_factors(2, 1, 3, 6))
    initial = initial_conditions(5, 0, 8, 4, 6)
    settings = Integration(dt=0.05, max_steps=40, tol=0.0)
    low_rank = initial.copy()
    status, steps = integrate_heads(system, settings, low_rank, reduced=reduced)
    dense = integrate(dense_twin(system), settings, initial)
    assert np.array_equal(steps, dense.steps)
    assert np.array_equal(status, dense.status)
    assert np.abs(low_rank - dense.final_state).max() < 1e-12


@pytest.mark.parametrize("weighting", ["softmax", "unnormalized", "oja"])
def test_reduced_coordinates_follow_model_dimension(weighting):
    system = MultiHeadSystem(
        n_tokens=5, dim=12, beta=1.2, weighting=weighting, **random_factors(8, 2, 2, 12)
    )
    assert uses_reduced_coordinates(system)
    initial = initial_conditions(11, 0, 6, 5, 12)
    settings = Integration(dt=0.05, max_steps=300, tol=0.0)
    direct = initial.copy()
    integrate_heads(system, settings, direct, reduced=False)
    reduced = initial.copy()
    integrate_heads(system, settings, reduced, reduced=True)
    assert np.abs(reduced - direct).max() < 1e-11
    assert np.abs(np.linalg.norm(reduced, axis=-1) - 1.0).max() < 1e-12


def test_reduced_coordinates_converge_like_model_dimension():
    system = MultiHeadSystem(
        n_tokens=4, dim=10, beta=1.0, **random_factors(9, 1, 3, 10)
    )
    initial = initial_conditions(12, 0, 12, 4, 10)
    settings = Integration(dt=0.05, max_steps=20000)
    direct = initial.copy()
    direct_status, direct_steps = integrate_heads(
        system, settings, direct, reduced=False
    )
    reduced = initial.copy()
    status, steps = integrate_heads(system, settings, reduced, reduced=True)
    assert np.all(status == STATUS_CONVERGED)
    assert np.array_equal(status, direct_status)
    assert np.abs(steps - direct_steps).max() <= 1
    assert np.abs(reduced - direct).max() < 1e-9


@pytest.mark.parametrize("weighting", ["softmax", "unnormalized", "oja"])
def test_multihead_field_matches_numpy(weighting):
    system = MultiHeadSystem(
        n_tokens=6, dim=8, beta=0.9, weighting=weighting, **random_factors(3, 3, 2, 8)
    )
    for state in initial_conditions(6, 0, 4, 6, 8):
        expected = numpy_multihead_field(state, system)
        assert np.abs(vector_field(system, state) - expected).max() < 1e-13


def test_multihead_field_is_tangent():
    system = MultiHeadSystem(n_tokens=5, dim=8, beta=1.0, **random_factors(4, 4, 2, 8))
    state = initial_conditions(7, 0, 1, 5, 8)[0]
    field = vector_field(system, state)
    assert np.abs(np.sum(field * state, axis=1)).max() < 1e-14


def test_multihead_parallel_equals_serial_bitwise():
    system = MultiHeadSystem(n_tokens=4, dim=6, beta=1.5, **random_factors(5, 2, 3, 6))
    initial = initial_conditions(8, 0, 40, 4, 6)
    settings = Integration(dt=0.05, max_steps=3000)
    parallel = integrate(system, settings, initial, parallel=True)
    serial = integrate(system, settings, initial, parallel=False)
    assert parallel.final_state.tobytes() == serial.final_state.tobytes()
    assert np.array_equal(parallel.steps, serial.steps)
    assert np.array_equal(parallel.status, serial.status)


def test_multihead_result_independent_of_batch():
    system = MultiHeadSystem(n_tokens=4, dim=6, beta=1.5, **random_factors(6, 2, 3, 6))
    initial = initial_conditions(9, 0, 37, 4, 6)
    settings = Integration(dt=0.05, max_steps=3000)
    whole = integrate(system, settings, initial)
    part = integrate(system, settings, initial[20:23])
    assert whole.final_state[20:23].tobytes() == part.final_state.tobytes()


def test_multihead_keeps_unit_norms_and_converges():
    system = MultiHeadSystem(n_tokens=4, dim=6, beta=1.0, **random_factors(7, 2, 3, 6))
    initial = initial_conditions(10, 0, 20, 4, 6)
    result = integrate(system, Integration(dt=0.05, max_steps=20000), initial)
    norms = np.linalg.norm(result.final_state, axis=-1)
    assert np.abs(norms - 1.0).max() < 1e-12
    assert np.all(result.status == STATUS_CONVERGED)
