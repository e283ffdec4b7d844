"""Basin slices, basin entropy and the uncertainty exponent.

**Slice.** For ``dim = 3``, one token of an atlas initial condition (the *base*) is
moved over a latitude-longitude grid of the sphere while the other tokens keep their
initial positions. Every grid point is integrated and labelled with the catalog
attractor it reaches, or with a negative outcome label
(`basins.geometry.NO_ATTRACTOR`, `basins.geometry.UNCATALOGUED`). Latitude is
measured from the plane of the first two coordinate axes towards the third axis, and
longitude from the first axis towards the second. Grid points are the centres of
``grid x 2 grid`` equal-angle cells.

**Basin entropy** (Daza, Wagemakers, Georgeot, Guéry-Odelin and Sanjuán, "Basin
entropy: a new tool to analyze uncertainty in dynamical systems", Sci. Rep. 6, 31416,
2016). The grid is cut into boxes of ``box x box`` points. With ``p_ij`` the share of
the points of box ``i`` that reach outcome ``j``, the box entropy is
``S_i = -sum_j p_ij log p_ij``; the basin entropy ``S_b`` is its mean over all boxes
and the boundary basin entropy ``S_bb`` its mean over the boxes with more than one
outcome. ``S_b <= log(outcomes)``, and ``S_bb > log 2`` is a sufficient (not a
necessary) sign of a fractal boundary. Boxes are equal in latitude and longitude,
not in area: boxes near the poles cover less of the sphere.

**Uncertainty exponent** (Grebogi, McDonald, Ott and Yorke, "Final state
sensitivity: an obstruction to predictability", Phys. Lett. A 99(9), 1983). A point
is ``eps``-uncertain when moving it by ``eps`` changes its outcome; the fraction of
uncertain points scales as ``f(eps) ~ eps^alpha`` with ``alpha = D - D_0``, ``D``
the dimension of the space and ``D_0`` the box-counting dimension of the boundary,
so ``alpha = 1`` for a smooth boundary and ``alpha < 1`` for a fractal one. Here the
space is the slice's sphere: base points are uniform on it, each is moved by
``+eps`` and ``-eps`` along a random great circle through it, and it is uncertain
when either move changes the outcome. ``alpha`` is the least-squares slope of
``log f`` against ``log eps`` over the ``eps`` with at least `MIN_UNCERTAIN`
uncertain points, and its 95% interval comes from bootstrap resampling of the base
points.
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
    check_index,
    create_array,
    holding_writer_lock,
    open_section,
    pending_blocks,
    random_direction,
    use_numba_threads,
)
from basins.kernels import STATUS_PENDING

logger = logging.getLogger(__name__)

SECTION = "slices"

# Perturbation sizes (radians) of the uncertainty exponent unless the caller sets
# them: eight sizes spaced evenly in log between 0.01 and 0.3.
DEFAULT_EPSILONS = tuple(float(e) for e in np.geomspace(0.01, 0.3, 8))

# A size enters the fit of the exponent only with at least this many uncertain base
# points, so that no term of the fit rests on one or two counts.
MIN_UNCERTAIN = 5

# Bootstrap resamples of the base points for the interval of the exponent.
BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class SliceSettings:
    """Settings of a slice and of its uncertainty exponent, for `compute_slice`.

    Parameters
    ----------
    token : int
        The token moved over the sphere.
    base_ic : int
        Index of the atlas initial condition that fixes the other tokens.
    grid : int
        Latitude rows; the grid has ``2 * grid`` longitude columns.
    samples : int
        Base points of the uncertainty exponent.
    epsilons : tuple of float
        Perturbation sizes of the uncertainty exponent (radians), increasing.
    seed : int
        Seed of the base points, their perturbation directions and the bootstrap.
    chunk_size : int
        Points integrated per task (rounded to whole grid rows); only used when the
        slice is created.
    """

    token: int = 0
    base_ic: int = 0
    grid: int = 90
    samples: int = 2000
    epsilons: tuple[float, ...] = DEFAULT_EPSILONS
    seed: int = 0
    chunk_size: int = 4096

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", check_count("token", self.token, minimum=0))
        object.__setattr__(
            self, "base_ic", check_count("base_ic", self.base_ic, minimum=0)
        )
        object.__setattr__(self, "grid", check_count("grid", self.grid, minimum=2))
        object.__setattr__(self, "samples", check_count("samples", self.samples))
        object.__setattr__(self, "seed", check_count("seed", self.seed, minimum=0))
        object.__setattr__(
            self, "chunk_size", check_count("chunk_size", self.chunk_size)
        )
        epsilons = tuple(float(e) for e in self.epsilons)
        if (
            not epsilons
            or not all(np.isfinite(epsilons))
            or min(epsilons) <= 0.0
            or max(epsilons) >= np.pi
            or list(epsilons) != sorted(set(epsilons))
        ):
            raise ConfigError(
                f"epsilons = {self.epsilons!r} is invalid: expected increasing sizes "
                f"in (0, pi)"
            )
        object.__setattr__(self, "epsilons", epsilons)

    @property
    def name(self) -> str:
        """Name of the slice's group under ``slices/``."""
        return f"token{self.token}-ic{self.base_ic}-grid{self.grid}"

    @property
    def uncertainty_name(self) -> str:
        """Name of the group of base points under ``slices/NAME/uncertainty/``."""
        first, last = self.epsilons[0], self.epsilons[-1]
        return (
            f"n{self.samples}-eps{first:.4g}-{last:.4g}x{len(self.epsilons)}"
            f"-seed{self.seed}"
        )

    def stored(self) -> dict[str, Any]:
        """Return the settings that define the stored grid (chunking left out)."""
        return {"token": self.token, "base_ic": self.base_ic, "grid": self.grid}

    def stored_uncertainty(self) -> dict[str, Any]:
        """Return the settings that define the stored base points."""
        return {
            "samples": self.samples,
            "epsilons": list(self.epsilons),
            "seed": self.seed,
        }


def grid_coordinates(grid: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the latitudes ``(grid,)`` and longitudes ``(2 grid,)`` in degrees.

    They are the centres of equal-angle cells, so no point sits on a pole.
    """
    latitude = -90.0 + (np.arange(grid) + 0.5) * 180.0 / grid
    longitude = -180.0 + (np.arange(2 * grid) + 0.5) * 180.0 / grid
    return latitude, longitude


def sphere_points(latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """Return the unit vectors ``(len(latitude), len(longitude), 3)`` of a grid."""
    phi = np.radians(latitude)[:, None]
    lam = np.radians(longitude)[None, :]
    return np.stack(
        np.broadcast_arrays(
            np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)
        ),
        axis=-1,
    )


def slice_states(base: np.ndarray, token: int, positions: np.ndarray) -> np.ndarray:
    """Return copies of ``base`` ``(n, d)`` with ``token`` moved to each position.

    ``positions`` has shape ``(..., d)``; the result has shape ``(..., n, d)``.
    """
    states = np.broadcast_to(base, (*positions.shape[:-1], *base.shape)).copy()
    states[..., token, :] = positions
    return states


def _sample_points(seed: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Return base points ``(m, 3)`` on the sphere and unit tangent directions there.

    Point ``k`` and its direction come from ``numpy.random.default_rng([seed, k])``.
    """
    points = np.empty((stop - start, 3))
    directions = np.empty((stop - start, 3))
    for row, k in enumerate(range(start, stop)):
        rng = np.random.default_rng([seed, k])
        point = rng.standard_normal(3)
        points[row] = point / np.linalg.norm(point)
        directions[row] = random_direction(points[row][None], rng)[0]
    return points, directions


def _rows_per_chunk(settings_chunk: int, grid: int) -> int:
    return max(1, settings_chunk // (2 * grid))


def _samples_per_chunk(settings_chunk: int, n_epsilons: int) -> int:
    return max(1, settings_chunk // (1 + 2 * n_epsilons))


def _create_grid(group: zarr.Group, grid: int, rows: int) -> None:
    columns = 2 * grid
    latitude, longitude = grid_coordinates(grid)
    create_array(group, "latitude", (grid,), (grid,), "float64", np.nan, ("latitude",))
    create_array(
        group, "longitude", (columns,), (columns,), "float64", np.nan, ("longitude",)
    )
    group["latitude"][:] = latitude
    group["longitude"][:] = longitude
    for name, dtype, fill in (
        ("attractor", "int32", -1),
        ("steps", "int32", -1),
        ("status", "int8", STATUS_PENDING),
    ):
        create_array(
            group,
            name,
            (grid, columns),
            (rows, columns),
            dtype,
            fill,
            ("latitude", "longitude"),
        )


def _create_samples(group: zarr.Group, settings: SliceSettings, chunk: int) -> None:
    n_eps = len(settings.epsilons)
    total = settings.samples
    create_array(group, "epsilon", (n_eps,), (n_eps,), "float64", np.nan, ("epsilon",))
    group["epsilon"][:] = np.array(settings.epsilons)
    create_array(
        group,
        "position",
        (total, 3),
        (chunk, 3),
        "float64",
        np.nan,
        ("sample", "component"),
    )
    create_array(group, "base_attractor", (total,), (chunk,), "int32", -1, ("sample",))
    create_array(
        group,
        "perturbed_attractor",
        (total, n_eps, 2),
        (chunk, n_eps, 2),
        "int32",
        -1,
        ("sample", "epsilon", "side"),
    )
    create_array(
        group, "status", (total,), (chunk,), "int8", STATUS_PENDING, ("sample",)
    )


def _compute_rows(group, probe, base, token, block) -> None:
    status = group["status"]
    start, stop = block_bounds(block, status.chunks[0], status.shape[0])
    positions = sphere_points(group["latitude"][start:stop], group["longitude"][:])
    states = slice_states(base, token, positions)
    labels, steps = probe.evaluate(states.reshape(-1, *base.shape))
    shape = positions.shape[:2]
    group["attractor"][start:stop] = labels.reshape(shape)
    group["steps"][start:stop] = steps.reshape(shape).astype(np.int32)
    status[start:stop] = np.full(shape, STATUS_DONE, dtype=np.int8)


def _compute_samples(samples, probe, base, token, block, seed) -> None:
    status = samples["status"]
    start, stop = block_bounds(block, status.chunks[0], status.shape[0])
    epsilon = samples["epsilon"][:]
    points, directions = _sample_points(seed, start, stop)

    # Every base point, then its moves by +eps and -eps along its great circle.
    signed = np.concatenate([epsilon, -epsilon])
    angle = signed[None, :, None]
    moved = np.cos(angle) * points[:, None, :] + np.sin(angle) * directions[:, None, :]
    moved /= np.linalg.norm(moved, axis=-1, keepdims=True)
    positions = np.concatenate([points[:, None, :], moved], axis=1)
    labels = probe(slice_states(base, token, positions).reshape(-1, *base.shape))
    labels = labels.reshape(len(points), 1 + len(signed))

    n_eps = len(epsilon)
    perturbed = np.stack([labels[:, 1 : 1 + n_eps], labels[:, 1 + n_eps :]], axis=-1)
    samples["position"][start:stop] = points
    samples["base_attractor"][start:stop] = labels[:, 0]
    samples["perturbed_attractor"][start:stop] = perturbed
    status[start:stop] = np.full(stop - start, STATUS_DONE, dtype=np.int8)


def compute_slice_chunk(
    config_data: dict[str, Any],
    path: str,
    chunk: int,
    numba_threads: int | None = None,
    *,
    name: str,
    uncertainty: str,
) -> dict[str, int]:
    """Compute one chunk of the slice ``slices/NAME`` and write it.

    Chunks ``0 .. R-1`` are blocks of grid rows, the following ones blocks of the
    base points in ``slices/NAME/uncertainty/UNCERTAINTY``. The signature is that
    of a `basins.mapping.run_tasks` task; ``status`` is written last.
    """
    use_numba_threads(numba_threads)
    config = Config.from_dict(config_data)
    group = zarr.open_group(path, mode="r+")[f"{SECTION}/{name}"]
    settings = group.attrs["settings"]
    token = int(settings["token"])
    base = atlas_initial_conditions(config, np.array([settings["base_ic"]]))[0]
    probe = BasinProbe(config, catalog_states(path))

    status = group["status"]
    row_blocks = -(-status.shape[0] // status.chunks[0])
    if chunk < row_blocks:
        _compute_rows(group, probe, base, token, chunk)
    else:
        samples = group[f"uncertainty/{uncertainty}"]
        seed = int(samples.attrs["settings"]["seed"])
        _compute_samples(samples, probe, base, token, chunk - row_blocks, seed)
    logger.debug("slice %s chunk %d: %d RK4 steps", name, chunk, probe.steps)
    return {"chunk": chunk, "steps": probe.steps}


@dataclass(frozen=True)
class BasinEntropy:
    """Basin entropy of a grid of outcomes.

    Attributes
    ----------
    entropy : float
        Basin entropy ``S_b``, the mean box entropy (natural logarithm).
    boundary_entropy : float
        Boundary basin entropy ``S_bb``, the mean over boxes with more than one
        outcome; NaN when there is none.
    boxes, boundary_boxes : int
        Number of boxes, and of those with more than one outcome.
    outcomes : int
        Distinct outcomes on the grid.
    box : int
        Box side in grid points.
    box_entropy : numpy.ndarray
        Entropy of each box, shape ``(rows // box, columns // box)``.
    """

    entropy: float
    boundary_entropy: float
    boxes: int
    boundary_boxes: int
    outcomes: int
    box: int
    box_entropy: np.ndarray

    @property
    def fractal_sign(self) -> bool:
        """Whether ``S_bb > log 2``, the sufficient condition for a fractal boundary.

        A box that straddles a smooth boundary between two basins has an entropy of
        at most ``log 2``; the criterion can fail where three or more basins meet.
        """
        return bool(self.boundary_entropy > np.log(2.0))


def basin_entropy(labels: np.ndarray, box: int) -> BasinEntropy:
    """Compute the basin entropy and boundary basin entropy of a 2-D grid of outcomes.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (rows, columns)
        Outcome of every grid point.
    box : int
        Box side in grid points. Rows and columns beyond the last whole box are
        left out.

    Returns
    -------
    BasinEntropy

    Raises
    ------
    ConfigError
        If ``box`` is below 1 or larger than the grid.
    """
    rows, columns = labels.shape
    box = check_count("box", box)
    if box > min(rows, columns):
        raise ConfigError(
            f"box = {box} is invalid: expected at most {min(rows, columns)}, the "
            f"smaller side of the {rows} x {columns} grid"
        )
    box_rows, box_columns = rows // box, columns // box
    trimmed = labels[: box_rows * box, : box_columns * box]
    blocks = trimmed.reshape(box_rows, box, box_columns, box).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(box_rows, box_columns, box * box)

    outcomes = np.unique(trimmed)
    entropy = np.zeros((box_rows, box_columns))
    for outcome in outcomes:
        share = np.mean(blocks == outcome, axis=-1)
        present = share > 0
        entropy[present] -= share[present] * np.log(share[present])
    mixed = np.zeros((box_rows, box_columns), dtype=int)
    for outcome in outcomes:
        mixed += np.any(blocks == outcome, axis=-1)
    boundary = mixed > 1
    return BasinEntropy(
        entropy=float(entropy.mean()),
        boundary_entropy=float(entropy[boundary].mean()) if boundary.any() else np.nan,
        boxes=int(entropy.size),
        boundary_boxes=int(boundary.sum()),
        outcomes=len(outcomes),
        box=box,
        box_entropy=entropy,
    )


@dataclass(frozen=True)
class UncertaintyExponent:
    """Fraction of uncertain points against the perturbation size, and its fit.

    Attributes
    ----------
    epsilon : numpy.ndarray, shape (k,)
        Perturbation sizes.
    uncertain : numpy.ndarray of int, shape (k,)
        Uncertain base points at each size.
    samples : int
        Base points.
    fitted : numpy.ndarray of bool, shape (k,)
        Sizes used in the fit.
    exponent : float
        Fitted ``alpha``; NaN with fewer than two usable sizes.
    prefactor : float
        ``c`` in ``f = c eps^alpha``.
    low, high : float
        95% bootstrap interval of ``alpha`` (percentiles 2.5 and 97.5).
    """

    epsilon: np.ndarray
    uncertain: np.ndarray
    samples: int
    fitted: np.ndarray
    exponent: float
    prefactor: float
    low: float
    high: float

    @property
    def fraction(self) -> np.ndarray:
        """Fraction of uncertain base points at each size."""
        return self.uncertain / self.samples


def _slopes(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, ...]:
    """Least-squares lines through the points with ``weight`` 1, one per row."""
    count = weight.sum(axis=-1)
    safe = np.maximum(count, 1)
    x_mean = (weight * x).sum(axis=-1) / safe
    y_mean = (weight * y).sum(axis=-1) / safe
    dx = x - x_mean[..., None]
    spread = (weight * dx * dx).sum(axis=-1)
    slope = (weight * dx * (y - y_mean[..., None])).sum(axis=-1) / np.where(
        spread > 0, spread, np.nan
    )
    slope = np.where(count >= 2, slope, np.nan)
    return slope, y_mean - slope * x_mean


def uncertainty_exponent(
    epsilon: np.ndarray,
    uncertain: np.ndarray,
    *,
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> UncertaintyExponent:
    """Fit ``f(eps) = c eps^alpha`` to the uncertain base points.

    Parameters
    ----------
    epsilon : numpy.ndarray, shape (k,)
        Perturbation sizes, increasing.
    uncertain : numpy.ndarray of bool, shape (samples, k)
        Whether each base point is uncertain at each size.
    seed : int, optional
        Seed of the bootstrap resampling.
    resamples : int, optional
        Bootstrap resamples.

    Returns
    -------
    UncertaintyExponent

    Notes
    -----
    The fit is ordinary least squares of ``log f`` on ``log eps`` over the sizes
    with at least `MIN_UNCERTAIN` uncertain points and at least one certain point.
    Each bootstrap resample draws the base points with replacement, refits over the
    same sizes (leaving out a size whose resampled count is zero) and the interval
    is the 2.5 and 97.5 percentiles of the resampled slopes. The base points are
    shared by all sizes, so the counts are correlated and the resampling keeps
    every point's row whole.
    """
    epsilon = np.asarray(epsilon, dtype=np.float64)
    uncertain = np.asarray(uncertain, dtype=bool)
    samples = len(uncertain)
    counts = uncertain.sum(axis=0)
    fitted = (counts >= MIN_UNCERTAIN) & (counts < samples)
    x = np.log(epsilon)

    with np.errstate(divide="ignore"):
        y = np.log(counts / max(samples, 1))
    slope, intercept = _slopes(x, np.where(fitted, y, 0.0), fitted.astype(float))
    exponent = float(slope)

    low = high = np.nan
    if np.isfinite(exponent):
        rng = np.random.default_rng(seed)
        batch = max(1, 2_000_000 // max(samples, 1))
        slopes = []
        for first in range(0, resamples, batch):
            size = min(batch, resamples - first)
            weights = rng.multinomial(samples, np.full(samples, 1.0 / samples), size)
            resampled = weights @ uncertain.astype(np.int64)
            usable = fitted & (resampled > 0)
            with np.errstate(divide="ignore"):
                y_boot = np.where(usable, np.log(resampled / samples), 0.0)
            slopes.append(_slopes(x, y_boot, usable.astype(float))[0])
        slopes = np.concatenate(slopes)
        low, high = (float(v) for v in np.nanpercentile(slopes, [2.5, 97.5]))
    return UncertaintyExponent(
        epsilon=epsilon,
        uncertain=counts,
        samples=samples,
        fitted=fitted,
        exponent=exponent,
        prefactor=float(np.exp(intercept)) if np.isfinite(exponent) else np.nan,
        low=low,
        high=high,
    )


@dataclass(frozen=True)
class Slice:
    """A computed slice with its basin entropy and uncertainty exponent.

    Attributes
    ----------
    name : str
        Group name under ``slices/``.
    settings : dict
        The stored settings.
    latitude, longitude : numpy.ndarray
        Grid coordinates in degrees.
    attractor : numpy.ndarray of int32, shape (grid, 2 grid)
        Outcome of every grid point.
    entropy : BasinEntropy or None
        None while grid rows are pending.
    uncertainty : UncertaintyExponent or None
        None while base points are pending.
    positions : numpy.ndarray, shape (samples, 3)
        Base points of the uncertainty exponent.
    uncertain : numpy.ndarray of bool, shape (samples, k)
        Whether each base point is uncertain at each size.
    pending : int
        Grid points and base points not computed yet.
    """

    name: str
    settings: dict[str, Any]
    latitude: np.ndarray
    longitude: np.ndarray
    attractor: np.ndarray
    entropy: BasinEntropy | None
    uncertainty: UncertaintyExponent | None
    positions: np.ndarray
    uncertain: np.ndarray
    pending: int


def read_slice(
    path: str | Path, name: str, *, uncertainty: str | None = None, box: int = 5
) -> Slice:
    """Read the slice ``slices/NAME`` and evaluate its entropy and exponent.

    Parameters
    ----------
    path : str or path
        The atlas.
    name : str
        Group name, as `SliceSettings.name` gives it.
    uncertainty : str, optional
        Group of base points, as `SliceSettings.uncertainty_name` gives it; may be
        left out when the slice has only one.
    box : int, optional
        Box side in grid points for the basin entropy.

    Raises
    ------
    AtlasError
        If the atlas has no such slice or group of base points, or ``uncertainty``
        is left out and the slice has several.
    """
    root = atlas.open_store(path)
    key = f"{SECTION}/{name}"
    if key not in root:
        raise AtlasError(
            f"atlas {str(path)!r} has no slice {name!r}; compute it with "
            f"'basins entropy {path} --slice TOKEN'"
        )
    group = root[key]
    stored = sorted(group["uncertainty"].group_keys())
    if uncertainty is None and len(stored) == 1:
        uncertainty = stored[0]
    if uncertainty is None:
        raise AtlasError(
            f"slice {name!r} of atlas {str(path)!r} has {len(stored)} groups of base "
            f"points; choose one with uncertainty = {', '.join(stored) or 'none'}"
        )
    if uncertainty not in stored:
        raise AtlasError(
            f"slice {name!r} of atlas {str(path)!r} has no base points "
            f"{uncertainty!r}; stored: {', '.join(stored) or 'none'}"
        )
    attractor = group["attractor"][:]
    grid_pending = int(np.sum(group["status"][:] != STATUS_DONE))
    entropy = basin_entropy(attractor, box) if grid_pending == 0 else None

    samples = group[f"uncertainty/{uncertainty}"]
    settings = {**group.attrs["settings"], **samples.attrs["settings"]}
    done = samples["status"][:] == STATUS_DONE
    base = samples["base_attractor"][:][done]
    perturbed = samples["perturbed_attractor"][:][done]
    uncertain = np.any(perturbed != base[:, None, None], axis=-1)
    exponent = None
    if done.all():
        exponent = uncertainty_exponent(
            samples["epsilon"][:], uncertain, seed=int(settings["seed"])
        )
    return Slice(
        name=name,
        settings=settings,
        latitude=group["latitude"][:],
        longitude=group["longitude"][:],
        attractor=attractor,
        entropy=entropy,
        uncertainty=exponent,
        positions=samples["position"][:][done],
        uncertain=uncertain,
        pending=grid_pending + int(np.sum(~done)),
    )


@holding_writer_lock("entropy")
def compute_slice(
    path: str | Path,
    settings: SliceSettings,
    *,
    box: int = 5,
    execution=None,
    max_chunks: int | None = None,
    overwrite: bool = False,
) -> Slice:
    """Compute a slice of an atlas with the data of its uncertainty exponent.

    The grid is stored in the group ``slices/NAME`` (`SliceSettings.name`) and the
    base points of the uncertainty exponent in ``slices/NAME/uncertainty/POINTS``
    (`SliceSettings.uncertainty_name`), so a call with other sizes, base points or
    seed reuses the grid. Chunks computed by an earlier call are kept, so an
    interrupted call is completed by repeating it.

    Parameters
    ----------
    path : str or path
        An atlas with a catalog, of a system with ``dim = 3``.
    settings : SliceSettings
        Token, base initial condition, grid, base points, sizes and seed.
    box : int, optional
        Box side in grid points for the basin entropy (not stored; any box can be
        evaluated later with `read_slice`).
    execution : basins.mapping.Execution, optional
        Where the tasks run; by default a local Dask cluster.
    max_chunks : int, optional
        Compute at most this many pending chunks, then stop.
    overwrite : bool
        Recompute the slice from scratch, discarding every group of base points
        stored with it.

    Returns
    -------
    Slice

    Raises
    ------
    AtlasError
        If the atlas has no catalog, or the slice exists with other settings.
    ConfigError
        If the system is not three-dimensional, or the token, base initial
        condition or box is out of range.
    """
    from basins.mapping import Execution, _select, run_tasks

    execution = execution or Execution()
    path = Path(path)
    config = atlas.read_config(path)
    system = config.system
    if system.dim != 3:
        raise ConfigError(
            f"slices need system.dim = 3 (a latitude-longitude grid of the sphere); "
            f"the atlas {str(path)!r} has dim = {system.dim}"
        )
    check_index("token", settings.token, system.n_tokens, "the number of tokens")
    check_index(
        "base_ic",
        settings.base_ic,
        config.sampling.n_initial,
        "the atlas's initial conditions",
    )
    basin_entropy(np.zeros((settings.grid, 2 * settings.grid), dtype=int), box)

    group, created = open_section(
        path, SECTION, settings.name, settings.stored(), overwrite=overwrite
    )
    if created:
        rows = _rows_per_chunk(settings.chunk_size, settings.grid)
        _create_grid(group, settings.grid, rows)
        group.require_group("uncertainty")
    samples, created = open_section(
        path,
        f"{SECTION}/{settings.name}/uncertainty",
        settings.uncertainty_name,
        settings.stored_uncertainty(),
    )
    if created:
        chunk = _samples_per_chunk(settings.chunk_size, len(settings.epsilons))
        _create_samples(samples, settings, chunk)

    status = group["status"]
    row_chunks = pending_blocks(status[:], status.chunks[0])
    row_blocks = -(-status.shape[0] // status.chunks[0])
    sample_chunks = pending_blocks(samples["status"][:], samples["status"].chunks[0])
    chunks = _select(row_chunks + [row_blocks + c for c in sample_chunks], max_chunks)
    logger.info(
        "slice %s of %s: %d chunks to compute", settings.name, path, len(chunks)
    )
    if chunks:
        run_tasks(
            config,
            path,
            chunks,
            execution,
            functools.partial(
                compute_slice_chunk,
                name=settings.name,
                uncertainty=settings.uncertainty_name,
            ),
            name="slice",
            retry_hint=f"basins entropy {path} with the same options",
        )
    return read_slice(
        path, settings.name, uncertainty=settings.uncertainty_name, box=box
    )
