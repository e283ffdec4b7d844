"""Points on the boundaries between basins, located by bisection along geodesics.

Pairs of initial conditions of an atlas that reach different attractors are joined by
the geodesic of the product of spheres (every token moves along its great circle).
Bisection along it (`basins.geometry.refine_crossings`) narrows a bracket around a
point where the outcome changes until the bracket is no longer than ``tol``. The
middle of the bracket is stored as a boundary point, together with the attractors on
its two sides. Every level of the bisection integrates the midpoints of all pairs of a chunk
in one batch.

Pairs are chosen by a fixed rule, so a larger request extends the earlier points:

- all pairs: initial conditions ``2k`` and ``2k + 1`` for ``k = 0, 1, ...``, kept when
  both converged to different attractors;
- between attractors ``a`` and ``b``: the ``k``-th initial condition that reached
  ``a`` with the ``k``-th that reached ``b``.

Both give independent pairs of uniform initial conditions conditioned on their
outcomes. The boundary points follow the distribution that bisection between such
pairs induces, which is not uniform on the boundary.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from basins import atlas
from basins.config import Config
from basins.errors import AtlasError, ConfigError
from basins.geometry import (
    STATUS_DONE,
    BasinProbe,
    atlas_initial_conditions,
    block_bounds,
    catalog_states,
    check_count,
    check_positive,
    create_array,
    exp_map,
    grow_arrays,
    holding_writer_lock,
    log_map,
    open_section,
    pending_blocks,
    refine_crossings,
    use_numba_threads,
)
from basins.kernels import STATUS_PENDING

logger = logging.getLogger(__name__)

SECTION = "boundary"


@dataclass(frozen=True)
class BoundarySettings:
    """Settings of the boundary points that `sample_boundary` locates.

    Parameters
    ----------
    n_points : int
        Boundary points requested; fewer are stored when the atlas has fewer
        suitable pairs. A later call with more extends the stored points.
    tol : float
        Bisection stops once the bracket is at most this long (geodesic distance).
    between : tuple of two int, optional
        Catalog ids of two attractors: only pairs that reach them. Default: all
        pairs that reach different attractors.
    chunk_size : int
        Points per task and per stored chunk; only used when the group is created.
    """

    n_points: int = 200
    tol: float = 1e-6
    between: tuple[int, int] | None = None
    chunk_size: int = 50

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_points", check_count("n_points", self.n_points))
        object.__setattr__(self, "tol", check_positive("tol", self.tol))
        object.__setattr__(
            self, "chunk_size", check_count("chunk_size", self.chunk_size)
        )
        if self.between is not None:
            pair = tuple(self.between)
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ConfigError(
                    f"between = {self.between!r} is invalid: expected two different "
                    f"attractor ids"
                )
            object.__setattr__(self, "between", tuple(sorted(int(a) for a in pair)))

    @property
    def name(self) -> str:
        """Name of the group under ``boundary/``: ``all`` or ``A-B``."""
        if self.between is None:
            return "all"
        return f"{self.between[0]}-{self.between[1]}"

    def stored(self) -> dict[str, Any]:
        """Return the settings that define the stored points (chunking left out)."""
        return {
            "n_points": self.n_points,
            "tol": self.tol,
            "between": list(self.between) if self.between else None,
        }


def select_pairs(
    attractor: np.ndarray, count: int, between: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Choose up to ``count`` pairs of initial conditions with different attractors.

    Parameters
    ----------
    attractor : numpy.ndarray of int, shape (m,)
        Catalog id of every initial condition, -1 where there is none.
    count : int
        Pairs wanted.
    between : tuple of two int, optional
        Restrict to pairs reaching these two attractors.

    Returns
    -------
    first, second : numpy.ndarray of int64
        Indices of the two initial conditions of each pair. A larger ``count``
        returns the same pairs followed by new ones.
    """
    if between is None:
        half = len(attractor) // 2
        first = attractor[0 : 2 * half : 2]
        second = attractor[1 : 2 * half : 2]
        usable = (first >= 0) & (second >= 0) & (first != second)
        pair = np.flatnonzero(usable)[:count].astype(np.int64)
        return 2 * pair, 2 * pair + 1
    reach_first = np.flatnonzero(attractor == between[0])
    reach_second = np.flatnonzero(attractor == between[1])
    found = min(count, len(reach_first), len(reach_second))
    return reach_first[:found].astype(np.int64), reach_second[:found].astype(np.int64)


def _create_arrays(group: zarr.Group, config: Config, size: int, chunk: int) -> None:
    n, d = config.system.n_tokens, config.system.dim
    create_array(group, "first_ic", (size,), (chunk,), "int64", -1, ("point",))
    create_array(group, "second_ic", (size,), (chunk,), "int64", -1, ("point",))
    create_array(
        group,
        "state",
        (size, n, d),
        (chunk, n, d),
        "float64",
        np.nan,
        ("point", "token", "component"),
    )
    for name in ("first_attractor", "second_attractor"):
        create_array(group, name, (size,), (chunk,), "int32", -1, ("point",))
    for name in ("position", "width"):
        create_array(group, name, (size,), (chunk,), "float64", np.nan, ("point",))
    create_array(group, "steps", (size,), (chunk,), "int64", -1, ("point",))
    create_array(group, "status", (size,), (chunk,), "int8", STATUS_PENDING, ("point",))


def compute_boundary_chunk(
    config_data: dict[str, Any],
    path: str,
    chunk: int,
    numba_threads: int | None = None,
    *,
    name: str = "all",
) -> dict[str, int]:
    """Locate the boundary points of one chunk of ``boundary/NAME`` and write them.

    The signature is that of a `basins.mapping.run_tasks` task. ``status`` is
    written last, so a chunk whose statuses are all set is complete.
    """
    use_numba_threads(numba_threads)
    config = Config.from_dict(config_data)
    root = zarr.open_group(path, mode="r+")
    group = root[f"{SECTION}/{name}"]
    tol = float(group.attrs["settings"]["tol"])
    start, stop = block_bounds(
        chunk, group["status"].chunks[0], group["status"].shape[0]
    )

    first_ic = group["first_ic"][start:stop]
    second_ic = group["second_ic"][start:stop]
    inner = root["attractor"].get_coordinate_selection(first_ic)
    outer = root["attractor"].get_coordinate_selection(second_ic)
    first = atlas_initial_conditions(config, first_ic)
    second = atlas_initial_conditions(config, second_ic)
    tangent = log_map(first, second)
    length = np.linalg.norm(tangent, axis=(1, 2))
    direction = tangent / length[:, None, None]

    probe = BasinProbe(config, catalog_states(path))
    crossings = refine_crossings(
        probe,
        first,
        direction,
        np.zeros(len(first)),
        length,
        inner,
        outer,
        tol=tol,
        limit=length,
    )
    group["state"][start:stop] = exp_map(
        first, crossings.position[:, None, None] * direction
    )
    group["first_attractor"][start:stop] = inner
    group["second_attractor"][start:stop] = crossings.outer
    group["position"][start:stop] = crossings.position
    group["width"][start:stop] = crossings.width
    group["steps"][start:stop] = crossings.steps
    group["status"][start:stop] = np.full(stop - start, STATUS_DONE, dtype=np.int8)
    logger.debug(
        "boundary chunk %d: %d points, %d RK4 steps", chunk, stop - start, probe.steps
    )
    return {"chunk": chunk, "steps": probe.steps}


@dataclass(frozen=True)
class BoundaryPoints:
    """Boundary points read back from an atlas (only the computed ones).

    Attributes
    ----------
    state : numpy.ndarray, shape (m, n_tokens, dim)
        The points.
    first_attractor, second_attractor : numpy.ndarray of int32, shape (m,)
        Outcome just before and just after each point along the geodesic from the
        first to the second initial condition of its pair. The second may be a
        negative label (`basins.geometry.NO_ATTRACTOR`,
        `basins.geometry.UNCATALOGUED`).
    position : numpy.ndarray, shape (m,)
        Geodesic distance from the first initial condition to the point.
    width : numpy.ndarray, shape (m,)
        Length of the final bisection bracket.
    first_ic, second_ic : numpy.ndarray of int64, shape (m,)
        The pair of initial conditions.
    pending : int
        Points not computed yet.
    """

    state: np.ndarray
    first_attractor: np.ndarray
    second_attractor: np.ndarray
    position: np.ndarray
    width: np.ndarray
    first_ic: np.ndarray
    second_ic: np.ndarray
    pending: int


def read_boundary(path: str | Path, name: str = "all") -> BoundaryPoints:
    """Read the computed points of ``boundary/NAME`` of the atlas at ``path``.

    Raises
    ------
    AtlasError
        If the atlas has no such group.
    """
    root = atlas.open_store(path)
    if f"{SECTION}/{name}" not in root:
        raise AtlasError(
            f"atlas {str(path)!r} has no boundary points {name!r}; compute them with "
            f"'basins boundary {path}'"
        )
    group = root[f"{SECTION}/{name}"]
    done = group["status"][:] == STATUS_DONE
    return BoundaryPoints(
        state=group["state"][:][done],
        first_attractor=group["first_attractor"][:][done],
        second_attractor=group["second_attractor"][:][done],
        position=group["position"][:][done],
        width=group["width"][:][done],
        first_ic=group["first_ic"][:][done],
        second_ic=group["second_ic"][:][done],
        pending=int(np.sum(~done)),
    )


@holding_writer_lock("boundary")
def sample_boundary(
    path: str | Path,
    settings: BoundarySettings | None = None,
    *,
    execution=None,
    max_chunks: int | None = None,
    overwrite: bool = False,
) -> BoundaryPoints:
    """Locate boundary points between the basins of an atlas and store them.

    The points go to the group ``boundary/all`` or ``boundary/A-B`` (see
    `BoundarySettings.name`). Chunks computed by an earlier call are kept, so an
    interrupted call is completed by repeating it, and a call with a larger
    ``n_points`` computes only the new points.

    Parameters
    ----------
    path : str or path
        An atlas with a catalog.
    settings : BoundarySettings, optional
        Number of points, bisection tolerance, attractor pair.
    execution : basins.mapping.Execution, optional
        Where the tasks run; by default a local Dask cluster.
    max_chunks : int, optional
        Compute at most this many pending chunks, then stop.
    overwrite : bool
        Replace stored points computed with another ``tol``.

    Returns
    -------
    BoundaryPoints
        Every computed point of the group.

    Raises
    ------
    AtlasError
        If the atlas has no catalog, no suitable pair, or points with other settings.
    ConfigError
        If an attractor id in ``settings.between`` is not in the catalog.
    """
    from basins.mapping import Execution, _select, run_tasks

    settings = settings or BoundarySettings()
    execution = execution or Execution()
    path = Path(path)
    config = atlas.read_config(path)
    n_attractors = len(atlas.read_catalog(path))
    for attractor_id in settings.between or ():
        if not 0 <= attractor_id < n_attractors:
            raise ConfigError(
                f"between = {settings.between} is invalid: attractor {attractor_id} is "
                f"not in the catalog, whose ids are 0 to {n_attractors - 1}"
            )

    attractor = atlas.open_store(path)["attractor"][:]
    first_ic, second_ic = select_pairs(attractor, settings.n_points, settings.between)
    if len(first_ic) == 0:
        raise AtlasError(
            f"atlas {str(path)!r} has no pair of initial conditions that reach "
            f"different attractors ({settings.name}); map more initial conditions"
        )
    if len(first_ic) < settings.n_points:
        logger.warning(
            "only %d of the %d requested pairs exist in %s; computing %d points",
            len(first_ic),
            settings.n_points,
            path,
            len(first_ic),
        )

    group, created = open_section(
        path,
        SECTION,
        settings.name,
        settings.stored(),
        overwrite=overwrite,
        growable=("n_points",),
    )
    if created:
        _create_arrays(group, config, len(first_ic), settings.chunk_size)
    stored = group["status"].shape[0]
    if len(first_ic) > stored:
        grow_arrays(group, len(first_ic))
    if created or len(first_ic) > stored:
        group["first_ic"][:] = first_ic
        group["second_ic"][:] = second_ic

    chunks = _select(
        pending_blocks(group["status"][:], group["status"].chunks[0]), max_chunks
    )
    logger.info(
        "locating boundary points %s of %s: %d chunks to compute",
        settings.name,
        path,
        len(chunks),
    )
    if chunks:
        run_tasks(
            config,
            path,
            chunks,
            execution,
            functools.partial(compute_boundary_chunk, name=settings.name),
            name="boundary",
            retry_hint=f"basins boundary {path} with the same options",
        )
    return read_boundary(path, settings.name)


@dataclass(frozen=True)
class BoundaryRow:
    """Boundary points between one pair of outcomes."""

    first: int
    second: int
    count: int
    max_width: float


def boundary_table(points: BoundaryPoints) -> list[BoundaryRow]:
    """Count boundary points per unordered pair of outcomes, most frequent first.

    Within a row, catalog ids come first in increasing order, negative outcome
    labels last.
    """
    widths: dict[tuple[int, int], list[float]] = {}
    for first, second, width in zip(
        points.first_attractor.tolist(),
        points.second_attractor.tolist(),
        points.width.tolist(),
    ):
        key = tuple(sorted((first, second), key=lambda label: (label < 0, abs(label))))
        widths.setdefault(key, []).append(width)
    rows = [
        BoundaryRow(first, second, len(values), max(values))
        for (first, second), values in widths.items()
    ]
    return sorted(rows, key=lambda row: (-row.count, row.first, row.second))
