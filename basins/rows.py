"""Kernel for large systems: one trajectory at a time, vectorised along its rows.

Where `basins.lanes` cannot generate straight-line code (many tokens or
dimensions), one field evaluation is a few matrix products, and this kernel writes
each as loops over a contiguous axis of length ``n_tokens`` or ``dim``, which LLVM
vectorises:

- ``A x_j`` (with ``beta`` folded in) and ``V x_j`` for every token, computed once
  per stage and shared by every row ``i``: cost ``n d^2`` (``n d`` for a diagonal
  ``A``);
- the logits of row ``i``, ``s_ij = x_i . (beta A x_j)``, as dot products, then
  their exponentials together with the polynomial exponential of the lane kernels:
  cost ``n^2 d``;
- ``y_i = sum_j w_ij V x_j``: cost ``n^2 d``.

So one RK4 step costs ``O(n^2 d + n d^2)``. Sums are vectorised too, which the
fast-math flag ``reassoc`` allows: results differ from the scalar kernel's in the
last bits, but not with the batch, the thread count or the chunking. The shift by
the row maximum is skipped under the same condition as in the lane kernels
(`basins.lanes.SHIFT_FREE_LIMIT`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from basins.config import WEIGHTINGS, Integration, System
from basins.intrinsics import add_to_exponent, inline_always, prefer_wide_vectors
from basins.kernels import (
    FLOAT64_MAX,
    STATUS_CONVERGED,
    STATUS_MAX_STEPS,
    STATUS_NONFINITE,
    WEIGHTING_OJA,
    WEIGHTING_SOFTMAX,
)
from basins.lanes import SHIFT_FREE_LIMIT
from basins.lanesource import EXP_CONSTANTS

# Fused multiply-adds and reassociated sums, so that reductions vectorise. No flag
# assumes that values are finite, so NaN and infinity still reach the status test.
FLAGS = {"contract", "reassoc", "nsz", "arcp"}

# Initial conditions per iteration of the parallel loop; each iteration allocates
# its work arrays once.
BLOCK_SIZE = 4

# Entries between consecutive work arrays (576 bytes), see `_work_arrays`.
STAGGER = 72

_EXP = EXP_CONSTANTS["float64"]
LOG2_E = _EXP.log2_e
LN2_HIGH = _EXP.ln2_high
LN2_LOW = _EXP.ln2_low
SHIFTER = _EXP.shifter
EXP_MIN = _EXP.minimum
EXP_MAX = _EXP.maximum
Q0, Q1, Q2, Q3, Q4, Q5, Q6, Q7, Q8, Q9 = _EXP.q


@njit(fastmath={"contract"}, error_model="numpy", cache=True)
def exp(x):
    """exp(x) in plain arithmetic, as in the lane kernels; NaN stays NaN."""
    inline_always()
    x = EXP_MIN if x < EXP_MIN else x
    x = EXP_MAX if x > EXP_MAX else x
    shifted = x * LOG2_E + SHIFTER
    k = shifted - SHIFTER
    r = (x - k * LN2_HIGH) - k * LN2_LOW
    q = ((((((((Q0 * r + Q1) * r + Q2) * r + Q3) * r + Q4) * r + Q5) * r + Q6) * r
          + Q7) * r + Q8) * r + Q9
    return add_to_exponent(1.0 + r * (1.0 + r * q), shifted)


@njit(fastmath=FLAGS, error_model="numpy", cache=True)
def _multiply_transposed(X, MT, out):
    """Write ``X M^T`` into ``out`` (n, d), so row j is ``M x_j``, from ``MT = M^T``."""
    n, d = X.shape
    tail = d - d % 4
    for j in range(n):
        for a in range(d):
            out[j, a] = 0.0
        for b in range(0, tail, 4):
            c0, c1, c2, c3 = X[j, b], X[j, b + 1], X[j, b + 2], X[j, b + 3]
            for a in range(d):
                out[j, a] += (c0 * MT[b, a] + c1 * MT[b + 1, a] + c2 * MT[b + 2, a]
                              + c3 * MT[b + 3, a])
        for b in range(tail, d):
            c0 = X[j, b]
            for a in range(d):
                out[j, a] += c0 * MT[b, a]


@njit(fastmath=FLAGS, error_model="numpy", cache=True)
def _logits(X, AX, i, first, E):
    """Write ``s_ij = x_i . (beta A x_j)`` into ``E[i, j]`` for ``j >= first``.

    Four columns at a time, so that each load of ``x_i`` serves four of them.
    """
    n, d = X.shape
    j = first
    while j + 4 <= n:
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        for a in range(d):
            component = X[i, a]
            s0 += component * AX[j, a]
            s1 += component * AX[j + 1, a]
            s2 += component * AX[j + 2, a]
            s3 += component * AX[j + 3, a]
        E[i, j] = s0
        E[i, j + 1] = s1
        E[i, j + 2] = s2
        E[i, j + 3] = s3
        j += 4
    for k in range(j, n):
        s0 = 0.0
        for a in range(d):
            s0 += X[i, a] * AX[k, a]
        E[i, k] = s0


@njit(fastmath=FLAGS, error_model="numpy", cache=True)
def _weights(X, AX, shift, symmetric, E):
    """Write the unnormalised weights ``exp(s_ij)`` (or ``exp(s_ij - m_i)``) into E.

    With a symmetric ``beta A`` and no shift, ``s_ij = s_ji``: only ``j >= i`` is
    computed, exponentiated, and mirrored.
    """
    n = X.shape[0]
    for i in range(n):
        first = i if symmetric else 0
        _logits(X, AX, i, first, E)
        if shift:
            row_max = E[i, 0]
            for j in range(1, n):
                if E[i, j] > row_max:
                    row_max = E[i, j]
            for j in range(n):
                E[i, j] -= row_max
        # The exponentials of a row together, in one vectorised loop.
        for j in range(first, n):
            E[i, j] = exp(E[i, j])
    if symmetric:
        for i in range(n):
            for j in range(i + 1, n):
                E[j, i] = E[i, j]


@njit(fastmath=FLAGS, error_model="numpy", cache=True)
def field_rows(
    X, AbT, VT, weighting, shift, diagonal, symmetric, AX, VX, E, mean, out
):
    """Write the vector field at ``X`` (n, d) into ``out`` and return the speed.

    ``AbT`` is ``(beta A)^T`` and ``VT`` is ``V^T``; ``diagonal`` and ``symmetric``
    describe ``beta A``. ``AX``, ``VX`` (n, d), ``E`` (n, n) and ``mean`` (d,) are
    scratch space. Returns ``max_i ||dx_i/dt||``, NaN if any component is NaN.
    """
    prefer_wide_vectors()
    n, d = X.shape

    # Row j of X (beta A)^T is beta A x_j, row j of X V^T is V x_j.
    if weighting != WEIGHTING_OJA:
        if diagonal:
            for j in range(n):
                for a in range(d):
                    AX[j, a] = AbT[a, a] * X[j, a]
        else:
            _multiply_transposed(X, AbT, AX)
        _weights(X, AX, shift, symmetric, E)
    _multiply_transposed(X, VT, VX)

    # Constant weights 1/n: y_i is the mean of V x_j for every token.
    inverse_n = 1.0 / n
    if weighting == WEIGHTING_OJA:
        for a in range(d):
            mean[a] = 0.0
        for j in range(n):
            for a in range(d):
                mean[a] += VX[j, a]

    speed_squared = 0.0
    token_tail = n - n % 4
    for i in range(n):
        # y_i = sum_j w_ij V x_j, four rows of V X at a time.
        if weighting == WEIGHTING_OJA:
            for a in range(d):
                out[i, a] = inverse_n * mean[a]
        else:
            total = 0.0
            for j in range(n):
                total += E[i, j]
            scale = 1.0 / total if weighting == WEIGHTING_SOFTMAX else inverse_n
            for a in range(d):
                out[i, a] = 0.0
            for j in range(0, token_tail, 4):
                w0, w1, w2, w3 = E[i, j], E[i, j + 1], E[i, j + 2], E[i, j + 3]
                for a in range(d):
                    out[i, a] += (w0 * VX[j, a] + w1 * VX[j + 1, a] + w2 * VX[j + 2, a]
                                  + w3 * VX[j + 3, a])
            for j in range(token_tail, n):
                w0 = E[i, j]
                for a in range(d):
                    out[i, a] += w0 * VX[j, a]
            for a in range(d):
                out[i, a] *= scale

        # Projection onto the tangent space at x_i.
        radial = 0.0
        for a in range(d):
            radial += X[i, a] * out[i, a]
        norm_squared = 0.0
        for a in range(d):
            tangent = out[i, a] - radial * X[i, a]
            out[i, a] = tangent
            norm_squared += tangent * tangent
        if norm_squared > speed_squared or norm_squared != norm_squared:
            speed_squared = norm_squared
    return math.sqrt(speed_squared)


@njit(fastmath=FLAGS, error_model="numpy", cache=True)
def _stage(X, h, k, out):
    n, d = X.shape
    for i in range(n):
        for a in range(d):
            out[i, a] = X[i, a] + h * k[i, a]


@njit(fastmath=FLAGS, error_model="numpy", cache=True)
def integrate_one_rows(
    X, AbT, VT, weighting, shift, diagonal, symmetric, dt, max_steps, tol, checks, work
):
    """Integrate one trajectory in place until it stops; return (status, steps).

    ``work`` contains the stages, the stage state and the field's scratch space
    (see `_work_arrays`).
    """
    n, d = X.shape
    k1, k2, k3, k4, stage, AX, VX, E, mean = work
    flags = (weighting, shift, diagonal, symmetric)
    half = 0.5 * dt
    sixth = dt / 6.0
    below = 0
    steps = 0
    while True:
        speed = field_rows(X, AbT, VT, *flags, AX, VX, E, mean, k1)
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

        _stage(X, half, k1, stage)
        field_rows(stage, AbT, VT, *flags, AX, VX, E, mean, k2)
        _stage(X, half, k2, stage)
        field_rows(stage, AbT, VT, *flags, AX, VX, E, mean, k3)
        _stage(X, dt, k3, stage)
        field_rows(stage, AbT, VT, *flags, AX, VX, E, mean, k4)
        for i in range(n):
            norm_squared = 0.0
            for a in range(d):
                value = X[i, a] + sixth * (
                    k1[i, a] + 2.0 * k2[i, a] + 2.0 * k3[i, a] + k4[i, a]
                )
                X[i, a] = value
                norm_squared += value * value
            inverse_norm = 1.0 / math.sqrt(norm_squared)
            for a in range(d):
                X[i, a] *= inverse_norm
        steps += 1


@njit(cache=True)
def _work_arrays(n, d):
    """Return k1 .. k4, the stage state, A X, V X (n, d), the weights (n, n) and a
    row of d means.

    They are slices of one buffer, staggered by `STAGGER` entries. Without the
    stagger, every slice would start at the same offset modulo 4 KiB whenever
    ``n * d`` is a multiple of 512, and on Intel cores a load whose address matches
    an earlier store's modulo 4 KiB waits for it (4K aliasing).
    """
    size = n * d + STAGGER
    buffer = np.empty(7 * size + n * n + STAGGER + d)
    arrays = [buffer[k * size : k * size + n * d].reshape(n, d) for k in range(7)]
    weights = buffer[7 * size : 7 * size + n * n].reshape(n, n)
    mean = buffer[7 * size + n * n + STAGGER :]
    return (
        arrays[0], arrays[1], arrays[2], arrays[3], arrays[4], arrays[5], arrays[6],
        weights, mean,
    )


def _integrate_rows(
    X, AbT, VT, weighting, shift, diagonal, symmetric, dt, max_steps, tol, checks,
    status, steps,
):
    """Integrate every initial condition of ``X`` (m, n, d) in place.

    Writes each trajectory's status and number of RK4 steps into ``status`` and
    ``steps`` (m,). Blocks of `BLOCK_SIZE` initial conditions run in parallel.
    """
    m, n, d = X.shape
    n_blocks = (m + BLOCK_SIZE - 1) // BLOCK_SIZE
    for block in prange(n_blocks):
        work = _work_arrays(n, d)
        start = block * BLOCK_SIZE
        stop = min(start + BLOCK_SIZE, m)
        for ic in range(start, stop):
            code, count = integrate_one_rows(
                X[ic], AbT, VT, weighting, shift, diagonal, symmetric, dt, max_steps,
                tol, checks, work,
            )
            status[ic] = code
            steps[ic] = count


integrate_rows = njit(parallel=True, cache=True)(_integrate_rows)
# Numba names a cache entry after the Python function, so a cached serial twin would
# share the parallel kernel\'s entry and one would silently run as the other.
integrate_rows_serial = njit(cache=False)(_integrate_rows)


def integrate_rows_batch(
    system: System, integration: Integration, state: np.ndarray, *, parallel: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate ``state`` (m, n_tokens, dim) in place with the row kernel.

    ``state`` must be C-contiguous float64. Returns the status codes (int8) and the
    step counts (int32).
    """
    m = state.shape[0]
    status = np.empty(m, dtype=np.int8)
    steps = np.empty(m, dtype=np.int32)
    logit_matrix = system.beta * system.A
    diagonal = not np.any(logit_matrix - np.diag(np.diag(logit_matrix)))
    shift = system.weighting == "softmax" and (
        system.beta * float(np.linalg.norm(system.A, 2)) > SHIFT_FREE_LIMIT
    )
    symmetric = not shift and bool(np.array_equal(logit_matrix, logit_matrix.T))
    kernel = integrate_rows if parallel else integrate_rows_serial
    kernel(
        state,
        np.ascontiguousarray(logit_matrix.T),
        np.ascontiguousarray(system.V.T),
        WEIGHTINGS.index(system.weighting),
        shift,
        diagonal,
        symmetric,
        float(integration.dt),
        int(integration.max_steps),
        float(integration.tol),
        int(integration.checks),
        status,
        steps,
    )
    return status, steps
