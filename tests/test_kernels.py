from __future__ import annotations

import math
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from basins import Integration, System, initial_conditions, integrate, vector_field
from basins.kernels import STATUS_CONVERGED, STATUS_MAX_STEPS, STATUS_NONFINITE
from conftest import numpy_field

SYSTEMS = {
    "softmax": System(n_tokens=5, dim=3, beta=1.5, Q={"random_symmetric": 1},
                      K={"random_symmetric": 2}, V={"random_symmetric": 3}),
    "unnormalized": System(n_tokens=4, dim=4, beta=0.7, V={"random_symmetric": 4},
                           weighting="unnormalized"),
    "oja": System(n_tokens=3, dim=2, beta=0.0, V=[[1.0, 0.4], [-0.2, 0.3]], weighting="oja"),
    "nonsymmetric": System(n_tokens=6, dim=3, beta=3.0,
                           V=[[0.2, 1.0, 0.0], [-1.0, 0.1, 0.3], [0.0, 0.5, -0.4]]),
}


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_field_matches_numpy_reference(name):
    system = SYSTEMS[name]
    for state in initial_conditions(0, 0, 5, system.n_tokens, system.dim):
        expected = numpy_field(state, system)
        assert np.allclose(vector_field(system, state), expected, rtol=0, atol=1e-13)


def test_field_is_tangent():
    system = SYSTEMS["softmax"]
    state = initial_conditions(1, 0, 1, system.n_tokens, system.dim)[0]
    field = vector_field(system, state)
    assert np.abs(np.sum(field * state, axis=1)).max() < 1e-14


def test_softmax_survives_large_logits():
    system = System(n_tokens=4, dim=3, beta=1e6)
    state = initial_conditions(2, 0, 1, 4, 3)[0]
    assert np.all(np.isfinite(vector_field(system, state)))


def test_oja_equals_softmax_at_zero_beta():
    state = initial_conditions(3, 0, 1, 4, 3)[0]
    V = [[1.0, 0.2, 0.0], [0.1, -0.5, 0.3], [0.0, 0.0, 0.7]]
    softmax = System(n_tokens=4, dim=3, beta=0.0, V=V)
    oja = System(n_tokens=4, dim=3, beta=0.0, V=V, weighting="oja")
    assert np.allclose(vector_field(softmax, state), vector_field(oja, state), atol=1e-15)


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_token_norms_stay_one(name):
    system = SYSTEMS[name]
    initial = initial_conditions(5, 0, 20, system.n_tokens, system.dim)
    result = integrate(system, Integration(dt=0.05, max_steps=3000, tol=0.0), initial)
    assert np.all(result.status == STATUS_MAX_STEPS)
    norms = np.linalg.norm(result.final_state, axis=-1)
    assert np.abs(norms - 1.0).max() < 1e-12


def _solve(system, initial, dt, horizon):
    steps = round(horizon / dt)
    return integrate(system, Integration(dt=dt, max_steps=steps, tol=0.0), initial).final_state


@pytest.mark.parametrize("name", ["softmax", "nonsymmetric"])
def test_rk4_error_falls_as_dt_to_the_fourth(name):
    system = SYSTEMS[name]
    initial = initial_conditions(7, 0, 4, system.n_tokens, system.dim)
    horizon = 2.0
    reference = _solve(system, initial, 0.2 / 64, horizon)
    errors = [
        np.abs(_solve(system, initial, dt, horizon) - reference).max()
        for dt in (0.2, 0.1, 0.05)
    ]
    orders = [math.log2(errors[k] / errors[k + 1]) for k in range(2)]
    for order in orders:
        assert 3.6 < order < 4.4, f"observed orders {orders}, errors {errors}"


def test_parallel_kernel_equals_serial_kernel(multistable_system):
    initial = initial_conditions(11, 0, 200, 4, 3)
    integration = Integration(dt=0.05, max_steps=4000, tol=1e-7)
    parallel = integrate(multistable_system, integration, initial, parallel=True)
    serial = integrate(multistable_system, integration, initial, parallel=False)
    assert parallel.final_state.tobytes() == serial.final_state.tobytes()
    assert parallel.status.tobytes() == serial.status.tobytes()
    assert parallel.steps.tobytes() == serial.steps.tobytes()


def test_result_of_one_trajectory_is_independent_of_batch(multistable_system):
    initial = initial_conditions(12, 0, 50, 4, 3)
    integration = Integration(dt=0.05, max_steps=4000, tol=1e-7)
    batch = integrate(multistable_system, integration, initial)
    for index in (0, 17, 49):
        alone = integrate(multistable_system, integration, initial[index : index + 1])
        assert alone.final_state[0].tobytes() == batch.final_state[index].tobytes()
        assert alone.steps[0] == batch.steps[index]


def test_thread_count_changes_no_bit(multistable_system):
    initial = initial_conditions(13, 0, 300, 4, 3)
    integration = Integration(dt=0.05, max_steps=4000, tol=1e-7)
    previous = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            results.append(integrate(multistable_system, integration, initial))
    finally:
        numba.set_num_threads(previous)
    for other in results[1:]:
        assert other.final_state.tobytes() == results[0].final_state.tobytes()
        assert other.steps.tobytes() == results[0].steps.tobytes()


def test_statuses_and_step_counts(multistable_system):
    initial = initial_conditions(14, 0, 3, 4, 3)
    initial[1, 2, 0] = np.nan
    initial[2, 0, 1] = np.inf
    capped = integrate(multistable_system, Integration(max_steps=5, tol=1e-7), initial)
    assert capped.status.tolist() == [STATUS_MAX_STEPS, STATUS_NONFINITE, STATUS_NONFINITE]
    assert capped.steps.tolist() == [5, 0, 0]
    assert np.isnan(capped.final_state[1]).any()
    finished = integrate(multistable_system, Integration(max_steps=20000), initial[:1])
    assert finished.status[0] == STATUS_CONVERGED
    speed = np.linalg.norm(vector_field(multistable_system, finished.final_state[0]), axis=1)
    assert speed.max() < 1e-7


def test_convergence_needs_consecutive_checks(multistable_system):
    initial = initial_conditions(15, 0, 1, 4, 3)
    one = integrate(multistable_system, Integration(checks=1), initial)
    three = integrate(multistable_system, Integration(checks=3), initial)
    assert one.status[0] == three.status[0] == STATUS_CONVERGED
    assert three.steps[0] == one.steps[0] + 2


def test_one_token_follows_oja_to_principal_eigenvector():
    V = np.diag([3.0, 2.0, 1.0])
    for weighting in ("softmax", "unnormalized", "oja"):
        system = System(n_tokens=1, dim=3, beta=1.0, V=V, weighting=weighting)
        initial = initial_conditions(16, 0, 50, 1, 3)
        result = integrate(system, Integration(max_steps=20000), initial)
        assert np.all(result.status == STATUS_CONVERGED)
        first = result.final_state[:, 0, 0]
        assert np.allclose(np.abs(first), 1.0, atol=1e-6)
        assert np.array_equal(np.sign(first), np.sign(initial[:, 0, 0]))


def test_relabelling_tokens_permutes_the_result(multistable_system):
    initial = initial_conditions(17, 0, 40, 4, 3)
    permutation = np.array([2, 0, 3, 1])
    integration = Integration(dt=0.05, max_steps=20000, tol=1e-9)
    original = integrate(multistable_system, integration, initial)
    relabelled = integrate(multistable_system, integration, initial[:, permutation])
    assert np.array_equal(original.status, relabelled.status)
    difference = relabelled.final_state - original.final_state[:, permutation]
    assert np.abs(difference).max() < 1e-6


def test_mirror_maps_trajectories_exactly(multistable_system):
    initial = initial_conditions(18, 0, 40, 4, 3)
    integration = Integration(dt=0.05, max_steps=20000)
    forward = integrate(multistable_system, integration, initial)
    mirrored = integrate(multistable_system, integration, -initial)
    assert np.array_equal(mirrored.final_state, -forward.final_state)
    assert np.array_equal(mirrored.steps, forward.steps)


def test_wrong_initial_shape_is_rejected(multistable_system):
    with pytest.raises(ValueError, match=r"expected \(m, 4, 3\)"):
        integrate(multistable_system, Integration(), np.zeros((2, 3, 3)))


def test_serial_kernel_never_shares_the_parallel_cache(tmp_path):
    """In a fresh Numba cache, compiling the serial twin first must not hand its
    machine code to the parallel kernel, which would then run on one thread."""
    script = (
        "import numpy as np\n"
        "from basins import System, Integration, initial_conditions, integrate\n"
        "from basins import kernels\n"
        "system = System(n_tokens=3, dim=3, beta=1.0)\n"
        "initial = initial_conditions(0, 0, 4, 3, 3)\n"
        "integrate(system, Integration(max_steps=10), initial, parallel=False)\n"
        "integrate(system, Integration(max_steps=10), initial, parallel=True)\n"
        "print(sum(kernels.integrate_batch.stats.cache_hits.values()))\n"
    )
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
