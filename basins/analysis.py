"""Atlases as xarray datasets and pandas tables: basin fractions, catalogs, slices.

`open_atlas` opens an atlas or a sweep lazily, as Dask arrays read from the Zarr store
on demand. `open_catalog` returns the catalog as a table. `basin_fractions` counts
the initial conditions per attractor, class or eigenvector alignment, with Wilson
intervals. `basin_slice` maps the basins over one token's position on the sphere.

Fill values are kept as stored (the datasets are opened with ``mask_and_scale=False``,
so integer arrays stay integers): ``status`` -1 means pending, ``attractor``,
``track``, ``class``, ``local_label`` and ``steps`` -1 mean none, and ``final_state``
is NaN where a chunk is pending.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from basins import atlas, sweep
from basins.classify import CLASS_NAMES, Matcher, describe, eigenspaces
from basins.config import Config
from basins.errors import AtlasError, ConfigError
from basins.integrate import integrate
from basins.kernels import (
    STATUS_CONVERGED,
    STATUS_MAX_STEPS,
    STATUS_NONFINITE,
    STATUS_PENDING,
)
from basins.report import wilson_interval
from basins.sampling import initial_conditions

logger = logging.getLogger(__name__)

GROUPINGS = ("attractor", "class", "alignment")
STATUS_ROWS = (("max_steps", STATUS_MAX_STEPS), ("nonfinite", STATUS_NONFINITE))

STATUS_ATTRS = {
    "flag_values": [STATUS_PENDING, STATUS_CONVERGED, STATUS_MAX_STEPS, STATUS_NONFINITE],
    "flag_meanings": "pending converged max_steps nonfinite",
}
CLASS_ATTRS = {
    "flag_values": [-1, *range(len(CLASS_NAMES))],
    "flag_meanings": "none " + " ".join(CLASS_NAMES),
}

# Initial conditions integrated at once by `basin_slice`, to bound its memory.
SLICE_BLOCK = 50_000


def _alignment_name(eigenspace, sign, cos, names: dict[int, str], shape_tol: float) -> str:
    """Name the eigenspaces that an attractor's cluster centres lie on."""
    parts = set()
    for space, aligned in zip(eigenspace, cos):
        if space <= 0:
            continue
        parts.add(names[int(space)] if aligned >= 1.0 - shape_tol else "off")
    ordered = sorted(parts - {"off"}, key=lambda name: int(name[1:]))
    return "+".join(ordered + (["off"] if "off" in parts else []))


def _catalog_frame(path: Path, config: Config) -> pd.DataFrame:
    """Read the catalog of one atlas into a table, one row per attractor."""
    group = atlas.open_store(path)
    columns = ["id", "label", "class", "shape", "alignment", "count", "fraction",
               "first_ic", "mean_steps", "n_clusters", "multiplicity", "positions"]
    if "catalog" not in group:
        return pd.DataFrame(columns=columns)
    catalog = group["catalog"]
    arrays = {name: catalog[name][:] for name in (
        "class", "count", "first_ic", "mean_steps", "n_clusters", "multiplicity",
        "eigenspace", "sign", "cos")}
    spaces = {space.index: space.name for space in eigenspaces(config.system.V)}
    shape_tol = config.classification.shape_tol
    rows = []
    for row, label in enumerate(catalog.attrs["label"]):
        k = int(arrays["n_clusters"][row])
        eigenspace = arrays["eigenspace"][row, :k]
        sign = arrays["sign"][row, :k]
        cos = arrays["cos"][row, :k]
        signs = {1: "+", -1: "-", 0: ""}
        positions = [signs[int(s)] + spaces[int(e)] for e, s in zip(eigenspace, sign)]
        rows.append(
            {
                "id": row,
                "label": label,
                "class": CLASS_NAMES[arrays["class"][row]],
                "shape": catalog.attrs["shape"][row],
                "alignment": _alignment_name(eigenspace, sign, cos, spaces, shape_tol),
                "count": int(arrays["count"][row]),
                "fraction": arrays["count"][row] / config.sampling.n_initial,
                "first_ic": int(arrays["first_ic"][row]),
                "mean_steps": float(arrays["mean_steps"][row]),
                "n_clusters": k,
                "multiplicity": tuple(int(m) for m in arrays["multiplicity"][row, :k]),
                "positions": tuple(positions),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def open_catalog(path: str | Path) -> pd.DataFrame:
    """Return the catalog of an atlas or a sweep as a table, one row per attractor.

    Columns: ``id`` (catalog id), ``label``, ``class``, ``shape`` (polygon name),
    ``alignment`` (the eigenspaces of ``V`` that the cluster centres lie on, such as
    ``v3`` or ``v1+v3``, with ``off`` for a centre on none of them within
    ``shape_tol``), ``count``, ``fraction`` (of all initial conditions),
    ``first_ic``, ``mean_steps``, ``n_clusters``, ``multiplicity`` and
    ``positions`` (signed eigenspace of each cluster, such as ``('+v3', '-v3')``).
    For a sweep, the table has one block per value, with the parameter value (a
    column named after the parameter's dimension, such as ``beta``) and ``track``
    (the attractor's id along the sweep) in front.

    Raises
    ------
    AtlasError
        If ``path`` is neither an atlas nor a sweep.
    """
    path = Path(path)
    if sweep.is_sweep(path):
        swept = sweep.read_sweep(path)
        group = sweep.open_sweep(path)
        track_of = _track_lookup(group, len(swept.values))
        frames = []
        for k, member in enumerate(sweep.member_paths(path)):
            frame = _catalog_frame(member, atlas.read_config(member))
            frame.insert(0, "track", track_of[k][frame["id"].to_numpy(dtype=np.int64)])
            frame.insert(0, swept.dimension, swept.values[k])
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)
    return _catalog_frame(path, atlas.read_config(path))


def _track_lookup(group, n_values: int) -> list[np.ndarray]:
    """Return, per value, the track id of every catalog id (one entry more, -1, last).

    Indexing with an id of -1 then gives -1, so per-IC arrays map without masking.
    """
    if "tracks" not in group:
        raise AtlasError("the sweep has no attractor tracks yet; run 'basins resume' on it")
    members = group["tracks"]["attractor"][:].reshape(-1, n_values)
    lookups = []
    for k in range(n_values):
        size = int(members[:, k].max(initial=-1)) + 2
        lookup = np.full(size, -1, dtype=np.int32)
        present = np.flatnonzero(members[:, k] >= 0)
        lookup[members[present, k]] = present
        lookups.append(lookup)
    return lookups


def _open_member(path: Path) -> xr.Dataset:
    group = atlas.open_store(path)
    dataset = xr.open_zarr(
        str(path), consolidated=False, mask_and_scale=False, zarr_format=3
    )
    # The store lists its arrays in no fixed order; keep the order of the layout.
    dataset = dataset[[name for name in atlas.PER_IC_ARRAYS if name in dataset]]
    # NOTE: the ic coordinate is held in memory, 8 bytes per initial condition. A
    # lazy xarray RangeIndex would avoid that, but with an integer dtype it breaks
    # Dataset.nbytes and repr in xarray 2026.9.
    dataset = dataset.assign_coords(
        ic=np.arange(dataset.sizes["ic"], dtype=np.int64),
        token=np.arange(dataset.sizes["token"]),
        component=np.arange(dataset.sizes["component"]),
    )
    dataset["status"].attrs.update(STATUS_ATTRS)
    dataset["class"].attrs.update(CLASS_ATTRS)
    config = Config.from_dict(group.attrs["config"], name=group.attrs.get("name", ""))
    catalog = _catalog_frame(path, config)
    dataset.attrs = dict(group.attrs)
    dataset.attrs.update(
        {
            "attractor_labels": catalog["label"].tolist(),
            "attractor_classes": catalog["class"].tolist(),
            "attractor_alignments": catalog["alignment"].tolist(),
        }
    )
    return dataset


def open_atlas(path: str | Path) -> xr.Dataset:
    """Open an atlas or a sweep as a lazy `xarray.Dataset`.

    Parameters
    ----------
    path : str or path
        An atlas written by `basins.run` or a sweep written by `basins.run_sweep`.

    Returns
    -------
    xarray.Dataset
        Per-initial-condition variables ``status``, ``steps``, ``final_state``,
        ``attractor``, ``class`` and ``local_label`` with dimensions ``ic``,
        ``token`` and ``component`` (coordinates 0, 1, ...), backed by Dask arrays
        with the atlas's chunks, so nothing is read until it is computed. The
        attributes hold the configuration (``config``), the seed, the versions and
        the catalog's ``attractor_labels``, ``attractor_classes`` and
        ``attractor_alignments`` (by catalog id).

        For a sweep, every variable gains the parameter's dimension first (named
        ``beta`` for ``system.beta``, ``V_scale`` for ``system.V.scale``), with
        the values as its coordinate. A variable ``track`` contains each initial
        condition's attractor along the sweep, because the catalog ids in
        ``attractor`` differ from value to value. The attributes hold the sweep's
        ``parameter``, ``values``, base ``config``, ``track_labels``,
        ``track_classes``, ``track_alignments`` and ``events`` (births and deaths).

    Raises
    ------
    AtlasError
        If ``path`` is neither an atlas nor a sweep.

    Notes
    -----
    Integer fill values stay as stored (``-1``: pending status, no attractor, no
    class, no steps), so no integer array turns into floats.
    """
    path = Path(path)
    if not sweep.is_sweep(path):
        return _open_member(path)

    swept = sweep.read_sweep(path)
    group = sweep.open_sweep(path)
    lookups = _track_lookup(group, len(swept.values))
    members = []
    for k, member in enumerate(sweep.member_paths(path)):
        dataset = _open_member(member)
        lookup = lookups[k]
        track = dataset["attractor"].data.map_blocks(
            lambda block, lookup=lookup: lookup[block], dtype=np.int32
        )
        dataset["track"] = (("ic",), track, {"long_name": "attractor along the sweep"})
        members.append(dataset.drop_attrs(deep=False))
    combined = xr.concat(
        members,
        dim=pd.Index(list(swept.values), name=swept.dimension),
        combine_attrs="drop",
        coords="minimal",
        compat="override",
        join="exact",
    )
    tracks = _track_table(path, group, swept)
    combined.attrs = {
        key: value for key, value in group.attrs.items() if key not in ("members",)
    }
    combined.attrs.update(
        {
            "track_labels": tracks["label"].tolist(),
            "track_classes": tracks["class"].tolist(),
            "track_alignments": tracks["alignment"].tolist(),
        }
    )
    return combined


def _track_table(path: Path, group, swept: sweep.Sweep) -> pd.DataFrame:
    """Label, class and alignment of every track, from the member catalogs."""
    attractors = group["tracks"]["attractor"][:].reshape(-1, len(swept.values))
    labels = list(group["tracks"].attrs["label"])
    classes = [CLASS_NAMES[c] for c in group["tracks"]["class"][:]]
    alignments = []
    catalogs: dict[int, pd.DataFrame] = {}
    members = sweep.member_paths(path)
    for row in attractors:
        k = int(np.flatnonzero(row >= 0)[0])
        if k not in catalogs:
            catalogs[k] = _catalog_frame(members[k], atlas.read_config(members[k]))
        alignments.append(catalogs[k]["alignment"].iloc[int(row[k])])
    return pd.DataFrame({"label": labels, "class": classes, "alignment": alignments})


def _as_dataset(atlas_or_path: xr.Dataset | str | Path) -> xr.Dataset:
    if isinstance(atlas_or_path, xr.Dataset):
        return atlas_or_path
    return open_atlas(atlas_or_path)


def _group_codes(dataset: xr.Dataset, by: str) -> tuple[str, list[str], np.ndarray | None]:
    """Return the per-IC variable to count, the group names and a code lookup.

    The lookup maps the variable's codes to group numbers (its last entry, for the
    code -1, is -1); None means the codes are the group numbers.
    """
    is_sweep = "track" in dataset
    prefix = "track" if is_sweep else "attractor"
    if f"{prefix}_labels" not in dataset.attrs:
        raise AtlasError(
            "the dataset has no catalog labels in its attributes; open the atlas with "
            "basins.open_atlas"
        )
    if by == "attractor":
        return prefix, list(dataset.attrs[f"{prefix}_labels"]), None
    if by == "class":
        return "class", list(CLASS_NAMES), None
    alignments = list(dataset.attrs[f"{prefix}_alignments"])
    names = sorted(set(alignments), key=lambda name: (name == "off", name.count("+"), name))
    lookup = np.array([names.index(a) for a in alignments] + [-1], dtype=np.int64)
    return prefix, names, lookup


def _counts(codes: da.Array, status: da.Array, n_groups: int, lookup) -> tuple:
    """Lazy counts of each group among converged ICs, and of each status code."""
    codes = codes.astype(np.int64)
    if lookup is not None:
        codes = codes.map_blocks(lambda block: lookup[block], dtype=np.int64)
    # Converged states that no catalog covers yet (a chunk written after the last
    # finalize) have code -1 and are counted as pending.
    converged = status == STATUS_CONVERGED
    grouped = da.where(converged, codes, -1)
    group_counts = da.bincount(grouped + 1, minlength=n_groups + 1)
    status_counts = da.bincount(status.astype(np.int64) + 1, minlength=4)
    return group_counts, status_counts


def basin_fractions(
    atlas: xr.Dataset | str | Path, by: str = "attractor", *, as_dataset: bool = False
) -> pd.DataFrame | xr.Dataset:
    """Count the initial conditions per attractor, class or alignment.

    Parameters
    ----------
    atlas : xarray.Dataset, str or path
        A dataset from `open_atlas`, or the path of an atlas or a sweep.
    by : {'attractor', 'class', 'alignment'}
        Group converged initial conditions by catalog attractor (by track for a
        sweep), by class, or by the eigenspaces that the attractor's cluster
        centres lie on (see `open_catalog`).
    as_dataset : bool, optional
        Return an `xarray.Dataset` indexed by ``label`` (and the parameter, for a
        sweep) instead of a table.

    Returns
    -------
    pandas.DataFrame or xarray.Dataset
        One row per group (per parameter value and group, for a sweep) with columns
        ``id`` (attractor, track or class id; missing for status rows), ``label``,
        ``class``, ``count``, ``total``, ``fraction``, ``low`` and ``high`` (95%
        Wilson interval). Rows ``max_steps`` and ``nonfinite`` always follow the
        groups, and ``pending`` when some initial conditions are not computed, so the
        fractions add up to one. Groups with a count of zero at some value are kept.

    Raises
    ------
    ConfigError
        If ``by`` is not one of the allowed groupings.
    """
    if by not in GROUPINGS:
        raise ConfigError(f"by = {by!r} is invalid: expected one of {', '.join(GROUPINGS)}")
    dataset = _as_dataset(atlas)
    variable, names, lookup = _group_codes(dataset, by)
    dimension = dataset.attrs.get("dimension")
    if dimension not in dataset.dims:
        dimension = None  # one atlas, or one value selected from a sweep
    values = list(dataset[dimension].values) if dimension else [None]
    classes = _group_classes(dataset, by, variable, names)

    lazy = []
    for value in values:
        member = dataset if value is None else dataset.sel({dimension: value})
        lazy.append(
            _counts(member[variable].data, member["status"].data, len(names), lookup)
        )
    counted = dask.compute(*lazy)

    # Index 0 of the group counts is every IC without a group: the unconverged ones
    # and the converged ones that no catalog covers yet, which count as pending.
    pending = [
        int(status[0] + groups[0] - (status.sum() - status[STATUS_CONVERGED + 1]))
        for groups, status in counted
    ]
    show_pending = any(pending)
    rows = []
    for value, (groups, status), n_pending in zip(values, counted, pending):
        total = int(status.sum())
        entries = [(number, name, classes[number], int(groups[number + 1]))
                   for number, name in enumerate(names)]
        entries += [(None, name, name, int(status[code + 1])) for name, code in STATUS_ROWS]
        if show_pending:
            entries.append((None, "pending", "pending", n_pending))
        for number, name, class_name, count in entries:
            low, high = wilson_interval(count, total)
            row = {"id": number, "label": name, "class": class_name, "count": count,
                   "total": total, "fraction": count / total, "low": low, "high": high}
            if value is not None:
                row = {dimension: float(value), **row}
            rows.append(row)
    table = pd.DataFrame(rows)
    table["id"] = table["id"].astype("Int64")
    if not as_dataset:
        return table
    index = [dimension, "label"] if dimension else ["label"]
    return table.set_index(index).to_xarray()


def _group_classes(dataset: xr.Dataset, by: str, variable: str, names: list[str]) -> list[str]:
    if by == "class":
        return list(names)
    if by == "attractor":
        return list(dataset.attrs[f"{variable}_classes"])
    return ["" for _ in names]


def basin_slice(
    config: Config,
    *,
    token: int = 0,
    ic: int = 0,
    n_lat: int = 90,
    n_lon: int = 180,
    reference: Any = None,
    progress: bool = False,
) -> xr.Dataset:
    """Map the basins over one token's initial position on the sphere, ``d = 3``.

    The initial condition ``ic`` of the configuration's sampling is taken as the
    base state; token ``token`` is then placed at every point of a latitude-longitude
    grid (cell centres, latitude ``asin(x_3)`` and longitude ``atan2(x_2, x_1)``),
    the others kept fixed, and each state is integrated and classified.

    Parameters
    ----------
    config : Config
        The system, integrator, seed and classifier; ``system.dim`` must be 3.
    token : int, optional
        The token that moves.
    ic : int, optional
        Global index of the base initial condition.
    n_lat, n_lon : int, optional
        Grid resolution: ``n_lat * n_lon`` trajectories.
    reference : str or path, optional
        An atlas of the same system: final states that match one of its catalog
        attractors get that attractor's id and label. Other attractors get ids after
        the catalog's, in order of first appearance on the grid.
    progress : bool, optional
        Show a progress bar on standard error.

    Returns
    -------
    xarray.Dataset
        ``attractor`` (-1 where a trajectory did not converge), ``status`` and
        ``steps`` with dimensions ``lat`` and ``lon`` (degrees), and the
        ``initial_state`` of the base; attributes ``labels`` (by attractor id),
        ``classes``, ``token`` and ``ic``.

    Raises
    ------
    ConfigError
        If ``system.dim`` is not 3, or ``token``, ``ic`` or the resolution are out of
        range.
    """
    system = config.system
    if system.dim != 3:
        raise ConfigError(
            f"system.dim = {system.dim} is invalid for a basin slice: it needs dim = 3, "
            f"so that a token's position is a point of the sphere S^2"
        )
    if not 0 <= token < system.n_tokens:
        raise ConfigError(
            f"token = {token} is invalid: expected 0 <= token < {system.n_tokens}"
        )
    if not 0 <= ic < config.sampling.n_initial:
        raise ConfigError(
            f"ic = {ic} is invalid: expected 0 <= ic < {config.sampling.n_initial}"
        )
    for name, size in (("n_lat", n_lat), ("n_lon", n_lon)):
        if not isinstance(size, int) or size < 2:
            raise ConfigError(f"{name} = {size!r} is invalid: expected an integer >= 2")

    lat = np.linspace(-90.0, 90.0, n_lat, endpoint=False) + 90.0 / n_lat
    lon = np.linspace(-180.0, 180.0, n_lon, endpoint=False) + 180.0 / n_lon
    lat_grid, lon_grid = np.meshgrid(np.radians(lat), np.radians(lon), indexing="ij")
    points = np.stack(
        [np.cos(lat_grid) * np.cos(lon_grid), np.cos(lat_grid) * np.sin(lon_grid),
         np.sin(lat_grid)],
        axis=-1,
    ).reshape(-1, 3)
    base = initial_conditions(config.sampling.seed, ic, 1, system.n_tokens, 3)[0]

    from tqdm import tqdm

    total = len(points)
    final_state = np.empty((total, system.n_tokens, 3))
    status = np.empty(total, dtype=np.int8)
    steps = np.empty(total, dtype=np.int32)
    with tqdm(total=total, unit="ic", disable=not progress, desc="slice") as bar:
        for start in range(0, total, SLICE_BLOCK):
            stop = min(start + SLICE_BLOCK, total)
            block = np.repeat(base[None], stop - start, axis=0)
            block[:, token] = points[start:stop]
            outcome = integrate(system, config.integration, block)
            final_state[start:stop] = outcome.final_state
            status[start:stop] = outcome.status
            steps[start:stop] = outcome.steps
            bar.update(stop - start)

    attractor, labels, classes = _label_states(config, final_state, status, reference)
    shape = (n_lat, n_lon)
    return xr.Dataset(
        {
            "attractor": (("lat", "lon"), attractor.reshape(shape)),
            "status": (("lat", "lon"), status.reshape(shape), STATUS_ATTRS),
            "steps": (("lat", "lon"), steps.reshape(shape)),
            "initial_state": (("token", "component"), base),
        },
        coords={"lat": lat, "lon": lon, "token": np.arange(system.n_tokens),
                "component": np.arange(3)},
        attrs={"labels": labels, "classes": classes, "token": token, "ic": ic,
               "config": config.to_dict(), "name": config.name},
    )


def _label_states(
    config: Config, final_state: np.ndarray, status: np.ndarray, reference
) -> tuple[np.ndarray, list[str], list[str]]:
    """Give each converged final state an attractor id, matched to a catalog if any."""
    matcher = Matcher(config.system, config.classification)
    spaces = eigenspaces(config.system.V)
    known_states = np.empty((0, config.system.n_tokens, 3))
    labels: list[str] = []
    classes: list[str] = []
    if reference is not None:
        catalog = atlas.read_catalog(reference)
        known_states = np.array([entry.state for entry in catalog]).reshape(
            -1, config.system.n_tokens, 3
        )
        labels = [entry.label for entry in catalog]
        classes = [entry.class_name for entry in catalog]

    # Group the grid's states (catalog states first, so they keep their ids).
    converged = status == STATUS_CONVERGED
    states = np.concatenate([known_states, final_state])
    selected = np.concatenate([np.ones(len(known_states), dtype=bool), converged])
    features = matcher.features(states, selected)
    candidates = np.flatnonzero(selected)
    group, representatives = matcher.group_representatives(features, candidates)

    # Groups that contain a catalog state take its id; new ones follow in order.
    id_of_group = np.full(len(representatives), -1, dtype=np.int32)
    known = len(known_states)
    id_of_group[group[:known]] = np.arange(known, dtype=np.int32)
    for number, representative in enumerate(representatives):
        if id_of_group[number] < 0:
            id_of_group[number] = len(labels)
            attractor = describe(states[representative], representative - known,
                                 spaces, config.classification)
            labels.append(attractor.label)
            classes.append(CLASS_NAMES[attractor.class_code])

    attractor_id = np.full(len(final_state), -1, dtype=np.int32)
    attractor_id[converged] = id_of_group[group[known:]]
    return attractor_id, labels, classes
