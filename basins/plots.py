"""Figures of basin atlases with matplotlib, drawn without a display.

Every function returns a `matplotlib.figure.Figure` built directly (not through
``pyplot``), so nothing depends on the backend and no window opens; save it with
``figure.savefig(path)``. Colours follow the row order of the fraction table, so an
attractor has the same colour in every figure of one atlas.
"""

from __future__ import annotations

import math
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.colors import BoundaryNorm, ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from basins import analysis, atlas, sweep
from basins.errors import ConfigError

STATUS_COLOURS = {"max_steps": "0.55", "nonfinite": "0.15", "pending": "0.85"}

# Attractors beyond this many in one histogram figure are summed into "other".
MAX_HISTOGRAMS = 8


# Group colours: tab10, then the light half of tab20, both without their greys, which
# are kept for the status rows (max_steps, nonfinite, pending).
PALETTE = [("tab10", k) for k in (0, 1, 2, 3, 4, 5, 6, 8, 9)] + [
    ("tab20", k) for k in (1, 3, 5, 7, 9, 11, 13, 17, 19)
]


def colour(number: int) -> tuple[float, float, float, float]:
    """Return the colour of group ``number``; colours repeat after 18 groups."""
    from matplotlib import colormaps

    name, index = PALETTE[number % len(PALETTE)]
    return colormaps[name](index)


def _row_colour(row: pd.Series) -> tuple[float, float, float, float]:
    if pd.isna(row["id"]):
        return to_rgba(STATUS_COLOURS[row["label"]])
    return colour(int(row["id"]))


def plot_bars(table: pd.DataFrame, *, title: str = "") -> Figure:
    """Draw basin fractions as horizontal bars with their 95% intervals.

    Parameters
    ----------
    table : pandas.DataFrame
        A table of `basins.analysis.basin_fractions` for one atlas (or one value of
        a sweep).
    title : str, optional
        Figure title.
    """
    rows = table.reset_index(drop=True)
    figure = Figure(figsize=(8.0, 0.9 + 0.38 * len(rows)), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(rows))[::-1]
    errors = np.array([rows["fraction"] - rows["low"], rows["high"] - rows["fraction"]])
    axes.barh(
        positions,
        rows["fraction"],
        xerr=errors,
        color=[_row_colour(row) for _, row in rows.iterrows()],
        error_kw={"elinewidth": 1.0, "capsize": 3.0},
    )
    for position, (_, row) in zip(positions, rows.iterrows()):
        axes.text(row["high"] + 0.01, position, f"{row['fraction']:.4f}", va="center",
                  fontsize=8)
    axes.set_yticks(positions, rows["label"], fontsize=8)
    axes.set_xlim(0.0, min(1.0, float(rows["high"].max()) + 0.12))
    axes.set_xlabel("basin fraction (95% Wilson interval)")
    total = int(rows["total"].iloc[0]) if len(rows) else 0
    axes.set_title(title or f"basin fractions of {total} initial conditions", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    return figure


def plot_sweep(
    table: pd.DataFrame,
    dimension: str,
    *,
    parameter: str = "",
    stacked: bool = False,
    log: bool = False,
    min_fraction: float = 0.0,
    title: str = "",
) -> Figure:
    """Draw basin fractions against the swept parameter.

    Parameters
    ----------
    table : pandas.DataFrame
        A table of `basins.analysis.basin_fractions` for a sweep.
    dimension : str
        The column with the parameter values (the sweep's dimension, e.g. ``beta``).
    parameter : str, optional
        Axis label, by default ``dimension``.
    stacked : bool, optional
        Stack the fractions (they add up to one) instead of drawing one line with
        its 95% band per group.
    log : bool, optional
        Draw the lines on a logarithmic fraction axis, so that small basins show.
        Values where a group has no initial condition are left out of its line and
        band. The axis starts at half of one initial condition's fraction.
    min_fraction : float, optional
        Leave out groups whose fraction stays below this at every value.
    title : str, optional
        Figure title.
    """
    if dimension not in table:
        raise ConfigError(
            f"the table has no column {dimension!r}: a sweep plot needs the fractions "
            f"of a sweep"
        )
    figure = Figure(figsize=(9.5, 5.0), layout="constrained")
    axes = figure.add_subplot()
    groups = []
    for label, rows in table.groupby("label", sort=False):
        if rows["fraction"].max() <= min_fraction or rows["count"].max() == 0:
            continue
        groups.append((label, rows.sort_values(dimension)))

    if stacked:
        x = groups[0][1][dimension].to_numpy() if groups else []
        axes.stackplot(
            x,
            [rows["fraction"].to_numpy() for _, rows in groups],
            labels=[label for label, _ in groups],
            colors=[_row_colour(rows.iloc[0]) for _, rows in groups],
            alpha=0.9,
        )
        axes.set_ylim(0.0, 1.0)
    else:
        floor = 0.5 / float(table["total"].max()) if len(table) else 0.0
        for label, rows in groups:
            line_colour = _row_colour(rows.iloc[0])
            x = rows[dimension].to_numpy()
            fraction = rows["fraction"].to_numpy()
            low = rows["low"].to_numpy()
            found = np.ones(len(rows), dtype=bool)
            if log:
                found = rows["count"].to_numpy() > 0
                fraction = np.where(found, fraction, np.nan)
                low = np.maximum(low, floor)
            axes.fill_between(x, low, rows["high"], where=found, color=line_colour,
                              alpha=0.25, linewidth=0)
            axes.plot(x, fraction, marker="o", markersize=3, color=line_colour,
                      label=label)
        if log:
            axes.set_yscale("log")
            axes.set_ylim(floor, 1.0)
        else:
            axes.set_ylim(bottom=0.0)
    axes.set_xlabel(parameter or dimension)
    axes.set_ylabel("basin fraction" + ("" if stacked else " (95% Wilson band)"))
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    total = int(table["total"].iloc[0]) if len(table) else 0
    axes.set_title(title or f"{total} initial conditions per value", fontsize=10)
    return figure


def plot_steps(dataset: xr.Dataset, *, bins: int = 60, title: str = "") -> Figure:
    """Draw histograms of the RK4 steps to convergence, one per attractor.

    Parameters
    ----------
    dataset : xarray.Dataset
        An atlas from `basins.analysis.open_atlas` (for a sweep, select one value
        first). The histograms are computed from its Dask arrays chunk by chunk.
    bins : int, optional
        Number of logarithmically spaced bins.
    title : str, optional
        Figure title.
    """
    if dataset["status"].ndim != 1:
        raise ConfigError("plot_steps needs one atlas: select one value of a sweep first")
    variable = "track" if "track" in dataset else "attractor"
    labels = list(dataset.attrs[f"{variable}_labels"])
    codes = dataset[variable].data
    steps = dataset["steps"].data
    converged = codes >= 0
    low, high = dask.compute(
        da.where(converged, steps, np.iinfo(np.int32).max).min(),
        da.where(converged, steps, 0).max(),
    )
    figure = Figure(figsize=(8.0, 4.5), layout="constrained")
    axes = figure.add_subplot()
    if high < 1:
        axes.text(0.5, 0.5, "no converged trajectory", ha="center", transform=axes.transAxes)
        return figure
    edges = np.geomspace(max(1, int(low)), int(high) + 1, bins + 1)

    shown = list(range(min(len(labels), MAX_HISTOGRAMS)))
    histograms = [da.histogram(steps, bins=edges, weights=(codes == g).astype(np.int64))[0]
                  for g in shown]
    if len(labels) > MAX_HISTOGRAMS:
        histograms.append(
            da.histogram(steps, bins=edges, weights=(codes >= MAX_HISTOGRAMS).astype(np.int64))[0]
        )
    counts = dask.compute(*histograms)
    for number, count in enumerate(counts):
        if number < len(shown):
            label, line_colour = labels[number], colour(number)
        else:
            label, line_colour = f"other ({len(labels) - MAX_HISTOGRAMS} attractors)", "black"
        if count.sum() == 0:
            continue
        axes.stairs(count, edges, label=label, color=line_colour, linewidth=1.4)
    # Both axes are logarithmic, so that small basins and long tails stay visible.
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_ylim(bottom=0.7)
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("RK4 steps to convergence")
    axes.set_ylabel("initial conditions per bin")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, frameon=False)
    axes.set_title(title or "convergence time per attractor", fontsize=10)
    return figure


def _lat_lon(vector: np.ndarray) -> tuple[float, float]:
    return (math.degrees(math.asin(max(-1.0, min(1.0, vector[2])))),
            math.degrees(math.atan2(vector[1], vector[0])))


def plot_slice(slice_data: xr.Dataset, *, title: str = "") -> Figure:
    """Draw a basin slice: the attractor reached from each position of one token.

    Parameters
    ----------
    slice_data : xarray.Dataset
        The result of `basins.analysis.basin_slice`.
    title : str, optional
        Figure title.
    """
    attractor = slice_data["attractor"].to_numpy()
    status = slice_data["status"].to_numpy()
    labels = list(slice_data.attrs["labels"])
    present = sorted(int(a) for a in np.unique(attractor[attractor >= 0]))

    # One colour index per attractor, then max_steps and nonfinite.
    palette = [colour(number) for number in range(len(labels))]
    palette += [to_rgba(STATUS_COLOURS["max_steps"]), to_rgba(STATUS_COLOURS["nonfinite"])]
    image = np.where(attractor >= 0, attractor, len(labels))
    image = np.where(status == 2, len(labels) + 1, image)
    colour_map = ListedColormap(palette)
    norm = BoundaryNorm(np.arange(len(palette) + 1) - 0.5, len(palette))

    figure = Figure(figsize=(10.0, 5.0), layout="constrained")
    axes = figure.add_subplot()
    axes.imshow(image, origin="lower", extent=(-180.0, 180.0, -90.0, 90.0),
                cmap=colour_map, norm=norm, interpolation="nearest", aspect="auto")
    moving = int(slice_data.attrs["token"])
    for token, position in enumerate(slice_data["initial_state"].to_numpy()):
        if token == moving:
            continue
        lat, lon = _lat_lon(position)
        axes.plot(lon, lat, marker="X", markersize=9, color="white", markeredgecolor="black")
        axes.annotate(f"token {token}", (lon, lat), xytext=(6, 6),
                      textcoords="offset points", fontsize=8, color="black")

    handles = [Patch(color=palette[a], label=labels[a]) for a in present]
    for code, name in ((1, "max_steps"), (2, "nonfinite")):
        if np.any(status == code):
            handles.append(Patch(color=STATUS_COLOURS[name], label=name))
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                frameon=False)
    axes.set_xlabel("longitude of token %d (degrees)" % moving)
    axes.set_ylabel("latitude (degrees)")
    axes.set_xticks(np.arange(-180, 181, 60))
    axes.set_yticks(np.arange(-90, 91, 30))
    n_lat, n_lon = attractor.shape
    axes.set_title(
        title or f"basin slice: token {moving} of initial condition "
        f"{slice_data.attrs['ic']} moves, the others stay ({n_lat} x {n_lon} grid)",
        fontsize=10,
    )
    return figure


KINDS = ("bars", "sweep", "steps", "slice")


def _select_value(dataset: xr.Dataset, value: float | None) -> int:
    """Return the index of the sweep value closest to ``value``, which must be given."""
    values = np.array(dataset.attrs["values"])
    listing = ", ".join(f"{v:g}" for v in values)
    if value is None:
        raise ConfigError(
            f"this figure shows one value of the sweep: give --value, one of {listing}"
        )
    index = int(np.argmin(np.abs(values - value)))
    spacing = float(np.min(np.abs(np.diff(values)))) if len(values) > 1 else 1.0
    if abs(values[index] - value) > 1e-6 * max(1.0, spacing):
        raise ConfigError(
            f"value = {value:g} is not a value of the sweep {dataset.attrs['parameter']}; "
            f"expected one of {listing}"
        )
    return index


def _slice_by_track(
    slice_data: xr.Dataset, path: Path, index: int, track_labels: list[str]
) -> xr.Dataset:
    """Renumber a slice of one sweep value by track, so colours match the sweep's."""
    group = sweep.open_sweep(path)
    lookup = analysis._track_lookup(group, len(group.attrs["values"]))[index]
    known = len(lookup) - 1
    labels = list(slice_data.attrs["labels"])
    new_ids = np.arange(len(labels)) - known + len(track_labels)
    renumber = np.concatenate([lookup[:known], new_ids[known:], [-1]]).astype(np.int32)
    renumbered = slice_data.copy()
    renumbered["attractor"] = slice_data["attractor"].copy(
        data=renumber[slice_data["attractor"].to_numpy()]
    )
    renumbered.attrs["labels"] = list(track_labels) + labels[known:]
    del renumbered.attrs["classes"]
    return renumbered


def plot_atlas(
    path: str | Path,
    kind: str,
    *,
    by: str = "attractor",
    value: float | None = None,
    stacked: bool = False,
    log: bool = False,
    token: int = 0,
    ic: int = 0,
    resolution: int = 90,
    progress: bool = False,
) -> Figure:
    """Draw one figure of the atlas or sweep at ``path``.

    Parameters
    ----------
    path : str or path
        An atlas or a sweep.
    kind : {'bars', 'sweep', 'steps', 'slice'}
        `plot_bars`, `plot_sweep`, `plot_steps` or `plot_slice`. ``sweep`` needs a
        sweep; for a sweep, the other kinds show the value ``value``.
    by : {'attractor', 'class', 'alignment'}
        Grouping of ``bars`` and ``sweep`` (see `basins.analysis.basin_fractions`).
    value : float, optional
        The sweep value to show with ``bars``, ``steps`` and ``slice``.
    stacked : bool
        ``sweep``: stack the fractions.
    log : bool
        ``sweep``: logarithmic fraction axis.
    token, ic, resolution : int
        ``slice``: the token that moves, the initial condition that places the
        others, and the number of latitudes (twice as many longitudes).
    progress : bool
        ``slice``: show a progress bar on standard error.

    Raises
    ------
    ConfigError
        On an unknown kind, a sweep figure of a single atlas, or a missing or unknown
        sweep value.
    """
    if kind not in KINDS:
        raise ConfigError(f"kind = {kind!r} is invalid: expected one of {', '.join(KINDS)}")
    path = Path(path)
    dataset = analysis.open_atlas(path)
    is_sweep = "track" in dataset
    if kind == "sweep":
        if not is_sweep:
            raise ConfigError(
                f"--kind sweep needs a sweep, and {str(path)!r} is a single atlas; use "
                f"--kind bars"
            )
        table = analysis.basin_fractions(dataset, by=by)
        return plot_sweep(table, dataset.attrs["dimension"],
                          parameter=dataset.attrs["parameter"], stacked=stacked, log=log)

    title_suffix = ""
    member = path
    if is_sweep:
        index = _select_value(dataset, value)
        dimension = dataset.attrs["dimension"]
        member = sweep.member_paths(path)[index]
        title_suffix = f" at {dimension} = {dataset.attrs['values'][index]:g}"
        dataset = dataset.isel({dimension: index})
    if kind == "bars":
        table = analysis.basin_fractions(dataset, by=by)
        total = int(table["total"].iloc[0])
        return plot_bars(table, title=f"basin fractions of {total} initial conditions"
                         + title_suffix)
    if kind == "steps":
        return plot_steps(dataset, title="convergence time per attractor" + title_suffix)

    config = atlas.read_config(member)
    slice_data = analysis.basin_slice(
        config, token=token, ic=ic, n_lat=resolution, n_lon=2 * resolution,
        reference=member, progress=progress,
    )
    if is_sweep:
        slice_data = _slice_by_track(slice_data, path, index, dataset.attrs["track_labels"])
    figure = plot_slice(slice_data)
    if title_suffix:
        axes = figure.axes[0]
        axes.set_title(axes.get_title() + title_suffix, fontsize=10)
    return figure
