"""Integration of batches of trajectories: the checked entry point to the kernels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from basins import kernels, lanes, rows
from basins.config import WEIGHTINGS, Integration, System
from basins.errors import ConfigError
from basins.transformer.dynamics import heads_field, integrate_heads
from basins.transformer.system import MultiHeadSystem


@dataclass(frozen=True)
class Trajectories:
    """Outcome of a batch of trajectories.

    Attributes
    ----------
    final_state : numpy.ndarray
        Final states, shape ``(m, n_tokens, dim)``, float64.
    status : numpy.ndarray
        Status codes, shape ``(m,)``, int8: 0 converged, 1 max_steps, 2 nonfinite.
    steps : numpy.ndarray
        Number of RK4 steps taken, shape ``(m,)``, int32.
    """

    final_state: np.ndarray
    status: np.ndarray
    steps: np.ndarray


def select_kernel(system: System, integration: Integration) -> str:
    """Return the kernel that integrates ``system``: ``lanes``, ``rows`` or ``scalar``.

    ``integration.kernel = "auto"`` takes ``lanes`` where it applies, that is where
    the generated step is small enough (`basins.lanes.plan_for`), and ``rows``
    elsewhere. The choice depends on the system and the settings only, never on
    the number of initial conditions, so results do not depend on the chunking.

    Raises
    ------
    ConfigError
        If the requested kernel or precision does not apply to ``system``.
    """
    requested = integration.kernel
    if requested in ("rows", "scalar"):
        return requested
    if lanes.plan_for(system, integration.precision) is not None:
        return "lanes"
    if requested == "auto" and integration.precision == "float64":
        return "rows"
    key, value = (
        ("kernel", requested) if requested == "lanes" else ("precision", "float32")
    )
    raise ConfigError(
        f"integration.{key} = {value!r} is invalid for n_tokens = {system.n_tokens}, "
        f"dim = {system.dim}: the lane kernel, the only one in float32, is generated "
        f"for small systems only (at most {lanes.MAX_FIELD_OPERATIONS} operations per "
        f"field evaluation); use kernel 'auto', 'rows' or 'scalar' in float64"
    )


def integrate(
    system: System,
    integration: Integration,
    initial_state: np.ndarray,
    *,
    parallel: bool = True,
) -> Trajectories:
    """Integrate each initial condition until it converges, fails or hits the cap.

    Parameters
    ----------
    system : System
        The vector field; a `MultiHeadSystem` (such as a head of a model checkpoint)
        runs on the multi-head low-rank kernels.
    integration : Integration
        Step size, step cap and convergence test.
    initial_state : array_like, shape (m, n_tokens, dim)
        Initial conditions. Tokens are used as given; they should have unit norm.
    parallel : bool, optional
        Run the loop over initial conditions on Numba's thread pool (default) or in
        the calling thread. Both give bit-identical results.

    Returns
    -------
    Trajectories
        Final states, statuses and step counts.

    Raises
    ------
    ValueError
        If ``initial_state`` does not have shape ``(m, n_tokens, dim)``.
    ConfigError
        If ``integration.kernel`` or ``integration.precision`` does not apply to
        ``system`` (see `select_kernel`).

    Notes
    -----
    Each step is classical RK4 on the ambient coordinates followed by the
    normalisation of every token. A trajectory has converged once
    ``max_i ||dx_i/dt|| < tol`` at ``checks`` consecutive steps; the field at the
    current state is the first RK4 stage, so the test costs nothing extra. The
    kernel is chosen by `select_kernel`; for one kernel, the result of an initial
    condition does not depend on the other initial conditions of the batch, on
    ``parallel`` or on the number of threads.
    """
    state = np.array(initial_state, dtype=np.float64, order="C", copy=True)
    expected = (system.n_tokens, system.dim)
    if state.ndim != 3 or state.shape[1:] != expected:
        raise ValueError(
            f"initial_state has shape {state.shape}: expected (m, {expected[0]}, "
            f"{expected[1]}) for n_tokens = {expected[0]}, dim = {expected[1]}"
        )
    if isinstance(system, MultiHeadSystem):
        status, steps = integrate_heads(system, integration, state, parallel=parallel)
        return Trajectories(final_state=state, status=status, steps=steps)
    kernel_name = select_kernel(system, integration)
    if kernel_name == "lanes":
        plan = lanes.plan_for(system, integration.precision)
        final, status, steps = lanes.integrate_lanes(
            plan, system, integration, state, parallel=parallel
        )
        return Trajectories(final_state=final, status=status, steps=steps)
    if kernel_name == "rows":
        status, steps = rows.integrate_rows_batch(
            system, integration, state, parallel=parallel
        )
        return Trajectories(final_state=state, status=status, steps=steps)

    m = state.shape[0]
    status = np.empty(m, dtype=np.int8)
    steps = np.empty(m, dtype=np.int32)
    kernel = kernels.integrate_batch if parallel else kernels.integrate_batch_serial
    kernel(
        state,
        np.ascontiguousarray(system.A),
        np.ascontiguousarray(system.V),
        float(system.beta),
        WEIGHTINGS.index(system.weighting),
        float(integration.dt),
        int(integration.max_steps),
        float(integration.tol),
        int(integration.checks),
        status,
        steps,
    )
    return Trajectories(final_state=state, status=status, steps=steps)


def vector_field(system: System, state: np.ndarray) -> np.ndarray:
    """Evaluate the vector field at one configuration.

    Parameters
    ----------
    system : System
        The vector field.
    state : array_like, shape (n_tokens, dim)
        Token positions.

    Returns
    -------
    numpy.ndarray
        ``dx_i/dt`` for every token, shape ``(n_tokens, dim)``.
    """
    state = np.array(state, dtype=np.float64, order="C")
    if state.shape != (system.n_tokens, system.dim):
        raise ValueError(
            f"state has shape {state.shape}: expected ({system.n_tokens}, {system.dim})"
        )
    if isinstance(system, MultiHeadSystem):
        return heads_field(system, state)
    n, d = state.shape
    out = np.empty_like(state)
    kernels.attention_field(
        state,
        np.ascontiguousarray(system.A),
        np.ascontiguousarray(system.V),
        float(system.beta),
        WEIGHTINGS.index(system.weighting),
        np.empty((n, d)),
        np.empty((n, d)),
        np.empty(n),
        out,
    )
    return out
