"""Geometry of the state space and the search for basin boundaries.

The state space is the product of spheres ``(S^{d-1})^n`` with the product of the
round metrics. The geodesic distance between configurations ``X`` and ``Y`` is

    dist(X, Y) = sqrt(sum_i theta_i^2),    theta_i = angle(x_i, y_i),

and the geodesic from ``X`` to ``Y`` moves every token along its own great circle at
a constant speed proportional to ``theta_i`` (spherical linear interpolation, token
by token). Tangent vectors at ``X`` are ``(n, d)`` arrays whose rows are orthogonal
to the tokens; their length is the Frobenius norm.

This module contains the parts that boundary sampling (`basins.boundary`), slices
(`basins.entropy`) and escape searches (`basins.escape`) share. These are the
exponential and logarithm maps, random tangent directions, `BasinProbe` (integrate
states and name the catalog attractor each reaches), `refine_crossings` (bisection
along many geodesics at once) and the helpers that create and resume their groups in
an atlas.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import zarr

from basins import atlas, lock
from basins.classify import Matcher
from basins.config import Config, _check_int, _check_real
from basins.errors import AtlasError, ConfigError
from basins.integrate import integrate
from basins.kernels import STATUS_CONVERGED, STATUS_PENDING
from basins.sampling import initial_conditions

logger = logging.getLogger(__name__)

# Outcome labels besides the catalog ids 0, 1, ...: a trajectory that did not converge
# (max_steps or nonfinite), and one that converged to an equilibrium missing from the
# catalog, typically a saddle on a basin boundary.
NO_ATTRACTOR = -1
UNCATALOGUED = -2

# Status of an entry of a geometry group: pending (the fill value) or computed.
STATUS_DONE = 0

# Batches smaller than this are integrated in the calling thread: waking Numba's
# thread pool costs more than it saves for a few dozen short trajectories, and both
# kernels give bit-identical results.
PARALLEL_MIN_STATES = 256

# Initial conditions whose indices are at most this far apart are regenerated in one
# call of the sampler, together with the ones between them.
SAMPLER_MAX_GAP = 4096


def project_tangent(base: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Project ``vector`` onto the tangent space at ``base``, token by token.

    Both arrays have shape ``(..., n_tokens, dim)``; ``base`` has unit tokens.
    """
    return vector - np.sum(vector * base, axis=-1, keepdims=True) * base


def exp_map(base: np.ndarray, tangent: np.ndarray) -> np.ndarray:
    """Follow the geodesic from ``base`` with initial velocity ``tangent`` for unit time.

    Parameters
    ----------
    base : numpy.ndarray, shape (..., n_tokens, dim)
        Unit tokens.
    tangent : numpy.ndarray, shape (..., n_tokens, dim)
        Tangent vectors at ``base`` (rows orthogonal to the tokens).

    Returns
    -------
    numpy.ndarray
        ``cos(|v_i|) x_i + sin(|v_i|) v_i / |v_i|`` for every token, renormalised to
        unit length; the point at geodesic distance ``||tangent||`` from ``base``.
    """
    norm = np.linalg.norm(tangent, axis=-1, keepdims=True)
    unit = tangent / np.where(norm > 0.0, norm, 1.0)
    point = np.cos(norm) * base + np.sin(norm) * unit
    return point / np.linalg.norm(point, axis=-1, keepdims=True)


def _orthogonal_unit(token: np.ndarray) -> np.ndarray:
    """Return a fixed unit vector orthogonal to ``token``, from the least aligned axis."""
    axis = np.zeros_like(token)
    axis[np.argmin(np.abs(token))] = 1.0
    vector = axis - (axis @ token) * token
    return vector / np.linalg.norm(vector)


def log_map(base: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Return the tangent vector at ``base`` whose geodesic reaches ``target`` at time 1.

    Parameters
    ----------
    base, target : numpy.ndarray, shape (..., n_tokens, dim)
        Unit tokens.

    Returns
    -------
    numpy.ndarray
        Tangent vectors of the same shape; row ``i`` has length ``theta_i``, the
        angle between the tokens.

    Notes
    -----
    The angle is ``atan2(|y - (x.y) x|, x.y)``, accurate near 0 and near pi. For an
    exactly antipodal token every great circle is a geodesic; the one towards the
    coordinate axis least aligned with the token is used.
    """
    cosine = np.sum(base * target, axis=-1, keepdims=True)
    normal = target - cosine * base
    sine = np.linalg.norm(normal, axis=-1, keepdims=True)
    angle = np.arctan2(sine, cosine)
    direction = normal / np.where(sine > 0.0, sine, 1.0)
    antipodal = (sine[..., 0] == 0.0) & (cosine[..., 0] < 0.0)
    for index in zip(*np.nonzero(antipodal)):
        direction[index] = _orthogonal_unit(base[index])
    return angle * direction


def distance(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return the geodesic distance between configurations, shape ``(...)``.

    ``first`` and ``second`` have shape ``(..., n_tokens, dim)``.
    """
    return np.linalg.norm(log_map(first, second), axis=(-2, -1))


def random_direction(
    base: np.ndarray, rng: np.random.Generator, tokens: np.ndarray | None = None
) -> np.ndarray:
    """Draw a unit tangent vector at ``base``, uniform on the unit tangent sphere.

    Parameters
    ----------
    base : numpy.ndarray, shape (n_tokens, dim)
        Unit tokens.
    rng : numpy.random.Generator
        Source of the standard normal entries.
    tokens : numpy.ndarray of bool, shape (n_tokens,), optional
        Tokens allowed to move; the others get zero rows. Default: all.
    """
    gaussian = rng.standard_normal(base.shape)
    if tokens is not None:
        gaussian[~np.asarray(tokens, dtype=bool)] = 0.0
    tangent = project_tangent(base, gaussian)
    return tangent / np.linalg.norm(tangent)


def atlas_initial_conditions(config: Config, indices: np.ndarray) -> np.ndarray:
    """Regenerate the atlas's initial conditions ``indices``, shape ``(m, n, d)``.

    NOTE: this regenerates them from the seed, so it is only right for atlases whose
    initial conditions were sampled (the only kind `basins.run` writes today).
    """
    system = config.system
    indices = np.asarray(indices, dtype=np.int64)
    states = np.empty((len(indices), system.n_tokens, system.dim))
    order = np.argsort(indices, kind="stable")
    ordered = indices[order]
    breaks = np.flatnonzero(np.diff(ordered) > SAMPLER_MAX_GAP) + 1
    for run in np.split(np.arange(len(ordered)), breaks):
        if not len(run):
            continue
        start = int(ordered[run[0]])
        block = initial_conditions(
            config.sampling.seed,
            start,
            int(ordered[run[-1]]) - start + 1,
            system.n_tokens,
            system.dim,
        )
        states[order[run]] = block[ordered[run] - start]
    return states


class BasinProbe:
    """Integrates configurations and names the catalog attractor each one reaches.

    Parameters
    ----------
    config : Config
        The atlas's configuration: system, integrator and classifier tolerances.
    references : numpy.ndarray, shape (k, n_tokens, dim)
        Representative final state of each catalog attractor, in id order.

    Attributes
    ----------
    steps : int
        RK4 steps taken by all calls so far.
    """

    def __init__(self, config: Config, references: np.ndarray) -> None:
        self.config = config
        self.references = np.asarray(references, dtype=np.float64)
        self.matcher = Matcher(config.system, config.classification)
        self.steps = 0

    def identify(self, final_state: np.ndarray, status: np.ndarray) -> np.ndarray:
        """Return the catalog id of each final state, or a negative outcome label.

        A converged state gets the id of the nearest reference with the same
        multiplicities when that reference is within ``shape_tol``, the rule that
        builds the catalog. Other converged states get `UNCATALOGUED`, and
        unconverged ones `NO_ATTRACTOR`.
        """
        m = len(final_state)
        k = len(self.references)
        labels = np.full(m, NO_ATTRACTOR, dtype=np.int32)
        converged = status == STATUS_CONVERGED
        labels[converged] = UNCATALOGUED
        if k == 0 or not converged.any():
            return labels

        states = np.concatenate([self.references, final_state])
        selected = np.concatenate([np.ones(k, dtype=bool), converged])
        features = self.matcher.features(states, selected)
        signature = features.sorted_multiplicity(np.arange(k + m))
        candidates = k + np.flatnonzero(converged)
        best = np.full(m, np.inf)
        for reference in range(k):
            same = np.all(signature[candidates] == signature[reference], axis=1)
            positions = candidates[same]
            if not len(positions):
                continue
            gap = features.distance(positions, reference)
            closer = (gap <= self.config.classification.shape_tol) & (
                gap < best[positions - k]
            )
            labels[positions[closer] - k] = reference
            best[positions[closer] - k] = gap[closer]
        return labels

    def evaluate(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integrate ``states`` ``(m, n, d)``; return outcome labels and RK4 steps."""
        if len(states) == 0:
            return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int64)
        outcome = integrate(
            self.config.system,
            self.config.integration,
            states,
            parallel=len(states) >= PARALLEL_MIN_STATES,
        )
        self.steps += int(outcome.steps.sum())
        labels = self.identify(outcome.final_state, outcome.status)
        return labels, outcome.steps.astype(np.int64)

    def __call__(self, states: np.ndarray) -> np.ndarray:
        """Integrate ``states`` ``(m, n, d)`` and return the outcome label of each."""
        return self.evaluate(states)[0]


@dataclass(frozen=True)
class Crossings:
    """Points where geodesics leave a basin, each known to within a bracket.

    Attributes
    ----------
    position : numpy.ndarray, shape (m,)
        Arc length from the base point to the middle of the final bracket.
    width : numpy.ndarray, shape (m,)
        Length of the final bracket; the boundary lies within ``width / 2`` of
        ``position`` along the geodesic.
    outer : numpy.ndarray of int32, shape (m,)
        Outcome just past the crossing: a catalog id, or `NO_ATTRACTOR` or
        `UNCATALOGUED` where none was found before ``limit``.
    steps : numpy.ndarray of int64, shape (m,)
        RK4 steps spent on each geodesic.
    """

    position: np.ndarray
    width: np.ndarray
    outer: np.ndarray
    steps: np.ndarray


def _points(base: np.ndarray, direction: np.ndarray, arc: np.ndarray) -> np.ndarray:
    return exp_map(base, arc[:, None, None] * direction)


def refine_crossings(
    probe: BasinProbe,
    base: np.ndarray,
    direction: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    inner: np.ndarray,
    outer: np.ndarray,
    *,
    tol: float,
    limit: np.ndarray | float,
) -> Crossings:
    """Bisect brackets along many geodesics at once, one integration per level.

    Geodesic ``k`` is ``s -> exp_map(base[k], s * direction[k])`` with unit
    ``direction[k]``, so ``s`` is arc length. Its point at ``lower[k]`` reaches the
    attractor ``inner[k]`` and its point at ``upper[k]`` does not (its outcome is
    ``outer[k]``). Each level integrates the midpoints of all brackets still longer
    than ``tol`` and keeps the half whose ends have different outcomes. The lower
    end always reaches ``inner``, so the bracket ends on the boundary of that basin.

    Parameters
    ----------
    probe : BasinProbe
        Integrates points and labels their outcomes.
    base, direction : numpy.ndarray, shape (m, n_tokens, dim)
        Start points and unit tangent vectors.
    lower, upper : numpy.ndarray, shape (m,)
        Bracket ends, arc lengths with ``lower < upper``.
    inner, outer : numpy.ndarray of int, shape (m,)
        Outcomes at ``lower`` and ``upper``; ``outer != inner``.
    tol : float
        Bisection stops once ``upper - lower <= tol``.
    limit : float or numpy.ndarray
        Arc length up to which an unresolved outer outcome is searched (below).

    Returns
    -------
    Crossings

    Notes
    -----
    A midpoint that lands within about ``integration.tol`` of the stable manifold of
    a saddle can converge to the saddle or not converge at all: the point is on the
    boundary, but no basin is named on its far side. Once the brackets are small
    enough, such an outcome is replaced by the first catalog attractor found at
    ``upper + width * 2^j``, ``j = 0, 1, ...``, stopping at the last upper end with a
    catalog outcome (or at ``limit``). A search that meets ``inner`` again stops and
    leaves the outcome unresolved.
    """
    lower = np.array(lower, dtype=np.float64)
    upper = np.array(upper, dtype=np.float64)
    inner = np.asarray(inner, dtype=np.int32)
    outer = np.array(outer, dtype=np.int32)
    known = outer >= 0
    known_upper = np.where(known, upper, np.broadcast_to(limit, upper.shape))
    known_outer = outer.copy()
    steps = np.zeros(len(lower), dtype=np.int64)

    while True:
        active = np.flatnonzero(upper - lower > tol)
        if not len(active):
            break
        middle = 0.5 * (lower[active] + upper[active])
        labels, spent = probe.evaluate(_points(base[active], direction[active], middle))
        steps[active] += spent
        same = labels == inner[active]
        lower[active[same]] = middle[same]
        upper[active[~same]] = middle[~same]
        outer[active[~same]] = labels[~same]
        catalogued = ~same & (labels >= 0)
        known_upper[active[catalogued]] = middle[catalogued]
        known_outer[active[catalogued]] = labels[catalogued]

    width = upper - lower
    pending = np.flatnonzero(outer < 0)
    # At least tol, so that the search also moves past a bracket of length zero.
    offset = np.maximum(width[pending], tol)
    while len(pending):
        arc = upper[pending] + offset
        beyond = arc >= known_upper[pending]
        outer[pending[beyond]] = known_outer[pending[beyond]]
        pending, offset, arc = pending[~beyond], offset[~beyond], arc[~beyond]
        labels, spent = probe.evaluate(_points(base[pending], direction[pending], arc))
        steps[pending] += spent
        found = (labels >= 0) & (labels != inner[pending])
        outer[pending[found]] = labels[found]
        stop = found | (labels == inner[pending])
        pending, offset = pending[~stop], 2.0 * offset[~stop]
    return Crossings(0.5 * (lower + upper), width, outer, steps)


def use_numba_threads(numba_threads: int | None) -> None:
    """Set this thread's Numba pool size for a task, capped by the pool built at import."""
    if numba_threads is not None:
        numba.set_num_threads(min(numba_threads, numba.config.NUMBA_NUM_THREADS))


def catalog_states(path: str | Path) -> np.ndarray:
    """Return the representative final states of the catalog, ``(k, n, d)``."""
    return np.stack([entry.state for entry in atlas.read_catalog(path)])


def _plain(settings: dict[str, Any]) -> dict[str, Any]:
    """Return ``settings`` as it reads back from JSON attributes (tuples as lists)."""
    return json.loads(json.dumps(settings))


def open_section(
    path: str | Path,
    section: str,
    name: str,
    settings: dict[str, Any],
    *,
    overwrite: bool = False,
    growable: tuple[str, ...] = (),
) -> tuple[zarr.Group, bool]:
    """Open or create the group ``section/name`` of an atlas for a computation.

    Parameters
    ----------
    path : str or path
        The atlas; every chunk must be computed, so that the catalog is final.
    section, name : str
        Group path inside the atlas, such as ``boundary`` and ``all``.
    settings : dict
        Parameters of the computation, stored as the group's ``settings``
        attribute. An existing group with other settings is an error, unless the
        only differences are in ``growable`` keys, whose stored values are then
        replaced.
    overwrite : bool
        Remove an existing group and start afresh.
    growable : tuple of str
        Settings that may change between calls, such as a number of points to add.

    Returns
    -------
    group : zarr.Group
        The group, opened for writing.
    created : bool
        Whether the group is new.

    Raises
    ------
    AtlasError
        If the atlas has pending chunks, or the group exists with other settings
        and ``overwrite`` is false.
    """
    atlas.read_catalog(path)
    root = atlas.open_store(path, mode="r+")
    if not root.attrs.get("finalized", False):
        # Catalog ids change when more chunks are merged, so stored ids would go stale.
        raise AtlasError(
            f"atlas {str(path)!r} has pending chunks; complete it with "
            f"'basins resume {path}' first"
        )
    parent = root.require_group(section)
    settings = _plain(settings)
    if name in parent and overwrite:
        logger.info("replacing %s/%s in %s", section, name, path)
        del parent[name]
    if name in parent:
        group = parent[name]
        stored = dict(group.attrs.get("settings", {}))
        fixed = [key for key in settings if key not in growable]
        changed = [key for key in fixed if stored.get(key) != settings[key]]
        if changed:
            details = ", ".join(
                f"{key} = {stored.get(key)!r} stored, {settings[key]!r} requested"
                for key in changed
            )
            raise AtlasError(
                f"{section}/{name} in atlas {str(path)!r} was computed with other "
                f"settings ({details}); pass --overwrite (overwrite=True) to replace it"
            )
        group.attrs["settings"] = settings
        return group, False
    group = parent.create_group(name)
    group.attrs["settings"] = settings
    return group, True


def create_array(
    group: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: str,
    fill_value: Any,
    dimension_names: tuple[str, ...],
) -> zarr.Array:
    """Create one array of a geometry group (a thin wrapper that names every option)."""
    return group.create_array(
        name,
        shape=shape,
        chunks=chunks,
        dtype=dtype,
        fill_value=fill_value,
        dimension_names=dimension_names,
    )


def holding_writer_lock(command: str):
    """Run the decorated function, whose first argument is an atlas path, under the
    atlas's writer lock, so that no run, resume or other command writes meanwhile.

    ``command`` names the holder in the message a refused process prints.
    """

    def decorate(function):
        @functools.wraps(function)
        def locked(path, *args, **kwargs):
            with lock.acquire(path, command):
                return function(path, *args, **kwargs)

        return locked

    return decorate


def pending_blocks(status: np.ndarray, block: int) -> list[int]:
    """Return the blocks of ``block`` entries along axis 0 with a pending entry."""
    pending = np.any((status == STATUS_PENDING).reshape(len(status), -1), axis=1)
    n_blocks = -(-len(status) // block)
    return [b for b in range(n_blocks) if pending[b * block : (b + 1) * block].any()]


def block_bounds(block: int, size: int, total: int) -> tuple[int, int]:
    """Return the half-open range of entries of ``block`` (``size`` entries each)."""
    start = block * size
    return start, min(start + size, total)


def check_index(key: str, value: Any, stop: int, bound_name: str) -> int:
    """Check that ``value`` is an integer in ``[0, stop)`` and return it.

    ``bound_name`` describes ``stop`` in the message, such as ``the number of tokens``.
    """
    value = _check_int(key, value, 0)
    if value >= stop:
        raise ConfigError(
            f"{key} = {value!r} is invalid: expected 0 <= {key} < {stop} ({bound_name})"
        )
    return value


def check_count(key: str, value: Any, minimum: int = 1) -> int:
    """Check that ``value`` is an integer ``>= minimum`` and return it."""
    return _check_int(key, value, minimum)


def check_positive(key: str, value: Any) -> float:
    """Check that ``value`` is a finite number ``> 0`` and return it as a float."""
    return _check_real(key, value, minimum=0.0, strict=True)


def grow_arrays(group: zarr.Group, size: int) -> None:
    """Extend every array of ``group`` along axis 0 to ``size`` entries.

    The new entries hold the fill values, so their status is pending.
    """
    for _, array in group.arrays():
        array.resize((size, *array.shape[1:]))
