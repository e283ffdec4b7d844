"""Reference integrators that the engine is measured against.

- `integrate_straightforward`: the obvious Numba kernel, one trajectory per
  iteration of a ``prange`` loop, its arrays allocated per trajectory, loops over
  tokens and components with run-time bounds and ``math.exp``. It is what the
  engine's kernels would be without their optimisations.
- `integrate_numpy`: RK4 in NumPy, vectorised over initial conditions: every array
  operation acts on all trajectories still running.

Both follow the engine's rules: classical RK4 with step ``dt`` on the ambient
coordinates, every token renormalised after each step, stop when
``max_i ||dx_i/dt|| < tol`` at ``checks`` consecutive steps, at ``max_steps``, or on
a non-finite value. Softmax weighting only.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

import basins
from basins.integrate import Trajectories

STATUS_CONVERGED = 0
STATUS_MAX_STEPS = 1
STATUS_NONFINITE = 2


@njit(cache=True)
def _field(X, A, V, beta, AX, VX, weights, out):
    n, d = X.shape
    for j in range(n):
        for a in range(d):
            AX[j, a] = 0.0
            VX[j, a] = 0.0
            for b in range(d):
                AX[j, a] += A[a, b] * X[j, b]
                VX[j, a] += V[a, b] * X[j, b]
    speed = 0.0
    for i in range(n):
        row_max = -np.inf
        for j in range(n):
            logit = 0.0
            for a in range(d):
                logit += X[i, a] * AX[j, a]
            weights[j] = beta * logit
            row_max = max(row_max, weights[j])
        total = 0.0
        for j in range(n):
            weights[j] = math.exp(weights[j] - row_max)
            total += weights[j]
        radial = 0.0
        for a in range(d):
            y = 0.0
            for j in range(n):
                y += weights[j] / total * VX[j, a]
            out[i, a] = y
            radial += X[i, a] * y
        norm = 0.0
        for a in range(d):
            out[i, a] -= radial * X[i, a]
            norm += out[i, a] ** 2
        if not norm <= speed:
            speed = norm
    return math.sqrt(speed)


@njit(cache=True)
def _stage(X, h, k, out):
    n, d = X.shape
    for i in range(n):
        for a in range(d):
            out[i, a] = X[i, a] + h * k[i, a]


@njit(cache=True)
def _trajectory(X, A, V, beta, dt, max_steps, tol, checks):
    n, d = X.shape
    k1 = np.empty((n, d))
    k2 = np.empty((n, d))
    k3 = np.empty((n, d))
    k4 = np.empty((n, d))
    stage = np.empty((n, d))
    AX = np.empty((n, d))
    VX = np.empty((n, d))
    weights = np.empty(n)

    below = 0
    for step in range(max_steps + 1):
        speed = _field(X, A, V, beta, AX, VX, weights, k1)
        if not np.isfinite(speed):
            return STATUS_NONFINITE, step
        below = below + 1 if speed < tol else 0
        if below >= checks:
            return STATUS_CONVERGED, step
        if step == max_steps:
            break

        _stage(X, 0.5 * dt, k1, stage)
        _field(stage, A, V, beta, AX, VX, weights, k2)
        _stage(X, 0.5 * dt, k2, stage)
        _field(stage, A, V, beta, AX, VX, weights, k3)
        _stage(X, dt, k3, stage)
        _field(stage, A, V, beta, AX, VX, weights, k4)

        for i in range(n):
            norm = 0.0
            for a in range(d):
                increment = k1[i, a] + 2.0 * k2[i, a] + 2.0 * k3[i, a] + k4[i, a]
                X[i, a] += dt / 6.0 * increment
                norm += X[i, a] ** 2
            for a in range(d):
                X[i, a] /= math.sqrt(norm)
    return STATUS_MAX_STEPS, max_steps


@njit(parallel=True, cache=True)
def _integrate_straightforward(X, A, V, beta, dt, max_steps, tol, checks, status, steps):
    for ic in prange(X.shape[0]):
        status[ic], steps[ic] = _trajectory(X[ic], A, V, beta, dt, max_steps, tol, checks)


def _check_softmax(system: basins.System) -> None:
    if system.weighting != "softmax":
        raise ValueError(f"weighting {system.weighting!r} is not implemented here")


def integrate_straightforward(
    system: basins.System, integration: basins.Integration, initial_state: np.ndarray
) -> Trajectories:
    """Integrate with the straightforward Numba kernel; same result type as the engine."""
    _check_softmax(system)
    state = np.array(initial_state, dtype=np.float64, order="C", copy=True)
    status = np.empty(len(state), dtype=np.int8)
    steps = np.empty(len(state), dtype=np.int32)
    _integrate_straightforward(
        state,
        np.ascontiguousarray(system.A),
        np.ascontiguousarray(system.V),
        system.beta,
        integration.dt,
        integration.max_steps,
        integration.tol,
        integration.checks,
        status,
        steps,
    )
    return Trajectories(state, status, steps)


def numpy_field(X: np.ndarray, A: np.ndarray, V: np.ndarray, beta: float) -> np.ndarray:
    """Return the softmax attention field of every state of ``X`` (m, n, d)."""
    logits = beta * np.matmul(X, np.matmul(X, A.T).transpose(0, 2, 1))
    logits -= logits.max(axis=2, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=2, keepdims=True)
    Y = np.matmul(weights, np.matmul(X, V.T))
    radial = np.einsum("mia,mia->mi", X, Y)
    return Y - radial[:, :, None] * X


def integrate_numpy(
    system: basins.System, integration: basins.Integration, initial_state: np.ndarray
) -> Trajectories:
    """Integrate with RK4 in NumPy, vectorised over the trajectories still running."""
    _check_softmax(system)
    A, V, beta, dt = system.A, system.V, system.beta, integration.dt
    final = np.array(initial_state, dtype=np.float64, copy=True)
    m = len(final)
    status = np.full(m, STATUS_MAX_STEPS, dtype=np.int8)
    steps = np.full(m, integration.max_steps, dtype=np.int32)

    # Rows of X, k1 and below belong to the trajectories in `running`.
    running = np.arange(m)
    X = final.copy()
    below = np.zeros(m, dtype=np.int64)
    for step in range(integration.max_steps + 1):
        k1 = numpy_field(X, A, V, beta)
        speed = np.sqrt((k1**2).sum(axis=2)).max(axis=1)
        finite = np.isfinite(speed)
        below = np.where(speed < integration.tol, below + 1, 0)
        converged = below >= integration.checks
        stopped = ~finite | converged
        if step == integration.max_steps:
            stopped[:] = True

        if stopped.any():
            done = running[stopped]
            final[done] = X[stopped]
            steps[done] = step
            codes = np.where(converged, STATUS_CONVERGED, STATUS_MAX_STEPS)
            status[done] = np.where(finite, codes, STATUS_NONFINITE)[stopped]
            keep = ~stopped
            running, X, k1, below = running[keep], X[keep], k1[keep], below[keep]
        if len(running) == 0:
            break

        k2 = numpy_field(X + 0.5 * dt * k1, A, V, beta)
        k3 = numpy_field(X + 0.5 * dt * k2, A, V, beta)
        k4 = numpy_field(X + dt * k3, A, V, beta)
        X = X + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        X /= np.linalg.norm(X, axis=2, keepdims=True)
    return Trajectories(final, status, steps)
