"""Checked entry points to the multi-head kernels; `basins.integrate` routes here."""

from __future__ import annotations

import math

import numpy as np

from basins.config import WEIGHTINGS, Integration
from basins.transformer import kernels
from basins.transformer.system import MultiHeadSystem


def _factors(system: MultiHeadSystem) -> tuple[np.ndarray, ...]:
    # The kernels take W_Q,h^T, W_K,h^T, W_V,h^T as (H, d, d_head) and W_O,h^T as
    # (H, d_head, d), with the 1 / sqrt(d_head) of the logits folded into the query.
    query = system.query / math.sqrt(system.d_head)
    return (
        np.ascontiguousarray(query.transpose(0, 2, 1)),
        np.ascontiguousarray(system.key.transpose(0, 2, 1)),
        np.ascontiguousarray(system.value.transpose(0, 2, 1)),
        np.ascontiguousarray(system.output.transpose(0, 2, 1)),
    )


def _reduced_factors(system: MultiHeadSystem) -> tuple[tuple, tuple, int]:
    # W = [W_O,1 ... W_O,H] (d x r) and the stacked W_Q, W_K, W_V (r x d), with the
    # 1 / sqrt(d_head) folded into W_Q; see basins.transformer.kernels.
    r = system.n_heads * system.d_head
    W = system.output.transpose(1, 0, 2).reshape(system.dim, r)
    stacked = [
        system.query.reshape(r, system.dim) / math.sqrt(system.d_head),
        system.key.reshape(r, system.dim),
        system.value.reshape(r, system.dim),
    ]
    projections = (
        np.ascontiguousarray(W.T),
        *(np.ascontiguousarray(M.T) for M in stacked),
    )
    operators = (
        *(np.ascontiguousarray((M @ W).T) for M in stacked),
        np.ascontiguousarray(W.T @ W),
    )
    return projections, operators, system.d_head


def uses_reduced_coordinates(system: MultiHeadSystem) -> bool:
    """Return whether `integrate_heads` integrates ``system`` in reduced coordinates.

    It does when the total head rank ``r = n_heads * d_head`` is at most half the
    dimension, where an evaluation in reduced coordinates, ``O(n r^2)``, costs less
    than one in the model dimension, ``O(n d r)``.
    """
    return 2 * system.n_heads * system.d_head <= system.dim


def integrate_heads(
    system: MultiHeadSystem,
    integration: Integration,
    state: np.ndarray,
    *,
    parallel: bool = True,
    reduced: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate the initial conditions ``state`` (m, n, d) in place.

    ``state`` must be a C-contiguous float64 array of shape ``(m, n_tokens, dim)``,
    as `basins.integrate.integrate` prepares it. Returns the status codes (int8) and
    step counts (int32), shape ``(m,)`` each.

    Systems of low total rank (`uses_reduced_coordinates`) are integrated in the
    coordinates ``x_i = a_i e_i + W c_i`` of `basins.transformer.kernels`, which
    give the same RK4 trajectory up to rounding; the others in the model dimension.
    ``reduced = True`` or ``False`` forces one or the other.
    """
    m = state.shape[0]
    status = np.empty(m, dtype=np.int8)
    steps = np.empty(m, dtype=np.int32)
    if reduced is None:
        reduced = uses_reduced_coordinates(system)
    if reduced:
        if parallel:
            kernel = kernels.reduced_integrate_batch
        else:
            kernel = kernels.reduced_integrate_batch_serial
        factors = _reduced_factors(system)
    else:
        if parallel:
            kernel = kernels.multihead_integrate_batch
        else:
            kernel = kernels.multihead_integrate_batch_serial
        factors = (_factors(system),)
    kernel(
        state,
        *factors,
        float(system.beta),
        WEIGHTINGS.index(system.weighting),
        float(integration.dt),
        int(integration.max_steps),
        float(integration.tol),
        int(integration.checks),
        status,
        steps,
    )
    return status, steps


def heads_field(system: MultiHeadSystem, state: np.ndarray) -> np.ndarray:
    """Evaluate the multi-head field at one C-contiguous ``(n_tokens, dim)`` state."""
    n = state.shape[0]
    out = np.empty_like(state)
    scratch = (np.empty((3, n, system.d_head)), np.empty(system.d_head), np.empty(n))
    kernels.multihead_field(
        state,
        _factors(system),
        float(system.beta),
        WEIGHTINGS.index(system.weighting),
        scratch,
        out,
    )
    return out
