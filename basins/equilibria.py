"""Equilibrium search: Newton's method from structured and sampled starting points.

Sampling finds the attractors that trajectories reach; it never finds an unstable
equilibrium. This module looks for equilibria directly. Newton's method on the
tangent space of ``(S^{d-1})^n`` (`basins.stability.newton`), with a Levenberg-
Marquardt minimisation of the squared speed as fallback, is started from

- final states of sampled trajectories, converged or not (a trajectory stopped by the
  step cap often sits near a slow saddle);
- every split of the tokens, ``n_+`` at ``+v`` and ``n_-`` at ``-v``, on every real
  eigenvector ``v`` of ``V`` (these are exact equilibria for every weighting);
- regular polygons in the 2-dimensional invariant subspaces of ``V`` and regular
  simplices and cross-polytopes in its 3-dimensional ones, with the tokens spread over
  the vertices;
- optionally, random points of the state space.

Solutions are grouped with `basins.classify.Matcher`, so states that differ by a
permutation of tokens (or by a continuous symmetry of the system) are listed once.
Every listed equilibrium is re-checked: its speed is evaluated again and must be below
the tolerance, and it carries a stability certificate and its attention matrix.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from basins.classify import (
    CLASS_NAMES,
    Attractor,
    Eigenspace,
    Matcher,
    describe,
    eigenspaces,
)
from basins.config import Classification, Config, System
from basins.errors import ConfigError
from basins.integrate import integrate, vector_field
from basins.kernels import STATUS_CONVERGED, STATUS_NONFINITE
from basins.sampling import initial_conditions
from basins.stability import (
    Certificate,
    attention_matrix,
    certify,
    newton,
    numerical_rank,
    retract,
    speed,
    speed_tolerance,
    tangent_bases,
)

logger = logging.getLogger(__name__)

# Largest number of polygon vertices tried as a starting point.
MAX_POLYGON_VERTICES = 8

# Invariant subspaces of each dimension (2 and 3) used for polygon and polytope starts,
# taken in the order of the eigenvalues, so large dim does not explode the search.
MAX_SUBSPACES = 24

# Unconverged final states (step cap reached) kept as starting points.
MAX_UNCONVERGED_STARTS = 32

# Function evaluations allowed to the least-squares fallback, per tangent dimension.
FALLBACK_EVALUATIONS_PER_DIMENSION = 200

# Vertices of the regular tetrahedron, as rows.
TETRAHEDRON = np.array(
    [[1.0, 1.0, 1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]]
) / math.sqrt(3.0)


@dataclass(frozen=True)
class Start:
    """A starting point of Newton's method and where it comes from."""

    state: np.ndarray
    source: str


@dataclass(frozen=True)
class Equilibrium:
    """An equilibrium found by the search, re-checked and certified.

    Attributes
    ----------
    description : Attractor
        Class, clusters, alignment with the eigenvectors of ``V`` and label.
    certificate : Certificate
        Verdict and rates of the linearisation.
    speed : float
        ``max_i ||dx_i/dt||`` at ``state``, evaluated again after the search.
    attention : numpy.ndarray
        Attention weights ``w_ij`` at ``state``, shape ``(n_tokens, n_tokens)``.
    attention_rank : int
        Numerical rank of ``attention``; at most the number of clusters, because
        tokens of one cluster have identical rows.
    source : str
        The first starting point that led to it, such as ``split 3:1 on v1``.
    starts : int
        Number of starting points that led to it.
    """

    description: Attractor
    certificate: Certificate
    speed: float
    attention: np.ndarray
    attention_rank: int
    source: str
    starts: int

    @property
    def state(self) -> np.ndarray:
        """The equilibrium, shape ``(n_tokens, dim)``."""
        return self.description.state

    @property
    def n_clusters(self) -> int:
        """Number of clusters of tokens."""
        return len(self.description.multiplicity)

    @property
    def class_name(self) -> str:
        """Name of the class: consensus, bipartite, clustering or polygonal."""
        return CLASS_NAMES[self.description.class_code]

    @property
    def min_cos(self) -> float:
        """Smallest ``|cos|`` between a cluster centre and its closest eigenspace."""
        return min(a.cos for a in self.description.alignment)


def _spread(vertices: np.ndarray, n_tokens: int, heavy: bool) -> np.ndarray | None:
    """Place ``n_tokens`` tokens on the vertices, every vertex used at least once.

    Tokens go round-robin over the vertices, or, with ``heavy``, every surplus token
    goes to the first vertex. Returns None when there are more vertices than tokens.
    """
    k = len(vertices)
    if k > n_tokens:
        return None
    if heavy:
        assignment = np.concatenate(
            [np.zeros(n_tokens - k + 1, dtype=int), np.arange(1, k)]
        )
    else:
        assignment = np.arange(n_tokens) % k
    return vertices[assignment]


def _real_directions(spaces: list[Eigenspace]) -> list[tuple[str, np.ndarray]]:
    directions = []
    for space in spaces:
        if abs(space.eigenvalue.imag) > 0.0:
            continue
        for column in range(space.basis.shape[1]):
            suffix = "" if space.is_vector else f"[{column + 1}]"
            directions.append((f"{space.name}{suffix}", space.basis[:, column]))
    return directions


def _invariant_subspaces(
    spaces: list[Eigenspace], dimension: int
) -> list[tuple[str, np.ndarray]]:
    """Return orthonormal bases ``(dim, dimension)`` of invariant subspaces of ``V``.

    The subspaces are spans of real eigenvectors and of the real planes of complex
    eigenvalue pairs, taken in the order of the eigenvalues.
    """
    pieces = [(name, vector[:, None]) for name, vector in _real_directions(spaces)]
    pieces += [
        (space.name, space.basis)
        for space in spaces
        if abs(space.eigenvalue.imag) > 0.0 and space.basis.shape[1] == 2
    ]
    subspaces = []
    for size in range(1, dimension + 1):
        for combination in itertools.combinations(pieces, size):
            columns = np.concatenate([basis for _, basis in combination], axis=1)
            if columns.shape[1] != dimension:
                continue
            orthonormal, triangular = np.linalg.qr(columns)
            if np.min(np.abs(np.diag(triangular))) < 1e-8:
                continue
            name = "span(" + ", ".join(label for label, _ in combination) + ")"
            subspaces.append((name, orthonormal))
            if len(subspaces) >= MAX_SUBSPACES:
                return subspaces
    return subspaces


def structured_starts(system: System) -> list[Start]:
    """Return the split, polygon and polytope starting points of ``system``."""
    n = system.n_tokens
    spaces = eigenspaces(system.V)
    starts = []
    for name, vector in _real_directions(spaces):
        for positive in range(n, -1, -1):
            signs = np.array([1.0] * positive + [-1.0] * (n - positive))
            starts.append(
                Start(
                    signs[:, None] * vector[None, :],
                    f"split {positive}:{n - positive} on {name}",
                )
            )

    for name, plane in _invariant_subspaces(spaces, 2):
        for k in range(3, min(n, MAX_POLYGON_VERTICES) + 1):
            for phase in (0.0, math.pi / k):
                angles = phase + 2.0 * math.pi * np.arange(k) / k
                vertices = np.stack([np.cos(angles), np.sin(angles)], axis=1) @ plane.T
                for heavy in (False, True) if k < n else (False,):
                    state = _spread(vertices, n, heavy)
                    starts.append(Start(state, f"{k}-gon in {name}"))

    if system.dim >= 3:
        for name, space in _invariant_subspaces(spaces, 3):
            for shape, vertices in (
                ("tetrahedron", TETRAHEDRON @ space.T),
                ("octahedron", np.concatenate([space.T, -space.T])),
            ):
                for heavy in (False, True) if len(vertices) < n else (False,):
                    state = _spread(vertices, n, heavy)
                    if state is not None:
                        starts.append(Start(state, f"{shape} in {name}"))
    return starts


def sampled_starts(
    config: Config, n_initial: int, *, seed: int | None = None
) -> list[Start]:
    """Integrate ``n_initial`` random initial conditions and return their final states.

    Converged final states are reduced to one per attractor; at most
    `MAX_UNCONVERGED_STARTS` states stopped by the step cap are kept as they are.
    """
    if n_initial == 0:
        return []
    system = config.system
    seed = config.sampling.seed if seed is None else seed
    initial = initial_conditions(seed, 0, n_initial, system.n_tokens, system.dim)
    outcome = integrate(system, config.integration, initial)
    matcher = Matcher(system, config.classification)
    converged = outcome.status == STATUS_CONVERGED
    candidates = np.flatnonzero(converged)
    starts = []
    if len(candidates):
        features = matcher.features(outcome.final_state, converged)
        _, representatives = matcher.group_representatives(features, candidates)
        starts += [
            Start(outcome.final_state[r], f"final state of initial condition {r}")
            for r in representatives
        ]
    stopped = np.flatnonzero(
        (outcome.status != STATUS_CONVERGED) & (outcome.status != STATUS_NONFINITE)
    )
    starts += [
        Start(outcome.final_state[r], f"unconverged state of initial condition {r}")
        for r in stopped[:MAX_UNCONVERGED_STARTS]
    ]
    return starts


def random_starts(system: System, count: int, seed: int) -> list[Start]:
    """Return ``count`` uniform random points of the state space as starting points."""
    states = initial_conditions(seed, 0, count, system.n_tokens, system.dim)
    return [Start(state, "random point") for state in states]


def _minimise_speed(system: System, state: np.ndarray) -> np.ndarray:
    """Minimise the squared speed from ``state`` by Levenberg-Marquardt steps.

    The unknowns are the tangent coordinates of a retraction around ``state``.
    """
    bases = tangent_bases(state)
    n, d = state.shape

    def residual(step: np.ndarray) -> np.ndarray:
        return vector_field(
            system, retract(state, bases, step.reshape(n, d - 1))
        ).ravel()

    result = least_squares(
        residual,
        np.zeros(n * (d - 1)),
        method="lm",
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
        max_nfev=FALLBACK_EVALUATIONS_PER_DIMENSION * n * (d - 1),
    )
    return retract(state, bases, result.x.reshape(n, d - 1))


def solve(system: System, state: np.ndarray) -> tuple[np.ndarray, bool]:
    """Find an equilibrium near ``state``: Newton first, then the fallback.

    Returns the final iterate and whether its speed is below `speed_tolerance`.
    """
    tol = speed_tolerance(system)
    refined, refined_speed = newton(system, state)
    if refined_speed < tol:
        return refined, True
    refined, refined_speed = newton(system, _minimise_speed(system, state))
    return refined, refined_speed < tol


def find_equilibria(
    system: System,
    starts: list[Start],
    *,
    classification: Classification | None = None,
) -> list[Equilibrium]:
    """Solve from every start, group the solutions and certify one per group.

    Parameters
    ----------
    system : System
        The vector field.
    starts : list of Start
        Starting points, for example from `structured_starts`, `sampled_starts` and
        `random_starts`.
    classification : Classification, optional
        Tolerances of the clustering and of the matching of states.

    Returns
    -------
    list of Equilibrium
        Distinct equilibria, the stable ones first, then by the number of unstable
        directions, class and label. Starts from which no equilibrium was reached are
        left out (counted in the debug log).
    """
    classification = classification or Classification()
    tol = speed_tolerance(system)
    solutions = []
    sources = []
    for start in starts:
        state, converged = solve(system, start.state)
        if converged:
            solutions.append(state)
            sources.append(start.source)
    logger.debug(
        "equilibrium search: %d of %d starts converged", len(solutions), len(starts)
    )
    if not solutions:
        return []

    states = np.array(solutions)
    matcher = Matcher(system, classification)
    features = matcher.features(states, np.ones(len(states), dtype=bool))
    group, representatives = matcher.group_representatives(
        features, np.arange(len(states))
    )
    counts = np.bincount(group, minlength=len(representatives))
    spaces = eigenspaces(system.V)

    found = []
    for number, position in enumerate(representatives):
        state = states[position]
        checked_speed = speed(system, state)
        if not checked_speed < tol:
            logger.warning(
                "dropped a solution from %r: its speed %.3g is not below %.3g",
                sources[position],
                checked_speed,
                tol,
            )
            continue
        attention = attention_matrix(system, state)
        found.append(
            Equilibrium(
                description=describe(state, position, spaces, classification),
                certificate=certify(system, state, polish=False),
                speed=checked_speed,
                attention=attention,
                attention_rank=numerical_rank(attention),
                source=sources[position],
                starts=int(counts[number]),
            )
        )
    found.sort(
        key=lambda e: (
            not e.certificate.is_stable,
            e.certificate.unstable_directions,
            e.description.class_code,
            e.description.label,
        )
    )
    return found


def search(
    config: Config,
    *,
    n_initial: int = 256,
    n_random: int = 32,
    seed: int | None = None,
) -> list[Equilibrium]:
    """List the equilibria of a configuration's system, stable and unstable.

    Parameters
    ----------
    config : Config
        The system, the integrator for the sampled starts and the classifier
        tolerances.
    n_initial : int, optional
        Random initial conditions integrated to their final states, which then serve
        as starting points.
    n_random : int, optional
        Random points used directly as starting points (these find saddles that no
        trajectory approaches for long).
    seed : int, optional
        Seed of both random sets; by default ``config.sampling.seed``.

    Returns
    -------
    list of Equilibrium
        See `find_equilibria`.

    Raises
    ------
    ConfigError
        If ``n_initial`` or ``n_random`` is negative, or ``seed`` is invalid.

    Notes
    -----
    The search is local: it lists the equilibria that Newton's method reaches from the
    starting points, not a proof that no other equilibrium exists. Its cost grows
    with the dimension: about ``(n_tokens + 1) dim`` split starts alone, each a
    Newton solve with dense matrices of size ``n_tokens (dim - 1)``, so it suits
    small systems such as the examples, not a head of a trained model.
    """
    for name, value in (("n_initial", n_initial), ("n_random", n_random)):
        if not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"{name} = {value!r} is invalid: expected an integer >= 0"
            )
    if seed is not None and (not isinstance(seed, int) or seed < 0):
        raise ConfigError(f"seed = {seed!r} is invalid: expected an integer >= 0")
    seed = config.sampling.seed if seed is None else seed
    system = config.system
    starts = structured_starts(system)
    starts += sampled_starts(config, n_initial, seed=seed)
    if n_random:
        starts += random_starts(system, n_random, seed + 1)
    return find_equilibria(system, starts, classification=config.classification)


def format_equilibria(equilibria: list[Equilibrium], *, spectra: bool = False) -> str:
    """Render equilibria as a fixed-width text table.

    Columns: id, class, the label with its alignment, and the smallest ``|cos|`` of a
    centre with its eigenspace. Then the verdict, the number of unstable directions
    and the largest real part of the rates. Last, the rank of the attention matrix
    beside the number of clusters, the speed and the first start that found it. With
    ``spectra``, the rates of each equilibrium follow the table.
    """
    header = (
        "id",
        "class",
        "equilibrium",
        "min |cos|",
        "stability",
        "unstable",
        "max Re rate",
        "rank W",
        "clusters",
        "speed",
        "found from",
    )
    rows = []
    for number, equilibrium in enumerate(equilibria):
        certificate = equilibrium.certificate
        rows.append(
            (
                str(number),
                equilibrium.class_name,
                equilibrium.description.label,
                f"{equilibrium.min_cos:.6f}",
                certificate.verdict,
                str(certificate.unstable_directions),
                f"{certificate.max_real:.4g}",
                str(equilibrium.attention_rank),
                str(equilibrium.n_clusters),
                f"{equilibrium.speed:.1e}",
                equilibrium.source,
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    right_aligned = {0, 3, 5, 6, 7, 8, 9}

    def render(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    lines = [render(header), "  ".join("-" * width for width in widths)]
    lines += [render(row) for row in rows]
    stable = sum(e.certificate.is_stable for e in equilibria)
    lines.append(
        f"{len(equilibria)} equilibria, {stable} stable; each re-checked (speed below "
        f"tolerance) and certified by the Jacobian on the tangent space"
    )
    if spectra:
        lines.append(
            "rates (parts within the zero tolerance of the verdict print as 0):"
        )
        for number, equilibrium in enumerate(equilibria):
            certificate = equilibrium.certificate
            rates = ", ".join(
                _format_rate(rate, certificate.zero_tol) for rate in certificate.rates
            )
            note = ""
            if certificate.symmetry_directions:
                orbit = certificate.symmetry_directions
                note = f" (+{orbit} zero along the symmetry orbit)"
            lines.append(f"{number}: {rates}{note}")
    return "\n".join(lines)


def _format_rate(rate: complex, zero_tol: float) -> str:
    real = 0.0 if abs(rate.real) <= zero_tol else rate.real
    if abs(rate.imag) <= zero_tol:
        return f"{real:.4g}"
    return f"{real:.4g}{rate.imag:+.4g}i"


def save_equilibria(path, equilibria: list[Equilibrium]) -> None:
    """Write the equilibria to a NumPy ``.npz`` file.

    Arrays (first axis: equilibrium): ``state`` (n_tokens, dim), ``rate_real`` and
    ``rate_imag`` (rates padded with NaN to ``n_tokens (dim - 1)``),
    ``symmetry_directions``, ``unstable_directions``, ``verdict`` (strings),
    ``class_name``, ``label``, ``attention`` (n_tokens, n_tokens),
    ``attention_rank``, ``n_clusters``, ``speed`` and ``source``.
    """
    size = max(
        (e.state.shape[0] * (e.state.shape[1] - 1) for e in equilibria), default=0
    )
    rate_real = np.full((len(equilibria), size), np.nan)
    rate_imag = np.full((len(equilibria), size), np.nan)
    for row, equilibrium in enumerate(equilibria):
        values = equilibrium.certificate.rates
        rate_real[row, : len(values)] = values.real
        rate_imag[row, : len(values)] = values.imag
    np.savez(
        path,
        state=np.array([e.state for e in equilibria]),
        rate_real=rate_real,
        rate_imag=rate_imag,
        symmetry_directions=np.array(
            [e.certificate.symmetry_directions for e in equilibria], dtype=np.int32
        ),
        unstable_directions=np.array(
            [e.certificate.unstable_directions for e in equilibria], dtype=np.int32
        ),
        verdict=np.array([e.certificate.verdict for e in equilibria]),
        class_name=np.array([e.class_name for e in equilibria]),
        label=np.array([e.description.label for e in equilibria]),
        attention=np.array([e.attention for e in equilibria]),
        attention_rank=np.array([e.attention_rank for e in equilibria], dtype=np.int32),
        n_clusters=np.array([e.n_clusters for e in equilibria], dtype=np.int32),
        speed=np.array([e.speed for e in equilibria]),
        source=np.array([e.source for e in equilibria]),
    )
