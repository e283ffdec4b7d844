"""Numba kernels for multi-head attention dynamics with low-rank head factors.

Head ``h`` has query, key and value maps ``W_Q,h``, ``W_K,h``, ``W_V,h`` (``d_h x d``)
and an output map ``W_O,h`` (``d x d_h``). The field is

    y_i = sum_h W_O,h sum_j w^h_ij W_V,h x_j,
    w^h_ij = softmax_j(beta (W_Q,h x_i) . (W_K,h x_j)),

projected onto the tangent space of the sphere at ``x_i``. One evaluation costs
``O(n d d_h + n^2 d_h)`` per head: no ``d x d`` product is formed. The kernels take
the factors transposed, so that their innermost loops run over contiguous memory.
The caller folds the ``1 / sqrt(d_h)`` of scaled dot-product attention into the
query factors.

The kernels check nothing; `basins.transformer.dynamics` validates the arrays. As in
`basins.kernels`, every iteration of the parallel loop writes only the rows of its
own initial conditions, so results do not depend on the block or the thread count.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from basins.kernels import (
    BLOCK_SIZE,
    FLOAT64_MAX,
    STATUS_CONVERGED,
    STATUS_MAX_STEPS,
    STATUS_NONFINITE,
    WEIGHTING_OJA,
    WEIGHTING_SOFTMAX,
)


@njit(cache=True)
def _attention_row(QX, KX, i, start, width, beta, weighting, weights):
    """Write the weights ``w_ij`` of token ``i`` for one head into ``weights`` (n,).

    The head's queries and keys are the columns ``start .. start + width - 1`` of
    ``QX`` and ``KX`` (n, *). The weighting codes are those of `basins.kernels`.
    """
    n = QX.shape[0]
    if weighting == WEIGHTING_OJA:
        for j in range(n):
            weights[j] = 1.0 / n
        return

    # Logits s_ij = beta (W_Q x_i) . (W_K x_j) and their row maximum.
    row_max = -np.inf
    for j in range(n):
        logit = 0.0
        for col in range(start, start + width):
            logit += QX[i, col] * KX[j, col]
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


@njit(cache=True)
def multihead_field(X, heads, beta, weighting, scratch, out):
    """Write the multi-head field at ``X`` (n, d) into ``out`` and return the speed.

    ``heads`` is ``(query, key, value, output)``: the transposed factors ``W^T``
    (H, d, d_h) of the first three and ``W_O,h^T`` (H, d_h, d). ``scratch`` is
    ``(projected, z, weights)``, buffers of shapes (3, n, d_h), (d_h,) and (n,).
    """
    query, key, value, output = heads
    projected, z, weights = scratch
    n, d = X.shape
    n_heads, _, d_head = query.shape
    QX = projected[0]
    KX = projected[1]
    VX = projected[2]

    for i in range(n):
        for a in range(d):
            out[i, a] = 0.0

    for h in range(n_heads):
        # W_Q,h x_j, W_K,h x_j and W_V,h x_j once per token. The innermost loop runs
        # over the head's components, which are independent sums, so it vectorises.
        for j in range(n):
            for c in range(d_head):
                QX[j, c] = 0.0
                KX[j, c] = 0.0
                VX[j, c] = 0.0
            for a in range(d):
                x = X[j, a]
                for c in range(d_head):
                    QX[j, c] += query[h, a, c] * x
                    KX[j, c] += key[h, a, c] * x
                    VX[j, c] += value[h, a, c] * x

        for i in range(n):
            _attention_row(QX, KX, i, 0, d_head, beta, weighting, weights)

            # z = sum_j w^h_ij W_V,h x_j in the head space, then y_i += W_O,h z.
            for c in range(d_head):
                z[c] = 0.0
            for j in range(n):
                w = weights[j]
                for c in range(d_head):
                    z[c] += w * VX[j, c]
            for c in range(d_head):
                zc = z[c]
                for a in range(d):
                    out[i, a] += output[h, c, a] * zc

    # Project every y_i onto the tangent space at x_i.
    speed_squared = 0.0
    for i in range(n):
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


@njit(cache=True)
def multihead_rk4_step(X, k1, dt, heads, beta, weighting, work, scratch):
    """Advance ``X`` in place by one RK4 step of the multi-head field and renormalise.

    ``k1`` is the field at ``X``. ``work`` (4, n, d) receives ``k2 .. k4`` and the
    stage.
    """
    n, d = X.shape
    k2 = work[0]
    k3 = work[1]
    k4 = work[2]
    stage = work[3]
    half = 0.5 * dt

    # Second stage, at X + dt/2 k1.
    for i in range(n):
        for a in range(d):
            stage[i, a] = X[i, a] + half * k1[i, a]
    multihead_field(stage, heads, beta, weighting, scratch, k2)

    # Third stage, at X + dt/2 k2.
    for i in range(n):
        for a in range(d):
            stage[i, a] = X[i, a] + half * k2[i, a]
    multihead_field(stage, heads, beta, weighting, scratch, k3)

    # Fourth stage, at X + dt k3.
    for i in range(n):
        for a in range(d):
            stage[i, a] = X[i, a] + dt * k3[i, a]
    multihead_field(stage, heads, beta, weighting, scratch, k4)

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
def multihead_integrate_one(
    X, heads, beta, weighting, dt, max_steps, tol, checks, k1, work, scratch
):
    """Integrate one trajectory in place until it stops; return (status, steps)."""
    below = 0
    steps = 0
    while True:
        speed = multihead_field(X, heads, beta, weighting, scratch, k1)
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
        multihead_rk4_step(X, k1, dt, heads, beta, weighting, work, scratch)
        steps += 1


def _multihead_integrate_batch(
    X, heads, beta, weighting, dt, max_steps, tol, checks, status, steps
):
    """Integrate every initial condition of ``X`` (m, n, d) in place.

    ``heads`` is as for `multihead_field`. Writes each trajectory's status and step
    count into ``status`` and ``steps`` (m,). The loop over blocks of initial
    conditions is the only parallel one.
    """
    m, n, d = X.shape
    d_head = heads[0].shape[2]
    n_blocks = (m + BLOCK_SIZE - 1) // BLOCK_SIZE
    for block in prange(n_blocks):
        k1 = np.empty((n, d))
        work = np.empty((4, n, d))
        scratch = (np.empty((3, n, d_head)), np.empty(d_head), np.empty(n))
        start = block * BLOCK_SIZE
        stop = min(start + BLOCK_SIZE, m)
        for ic in range(start, stop):
            code, count = multihead_integrate_one(
                X[ic],
                heads,
                beta,
                weighting,
                dt,
                max_steps,
                tol,
                checks,
                k1,
                work,
                scratch,
            )
            status[ic] = code
            steps[ic] = count


multihead_integrate_batch = njit(parallel=True, cache=True)(_multihead_integrate_batch)
# Numba names a cache entry after the Python function, so a cached serial twin would
# share the parallel kernel's entry and one would silently run as the other.
multihead_integrate_batch_serial = njit(cache=False)(_multihead_integrate_batch)


# Reduced coordinates. With total head rank r = n_heads * d_head and W = [W_O,1 ...
# W_O,H] (d x r), every y_i lies in the range of W, so a token stays in the span of
# its initial value e_i and that range: x_i = a_i e_i + W c_i with a_i a scalar and
# c_i in R^r. RK4 is linear in the state, so RK4 on S_i = (a_i, c_i) followed by the
# same normalisation gives the trajectory of RK4 on x_i, up to rounding, at a cost of
# O(n r^2 + n^2 d_h) per evaluation instead of O(n d r + n^2 d_h).


@njit(cache=True)
def _add_product(coefficients, matrix_t, out):
    """Add ``matrix @ coefficients`` to ``out``; ``matrix_t`` is the transposed matrix.

    The inner loop runs over ``out``, so the sums are independent and vectorise.
    """
    rows = out.shape[0]
    for s in range(coefficients.shape[0]):
        weight = coefficients[s]
        for row in range(rows):
            out[row] += matrix_t[s, row] * weight


@njit(cache=True)
def _gram_norm_squared(a, c, g, gram, buffer):
    """Return ``||a e + W c||^2 = a^2 + 2 a g.c + c^T G c`` with ``g = W^T e``."""
    r = c.shape[0]
    for row in range(r):
        buffer[row] = 0.0
    _add_product(c, gram, buffer)
    total = a * a
    for row in range(r):
        total += 2.0 * a * g[row] * c[row] + c[row] * buffer[row]
    return total


@njit(cache=True)
def reduced_field(S, model, d_head, beta, weighting, scratch, out):
    """Write the field in reduced coordinates at ``S`` (n, 1 + r) into ``out``.

    ``model`` is ``(q0, k0, v0, g, query_w, key_w, value_w, gram)``: the stacked
    projections ``W_Q e_i``, ``W_K e_i``, ``W_V e_i`` of the initial tokens and
    ``g = W^T e_i`` (n, r each), then ``(W_Q W)^T``, ``(W_K W)^T``, ``(W_V W)^T``
    and ``W^T W`` (r, r each), with the query scaled by ``1 / sqrt(d_head)``.
    ``scratch`` is ``(projected, z, buffer, weights)`` of shapes (3, n, r), (r,),
    (r,) and (n,). Returns the speed ``max_i ||dx_i/dt||`` in the model dimension.
    """
    q0, k0, v0, g, query_w, key_w, value_w, gram = model
    projected, z, buffer, weights = scratch
    n = S.shape[0]
    r = S.shape[1] - 1
    n_heads = r // d_head
    QX = projected[0]
    KX = projected[1]
    VX = projected[2]

    # Projections of every token: a_j (W_Q e_j) + (W_Q W) c_j, and likewise.
    for j in range(n):
        a = S[j, 0]
        for row in range(r):
            QX[j, row] = a * q0[j, row]
            KX[j, row] = a * k0[j, row]
            VX[j, row] = a * v0[j, row]
        c = S[j, 1:]
        _add_product(c, query_w, QX[j])
        _add_product(c, key_w, KX[j])
        _add_product(c, value_w, VX[j])

    speed_squared = 0.0
    for i in range(n):
        # z_i: each head's weighted mean of the values, stacked over heads.
        for h in range(n_heads):
            start = h * d_head
            _attention_row(QX, KX, i, start, d_head, beta, weighting, weights)
            for col in range(start, start + d_head):
                z[col] = 0.0
            for j in range(n):
                w = weights[j]
                for col in range(start, start + d_head):
                    z[col] += w * VX[j, col]

        # The radial part x_i . y_i = (W^T x_i) . z_i with W^T x_i = a_i g_i + G c_i.
        a = S[i, 0]
        for row in range(r):
            buffer[row] = a * g[i, row]
        _add_product(S[i, 1:], gram, buffer)
        radial = 0.0
        for row in range(r):
            radial += buffer[row] * z[row]

        # The tangent field: da_i = -radial a_i, dc_i = z_i - radial c_i.
        out[i, 0] = -radial * a
        for row in range(r):
            out[i, 1 + row] = z[row] - radial * S[i, 1 + row]
        norm_squared = _gram_norm_squared(out[i, 0], out[i, 1:], g[i], gram, buffer)
        if norm_squared < 0.0:
            norm_squared = 0.0  # rounding of a vanishing quadratic form
        if norm_squared > speed_squared or norm_squared != norm_squared:
            speed_squared = norm_squared

    return math.sqrt(speed_squared)


@njit(cache=True)
def _reduced_setup(X, projections, model, S):
    """Fill the per-trajectory part of ``model`` from the initial tokens ``X`` (n, d).

    ``projections`` is ``(W_t, query_t, key_t, value_t)``: ``W^T`` (r, d) and the
    transposed stacked ``W_Q`` (query scaled), ``W_K``, ``W_V`` (d, r each). Sets
    the state ``S`` to ``a = 1, c = 0``.
    """
    W_t, query_t, key_t, value_t = projections
    q0, k0, v0, g = model[0], model[1], model[2], model[3]
    n, d = X.shape
    r = S.shape[1] - 1
    for i in range(n):
        for row in range(r):
            q0[i, row] = 0.0
            k0[i, row] = 0.0
            v0[i, row] = 0.0
            g[i, row] = 0.0
        _add_product(X[i], query_t, q0[i])
        _add_product(X[i], key_t, k0[i])
        _add_product(X[i], value_t, v0[i])
        for a in range(d):
            x = X[i, a]
            for row in range(r):
                g[i, row] += W_t[row, a] * x
        S[i, 0] = 1.0
        for row in range(r):
            S[i, 1 + row] = 0.0


@njit(cache=True)
def reduced_rk4_step(S, k1, dt, model, d_head, beta, weighting, work, scratch):
    """Advance ``S`` in place by one RK4 step in reduced coordinates and renormalise.

    ``k1`` is the field at ``S``. ``work`` (4, n, 1 + r) receives ``k2 .. k4`` and
    the stage. Tokens are normalised in the model dimension, through ``W^T W``.
    """
    n, width = S.shape
    g, gram = model[3], model[7]
    buffer = scratch[2]
    k2 = work[0]
    k3 = work[1]
    k4 = work[2]
    stage = work[3]
    half = 0.5 * dt

    # Second stage, at S + dt/2 k1.
    for i in range(n):
        for col in range(width):
            stage[i, col] = S[i, col] + half * k1[i, col]
    reduced_field(stage, model, d_head, beta, weighting, scratch, k2)

    # Third stage, at S + dt/2 k2.
    for i in range(n):
        for col in range(width):
            stage[i, col] = S[i, col] + half * k2[i, col]
    reduced_field(stage, model, d_head, beta, weighting, scratch, k3)

    # Fourth stage, at S + dt k3.
    for i in range(n):
        for col in range(width):
            stage[i, col] = S[i, col] + dt * k3[i, col]
    reduced_field(stage, model, d_head, beta, weighting, scratch, k4)

    # Combine the stages.
    sixth = dt / 6.0
    for i in range(n):
        for col in range(width):
            increment = k1[i, col] + 2.0 * k2[i, col] + 2.0 * k3[i, col] + k4[i, col]
            S[i, col] += sixth * increment

    # Normalise every token in the model dimension: ||a e + W c|| = 1.
    for i in range(n):
        norm_squared = _gram_norm_squared(S[i, 0], S[i, 1:], g[i], gram, buffer)
        inverse_norm = 1.0 / math.sqrt(norm_squared)
        for col in range(width):
            S[i, col] *= inverse_norm


@njit(cache=True)
def reduced_integrate_one(
    X,
    projections,
    model,
    d_head,
    beta,
    weighting,
    dt,
    max_steps,
    tol,
    checks,
    S,
    k1,
    work,
    scratch,
):
    """Integrate one trajectory from ``X`` (n, d) in reduced coordinates.

    Overwrites ``X`` with the final state and returns (status, steps).
    """
    _reduced_setup(X, projections, model, S)
    below = 0
    steps = 0
    status = STATUS_MAX_STEPS
    while True:
        speed = reduced_field(S, model, d_head, beta, weighting, scratch, k1)
        if not speed <= FLOAT64_MAX:
            status = STATUS_NONFINITE
            break
        if speed < tol:
            below += 1
            if below >= checks:
                status = STATUS_CONVERGED
                break
        else:
            below = 0
        if steps >= max_steps:
            break
        reduced_rk4_step(S, k1, dt, model, d_head, beta, weighting, work, scratch)
        steps += 1

    # Back to the model dimension: x_i = a_i e_i + W c_i.
    W_t = projections[0]
    for i in range(X.shape[0]):
        a = S[i, 0]
        for col in range(X.shape[1]):
            X[i, col] *= a
        _add_product(S[i, 1:], W_t, X[i])
    return status, steps


def _reduced_integrate_batch(
    X,
    projections,
    operators,
    d_head,
    beta,
    weighting,
    dt,
    max_steps,
    tol,
    checks,
    status,
    steps,
):
    """Integrate every initial condition of ``X`` (m, n, d) in reduced coordinates.

    ``projections`` is as for `_reduced_setup` and ``operators`` is ``(query_w,
    key_w, value_w, gram)``, the last four entries of the ``model`` of
    `reduced_field`. Otherwise the contract of `_multihead_integrate_batch`.
    """
    m, n, _ = X.shape
    r = operators[3].shape[0]
    n_blocks = (m + BLOCK_SIZE - 1) // BLOCK_SIZE
    for block in prange(n_blocks):
        S = np.empty((n, r + 1))
        k1 = np.empty((n, r + 1))
        work = np.empty((4, n, r + 1))
        initial = np.empty((4, n, r))
        model = (initial[0], initial[1], initial[2], initial[3]) + operators
        scratch = (np.empty((3, n, r)), np.empty(r), np.empty(r), np.empty(n))
        start = block * BLOCK_SIZE
        stop = min(start + BLOCK_SIZE, m)
        for ic in range(start, stop):
            code, count = reduced_integrate_one(
                X[ic],
                projections,
                model,
                d_head,
                beta,
                weighting,
                dt,
                max_steps,
                tol,
                checks,
                S,
                k1,
                work,
                scratch,
            )
            status[ic] = code
            steps[ic] = count


reduced_integrate_batch = njit(parallel=True, cache=True)(_reduced_integrate_batch)
# Numba names a cache entry after the Python function, so a cached serial twin would
# share the parallel kernel's entry and one would silently run as the other.
reduced_integrate_batch_serial = njit(cache=False)(_reduced_integrate_batch)
