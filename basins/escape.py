"""The smallest perturbation of an attractor that leads to another basin.

For an attractor of the catalog with representative state ``X*``, a perturbation of
size ``s`` in the unit tangent direction ``u`` is the point ``exp_{X*}(s u)`` at
geodesic distance ``s`` on the product of spheres. Along each of many random
directions (uniform on the unit tangent sphere), the search

1. scans ``s = max_size * j / scan_points`` for ``j = 1, 2, ...`` until the outcome
   differs from the attractor, integrating the next point of every direction still
   inside its basin in one batch per step;
2. bisects between the last size inside and the first outside until the bracket is
   at most ``tol`` long (`basins.geometry.refine_crossings`).

The result per direction is the escape size and the basin reached just past it. The
smallest size over the directions that reach a given basin estimates the minimal
perturbation towards that basin (in the spirit of the minimal fatal shocks of
Halekotte and Feudel, "Minimal fatal shocks in multistable complex networks", Sci.
Rep. 10, 2020, doi:10.1038/s41598-020-68805-6).

Limits: the estimate is an upper bound of the true minimum, which may lie between the
sampled directions, and it tightens as directions are added. A basin that a ray
enters and leaves between two scan points is missed; a finer scan finds it.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from basins import atlas
from basins.config import Config
from basins.errors import AtlasError
from basins.geometry import (
    STATUS_DONE,
    BasinProbe,
    block_bounds,
    catalog_states,
    check_count,
    check_index,
    check_positive,
    create_array,
    exp_map,
    grow_arrays,
    holding_writer_lock,
    open_section,
    pending_blocks,
    random_direction,
    refine_crossings,
    use_numba_threads,
)
from basins.kernels import STATUS_PENDING

logger = logging.getLogger(__name__)

SECTION = "escape"

# Target of a direction that stays in the attractor's basin up to max_size.
NO_ESCAPE = -3


@dataclass(frozen=True)
class EscapeSettings:
    """Settings of the escape search of `find_escapes`, the same for each attractor.

    Parameters
    ----------
    n_directions : int
        Random unit tangent directions. A later call with more extends the stored
        ones; direction ``k`` depends only on ``(seed, attractor, k)``.
    max_size : float
        Largest perturbation tried (geodesic distance, radians).
    scan_points : int
        Sizes tried along each direction before the bisection; the scan step is
        ``max_size / scan_points``.
    tol : float
        Bisection stops once the bracket is at most this long.
    seed : int
        Seed of the directions.
    chunk_size : int
        Directions per task and per stored chunk; only used when a group is created.
    """

    n_directions: int = 128
    max_size: float = math.pi
    scan_points: int = 32
    tol: float = 1e-4
    seed: int = 0
    chunk_size: int = 32

    def __post_init__(self) -> None:
        for name in ("n_directions", "scan_points", "chunk_size"):
            object.__setattr__(self, name, check_count(name, getattr(self, name)))
        for name in ("max_size", "tol"):
            object.__setattr__(self, name, check_positive(name, getattr(self, name)))
        object.__setattr__(self, "seed", check_count("seed", self.seed, minimum=0))

    def stored(self) -> dict[str, Any]:
        """Return the settings that define the stored results (chunking left out)."""
        return {
            "n_directions": self.n_directions,
            "max_size": self.max_size,
            "scan_points": self.scan_points,
            "tol": self.tol,
            "seed": self.seed,
        }


def escape_directions(
    state: np.ndarray, attractor_id: int, seed: int, start: int, stop: int
) -> np.ndarray:
    """Return the unit tangent directions ``start .. stop-1`` at ``state``.

    Direction ``k`` is drawn by ``numpy.random.default_rng([seed, attractor_id, k])``,
    so it does not depend on chunking or on the other directions.
    """
    return np.stack(
        [
            random_direction(state, np.random.default_rng([seed, attractor_id, k]))
            for k in range(start, stop)
        ]
    )


@dataclass(frozen=True)
class Escapes:
    """Escape sizes along a set of directions from one state.

    Attributes
    ----------
    size : numpy.ndarray, shape (m,)
        Middle of the final bracket; NaN where no escape was found up to max_size.
    width : numpy.ndarray, shape (m,)
        Length of the final bracket; NaN where there is no escape.
    target : numpy.ndarray of int32, shape (m,)
        Outcome just past the escape size, or `NO_ESCAPE`.
    steps : numpy.ndarray of int64, shape (m,)
        RK4 steps spent on each direction.
    """

    size: np.ndarray
    width: np.ndarray
    target: np.ndarray
    steps: np.ndarray


def search_escapes(
    probe: BasinProbe,
    state: np.ndarray,
    attractor_id: int,
    directions: np.ndarray,
    *,
    max_size: float,
    scan_points: int,
    tol: float,
) -> Escapes:
    """Find the first size at which each direction leaves the basin of ``attractor_id``.

    Parameters
    ----------
    probe : BasinProbe
        Integrates points and labels their outcomes.
    state : numpy.ndarray, shape (n_tokens, dim)
        A state of the attractor (its outcome is ``attractor_id``).
    attractor_id : int
        The attractor's catalog id.
    directions : numpy.ndarray, shape (m, n_tokens, dim)
        Unit tangent vectors at ``state``.
    max_size, scan_points, tol : see `EscapeSettings`.

    Returns
    -------
    Escapes
    """
    m = len(directions)
    base = np.broadcast_to(state, directions.shape)
    step = max_size / scan_points
    upper = np.full(m, np.nan)
    outer = np.full(m, NO_ESCAPE, dtype=np.int32)
    steps = np.zeros(m, dtype=np.int64)

    inside = np.arange(m)
    for j in range(1, scan_points + 1):
        if not len(inside):
            break
        arc = step * j
        labels, spent = probe.evaluate(exp_map(base[inside], arc * directions[inside]))
        steps[inside] += spent
        left = labels != attractor_id
        upper[inside[left]] = arc
        outer[inside[left]] = labels[left]
        inside = inside[~left]

    escaped = np.flatnonzero(outer != NO_ESCAPE)
    size = np.full(m, np.nan)
    width = np.full(m, np.nan)
    target = outer.copy()
    if len(escaped):
        crossings = refine_crossings(
            probe,
            np.ascontiguousarray(base[escaped]),
            directions[escaped],
            upper[escaped] - step,
            upper[escaped],
            np.full(len(escaped), attractor_id, dtype=np.int32),
            outer[escaped],
            tol=tol,
            limit=max_size,
        )
        size[escaped] = crossings.position
        width[escaped] = crossings.width
        target[escaped] = crossings.outer
        steps[escaped] += crossings.steps
    return Escapes(size, width, target, steps)


def _create_arrays(group: zarr.Group, config: Config, size: int, chunk: int) -> None:
    n, d = config.system.n_tokens, config.system.dim
    create_array(
        group,
        "direction",
        (size, n, d),
        (chunk, n, d),
        "float64",
        np.nan,
        ("direction", "token", "component"),
    )
    create_array(group, "size", (size,), (chunk,), "float64", np.nan, ("direction",))
    create_array(group, "width", (size,), (chunk,), "float64", np.nan, ("direction",))
    create_array(group, "target", (size,), (chunk,), "int32", NO_ESCAPE, ("direction",))
    create_array(group, "steps", (size,), (chunk,), "int64", -1, ("direction",))
    create_array(
        group, "status", (size,), (chunk,), "int8", STATUS_PENDING, ("direction",)
    )


def compute_escape_chunk(
    config_data: dict[str, Any],
    path: str,
    chunk: int,
    numba_threads: int | None = None,
    *,
    attractors: tuple[int, ...] = (0,),
    stride: int = 1,
) -> dict[str, int]:
    """Search one chunk of directions of one attractor and write the results.

    Chunk ``c`` is chunk ``c % stride`` of attractor ``attractors[c // stride]``, so
    that one list of task indices covers several attractors. The signature is that
    of a `basins.mapping.run_tasks` task; ``status`` is written last.
    """
    use_numba_threads(numba_threads)
    config = Config.from_dict(config_data)
    attractor_id = attractors[chunk // stride]
    group = zarr.open_group(path, mode="r+")[f"{SECTION}/{attractor_id}"]
    settings = group.attrs["settings"]
    status = group["status"]
    start, stop = block_bounds(chunk % stride, status.chunks[0], status.shape[0])

    references = catalog_states(path)
    state = references[attractor_id]
    directions = escape_directions(
        state, attractor_id, int(settings["seed"]), start, stop
    )
    probe = BasinProbe(config, references)
    escapes = search_escapes(
        probe,
        state,
        attractor_id,
        directions,
        max_size=float(settings["max_size"]),
        scan_points=int(settings["scan_points"]),
        tol=float(settings["tol"]),
    )
    group["direction"][start:stop] = directions
    group["size"][start:stop] = escapes.size
    group["width"][start:stop] = escapes.width
    group["target"][start:stop] = escapes.target
    group["steps"][start:stop] = escapes.steps
    status[start:stop] = np.full(stop - start, STATUS_DONE, dtype=np.int8)
    logger.debug(
        "escape chunk %d of attractor %d: %d directions, %d RK4 steps",
        chunk % stride,
        attractor_id,
        stop - start,
        probe.steps,
    )
    return {"chunk": chunk, "steps": probe.steps}


@dataclass(frozen=True)
class TargetRow:
    """Escapes from one attractor towards one outcome.

    Attributes
    ----------
    target : int
        Catalog id or negative outcome label; `NO_ESCAPE` for the directions that
        stayed in the basin up to ``max_size``.
    directions : int
        Directions that escape towards ``target``.
    smallest, median : float
        Smallest and median escape size over those directions (NaN for
        `NO_ESCAPE`).
    best_direction : int
        Index of the direction with the smallest size (-1 for `NO_ESCAPE`).
    """

    target: int
    directions: int
    smallest: float
    median: float
    best_direction: int


@dataclass(frozen=True)
class EscapeSummary:
    """Escape sizes of one attractor, per target basin.

    Attributes
    ----------
    attractor : int
        Catalog id.
    label : str
        Catalog label of the attractor.
    size, target : numpy.ndarray
        Per computed direction (see `Escapes`).
    rows : list of TargetRow
        Per target, by increasing smallest size; directions without an escape up to
        ``max_size`` form a last row with target `NO_ESCAPE`.
    pending : int
        Directions not computed yet.
    settings : dict
        The stored settings.
    """

    attractor: int
    label: str
    size: np.ndarray
    target: np.ndarray
    rows: list[TargetRow]
    pending: int
    settings: dict[str, Any]

    @property
    def smallest(self) -> float:
        """Smallest escape size over all directions and targets (NaN if none)."""
        sizes = self.size[np.isfinite(self.size)]
        return float(sizes.min()) if len(sizes) else math.nan


def _target_rows(
    size: np.ndarray, target: np.ndarray, index: np.ndarray
) -> list[TargetRow]:
    rows = []
    for value in np.unique(target):
        if value == NO_ESCAPE:
            continue
        members = np.flatnonzero(target == value)
        best = members[np.argmin(size[members])]
        rows.append(
            TargetRow(
                int(value),
                len(members),
                float(size[best]),
                float(np.median(size[members])),
                int(index[best]),
            )
        )
    rows.sort(key=lambda row: row.smallest)
    stayed = int(np.sum(target == NO_ESCAPE))
    if stayed:
        rows.append(TargetRow(NO_ESCAPE, stayed, math.nan, math.nan, -1))
    return rows


def read_escapes(path: str | Path, attractor_id: int) -> EscapeSummary:
    """Read the escape search of one attractor from the atlas at ``path``.

    Raises
    ------
    AtlasError
        If the atlas has no escape search for this attractor.
    """
    root = atlas.open_store(path)
    key = f"{SECTION}/{attractor_id}"
    if key not in root:
        raise AtlasError(
            f"atlas {str(path)!r} has no escape search for attractor {attractor_id}; "
            f"compute it with 'basins escape {path} --attractor {attractor_id}'"
        )
    group = root[key]
    done = group["status"][:] == STATUS_DONE
    size = group["size"][:][done]
    target = group["target"][:][done]
    rows = _target_rows(size, target, np.flatnonzero(done))
    labels = root["catalog"].attrs["label"]
    return EscapeSummary(
        attractor=attractor_id,
        label=labels[attractor_id],
        size=size,
        target=target,
        rows=rows,
        pending=int(np.sum(~done)),
        settings=dict(group.attrs["settings"]),
    )


@holding_writer_lock("escape")
def find_escapes(
    path: str | Path,
    attractors: list[int] | None = None,
    settings: EscapeSettings | None = None,
    *,
    execution=None,
    max_chunks: int | None = None,
    overwrite: bool = False,
) -> list[EscapeSummary]:
    """Search the escape sizes of attractors of an atlas and store them.

    Results go to the groups ``escape/ID``. Chunks computed by an earlier call are
    kept, so an interrupted call is completed by repeating it, and a call with more
    directions computes only the new ones.

    Parameters
    ----------
    path : str or path
        An atlas with a catalog.
    attractors : list of int, optional
        Catalog ids; default: every attractor.
    settings : EscapeSettings, optional
        Directions, sizes, tolerance and seed.
    execution : basins.mapping.Execution, optional
        Where the tasks run; by default a local Dask cluster.
    max_chunks : int, optional
        Compute at most this many pending chunks, then stop.
    overwrite : bool
        Recompute the listed attractors from scratch.

    Returns
    -------
    list of EscapeSummary
        One per attractor, in the order given.

    Raises
    ------
    AtlasError
        If the atlas has no catalog, or a stored search has other settings.
    ConfigError
        If an attractor id is not in the catalog.
    """
    from basins.mapping import Execution, _select, run_tasks

    settings = settings or EscapeSettings()
    execution = execution or Execution()
    path = Path(path)
    config = atlas.read_config(path)
    n_attractors = len(atlas.read_catalog(path))
    if attractors is None:
        attractors = list(range(n_attractors))
    attractors = [
        check_index("attractor", a, n_attractors, "the catalog's ids")
        for a in attractors
    ]
    attractors = list(dict.fromkeys(attractors))

    pending: dict[int, list[int]] = {}
    for attractor_id in attractors:
        group, created = open_section(
            path,
            SECTION,
            str(attractor_id),
            settings.stored(),
            overwrite=overwrite,
            growable=("n_directions",),
        )
        if created:
            _create_arrays(group, config, settings.n_directions, settings.chunk_size)
        elif settings.n_directions > group["status"].shape[0]:
            grow_arrays(group, settings.n_directions)
        group.attrs["label"] = atlas.open_store(path)["catalog"].attrs["label"][
            attractor_id
        ]
        pending[attractor_id] = pending_blocks(
            group["status"][:], group["status"].chunks[0]
        )

    stride = max(1, max((max(c, default=-1) + 1 for c in pending.values()), default=1))
    chunks = _select(
        [
            position * stride + chunk
            for position, attractor_id in enumerate(attractors)
            for chunk in pending[attractor_id]
        ],
        max_chunks,
    )
    logger.info(
        "escape search of %d attractors of %s: %d chunks to compute",
        len(attractors),
        path,
        len(chunks),
    )
    if chunks:
        task = functools.partial(
            compute_escape_chunk, attractors=tuple(attractors), stride=stride
        )
        run_tasks(
            config,
            path,
            chunks,
            execution,
            task,
            name="escape",
            retry_hint=f"basins escape {path} with the same options",
        )
    return [read_escapes(path, attractor_id) for attractor_id in attractors]
