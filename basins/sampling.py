"""Initial conditions uniform on the product of spheres, indexed by ``(seed, i)``.

Each coordinate is a standard normal from the Box-Muller transform of two uniforms,
and each uniform is the SplitMix64 output mix of a counter derived from the seed, the
initial condition's global index and the coordinate's position. No generator state
is carried from one initial condition to the next, so initial condition ``i`` is the
same whatever chunk, worker or thread computes it, and any range of indices can be
generated on its own.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# SplitMix64 constants (Steele, Lea and Flood, "Fast splittable pseudorandom number
# generators", OOPSLA 2014): the odd increment and the two multipliers of the mix.
GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX_MULTIPLIER_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_MULTIPLIER_2 = np.uint64(0x94D049BB133111EB)
SHIFT_30 = np.uint64(30)
SHIFT_27 = np.uint64(27)
SHIFT_31 = np.uint64(31)

# The top 53 bits of a 64-bit word make a float64 in [0, 1) after scaling by 2^-53.
SHIFT_11 = np.uint64(11)
TWO_POW_MINUS_53 = 2.0**-53


@njit(cache=True)
def _mix(z):
    z = (z ^ (z >> SHIFT_30)) * MIX_MULTIPLIER_1
    z = (z ^ (z >> SHIFT_27)) * MIX_MULTIPLIER_2
    return z ^ (z >> SHIFT_31)


@njit(cache=True)
def _uniform_open(key, counter):
    """Uniform in (0, 1] from the counter's hash, safe as the argument of a log."""
    bits = _mix(key + counter * GOLDEN_GAMMA) >> SHIFT_11
    return (float(bits) + 1.0) * TWO_POW_MINUS_53


@njit(cache=True, parallel=True)
def _fill_initial(seed, start, out):
    count, n, d = out.shape
    key = _mix(np.uint64(seed) + GOLDEN_GAMMA)
    pairs = (n * d + 1) // 2
    stride = np.uint64(2 * pairs)
    for offset in prange(count):
        base = np.uint64(start + offset) * stride
        flat = out[offset].reshape(n * d)
        for p in range(pairs):
            u1 = _uniform_open(key, base + np.uint64(2 * p))
            u2 = _uniform_open(key, base + np.uint64(2 * p + 1))
            radius = math.sqrt(-2.0 * math.log(u1))
            angle = 2.0 * math.pi * u2
            flat[2 * p] = radius * math.cos(angle)
            if 2 * p + 1 < n * d:
                flat[2 * p + 1] = radius * math.sin(angle)
        for i in range(n):
            norm_squared = 0.0
            for a in range(d):
                norm_squared += out[offset, i, a] * out[offset, i, a]
            inverse_norm = 1.0 / math.sqrt(norm_squared)
            for a in range(d):
                out[offset, i, a] *= inverse_norm


def initial_conditions(
    seed: int, start: int, count: int, n_tokens: int, dim: int
) -> np.ndarray:
    """Generate the initial conditions with global indices ``start .. start+count-1``.

    Parameters
    ----------
    seed : int
        Non-negative seed, below 2**63.
    start : int
        Global index of the first initial condition, ``>= 0``.
    count : int
        Number of initial conditions, ``>= 0``.
    n_tokens, dim : int
        Shape of one configuration.

    Returns
    -------
    numpy.ndarray
        Array of shape ``(count, n_tokens, dim)`` whose tokens have unit norm.
        Row ``k`` depends only on ``(seed, start + k, n_tokens, dim)``.
    """
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed = {seed!r} is invalid: expected 0 <= seed < 2**63")
    if start < 0 or count < 0:
        raise ValueError(f"start = {start}, count = {count}: both must be >= 0")
    out = np.empty((count, n_tokens, dim), dtype=np.float64)
    if count:
        _fill_initial(np.int64(seed), np.int64(start), out)
    return out
