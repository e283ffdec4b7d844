"""Classification of final states: clusters, classes, alignment and attractor identity.

A converged final state is reduced to clusters of tokens (single linkage on the
geodesic angle), each with a unit centre and a multiplicity. The class follows from
the centres: one cluster is ``consensus``, two antipodal ones ``bipartite``, three or
more on a regular polygon or polytope ``polygonal``, anything else ``clustering``.
Each centre is compared with the eigenspaces of ``V``.

Two final states belong to the same attractor when their clusters match: same
multiplicities, and centres within ``shape_tol`` of each other after the best
relabelling of tokens. Where the system has a continuous symmetry (a rotation ``R``
with ``R^T A R = A`` and ``R V = V R``), centres are compared through invariants
instead: the sorted Gram entries of the tokens and the sorted components of the tokens
along the subspace that every such rotation fixes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numba import njit, prange

from basins.config import Classification, System
from basins.kernels import STATUS_CONVERGED

logger = logging.getLogger(__name__)

# Class codes stored per initial condition and per catalog entry; -1 means none.
CLASS_NONE = -1
CLASS_CONSENSUS = 0
CLASS_BIPARTITE = 1
CLASS_CLUSTERING = 2
CLASS_POLYGONAL = 3
CLASS_NAMES = ("consensus", "bipartite", "clustering", "polygonal")

# Relative tolerances for equal eigenvalues of V and for the null spaces that define
# the continuous symmetries. Both are exact properties of the input matrices, so a
# tolerance near rounding error is enough.
EIGENVALUE_RTOL = 1e-9
SYMMETRY_RTOL = 1e-10


# Fewer states than this are clustered in the calling thread: starting Numba's
# thread pool costs more than the work (27 ms for one state, measured while the
# machine was busy).
PARALLEL_MIN_STATES = 256


def _cluster_tokens(states, selected, cos_tol, centres, multiplicity, n_clusters):
    m, n, d = states.shape
    for ic in prange(m):
        if not selected[ic]:
            n_clusters[ic] = 0
            continue

        # Single linkage: union-find over every pair closer than the tolerance.
        parent = np.arange(n)
        for i in range(n):
            for j in range(i + 1, n):
                dot = 0.0
                for a in range(d):
                    dot += states[ic, i, a] * states[ic, j, a]
                if dot >= cos_tol:
                    root_i = i
                    while parent[root_i] != root_i:
                        root_i = parent[root_i]
                    root_j = j
                    while parent[root_j] != root_j:
                        root_j = parent[root_j]
                    if root_i != root_j:
                        parent[max(root_i, root_j)] = min(root_i, root_j)

        # Clusters numbered in order of their first token; centres are the
        # normalised sums of their tokens.
        label = np.full(n, -1)
        count = 0
        for i in range(n):
            root = i
            while parent[root] != root:
                root = parent[root]
            if label[root] < 0:
                label[root] = count
                count += 1
            label[i] = label[root]
        for c in range(n):
            multiplicity[ic, c] = 0
            for a in range(d):
                centres[ic, c, a] = 0.0
        for i in range(n):
            c = label[i]
            multiplicity[ic, c] += 1
            for a in range(d):
                centres[ic, c, a] += states[ic, i, a]
        for c in range(count):
            norm_squared = 0.0
            for a in range(d):
                norm_squared += centres[ic, c, a] * centres[ic, c, a]
            inverse_norm = 1.0 / math.sqrt(norm_squared)
            for a in range(d):
                centres[ic, c, a] *= inverse_norm
        n_clusters[ic] = count


_cluster_tokens_parallel = njit(cache=True, parallel=True)(_cluster_tokens)
# Numba names a cache entry after the Python function, so a cached serial twin would
# share the parallel kernel\'s entry and one would silently run as the other.
_cluster_tokens_serial = njit(cache=False)(_cluster_tokens)


@dataclass(frozen=True)
class Clusters:
    """Clusters of the tokens of many final states.

    Attributes
    ----------
    centres : numpy.ndarray
        Unit centres, shape ``(m, n_tokens, dim)``; rows past ``n_clusters`` are zero.
    multiplicity : numpy.ndarray
        Tokens per cluster, shape ``(m, n_tokens)``; zero past ``n_clusters``.
    n_clusters : numpy.ndarray
        Number of clusters, shape ``(m,)``; zero where the state was not selected.
    """

    centres: np.ndarray
    multiplicity: np.ndarray
    n_clusters: np.ndarray


def cluster_tokens(
    states: np.ndarray, selected: np.ndarray, cluster_tol: float
) -> Clusters:
    """Group the tokens of each selected state into clusters.

    Parameters
    ----------
    states : numpy.ndarray, shape (m, n_tokens, dim)
        Final states with unit tokens.
    selected : numpy.ndarray of bool, shape (m,)
        States to cluster; the others get zero clusters.
    cluster_tol : float
        Tokens whose geodesic angle is at most this (radians) are linked.
    """
    states = np.ascontiguousarray(states, dtype=np.float64)
    m, n, d = states.shape
    centres = np.zeros((m, n, d))
    multiplicity = np.zeros((m, n), dtype=np.int32)
    n_clusters = np.zeros(m, dtype=np.int32)
    kernel = (
        _cluster_tokens_parallel if m >= PARALLEL_MIN_STATES else _cluster_tokens_serial
    )
    kernel(
        states,
        np.ascontiguousarray(selected, dtype=np.bool_),
        math.cos(cluster_tol),
        centres,
        multiplicity,
        n_clusters,
    )
    return Clusters(centres, multiplicity, n_clusters)


@dataclass(frozen=True)
class Eigenspace:
    """An eigenspace of ``V``: a real eigenvector, or the real span of several.

    Attributes
    ----------
    index : int
        Position, from 1, in the order of decreasing real part of the eigenvalue.
    eigenvalue : complex
        The eigenvalue (for a complex pair, the one with positive imaginary part).
    basis : numpy.ndarray
        Orthonormal basis of the real subspace, shape ``(dim, k)``. For ``k = 1`` the
        vector is signed so that its largest component in absolute value is positive.
    """

    index: int
    eigenvalue: complex
    basis: np.ndarray

    @property
    def is_vector(self) -> bool:
        """Whether the eigenspace is one real direction, so that signs are defined."""
        return self.basis.shape[1] == 1

    @property
    def name(self) -> str:
        """``v3`` for a single eigenvector, ``E3`` for a larger eigenspace."""
        return f"v{self.index}" if self.is_vector else f"E{self.index}"


def eigenspaces(V: np.ndarray) -> list[Eigenspace]:
    """Return the real eigenspaces of ``V`` in the order of decreasing real part.

    Equal eigenvalues (within a relative 1e-9) share one eigenspace, and a complex
    conjugate pair gives the real 2-plane spanned by its eigenvectors.
    """
    values, vectors = np.linalg.eig(V)
    scale = max(1.0, float(np.abs(values).max()))
    order = sorted(range(len(values)), key=lambda k: (-values[k].real, -values[k].imag))
    groups: list[list[int]] = []
    for k in order:
        for group in groups:
            if abs(values[group[0]] - values[k]) <= EIGENVALUE_RTOL * scale:
                group.append(k)
                break
            if abs(values[group[0]] - np.conj(values[k])) <= EIGENVALUE_RTOL * scale:
                group.append(k)
                break
        else:
            groups.append([k])

    spaces = []
    for position, group in enumerate(groups, start=1):
        columns = []
        for k in group:
            columns.append(vectors[:, k].real)
            if abs(values[k].imag) > EIGENVALUE_RTOL * scale:
                columns.append(vectors[:, k].imag)
        left, singular, _ = np.linalg.svd(np.array(columns).T, full_matrices=False)
        rank = max(1, int(np.sum(singular > 1e-8 * singular[0])))
        basis = left[:, :rank]
        if rank == 1:
            vector = basis[:, 0]
            basis = (vector * np.sign(vector[np.argmax(np.abs(vector))]))[:, None]
        eigenvalue = values[group[0]]
        if eigenvalue.imag < 0:
            eigenvalue = np.conj(eigenvalue)
        spaces.append(Eigenspace(position, complex(eigenvalue), basis))
    return spaces


def continuous_symmetries(system: System) -> np.ndarray:
    """Return a basis of the skew-symmetric generators of the system's rotations.

    A generator ``W`` commutes with ``V`` and, unless the weights ignore the logits
    (``oja`` weighting or ``beta = 0``), with ``A = Q^T K``.

    A system class may define its own ``continuous_symmetries()`` method (multi-head
    systems do, since each head has its own ``A``); it is used instead.

    Returns
    -------
    numpy.ndarray
        Shape ``(k, dim, dim)``; ``k = 0`` when the system has no continuous symmetry.
    """
    own = getattr(system, "continuous_symmetries", None)
    if callable(own):
        return own()
    matrices = [system.V]
    if system.weighting != "oja" and system.beta > 0:
        matrices.append(system.A)
    return commuting_generators(matrices, system.dim)


def commuting_generators(matrices: list[np.ndarray], d: int) -> np.ndarray:
    """Return a basis of the skew-symmetric matrices that commute with all ``matrices``.

    These generate the rotations that leave every matrix unchanged. The result has
    shape ``(k, d, d)``. Results are cached per process, because every chunk of a
    map classifies with the same system.

    Notes
    -----
    A generator ``W`` that commutes with ``M`` also commutes with ``M^T``, hence
    with the symmetric matrix ``H``, a fixed combination of every ``M + M^T`` and
    ``(M - M^T)(M - M^T)^T``. ``W`` therefore maps each eigenspace of ``H`` into
    itself, and the search runs over the skew matrices inside eigenspaces of
    dimension two or more: none for a generic system, all ``d (d - 1) / 2`` when
    every matrix is a multiple of the identity. Above `MAX_SYMMETRY_UNKNOWNS`
    unknowns, or `MAX_SYMMETRY_ENTRIES` entries in the linear system, the search
    is skipped with a warning and no generator is returned: states are then
    compared directly, and attractors that differ by a rotation are listed apart.
    """
    arrays = [np.ascontiguousarray(M, dtype=np.float64) for M in matrices]
    key = (d, tuple(M.tobytes() for M in arrays))
    cached = _GENERATOR_CACHE.get(key)
    if cached is None:
        cached = _search_generators(arrays, d)
        cached.setflags(write=False)
        if len(_GENERATOR_CACHE) >= 8:
            _GENERATOR_CACHE.clear()
        _GENERATOR_CACHE[key] = cached
    return cached


# Results of `commuting_generators` in this process, by the matrices' bytes.
_GENERATOR_CACHE: dict[tuple, np.ndarray] = {}

# Limits of the symmetry search: unknowns (skew matrices inside eigenspaces of H),
# and entries of its linear system. A search at the limit of unknowns, 1128 (all of
# so(48)), takes about 10 s and 0.6 GB on a 2-core Xeon virtual machine.
MAX_SYMMETRY_UNKNOWNS = 48 * 47 // 2
MAX_SYMMETRY_ENTRIES = 20_000_000


def _search_generators(matrices: list[np.ndarray], d: int) -> np.ndarray:
    # Each matrix is scaled to a largest entry of one, so that the tolerance is
    # relative to each of them: V = 1e10 I must not hide the structure of A.
    largest = [float(np.abs(M).max()) for M in matrices]
    matrices = [M / top if top > 0 else M for M, top in zip(matrices, largest)]

    # Eigenspaces of a symmetric matrix that every generator must preserve; the
    # weights are fixed irrationals, so that no cancellation is likely.
    combined = np.zeros((d, d))
    for k, M in enumerate(matrices):
        skew = M - M.T
        combined += math.sqrt(k + 2) * (M + M.T) + math.sqrt(k + 5) * (skew @ skew.T)
    values, basis = np.linalg.eigh(combined)
    gaps = np.flatnonzero(np.diff(values) > SYMMETRY_RTOL * max(1.0, np.abs(values).max()))
    blocks = [b for b in np.split(np.arange(d), gaps + 1) if len(b) >= 2]
    pairs = [(a, b) for block in blocks for i, a in enumerate(block) for b in block[i + 1 :]]
    if not pairs:
        return np.zeros((0, d, d))

    # Commutators of each candidate with every matrix, in the eigenbasis, restricted
    # to the entries that a generator inside the blocks can reach.
    rotated = [basis.T @ M @ basis for M in matrices]
    touched = np.zeros(d, dtype=bool)
    touched[np.concatenate(blocks)] = True
    reach = touched[:, None] | touched[None, :]
    entries = len(pairs) * len(matrices) * int(reach.sum())
    if len(pairs) > MAX_SYMMETRY_UNKNOWNS or entries > MAX_SYMMETRY_ENTRIES:
        logger.warning(
            "continuous symmetries not searched: %d candidate generators in "
            "dimension %d exceed the limit of %d (or %d entries exceed %d); final "
            "states are compared without rotations, so attractors that differ only "
            "by a rotation are listed separately",
            len(pairs), d, MAX_SYMMETRY_UNKNOWNS, entries, MAX_SYMMETRY_ENTRIES,
        )
        return np.zeros((0, d, d))
    columns = np.empty((len(pairs), len(matrices) * int(reach.sum())))
    for column, (a, b) in enumerate(pairs):
        parts = []
        for M in rotated:
            commutator = np.zeros((d, d))
            commutator[a, :] += M[b, :]
            commutator[b, :] -= M[a, :]
            commutator[:, b] -= M[:, a]
            commutator[:, a] += M[:, b]
            parts.append(commutator[reach])
        columns[column] = np.concatenate(parts)
    # Only the right singular vectors are needed; all of them when the system has
    # fewer equations than unknowns.
    fewer_equations = columns.shape[1] < columns.shape[0]
    _, singular, right = np.linalg.svd(columns.T, full_matrices=fewer_equations)
    rank = int(np.sum(singular > SYMMETRY_RTOL))
    null_space = right[rank:]

    # Back to the original coordinates: W = basis W' basis^T.
    generators = np.zeros((len(null_space), d, d))
    for column, (a, b) in enumerate(pairs):
        generators[:, a, b] += null_space[:, column]
        generators[:, b, a] -= null_space[:, column]
    return basis @ generators @ basis.T


def fixed_subspace(generators: np.ndarray, dim: int) -> np.ndarray:
    """Return an orthonormal basis ``(dim, k)`` of the vectors every generator fixes."""
    if len(generators) == 0:
        return np.eye(dim)
    stacked = generators.reshape(-1, dim)
    _, singular, right = np.linalg.svd(stacked)
    rank = int(np.sum(singular > SYMMETRY_RTOL * max(1.0, singular[0])))
    return right[rank:].T


@dataclass(frozen=True)
class Shape:
    """Geometry of the centres of one final state."""

    class_code: int
    name: str


def _regular_polygon(centres: np.ndarray, tol: float) -> bool:
    k = len(centres)
    _, singular, right = np.linalg.svd(centres)
    if len(singular) > 2 and singular[2] > tol:
        return False
    planar = centres @ right[:2].T
    if np.any(np.abs(np.linalg.norm(planar, axis=1) - 1.0) > tol):
        return False
    angles = np.sort(np.arctan2(planar[:, 1], planar[:, 0]))
    gaps = np.diff(np.append(angles, angles[0] + 2.0 * math.pi))
    return bool(np.all(np.abs(gaps - 2.0 * math.pi / k) <= tol))


def _regular_simplex(gram: np.ndarray, tol: float) -> bool:
    k = len(gram)
    off_diagonal = gram[~np.eye(k, dtype=bool)]
    return bool(np.all(np.abs(off_diagonal + 1.0 / (k - 1)) <= tol))


def _cross_polytope(gram: np.ndarray, tol: float) -> bool:
    k = len(gram)
    if k % 2:
        return False
    off_diagonal = np.where(np.eye(k, dtype=bool), 0.0, gram)
    antipodal = off_diagonal <= -1.0 + tol
    orthogonal = np.abs(off_diagonal) <= tol
    return bool(
        np.all(antipodal.sum(axis=1) == 1)
        and np.all((antipodal | orthogonal).sum(axis=1) == k)
    )


POLYGON_NAMES = {3: "triangle", 4: "square"}
SIMPLEX_NAMES = {4: "tetrahedron"}
CROSS_POLYTOPE_NAMES = {6: "octahedron"}


def classify_centres(centres: np.ndarray, shape_tol: float) -> Shape:
    """Return the class of a state from the unit centres ``(k, dim)`` of its clusters."""
    k = len(centres)
    if k == 1:
        return Shape(CLASS_CONSENSUS, "")
    gram = centres @ centres.T
    if k == 2:
        if gram[0, 1] <= -1.0 + shape_tol:
            return Shape(CLASS_BIPARTITE, "")
        return Shape(CLASS_CLUSTERING, "")
    if _regular_polygon(centres, shape_tol):
        return Shape(CLASS_POLYGONAL, POLYGON_NAMES.get(k, f"regular {k}-gon"))
    if _regular_simplex(gram, shape_tol):
        return Shape(CLASS_POLYGONAL, SIMPLEX_NAMES.get(k, f"regular {k}-vertex simplex"))
    if _cross_polytope(gram, shape_tol):
        return Shape(
            CLASS_POLYGONAL, CROSS_POLYTOPE_NAMES.get(k, f"{k}-vertex cross-polytope")
        )
    return Shape(CLASS_CLUSTERING, "")


@dataclass(frozen=True)
class Alignment:
    """Closest eigenspace of ``V`` to one cluster centre.

    Attributes
    ----------
    eigenspace : int
        Index of the eigenspace, from 1 (largest real part of the eigenvalue).
    sign : int
        +1 or -1 when the eigenspace is one real vector, else 0.
    cos : float
        ``|cos|`` of the angle between the centre and the eigenspace.
    """

    eigenspace: int
    sign: int
    cos: float


def align(centre: np.ndarray, spaces: list[Eigenspace]) -> Alignment:
    """Return the eigenspace of ``V`` closest to the unit vector ``centre``."""
    cosines = [float(np.linalg.norm(space.basis.T @ centre)) for space in spaces]
    best = int(np.argmax(cosines))
    space = spaces[best]
    sign = 0
    if space.is_vector:
        sign = 1 if float(space.basis[:, 0] @ centre) >= 0.0 else -1
    return Alignment(space.index, sign, min(1.0, cosines[best]))


@dataclass
class Attractor:
    """One distinct attractor: its class, geometry, alignment and representative.

    Attributes
    ----------
    class_code : int
        Index into `CLASS_NAMES`.
    shape : str
        Name of the polygon or polytope for the polygonal class, else empty.
    multiplicity : numpy.ndarray
        Tokens per cluster, sorted in decreasing order, shape ``(k,)``.
    centres : numpy.ndarray
        Unit cluster centres in the order of ``multiplicity``, shape ``(k, dim)``.
    alignment : list of Alignment
        Closest eigenspace of ``V`` for each centre.
    state : numpy.ndarray
        Representative final state, shape ``(n_tokens, dim)``.
    first_ic : int
        Global index of the representative initial condition.
    label : str
        Readable description, such as ``bipartite 3@+v1 1@-v1``.
    """

    class_code: int
    shape: str
    multiplicity: np.ndarray
    centres: np.ndarray
    alignment: list[Alignment]
    state: np.ndarray
    first_ic: int
    label: str = ""
    count: int = 0
    steps_total: int = 0


def _position(alignment: Alignment, space_name: str, shape_tol: float) -> str:
    if alignment.cos < 1.0 - shape_tol:
        return f"~{space_name}"
    if alignment.sign == 0:
        return space_name
    return f"{'+' if alignment.sign > 0 else '-'}{space_name}"


def describe(
    state: np.ndarray,
    first_ic: int,
    spaces: list[Eigenspace],
    classification: Classification,
) -> Attractor:
    """Build the catalog description of the attractor whose final state is ``state``."""
    clusters = cluster_tokens(state[None], np.ones(1, dtype=bool), classification.cluster_tol)
    k = int(clusters.n_clusters[0])
    centres = clusters.centres[0, :k]
    multiplicity = clusters.multiplicity[0, :k]
    alignment = [align(centre, spaces) for centre in centres]

    # Clusters by decreasing multiplicity, then by eigenspace and sign, for a stable
    # reading order.
    order = sorted(
        range(k),
        key=lambda c: (-multiplicity[c], alignment[c].eigenspace, -alignment[c].sign),
    )
    centres = centres[order]
    multiplicity = multiplicity[order]
    alignment = [alignment[c] for c in order]
    shape = classify_centres(centres, classification.shape_tol)

    class_name = CLASS_NAMES[shape.class_code]
    if shape.class_code == CLASS_POLYGONAL:
        label = f"{class_name} {shape.name}"
        if len(set(multiplicity.tolist())) > 1:
            label += " (" + ":".join(str(m) for m in multiplicity) + ")"
    else:
        names = {space.index: space.name for space in spaces}
        positions = [
            f"{m}@{_position(a, names[a.eigenspace], classification.shape_tol)}"
            for m, a in zip(multiplicity, alignment)
        ]
        label = f"{class_name} " + " ".join(positions)
    return Attractor(
        class_code=shape.class_code,
        shape=shape.name,
        multiplicity=multiplicity,
        centres=centres,
        alignment=alignment,
        state=np.array(state, dtype=np.float64),
        first_ic=int(first_ic),
        label=label,
    )


@dataclass
class Matcher:
    """Decides which final states belong to the same attractor, for one system.

    Parameters
    ----------
    system : System
        The system; its continuous symmetries decide how states are compared.
    classification : Classification
        ``cluster_tol`` for the clusters, ``shape_tol`` for the comparison.
    """

    system: System
    classification: Classification
    generators: np.ndarray = field(init=False)
    fixed: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.generators = continuous_symmetries(self.system)
        self.fixed = fixed_subspace(self.generators, self.system.dim)

    @cached_property
    def symmetric(self) -> bool:
        """Whether the system has a continuous symmetry."""
        return len(self.generators) > 0

    def features(self, states: np.ndarray, selected: np.ndarray) -> StateFeatures:
        """Compute what the comparison of the selected states needs."""
        clusters = cluster_tokens(states, selected, self.classification.cluster_tol)
        invariants = None
        if self.symmetric:
            invariants = _rotation_invariants(states, self.fixed)
        return StateFeatures(clusters, invariants)

    def group_representatives(
        self, features: StateFeatures, candidates: np.ndarray
    ) -> tuple[np.ndarray, list[int]]:
        """Group states into attractors, each represented by its first member.

        Parameters
        ----------
        features : StateFeatures
            Features of all states.
        candidates : numpy.ndarray of int
            Positions of the states to group, in increasing order.

        Returns
        -------
        group : numpy.ndarray of int
            Group number of each candidate (aligned with ``candidates``).
        representatives : list of int
            Position of the first member of each group, in increasing order of
            group number.
        """
        group = np.full(len(candidates), -1, dtype=np.int64)
        representatives: list[int] = []
        _, signature = np.unique(
            _multiplicity_keys(features.sorted_multiplicity(candidates)),
            axis=0,
            return_inverse=True,
        )
        for value in range(int(signature.max(initial=-1)) + 1):
            members = np.flatnonzero(signature.ravel() == value)
            while len(members):
                representative = candidates[members[0]]
                distance = features.distance(candidates[members], representative)
                same = distance <= self.classification.shape_tol
                same[0] = True
                group[members[same]] = len(representatives)
                representatives.append(int(representative))
                members = members[~same]

        # Number the groups by their first member, independent of the signatures.
        order = np.argsort(representatives, kind="stable")
        renumber = np.empty(len(order), dtype=np.int64)
        renumber[order] = np.arange(len(order))
        return renumber[group], [representatives[k] for k in order]


def _multiplicity_keys(sorted_multiplicity: np.ndarray) -> np.ndarray:
    """Return one integer per row that orders rows like the rows themselves.

    Rows hold multiplicities in ``0 .. n``, so reading a row as the digits of a
    number in base ``n + 1`` keeps the lexicographic order; `np.unique` on one
    int64 column is much faster than on rows. Rows that do not fit in int64 are
    returned unchanged.
    """
    m, n = sorted_multiplicity.shape
    if n * math.log2(n + 1) >= 62:
        return sorted_multiplicity
    keys = np.zeros(m, dtype=np.int64)
    for column in range(n):
        keys = keys * (n + 1) + sorted_multiplicity[:, column]
    return keys


@dataclass(frozen=True)
class StateFeatures:
    """Clusters of many states and, for symmetric systems, rotation invariants."""

    clusters: Clusters
    invariants: np.ndarray | None

    def sorted_multiplicity(self, positions: np.ndarray) -> np.ndarray:
        """Return each state's multiplicities in decreasing order, shape (m, n_tokens).

        Equal rows are a necessary condition for two states to match.
        """
        return -np.sort(-self.clusters.multiplicity[positions], axis=1)

    def distance(self, positions: np.ndarray, reference: int) -> np.ndarray:
        """Return the distance of each state in ``positions`` to the state ``reference``.

        States must share the reference's multiplicities. Without symmetry this is
        the largest distance from a centre to the nearest centre of equal
        multiplicity in the reference; with symmetry, the largest difference of the
        rotation invariants.
        """
        if self.invariants is not None:
            difference = self.invariants[positions] - self.invariants[reference]
            return np.abs(difference).max(axis=1, initial=0.0)
        out = np.empty(len(positions))
        _centre_distance(
            self.clusters.centres,
            self.clusters.multiplicity,
            np.ascontiguousarray(positions, dtype=np.int64),
            reference,
            out,
        )
        return out


@njit(cache=True)
def _centre_distance(centres, multiplicity, positions, reference, out):
    """Write, for each state in ``positions``, the largest distance from one of its
    centres to the nearest centre of equal multiplicity of state ``reference``
    (infinity if there is none, NaN if a centre is NaN)."""
    n, d = centres.shape[1], centres.shape[2]
    for p in range(positions.shape[0]):
        state = positions[p]
        largest = 0.0
        for k in range(n):
            count = multiplicity[state, k]
            if count == 0:
                continue
            nearest = np.inf
            for r in range(n):
                if multiplicity[reference, r] != count:
                    continue
                squared = 0.0
                for a in range(d):
                    gap = centres[state, k, a] - centres[reference, r, a]
                    squared += gap * gap
                if squared < nearest or squared != squared:
                    nearest = squared
            if nearest > largest or nearest != nearest:
                largest = nearest
        out[p] = math.sqrt(largest)


def _rotation_invariants(states: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    m, n, _ = states.shape
    gram = np.einsum("mia,mja->mij", states, states)
    upper = np.triu_indices(n, k=1)
    pairs = np.sort(gram[:, upper[0], upper[1]], axis=1)
    projections = np.einsum("mia,ak->mki", states, fixed)
    components = np.sort(projections, axis=2).reshape(m, n * fixed.shape[1])
    return np.concatenate([pairs, components], axis=1)


@dataclass(frozen=True)
class ChunkClassification:
    """Classification of the final states of one chunk.

    Attributes
    ----------
    local_label : numpy.ndarray
        Attractor of each state, numbered within the chunk in order of first
        appearance, shape ``(m,)``, int32; -1 where the state did not converge.
    class_code : numpy.ndarray
        Class of each state, shape ``(m,)``, int8; -1 where it did not converge.
    attractors : list of Attractor
        The chunk's attractors, indexed by local label.
    """

    local_label: np.ndarray
    class_code: np.ndarray
    attractors: list[Attractor]


def classify_states(
    final_state: np.ndarray,
    status: np.ndarray,
    matcher: Matcher,
    spaces: list[Eigenspace],
    first_index: int,
) -> ChunkClassification:
    """Classify the converged final states of a chunk and group them into attractors.

    Parameters
    ----------
    final_state : numpy.ndarray, shape (m, n_tokens, dim)
        Final states.
    status : numpy.ndarray, shape (m,)
        Status codes; only converged states are classified.
    matcher : Matcher
        Comparison of states for the system.
    spaces : list of Eigenspace
        Eigenspaces of ``V``, for the alignment.
    first_index : int
        Global index of the chunk's first initial condition.
    """
    selected = status == STATUS_CONVERGED
    features = matcher.features(final_state, selected)
    candidates = np.flatnonzero(selected)
    group, representatives = matcher.group_representatives(features, candidates)
    attractors = [
        describe(final_state[r], first_index + r, spaces, matcher.classification)
        for r in representatives
    ]

    local_label = np.full(len(status), -1, dtype=np.int32)
    local_label[candidates] = group
    class_code = np.full(len(status), CLASS_NONE, dtype=np.int8)
    if attractors:
        codes = np.array([a.class_code for a in attractors], dtype=np.int8)
        class_code[candidates] = codes[group]
    return ChunkClassification(local_label, class_code, attractors)
