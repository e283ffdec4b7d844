from __future__ import annotations

import math

import numpy as np
import pytest

from basins import System, vector_field
from basins.stability import (
    VERDICT_NAMES,
    attention_matrix,
    certify,
    finite_difference_jacobian,
    newton,
    numerical_rank,
    speed,
    speed_tolerance,
    symmetry_directions,
    tangent_bases,
    tangent_jacobian,
)

WEIGHTINGS = ("softmax", "unnormalized", "oja")
E1, E2, E3 = np.eye(3)
TETRAHEDRON = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(
    3
)


def random_system(
    weighting: str, seed: int, *, n_tokens: int = 5, dim: int = 4
) -> System:
    """Random Q, K and a non-symmetric V with real, distinct eigenvalues."""
    generator = np.random.default_rng(seed)
    basis = generator.standard_normal((dim, dim))
    spectrum = np.linspace(1.5, -1.2, dim) + 0.1 * generator.standard_normal(dim)
    V = basis @ np.diag(spectrum) @ np.linalg.inv(basis)
    Q = generator.standard_normal((dim, dim)) / 2
    K = generator.standard_normal((dim, dim)) / 2
    return System(
        n_tokens=n_tokens, dim=dim, beta=0.8, Q=Q, K=K, V=V, weighting=weighting
    )


def random_state(seed: int, n_tokens: int, dim: int) -> np.ndarray:
    state = np.random.default_rng(seed).standard_normal((n_tokens, dim))
    return state / np.linalg.norm(state, axis=1, keepdims=True)


def test_tangent_bases_are_orthonormal_and_tangent():
    state = random_state(0, 6, 5)
    bases = tangent_bases(state)
    assert bases.shape == (6, 5, 4)
    for token, basis in zip(state, bases):
        assert np.allclose(basis.T @ basis, np.eye(4), atol=1e-12)
        assert np.allclose(token @ basis, 0.0, atol=1e-12)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_analytic_jacobian_matches_central_differences(weighting, seed):
    system = random_system(weighting, seed)
    state = random_state(seed + 10, system.n_tokens, system.dim)
    bases = tangent_bases(state)
    analytic = tangent_jacobian(system, state, bases)
    numeric = finite_difference_jacobian(system, state, bases)
    scale = np.abs(analytic).max()
    assert analytic.shape == (5 * 3, 5 * 3)
    assert np.abs(analytic - numeric).max() <= 1e-7 * scale


def test_analytic_jacobian_at_large_beta_matches_differences():
    """Peaked softmax weights: the weight derivatives dominate the Jacobian."""
    system = System(
        n_tokens=4,
        dim=3,
        beta=6.0,
        K={"diagonal": [1.0, 0.5, -3.0]},
        V={"diagonal": [1.0, 0.5, -3.0]},
    )
    state = random_state(5, 4, 3)
    bases = tangent_bases(state)
    analytic = tangent_jacobian(system, state, bases)
    numeric = finite_difference_jacobian(system, state, bases)
    assert np.abs(analytic - numeric).max() <= 1e-6 * np.abs(analytic).max()


def consensus_oracle(system: System, vector: np.ndarray, value: float) -> np.ndarray:
    """Rates lambda_k - lambda_p and -lambda_p ((n-1)(d-1) times), with the
    exp(beta alpha) speed factor of the unnormalized weighting."""
    others = np.delete(
        np.linalg.eigvals(system.V).real,
        np.argmin(np.abs(np.linalg.eigvals(system.V) - value)),
    )
    n, d = system.n_tokens, system.dim
    rates = np.concatenate([others - value, np.full((n - 1) * (d - 1), -value)])
    if system.weighting == "unnormalized":
        rates = rates * math.exp(system.beta * float(vector @ system.A @ vector))
    return np.sort(rates)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("seed", [4, 5])
def test_consensus_rates_match_the_analytic_formula(weighting, seed):
    system = random_system(weighting, seed)
    assert np.abs(system.V - system.V.T).max() > 0.1
    values, vectors = np.linalg.eig(system.V)
    assert np.all(np.abs(values.imag) == 0.0)
    for p in range(system.dim):
        vector = vectors[:, p].real / np.linalg.norm(vectors[:, p].real)
        certificate = certify(system, np.tile(vector, (system.n_tokens, 1)))
        assert np.abs(certificate.rates.imag).max() <= 1e-9
        expected = consensus_oracle(system, vector, values[p].real)
        assert np.abs(np.sort(certificate.rates.real) - expected).max() <= 1e-6
        positive = int(np.sum(expected > 0))
        assert certificate.unstable_directions == positive
        assert certificate.verdict == ("unstable" if positive else "stable")


def test_unnormalized_rates_are_the_softmax_rates_times_the_factor():
    softmax = random_system("softmax", 6)
    unnormalized = random_system("unnormalized", 6)
    vector = np.linalg.eig(softmax.V)[1][:, 0].real
    vector /= np.linalg.norm(vector)
    state = np.tile(vector, (softmax.n_tokens, 1))
    factor = math.exp(softmax.beta * float(vector @ softmax.A @ vector))
    assert factor != pytest.approx(1.0)
    scaled = np.sort(certify(softmax, state).rates.real) * factor
    assert (
        np.abs(np.sort(certify(unnormalized, state).rates.real) - scaled).max() <= 1e-9
    )


@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("split", [1, 2, 3])
def test_bipartite_rates_come_from_blocks_mixing_the_groups(weighting, split):
    """With tokens at +-v, block (i, k) is w_ik B^T V B - delta_ik (x_i^T y_i) I, so
    the rates are the eigenvalues of lambda_k W - diag(x_i^T y_i) over the other
    eigenvalues lambda_k of V."""
    system = System(
        n_tokens=4,
        dim=3,
        beta=1.3,
        Q={"diagonal": [1.0, 2.0, 0.5]},
        K={"diagonal": [0.7, -1.0, 1.5]},
        V={"diagonal": [1.0, 0.5, -3.0]},
        weighting=weighting,
    )
    state = np.array([E3] * split + [-E3] * (4 - split))
    weights = attention_matrix(system, state)
    radial = np.sum(state * (weights @ state @ system.V.T), axis=1)
    expected = np.concatenate(
        [np.linalg.eigvals(value * weights - np.diag(radial)) for value in (1.0, 0.5)]
    )
    rates = certify(system, state).rates
    assert np.abs(np.sort_complex(rates) - np.sort_complex(expected)).max() <= 1e-9


@pytest.mark.parametrize(
    ("state", "verdict"),
    [
        (np.array([E1] * 4), "stable"),
        (np.array([E1, E1, -E1, -E1]), "stable"),
        (np.array([E1, E1, E1, -E1]), "stable"),
        (np.array([E3, E3, -E3, -E3]), "stable"),
        (np.array([E3, E3, E3, -E3]), "stable"),
        (np.array([-E3, -E3, -E3, E3]), "stable"),
        (np.array([E2] * 4), "unstable"),
        (np.array([E3] * 4), "unstable"),
    ],
)
def test_multistable_verdicts(multistable_system, state, verdict):
    assert certify(multistable_system, state).verdict == verdict


def test_saddles_report_their_unstable_directions(multistable_system):
    # lambda = (1, 0.5, -3): on e2 one rate (1 - 0.5) is positive; on e3 two
    # (1 + 3, 0.5 + 3) plus the six rates -lambda_3 = 3 of the tokens moving apart.
    assert certify(multistable_system, np.array([E2] * 4)).unstable_directions == 1
    assert certify(multistable_system, np.array([E3] * 4)).unstable_directions == 8


@pytest.mark.parametrize(
    ("n_tokens", "dim", "state", "orbit"),
    [
        (4, 3, TETRAHEDRON, 3),
        (6, 3, np.concatenate([np.eye(3), -np.eye(3)]), 3),
        (
            5,
            2,
            np.stack(
                [
                    np.cos(2 * np.pi * np.arange(5) / 5),
                    np.sin(2 * np.pi * np.arange(5) / 5),
                ],
                axis=1,
            ),
            1,
        ),
    ],
)
def test_polytopes_are_stable_modulo_rotations(n_tokens, dim, state, orbit):
    system = System(
        n_tokens=n_tokens, dim=dim, beta=1.0, V={"identity": True, "scale": -1.0}
    )
    certificate = certify(system, state)
    assert certificate.verdict == "stable modulo symmetry"
    assert certificate.symmetry_directions == orbit
    assert len(certificate.rates) == n_tokens * (dim - 1) - orbit
    assert certificate.max_real < -0.05


def test_symmetry_directions_are_in_the_kernel():
    system = System(n_tokens=4, dim=3, beta=1.0, V={"identity": True, "scale": -1.0})
    bases = tangent_bases(TETRAHEDRON)
    orbit = symmetry_directions(system, TETRAHEDRON, bases)
    assert orbit.shape == (8, 3)
    assert np.allclose(orbit.T @ orbit, np.eye(3), atol=1e-12)
    assert np.abs(tangent_jacobian(system, TETRAHEDRON, bases) @ orbit).max() <= 1e-12


def test_consensus_with_full_rotation_symmetry():
    """V = A = I: every rotation is a symmetry; a consensus point is fixed by the
    rotations about it, so its orbit has dimension d - 1 = 2."""
    system = System(n_tokens=8, dim=3, beta=1.0)
    certificate = certify(system, np.array([E2] * 8))
    assert certificate.verdict == "stable modulo symmetry"
    assert certificate.symmetry_directions == 2
    assert np.allclose(certificate.rates.real, -1.0)


def test_zero_rate_without_symmetry_is_marginal():
    """V = diag(1, 1, -3) with A = diag(1, 2, 3): the repeated top eigenvalue gives a
    zero rate at consensus on e1 that no rotation explains, because A breaks it."""
    system = System(
        n_tokens=3,
        dim=3,
        beta=1.0,
        K={"diagonal": [1.0, 2.0, 3.0]},
        V={"diagonal": [1.0, 1.0, -3.0]},
    )
    certificate = certify(system, np.array([E1] * 3))
    assert certificate.symmetry_directions == 0
    assert certificate.verdict == "marginal"
    assert certificate.unstable_directions == 0
    assert np.sum(np.abs(certificate.rates.real) <= certificate.zero_tol) == 1


def test_finite_differences_give_the_same_certificate(multistable_system):
    state = np.array([E3, E3, E3, -E3])
    analytic = certify(multistable_system, state)
    numeric = certify(multistable_system, state, method="finite_difference")
    assert numeric.verdict == analytic.verdict
    assert (
        np.abs(np.sort(numeric.rates.real) - np.sort(analytic.rates.real)).max() <= 1e-6
    )


def test_unknown_method_is_rejected(multistable_system):
    with pytest.raises(ValueError, match="method = 'secant' is invalid"):
        certify(multistable_system, np.array([E1] * 4), method="secant")


def test_certificate_polishes_an_approximate_equilibrium(multistable_system):
    exact = np.array([E3, E3, E3, -E3])
    perturbed = exact + 1e-5 * random_state(3, 4, 3)
    perturbed /= np.linalg.norm(perturbed, axis=1, keepdims=True)
    assert speed(multistable_system, perturbed) > 1e-6
    certificate = certify(multistable_system, perturbed)
    assert certificate.speed < speed_tolerance(multistable_system)
    assert np.abs(certificate.state - exact).max() < 1e-12
    reference = certify(multistable_system, exact).rates
    assert np.abs(certificate.rates - reference).max() <= 1e-10


def test_newton_converges_from_a_rough_start(multistable_system):
    start = np.array([E1, E1, -E1, -E1]) + 0.05 * random_state(8, 4, 3)
    state, final_speed = newton(multistable_system, start)
    assert final_speed < speed_tolerance(multistable_system)
    assert np.allclose(np.linalg.norm(state, axis=1), 1.0)
    assert np.abs(vector_field(multistable_system, state)).max() < 1e-10


def test_large_state_spaces_are_left_unchecked(multistable_system):
    certificate = certify(multistable_system, np.array([E1] * 4), max_dimension=7)
    assert certificate.verdict == "unchecked"
    assert certificate.code == -1
    assert len(certificate.rates) == 0
    assert not certificate.is_stable


def test_verdict_codes_follow_the_names(multistable_system):
    stable = certify(multistable_system, np.array([E1] * 4))
    unstable = certify(multistable_system, np.array([E2] * 4))
    assert VERDICT_NAMES[stable.code] == "stable"
    assert VERDICT_NAMES[unstable.code] == "unstable"
    assert stable.is_stable
    assert not unstable.is_stable


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_attention_rank_is_at_most_the_number_of_clusters(weighting):
    system = System(
        n_tokens=6,
        dim=3,
        beta=2.0,
        Q={"diagonal": [1.0, 2.0, 0.5]},
        V={"diagonal": [1.0, 0.5, -3.0]},
        weighting=weighting,
    )
    clustered = np.array([E1, E1, E1, -E1, E2, E2])
    weights = attention_matrix(system, clustered)
    assert numerical_rank(weights) <= 3
    assert numerical_rank(attention_matrix(system, np.array([E3] * 6))) == 1
    if weighting == "softmax":
        assert np.allclose(weights.sum(axis=1), 1.0)


def test_numerical_rank_of_special_matrices():
    assert numerical_rank(np.zeros((3, 3))) == 0
    assert numerical_rank(np.eye(4)) == 4
    assert numerical_rank(np.ones((4, 4)) / 4) == 1


def test_polishing_never_jumps_to_another_equilibrium(multistable_system):
    """A state far from any equilibrium is certified as it is, with its speed."""
    start = np.array([E1, E2, E3, -E1]) + 0.1
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    refined, refined_speed = newton(multistable_system, start)
    assert refined_speed < speed_tolerance(multistable_system)
    assert np.linalg.norm(refined - start, axis=1).max() > 0.5
    certificate = certify(multistable_system, start)
    assert np.array_equal(certificate.state, start)
    assert certificate.speed == pytest.approx(speed(multistable_system, start))


def head_system(n_heads: int, dim: int, n_tokens: int, seed: int, weighting="softmax"):
    """Random heads of size 3 in ``dim`` dimensions, with a symmetric ``sum_h V_h``."""
    from basins.transformer.system import MultiHeadSystem

    rng = np.random.default_rng(seed)
    value = rng.normal(size=(n_heads, 3, dim)) / math.sqrt(dim)
    return MultiHeadSystem(
        n_tokens=n_tokens,
        dim=dim,
        beta=1.5,
        weighting=weighting,
        query=rng.normal(size=(n_heads, 3, dim)),
        key=rng.normal(size=(n_heads, 3, dim)),
        value=value,
        output=np.transpose(value, (0, 2, 1)).copy(),
    )


def settled_consensus(system, direction, seed=0, steps=4000):
    """Tokens near ``direction``, moved by explicit Euler steps towards equilibrium."""
    rng = np.random.default_rng(seed)
    state = direction + 1e-3 * rng.normal(size=(system.n_tokens, system.dim))
    for _ in range(steps):
        state = state + 0.05 * vector_field(system, state)
        state /= np.linalg.norm(state, axis=1, keepdims=True)
    return state


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_multi_head_jacobian(weighting):
    """Each head has its own weights, so the Jacobian is the sum of the heads'."""
    system = head_system(n_heads=3, dim=10, n_tokens=4, seed=2, weighting=weighting)
    state = np.random.default_rng(3).normal(size=(4, 10))
    state /= np.linalg.norm(state, axis=1, keepdims=True)
    analytic = tangent_jacobian(system, state)
    numeric = finite_difference_jacobian(system, state)
    assert np.abs(analytic - numeric).max() < 1e-7 * np.abs(analytic).max()


@pytest.mark.parametrize(
    ("n_heads", "eigenvector", "verdict"),
    [(1, -1, "stable"), (1, 0, "unstable"), (2, -1, "stable")],
)
def test_reduced_certificate_matches_dense(n_heads, eigenvector, verdict):
    """Above the size limit, low-rank heads are certified on their invariant
    subspace; the rates and the verdict are those of the dense problem. Consensus
    on the leading eigenvector of V is stable. Consensus on a null vector of V is
    an equilibrium, and unstable."""
    system = head_system(n_heads=n_heads, dim=40, n_tokens=4, seed=n_heads)
    direction = np.linalg.eigh(system.V)[1][:, eigenvector]
    if verdict == "stable":
        state = settled_consensus(system, direction)
    else:
        state = np.tile(direction, (4, 1))
    dense = certify(system, state)
    reduced = certify(system, state, max_dimension=dense.rates.size // 2)
    assert dense.verdict == verdict
    assert reduced.verdict == verdict
    assert reduced.unstable_directions == dense.unstable_directions
    assert reduced.rates.size == dense.rates.size == 4 * 39
    assert np.allclose(
        np.sort_complex(reduced.rates), np.sort_complex(dense.rates), atol=1e-8
    )
    assert np.abs(reduced.state - dense.state).max() < 1e-9


def test_oversized_reduction_is_unchecked():
    system = head_system(n_heads=1, dim=40, n_tokens=4, seed=1)
    state = settled_consensus(system, np.linalg.eigh(system.V)[1][:, -1])
    assert certify(system, state, max_dimension=20).verdict == "unchecked"
