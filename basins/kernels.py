"""Numba kernels: the attention vector field, one RK4 step, and batches of trajectories.

The kernels take C-contiguous float64 arrays and check nothing; `basins.integrate`
validates dtype, shape and contiguity before calling them. Buffers are allocated once
per block of initial conditions, outside the step loop, and every iteration of the
parallel loop writes only the rows of its own initial conditions, so the result of one
initial condition does not depend on the block it sits in or on the number of threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# Status codes stored per initial condition; PENDING is the atlas fill value.
STATUS_PENDING = -1
STATUS_CONVERGED = 0
STATUS_MAX_STEPS = 1
STATUS_NONFINITE = 2

# Weighting codes passed to the kernels, in the order of basins.config.WEIGHTINGS.
WEIGHTING_SOFTMAX = 0
WEIGHTING_UNNORMALIZED = 1
WEIGHTING_OJA = 2

# Initial conditions handled by one iteration of the parallel loop; each iteration
# allocates its buffers once, so this amortises the allocation over many trajectories.
BLOCK_SIZE = 16

# Largest finite float64, used to catch NaN and infinity in one comparison.
FLOAT64_MAX = np.finfo(np.float64).max


@njit(cache=True)
def attention_field(X, A, V, beta, weighting, AX, VX, weights, out):
    """Write the vector field at ``X`` (n, d) into ``out`` and return the speed.

    The speed is ``max_i ||dx_i/dt||``. ``AX``, ``VX`` (n, d) and ``weights`` (n,)
    are scratch buffers.
    """
    n, d = X.shape

    # A x_j and V x_j once per token, shared by every row i.
    for j in range(n):
        for a in range(d):
            sum_a = 0.0
            sum_v = 0.0
            for b in range(d):
                sum_a += A[a, b] * X[j, b]
                sum_v += V[a, b] * X[j, b]
            AX[j, a] = sum_a
            VX[j, a] = sum_v

    # The Oja flow has constant weights 1/n, so y_i is the same mean for every i.
    if weighting == WEIGHTING_OJA:
        for j in range(n):
            weights[j] = 1.0 / n

    speed_squared = 0.0
    for i in range(n):
        if weighting != WEIGHTING_OJA:
            # Logits s_ij = beta x_i^T A x_j and their row maximum.
            row_max = -np.inf
            for j in range(n):
                logit = 0.0
                for a in range(d):
                    logit += X[i, a] * AX[j, a]
                logit *= beta
                weights[j] = logit
                if logit > row_max:
                    row_max = logit

            # Softmax shifted by the row maximum, or exp(s_ij) / n unshifted.
            if weighting == WEIGHTING_SOFTMAX:
                total = 0.0
                for j in range(n):
                    weights[j] = math.exp(weights[j] - row_max)
                    total += weights[j]
            else:
                total = float(n)
                for j in range(n):
                    weights[j] = math.exp(weights[j])
            inverse_total = 1.0 / total
            for j in range(n):
                weights[j] *= inverse_total

        # y_i = sum_j w_ij V x_j, then project onto the tangent space at x_i.
        radial = 0.0
        for a in range(d):
            y = 0.0
            for j in range(n):
                y += weights[j] * VX[j, a]
            out[i, a] = y
            radial += X[i, a] * y
        norm_squared = 0.0
        for a in range(d):
            tangent = out[i, a] - radial * X[i, a]
            out[i, a] = tangent
            norm_squared += tangent * tangent
        if norm_squared > speed_squared or norm_squared != norm_squared:
            speed_squared = norm_squared

    return math.sqrt(speed_squared)


@njit(cache=True)
def rk4_step(X, k1, dt, A, V, beta, weighting, work, weights):
    """Advance ``X`` in place by one RK4 step of size ``dt`` and renormalise it.

    ``k1`` holds the field at ``X`` (the first stage, already computed for the
    convergence test). ``work`` (6, n, d) holds the stages ``k2 .. k4``, the stage
    state and the buffers of `attention_field`; ``weights`` (n,) is its weight row.
    """
    n, d = X.shape
    k2 = work[0]
    k3 = work[1]
    k4 = work[2]
    stage = work[3]
    AX = work[4]
    VX = work[5]
    half = 0.5 * dt

    # Second stage, at X + dt/2 k1.
    for i in range(n):
        for a in range(d):
            stage[i, a] = X[i, a] + half * k1[i, a]
    attention_field(stage, A, V, beta, weighting, AX, VX, weights, k2)

    # Third stage, at X + dt/2 k2.
    for i in range(n):
        for a in range(d):
            stage[i, a] = X[i, a] + half * k2[i, a]
    attention_field(stage, A, V, beta, weighting, AX, VX, weights, k3)

    # Fourth stage, at X + dt k3.
    for i in range(n):
        for a in range(d):
            stage[i, a] = X[i, a] + dt * k3[i, a]
    attention_field(stage, A, V, beta, weighting, AX, VX, weights, k4)

    # Combine the stages.
    sixth = dt / 6.0
    for i in range(n):
        for a in range(d):
            X[i, a] += sixth * (k1[i, a] + 2.0 * k2[i, a] + 2.0 * k3[i, a] + k4[i, a])

    # Project every token back onto the unit sphere.
    for i in range(n):
        norm_squared = 0.0
        for a in range(d):
            norm_squared += X[i, a] * X[i, a]
        inverse_norm = 1.0 / math.sqrt(norm_squared)
        for a in range(d):
            X[i, a] *= inverse_norm


@njit(cache=True)
def integrate_one(
    X, A, V, beta, weighting, dt, max_steps, tol, checks, k1, work, weights
):
    """Integrate one trajectory in place until it stops; return (status, steps)."""
    below = 0
    steps = 0
    while True:
        speed = attention_field(X, A, V, beta, weighting, work[4], work[5], weights, k1)
        if not speed <= FLOAT64_MAX:
            return STATUS_NONFINITE, steps
        if speed < tol:
            below += 1
            if below >= checks:
                return STATUS_CONVERGED, steps
        else:
            below = 0
        if steps >= max_steps:
            return STATUS_MAX_STEPS, steps
        rk4_step(X, k1, dt, A, V, beta, weighting, work, weights)
        steps += 1


def _integrate_batch(X, A, V, beta, weighting, dt, max_steps, tol, checks, status, steps):
    """Integrate every initial condition of ``X`` (m, n, d) in place.

    Writes each trajectory's status and number of RK4 steps into ``status`` and
    ``steps`` (m,). The loop over blocks of initial conditions is the only parallel one.
    """
    m, n, d = X.shape
    n_blocks = (m + BLOCK_SIZE - 1) // BLOCK_SIZE
    for block in prange(n_blocks):
        k1 = np.empty((n, d))
        work = np.empty((6, n, d))
        weights = np.empty(n)
        start = block * BLOCK_SIZE
        stop = min(start + BLOCK_SIZE, m)
        for ic in range(start, stop):
            code, count = integrate_one(
                X[ic], A, V, beta, weighting, dt, max_steps, tol, checks, k1, work, weights
            )
            status[ic] = code
            steps[ic] = count


integrate_batch = njit(parallel=True, cache=True)(_integrate_batch)
# Numba names a cache entry after the Python function, so a cached serial twin would
# share the parallel kernel's entry and one would silently run as the other.
integrate_batch_serial = njit(cache=False)(_integrate_batch)
