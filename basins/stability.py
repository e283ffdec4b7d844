"""Stability certificates: the linearised field on the tangent space of the state space.

At an equilibrium ``X`` of ``dx_i/dt = P_{x_i} y_i`` the linearisation is the Jacobian
of the field restricted to the tangent space of ``(S^{d-1})^n``, a real matrix of size
``n (d - 1)``. Its eigenvalues (the rates) decide the verdict:

- ``stable``: every rate has a negative real part;
- ``stable modulo symmetry``: the same, after the zero rates along the orbit of the
  system's continuous symmetry group are set aside;
- ``marginal``: no positive real part, but at least one that counts as zero;
- ``unstable``: at least one positive real part; their number is reported.

A real part counts as zero when its absolute value is at most ``rate_rtol`` times the
largest absolute rate. The Jacobian is analytic (derived below for the three
weightings) or, on request, built from central differences of the vector field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from basins.classify import continuous_symmetries
from basins.config import System
from basins.integrate import vector_field

# Verdict codes, stored per catalog entry; UNCHECKED marks a state space too large for
# a dense eigenvalue problem.
VERDICT_UNCHECKED = -1
VERDICT_STABLE = 0
VERDICT_STABLE_MODULO_SYMMETRY = 1
VERDICT_MARGINAL = 2
VERDICT_UNSTABLE = 3
VERDICT_NAMES = ("stable", "stable modulo symmetry", "marginal", "unstable")
UNCHECKED_NAME = "unchecked"

# A real part within this fraction of the largest absolute rate counts as zero. At a
# state polished by Newton's method the rates are accurate to about 1e-12 relative,
# so this leaves room for defective (Jordan) eigenvalues, whose error grows like the
# square root of the perturbation.
RATE_RTOL = 1e-6

# Symmetry directions whose singular values fall below this fraction of the largest
# one are linearly dependent (the state is fixed by part of the symmetry group).
SYMMETRY_DIRECTION_RTOL = 1e-8

# Singular values of the attention matrix below this fraction of the largest one
# count as zero in its numerical rank.
ATTENTION_RANK_RTOL = 1e-8

# Largest tangent dimension n (d - 1) certified by default. The dense eigenvalue
# problem and Newton's least-squares steps cost time proportional to its cube: about
# a second at 1500 and a minute at 3000 per equilibrium, measured on a shared 2-core
# Xeon virtual machine.
MAX_CERTIFIED_DIMENSION = 1536

# Singular values below this fraction of the largest one do not widen the invariant
# subspace of a reduced certificate (`invariant_subspace`).
INVARIANT_SUBSPACE_RTOL = 1e-12

# Step of the central differences, in radians along each tangent direction.
FINITE_DIFFERENCE_STEP = 1e-5

# Newton's method stops when the speed max_i |dx_i/dt| falls below this multiple of
# the system's rate estimate `System.max_rate`, or after NEWTON_MAX_ITER iterations.
NEWTON_RTOL = 1e-12
NEWTON_MAX_ITER = 60

# Largest tangent step of one Newton iteration, in radians per token.
NEWTON_MAX_STEP = 0.5

# Largest move of a token, in radians, from the state given to `certify` to its
# refinement by Newton's method. A larger move means that Newton's method went to
# another equilibrium, so the given state is certified as it is.
POLISH_MAX_SHIFT = 1e-3


def tangent_bases(state: np.ndarray) -> np.ndarray:
    """Return an orthonormal basis of the tangent space of every token.

    Parameters
    ----------
    state : numpy.ndarray, shape (n_tokens, dim)
        Unit tokens.

    Returns
    -------
    numpy.ndarray, shape (n_tokens, dim, dim - 1)
        Column ``p`` of ``bases[i]`` is a unit vector orthogonal to ``state[i]``.
    """
    _, _, right = np.linalg.svd(np.asarray(state, dtype=np.float64)[:, None, :])
    return np.ascontiguousarray(right[:, 1:, :].transpose(0, 2, 1))


def retract(state: np.ndarray, bases: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Move each token along its tangent step and renormalise it.

    ``step`` has shape ``(n_tokens, dim - 1)`` in the coordinates of ``bases``.
    """
    moved = state + np.einsum("iap,ip->ia", bases, step)
    return moved / np.linalg.norm(moved, axis=1, keepdims=True)


def attention_matrix(system: System, state: np.ndarray) -> np.ndarray:
    """Return the attention weights ``w_ij`` at ``state``, shape ``(n, n)``.

    Rows sum to one for ``softmax``; ``unnormalized`` gives ``exp(s_ij) / n`` and
    ``oja`` the constant ``1 / n``. A system of several heads gives the weights of
    its summed ``A``, and `head_weights` gives each head's own weights.
    """
    return head_weights(system, system.A, state)


def head_weights(system: System, A: np.ndarray, state: np.ndarray) -> np.ndarray:
    """Return the weights ``w_ij`` of a head with attention matrix ``A`` at ``state``."""
    state = np.asarray(state, dtype=np.float64)
    n = len(state)
    if system.weighting == "oja":
        return np.full((n, n), 1.0 / n)
    logits = system.beta * state @ A @ state.T
    if system.weighting == "unnormalized":
        return np.exp(logits) / n
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    return weights / weights.sum(axis=1, keepdims=True)


def heads(system: System) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return ``(A_h, V_h)`` of every head: one pair, unless the system has several.

    Each head has its own weights, and the field is ``P_i sum_h y_i^h``.
    """
    if hasattr(system, "head_matrices"):
        return [system.head_matrices(h) for h in range(system.n_heads)]
    return [(system.A, system.V)]


def numerical_rank(matrix: np.ndarray, rtol: float = ATTENTION_RANK_RTOL) -> int:
    """Return the number of singular values above ``rtol`` times the largest one."""
    singular = np.linalg.svd(matrix, compute_uv=False)
    if singular[0] == 0.0:
        return 0
    return int(np.sum(singular > rtol * singular[0]))


def tangent_residual(
    system: System, state: np.ndarray, bases: np.ndarray
) -> np.ndarray:
    """Return the vector field in the tangent coordinates of ``bases``, flattened."""
    return np.einsum("iap,ia->ip", bases, vector_field(system, state)).ravel()


def tangent_jacobian(
    system: System, state: np.ndarray, bases: np.ndarray | None = None
) -> np.ndarray:
    """Return the analytic Jacobian of the field on the tangent space at ``state``.

    Parameters
    ----------
    system : System
        The vector field.
    state : numpy.ndarray, shape (n_tokens, dim)
        Unit tokens.
    bases : numpy.ndarray, shape (n_tokens, dim, dim - 1), optional
        Orthonormal tangent bases; by default `tangent_bases` of ``state``.

    Returns
    -------
    numpy.ndarray, shape (n_tokens (dim - 1), n_tokens (dim - 1))
        Block ``(i, k)`` is ``B_i^T (d f_i / d x_k) B_k``, with token ``i``'s
        coordinates in rows ``i (dim - 1)`` to ``(i + 1) (dim - 1) - 1``.

    Notes
    -----
    With ``y_i = sum_j w_ij V x_j`` and ``f_i = y_i - (x_i^T y_i) x_i``,

    .. math::

        d f_i = P_i \\, d y_i - x_i y_i^T d x_i - (x_i^T y_i) \\, d x_i.

    Tangent bases satisfy ``B_i^T x_i = 0``, so the middle term drops out and block
    ``(i, k)`` is ``B_i^T G_ik B_k - delta_ik (x_i^T y_i) I`` with
    ``G_ik = d y_i / d x_k``. The logits ``s_ij = beta x_i^T A x_j`` have
    ``d s_ij = beta ((A x_j)^T d x_i + (A^T x_i)^T d x_j)``. For softmax weights
    ``d w_ij = w_ij (d s_ij - sum_l w_il d s_il)``, so that
    ``sum_j d w_ij V x_j = sum_j w_ij d s_ij u_ij`` with ``u_ij = V x_j - y_i``; for
    unnormalized weights ``d w_ij = w_ij d s_ij`` and ``u_ij = V x_j``; Oja weights
    are constant. Hence

    .. math::

        G_{ik} = \\delta_{ik} \\beta \\sum_j w_{ij} u_{ij} (A x_j)^T
                 + \\beta w_{ik} u_{ik} (A^T x_i)^T + w_{ik} V.

    A system of several heads sums ``G_ik`` over its heads, each with its own ``A``,
    ``V`` and weights, and ``y_i`` is the sum of the heads' outputs.
    """
    state = np.asarray(state, dtype=np.float64)
    if bases is None:
        bases = tangent_bases(state)
    n, d = state.shape
    t = d - 1

    # Rows of `frame` are the tangent basis vectors, token by token, so that
    # frame @ M @ frame.T holds every block B_i^T M B_k at once.
    frame = bases.transpose(0, 2, 1).reshape(n * t, d)
    jacobian = np.zeros((n, t, n, t))
    radial = np.zeros(n)
    for A, V in heads(system):
        weights = head_weights(system, A, state)
        values = state @ V.T
        outputs = weights @ values
        radial += np.sum(state * outputs, axis=1)

        # The direct term w_ik B_i^T V B_k, present for every weighting; axes
        # (i, p, k, q).
        jacobian += (frame @ V @ frame.T).reshape(n, t, n, t) * weights[
            :, None, :, None
        ]

        # The response of the weights to the logits, absent for constant weights.
        if system.weighting == "oja" or system.beta == 0.0:
            continue
        # responses[i, p, j] = B_i^T u_ij.
        responses = (frame @ values.T).reshape(n, t, n)
        if system.weighting == "softmax":
            responses = responses - np.einsum("iap,ia->ip", bases, outputs)[:, :, None]
        weighted = system.beta * weights[:, None, :] * responses

        # Logits s_ik through x_k: beta w_ik (B_i^T u_ik) (B_k^T A^T x_i)^T.
        key_gradients = (frame @ (state @ A).T).reshape(n, t, n)
        jacobian += np.einsum("ipk,kqi->ipkq", weighted, key_gradients)

        # Logits s_ij through x_i: beta sum_j w_ij (B_i^T u_ij) (B_i^T A x_j)^T.
        query_gradients = (frame @ (state @ A.T).T).reshape(n, t, n)
        own = weighted @ query_gradients.transpose(0, 2, 1)
        jacobian[np.arange(n), :, np.arange(n), :] += own

    jacobian[np.arange(n), :, np.arange(n), :] -= radial[:, None, None] * np.eye(t)
    return jacobian.reshape(n * t, n * t)


def finite_difference_jacobian(
    system: System,
    state: np.ndarray,
    bases: np.ndarray | None = None,
    *,
    step: float = FINITE_DIFFERENCE_STEP,
) -> np.ndarray:
    """Return the tangent Jacobian at ``state`` from central differences of the field.

    Each column moves one token by ``±step`` radians along one tangent direction and
    reads the field back in the tangent coordinates of ``state``. The result has the
    layout of `tangent_jacobian`; its error is of order ``step^2`` plus the speed at
    ``state`` plus rounding of order ``1e-16 / step``.
    """
    state = np.asarray(state, dtype=np.float64)
    if bases is None:
        bases = tangent_bases(state)
    n, d = state.shape
    size = n * (d - 1)
    jacobian = np.empty((size, size))
    for column in range(size):
        direction = np.zeros(size)
        direction[column] = step
        direction = direction.reshape(n, d - 1)
        forward = tangent_residual(system, retract(state, bases, direction), bases)
        backward = tangent_residual(system, retract(state, bases, -direction), bases)
        jacobian[:, column] = (forward - backward) / (2.0 * step)
    return jacobian


def symmetry_directions(
    system: System,
    state: np.ndarray,
    bases: np.ndarray,
    generators: np.ndarray | None = None,
) -> np.ndarray:
    """Return an orthonormal basis of the tangent directions along the symmetry orbit.

    The directions are ``(B_i^T Omega x_i)_i`` for every skew-symmetric generator
    ``Omega`` of `basins.classify.continuous_symmetries`. At an equilibrium each of
    them is a zero rate of the Jacobian, because rotating an equilibrium by the
    symmetry gives another equilibrium.
    ``generators``, shape ``(k, dim, dim)``, replaces that search when given.

    Returns
    -------
    numpy.ndarray, shape (n_tokens (dim - 1), r)
        ``r`` is the dimension of the orbit at ``state`` (zero without symmetry).
    """
    if generators is None:
        generators = continuous_symmetries(system)
    size = bases.shape[0] * bases.shape[2]
    if len(generators) == 0:
        return np.zeros((size, 0))
    directions = np.einsum("iap,gab,ib->gip", bases, generators, state).reshape(
        len(generators), size
    )
    left, singular, _ = np.linalg.svd(directions.T, full_matrices=False)
    rank = int(np.sum(singular > SYMMETRY_DIRECTION_RTOL * max(1.0, singular[0])))
    return left[:, :rank]


@dataclass(frozen=True)
class Certificate:
    """The linearised stability of one equilibrium.

    Attributes
    ----------
    verdict : str
        One of `VERDICT_NAMES`, or ``"unchecked"`` when the eigenvalue problem
        exceeds the size limit of `certify`.
    rates : numpy.ndarray of complex
        Eigenvalues of the tangent Jacobian on the complement of the symmetry
        directions, in the order of decreasing real part; shape
        ``(n_tokens (dim - 1) - symmetry_directions,)``, empty when unchecked.
    symmetry_directions : int
        Dimension of the symmetry orbit through the state; the Jacobian has that many
        further zero rates, set aside.
    unstable_directions : int
        Rates with a positive real part (above the zero tolerance), with multiplicity.
    zero_tol : float
        Absolute tolerance under which a real part counts as zero.
    speed : float
        ``max_i ||dx_i/dt||`` at the state that was certified.
    state : numpy.ndarray
        The state that was certified, shape ``(n_tokens, dim)``: the input, or its
        refinement by Newton's method.
    """

    verdict: str
    rates: np.ndarray
    symmetry_directions: int
    unstable_directions: int
    zero_tol: float
    speed: float
    state: np.ndarray

    @property
    def code(self) -> int:
        """The verdict as a code: an index into `VERDICT_NAMES`, or -1 if unchecked."""
        if self.verdict == UNCHECKED_NAME:
            return VERDICT_UNCHECKED
        return VERDICT_NAMES.index(self.verdict)

    @property
    def is_stable(self) -> bool:
        """Whether the verdict is ``stable`` or ``stable modulo symmetry``."""
        return self.code in (VERDICT_STABLE, VERDICT_STABLE_MODULO_SYMMETRY)

    @property
    def max_real(self) -> float:
        """The largest real part of the rates (NaN when unchecked)."""
        return float(self.rates[0].real) if len(self.rates) else math.nan


def speed(system: System, state: np.ndarray) -> float:
    """Return ``max_i ||dx_i/dt||`` at ``state``."""
    return float(np.linalg.norm(vector_field(system, state), axis=1).max())


def speed_tolerance(system: System) -> float:
    """Return the speed under which Newton's method counts a state as an equilibrium."""
    return NEWTON_RTOL * max(1.0, system.max_rate())


def newton(
    system: System,
    state: np.ndarray,
    *,
    max_iter: int = NEWTON_MAX_ITER,
    tol: float | None = None,
) -> tuple[np.ndarray, float]:
    """Refine an approximate equilibrium by damped Newton steps on the tangent space.

    Each iteration solves ``J step = -f`` in the least-squares sense (the minimum-norm
    step, so a continuous family of equilibria does not stall it), caps the step at
    `NEWTON_MAX_STEP` radians per token, and halves it until the norm of the field
    decreases.

    Parameters
    ----------
    system : System
        The vector field.
    state : numpy.ndarray, shape (n_tokens, dim)
        Starting point; tokens are normalised first.
    max_iter : int, optional
        Iteration cap.
    tol : float, optional
        Speed at which to stop; by default `speed_tolerance`.

    Returns
    -------
    state : numpy.ndarray
        The last iterate.
    speed : float
        ``max_i ||dx_i/dt||`` there. Compare it with ``tol``: the method may stop
        above it when the speed stops decreasing.
    """
    if tol is None:
        tol = speed_tolerance(system)
    state = np.array(state, dtype=np.float64)
    state /= np.linalg.norm(state, axis=1, keepdims=True)
    for _ in range(max_iter):
        bases = tangent_bases(state)
        residual = tangent_residual(system, state, bases)
        residual_norm = float(np.linalg.norm(residual))
        if speed(system, state) < tol:
            break
        jacobian = tangent_jacobian(system, state, bases)
        step = np.linalg.lstsq(jacobian, -residual, rcond=None)[0]
        step = step.reshape(state.shape[0], -1)
        largest = float(np.linalg.norm(step, axis=1).max())
        if largest > NEWTON_MAX_STEP:
            step *= NEWTON_MAX_STEP / largest

        # Backtrack until the norm of the field decreases.
        scale = 1.0
        while scale > 1e-6:
            candidate = retract(state, bases, scale * step)
            candidate_norm = float(
                np.linalg.norm(
                    tangent_residual(system, candidate, tangent_bases(candidate))
                )
            )
            if candidate_norm < (1.0 - 1e-4 * scale) * residual_norm:
                break
            scale *= 0.5
        else:
            break
        state = candidate
    return state, speed(system, state)


def certify(
    system: System,
    state: np.ndarray,
    *,
    polish: bool = True,
    method: str = "analytic",
    rate_rtol: float = RATE_RTOL,
    max_dimension: int = MAX_CERTIFIED_DIMENSION,
) -> Certificate:
    """Certify the stability of the equilibrium near ``state``.

    Parameters
    ----------
    system : System
        The vector field.
    state : numpy.ndarray, shape (n_tokens, dim)
        An equilibrium, or a close approximation such as a converged final state.
    polish : bool, optional
        Refine ``state`` with `newton` first. The refined state is certified if its
        speed is lower and no token moved more than `POLISH_MAX_SHIFT`. Without
        refinement the rates carry an error of the order of the speed divided by the
        smallest rate.
    method : {'analytic', 'finite_difference'}
        How to build the Jacobian.
    rate_rtol : float, optional
        A real part counts as zero when its absolute value is at most this times the
        largest absolute rate.
    max_dimension : int, optional
        Largest tangent dimension ``n_tokens (dim - 1)`` of a dense eigenvalue
        problem. Above it, a system of low-rank heads without continuous symmetry is
        reduced to its invariant subspace (see Notes); if that is still too large,
        or the system is not of that kind, nothing is computed and the verdict is
        ``unchecked``.

    Returns
    -------
    Certificate
        Verdict, rates and the state that was certified.

    Raises
    ------
    ValueError
        If ``method`` is unknown.

    Notes
    -----
    The tangent Jacobian ``J`` maps the symmetry directions ``N`` (see
    `symmetry_directions`) to zero at an equilibrium, so in an orthonormal basis
    ``[N, C]`` it is block upper triangular and its spectrum is ``r`` zeros together
    with the spectrum of ``C^T J C``. The verdict rests on the latter.

    For heads given by factors (`basins.transformer.MultiHeadSystem`), let ``U`` be
    the span of the tokens and of the ranges of every ``A_h``, ``A_h^T``, ``V_h`` and
    ``V_h^T``. A perturbation orthogonal to ``U`` changes no logit and no value, so
    the Jacobian maps it to ``-(x_i^T y_i)`` times itself, and ``U`` is invariant too.
    The rates are then those of the system restricted to ``U`` (dimension ``m``,
    at most ``n_tokens + 4 n_heads d_head``) together with ``-(x_i^T y_i)`` for every
    token, each ``dim - m`` times. A head of MiniLM (``d_head = 32``, ``dim = 384``)
    with 9 tokens needs an eigenvalue problem of size at most 1224 instead of 3447.

    A linearisation cannot decide every case: a ``marginal`` verdict means that
    higher-order terms decide stability, and a rate within the tolerance of zero is
    reported as zero even when it is a tiny nonzero number.
    """
    if method not in ("analytic", "finite_difference"):
        raise ValueError(
            f"method = {method!r} is invalid: expected 'analytic' or "
            f"'finite_difference'"
        )
    state = np.array(state, dtype=np.float64)
    n, d = state.shape
    if n * (d - 1) <= max_dimension:
        generators = continuous_symmetries(system)
        return _certify(system, state, generators, polish, method, rate_rtol)

    reduction = _reduction(system, state)
    if reduction is None or n * (reduction[0].shape[1] - 1) > max_dimension:
        certified_speed = speed(system, state)
        empty = np.empty(0, dtype=complex)
        return Certificate(
            UNCHECKED_NAME, empty, 0, 0, math.nan, certified_speed, state
        )
    basis, reduced = reduction
    m = basis.shape[1]
    inner = _certify(
        reduced, state @ basis, np.zeros((0, m, m)), polish, method, rate_rtol
    )
    radial = np.zeros(n)
    for A, V in heads(reduced):
        outputs = head_weights(reduced, A, inner.state) @ (inner.state @ V.T)
        radial += np.sum(inner.state * outputs, axis=1)
    rates = np.concatenate([inner.rates, np.repeat(-radial, d - m)])
    return _verdict(rates, 0, rate_rtol, inner.speed, inner.state @ basis.T)


def _certify(
    system: System,
    state: np.ndarray,
    generators: np.ndarray,
    polish: bool,
    method: str,
    rate_rtol: float,
) -> Certificate:
    """Certify with a dense Jacobian, the symmetry group given by ``generators``."""
    certified_speed = speed(system, state)
    if polish:
        polished, polished_speed = newton(system, state)
        shift = float(np.linalg.norm(polished - state, axis=1).max())
        if polished_speed < certified_speed and shift <= POLISH_MAX_SHIFT:
            state, certified_speed = polished, polished_speed

    bases = tangent_bases(state)
    if method == "analytic":
        jacobian = tangent_jacobian(system, state, bases)
    else:
        jacobian = finite_difference_jacobian(system, state, bases)
    orbit = symmetry_directions(system, state, bases, generators)
    if orbit.shape[1]:
        complement = np.linalg.svd(orbit, full_matrices=True)[0][:, orbit.shape[1] :]
        jacobian = complement.T @ jacobian @ complement
    rates = np.linalg.eigvals(jacobian) if len(jacobian) else np.empty(0, dtype=complex)
    return _verdict(rates, orbit.shape[1], rate_rtol, certified_speed, state)


def _verdict(
    rates: np.ndarray,
    symmetry_count: int,
    rate_rtol: float,
    certified_speed: float,
    state: np.ndarray,
) -> Certificate:
    """Sort the rates, count the unstable ones and return the certificate."""
    rates = rates[np.lexsort((-rates.imag, -rates.real))]
    scale = float(np.abs(rates).max()) if len(rates) else 0.0
    zero_tol = rate_rtol * scale
    unstable = int(np.sum(rates.real > zero_tol))
    if unstable:
        verdict = VERDICT_NAMES[VERDICT_UNSTABLE]
    elif np.any(rates.real >= -zero_tol):
        verdict = VERDICT_NAMES[VERDICT_MARGINAL]
    elif symmetry_count:
        verdict = VERDICT_NAMES[VERDICT_STABLE_MODULO_SYMMETRY]
    else:
        verdict = VERDICT_NAMES[VERDICT_STABLE]
    return Certificate(
        verdict, rates, symmetry_count, unstable, zero_tol, certified_speed, state
    )


def invariant_subspace(system: System, state: np.ndarray) -> np.ndarray:
    """Return an orthonormal basis ``(dim, m)`` of the subspace that `certify` keeps.

    The subspace is the span of the tokens of ``state`` and of the ranges of
    ``A_h``, ``A_h^T``, ``V_h`` and ``V_h^T`` for every head. Singular values below
    `INVARIANT_SUBSPACE_RTOL` times the largest count as zero.
    """
    columns = [np.asarray(state, dtype=np.float64).T]
    for A, V in heads(system):
        columns += [A, A.T, V, V.T]
    left, singular, _ = np.linalg.svd(np.hstack(columns), full_matrices=False)
    rank = int(np.sum(singular > INVARIANT_SUBSPACE_RTOL * singular[0]))
    return left[:, :rank]


def _reduction(system: System, state: np.ndarray):
    """Return ``(basis, reduced system)`` for the reduced certificate, or None.

    Applies to systems given by head factors that report no continuous symmetry,
    and only when the invariant subspace is smaller than the whole space.
    """
    from basins.transformer.system import MultiHeadSystem

    if not isinstance(system, MultiHeadSystem) or len(continuous_symmetries(system)):
        return None
    basis = invariant_subspace(system, state)
    m = basis.shape[1]
    if m >= system.dim or system.n_heads * system.d_head > m:
        return None
    reduced = MultiHeadSystem(
        n_tokens=system.n_tokens,
        dim=m,
        beta=system.beta,
        weighting=system.weighting,
        query=system.query @ basis,
        key=system.key @ basis,
        value=system.value @ basis,
        output=np.einsum("am,had->hmd", basis, system.output),
    )
    return basis, reduced


def catalog_columns(
    system: System, states: list[np.ndarray]
) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    """Certify the representative state of every catalog entry.

    Parameters
    ----------
    system : System
        The vector field.
    states : list of numpy.ndarray
        One representative final state ``(n_tokens, dim)`` per attractor.

    Returns
    -------
    dict
        Catalog arrays by name, each with its dimension names:

        - ``stability``: verdict code, 0 stable, 1 stable modulo symmetry,
          2 marginal, 3 unstable, -1 unchecked;
        - ``unstable_directions`` and ``symmetry_directions``;
        - ``certified_speed``: speed at the certified state, refined by Newton's
          method;
        - ``rate_real``, ``rate_imag``: dimension ``rate`` of size
          ``n_tokens (dim - 1)``, the rates off the symmetry orbit by decreasing
          real part, padded with NaN;
        - ``attention``: the weights ``w_ij`` at the certified state, and
          ``attention_rank``, its numerical rank.
    """
    n, d = system.n_tokens, system.dim
    k = len(states)
    size = n * (d - 1)
    columns = {
        "stability": np.full(k, VERDICT_UNCHECKED, dtype=np.int8),
        "unstable_directions": np.zeros(k, dtype=np.int32),
        "symmetry_directions": np.zeros(k, dtype=np.int32),
        "certified_speed": np.full(k, np.nan),
        "rate_real": np.full((k, size), np.nan),
        "rate_imag": np.full((k, size), np.nan),
        "attention": np.full((k, n, n), np.nan),
        "attention_rank": np.zeros(k, dtype=np.int32),
    }
    for row, state in enumerate(states):
        certificate = certify(system, state)
        rates = certificate.rates
        columns["stability"][row] = certificate.code
        columns["unstable_directions"][row] = certificate.unstable_directions
        columns["symmetry_directions"][row] = certificate.symmetry_directions
        columns["certified_speed"][row] = certificate.speed
        columns["rate_real"][row, : len(rates)] = rates.real
        columns["rate_imag"][row, : len(rates)] = rates.imag
        attention = attention_matrix(system, certificate.state)
        columns["attention"][row] = attention
        columns["attention_rank"][row] = numerical_rank(attention)
    dimensions = {
        "rate_real": ("attractor", "rate"),
        "rate_imag": ("attractor", "rate"),
        "attention": ("attractor", "query", "key"),
    }
    return {
        name: (values, dimensions.get(name, ("attractor",)))
        for name, values in columns.items()
    }


def verdict_name(code: int) -> str:
    """Return the verdict name of a stored code (-1 is ``unchecked``)."""
    return UNCHECKED_NAME if code == VERDICT_UNCHECKED else VERDICT_NAMES[code]
