"""Figures of boundary points, slices and escape sizes (matplotlib, no display).

Every function draws on a `matplotlib.figure.Figure` with the Agg canvas and saves it
to a file, so no display and no pyplot state are involved. Each attractor keeps one
colour in all figures: ids 0 to 9 get the ``tab10`` colours and the next ten their
lighter ``tab20`` variants. Outcomes without a catalog attractor are grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from basins.boundary import BoundaryPoints, boundary_table
from basins.entropy import Slice
from basins.escape import NO_ESCAPE, EscapeSummary
from basins.geometry import NO_ATTRACTOR, UNCATALOGUED

# Colours of the outcomes that are not catalog attractors.
OUTCOME_COLOURS = {
    NO_ATTRACTOR: "#444444",
    UNCATALOGUED: "#999999",
    NO_ESCAPE: "#dddddd",
}
OUTCOME_NAMES = {
    NO_ATTRACTOR: "not converged",
    UNCATALOGUED: "not in the catalog",
    NO_ESCAPE: "no escape",
}
DPI = 120


def outcome_colour(label: int):
    """Return the colour of an outcome: a catalog id or a negative label."""
    if label < 0:
        return OUTCOME_COLOURS[label]
    shade = (label // 10) % 2
    return colormaps["tab20"](2 * (label % 10) + shade)


def outcome_name(label: int, labels: list[str]) -> str:
    """Return ``ID label`` for a catalog id, or the name of a negative outcome."""
    if label < 0:
        return OUTCOME_NAMES[label]
    return f"{label}: {labels[label]}"


def _save(figure: Figure, output: str | Path) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=DPI, bbox_inches="tight")
    return output


def _lat_lon(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    latitude = np.degrees(np.arcsin(np.clip(vectors[..., 2], -1.0, 1.0)))
    longitude = np.degrees(np.arctan2(vectors[..., 1], vectors[..., 0]))
    return latitude, longitude


def plot_boundary(
    points: BoundaryPoints, labels: list[str], output: str | Path, *, title: str = ""
) -> Path:
    """Draw the boundary points: counts per pair of basins and, for one token in
    ``R^3``, the points themselves on a latitude-longitude map.

    Parameters
    ----------
    points : BoundaryPoints
        As returned by `basins.boundary.read_boundary`.
    labels : list of str
        Catalog labels, in id order.
    output : str or path
        Image file; the suffix picks the format.
    title : str, optional
        Figure title.
    """
    rows = boundary_table(points)
    spatial = points.state.shape[-2:] == (1, 3)
    height = max(4.8 if spatial else 3.0, 1.2 + 0.35 * len(rows))
    figure = Figure(figsize=(15 if spatial else 9, height), layout="constrained")
    axes = figure.subplots(1, 2 if spatial else 1, squeeze=False)[0]

    bars = axes[0]
    names = [
        f"{outcome_name(row.first, labels)}  |  {outcome_name(row.second, labels)}"
        for row in rows
    ]
    positions = np.arange(len(rows))
    bars.barh(positions, [row.count for row in rows], color="#4878a8")
    bars.set_yticks(positions, names, fontsize=8)
    bars.invert_yaxis()
    bars.set_xlabel("boundary points")
    bars.set_title("points per pair of basins (attractors on the two sides)")

    if spatial:
        scatter = axes[1]
        pairs = [(row.first, row.second) for row in rows]
        for first, second in pairs:
            members = (
                (points.first_attractor == first) & (points.second_attractor == second)
            ) | (
                (points.first_attractor == second) & (points.second_attractor == first)
            )
            latitude, longitude = _lat_lon(points.state[members, 0])
            scatter.scatter(
                longitude,
                latitude,
                s=8,
                label=f"{first} | {second}",
                color=outcome_colour(second if second >= 0 else first),
            )
        scatter.set_xlim(-180, 180)
        scatter.set_ylim(-90, 90)
        scatter.set_xticks(np.arange(-180, 181, 60))
        scatter.set_yticks(np.arange(-90, 91, 30))
        scatter.set_xlabel("longitude (degrees)")
        scatter.set_ylabel("latitude (degrees)")
        scatter.set_title("boundary points")
        scatter.legend(fontsize=7, markerscale=2, loc="lower left", ncols=2)

    figure.suptitle(title or "Boundary points")
    return _save(figure, output)


def _outcome_image(axes, grid: np.ndarray, latitude, longitude, labels: list[str]):
    present = [int(v) for v in np.unique(grid)]
    colours = [outcome_colour(v) for v in present]
    index = np.searchsorted(present, grid)
    cmap = ListedColormap(colours)
    norm = BoundaryNorm(np.arange(len(present) + 1) - 0.5, len(present))
    axes.imshow(
        index,
        origin="lower",
        cmap=cmap,
        norm=norm,
        interpolation="nearest",
        extent=(
            longitude[0] - 0.5 * (longitude[1] - longitude[0]),
            longitude[-1] + 0.5 * (longitude[1] - longitude[0]),
            latitude[0] - 0.5 * (latitude[1] - latitude[0]),
            latitude[-1] + 0.5 * (latitude[1] - latitude[0]),
        ),
        aspect="auto",
    )
    handles = [
        Patch(color=outcome_colour(v), label=outcome_name(v, labels)) for v in present
    ]
    return handles


def plot_slice(
    slice_: Slice, labels: list[str], output: str | Path, *, title: str = ""
) -> Path:
    """Draw a slice, its box entropies and the fraction of uncertain points.

    Parameters
    ----------
    slice_ : Slice
        As returned by `basins.entropy.read_slice`, with nothing pending.
    labels : list of str
        Catalog labels, in id order.
    output : str or path
        Image file; the suffix picks the format.
    title : str, optional
        Figure title.
    """
    figure = Figure(figsize=(16, 4.8), layout="constrained")
    map_axes, entropy_axes, fit_axes = figure.subplots(
        1, 3, width_ratios=[1.35, 1.35, 1.0]
    )
    latitude, longitude = slice_.latitude, slice_.longitude
    handles = _outcome_image(map_axes, slice_.attractor, latitude, longitude, labels)
    token = slice_.settings["token"]
    map_axes.set_title(f"attractor reached by moving token {token}")
    map_axes.legend(
        handles=handles,
        fontsize=7,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.14),
        ncols=2,
    )

    entropy = slice_.entropy
    if entropy is not None:
        image = entropy_axes.imshow(
            entropy.box_entropy,
            origin="lower",
            cmap="magma",
            aspect="auto",
            extent=(
                -180,
                -180
                + 360 * entropy.box_entropy.shape[1] * entropy.box / len(longitude),
                -90,
                -90 + 180 * entropy.box_entropy.shape[0] * entropy.box / len(latitude),
            ),
            vmin=0.0,
        )
        figure.colorbar(image, ax=entropy_axes, label="box entropy")
        entropy_axes.set_title(
            f"boxes of {entropy.box}x{entropy.box} points: S_b = {entropy.entropy:.4f}, "
            f"S_bb = {entropy.boundary_entropy:.3f}",
            fontsize=9,
        )
    for axes in (map_axes, entropy_axes):
        axes.set_xlabel("longitude (degrees)")
        axes.set_ylabel("latitude (degrees)")
        axes.set_xticks(np.arange(-180, 181, 60))
        axes.set_yticks(np.arange(-90, 91, 30))

    fit = slice_.uncertainty
    if fit is not None:
        fraction = fit.fraction
        nonzero = fit.uncertain > 0
        fit_axes.loglog(
            fit.epsilon[nonzero],
            fraction[nonzero],
            "o",
            color="#4878a8",
            label="uncertain fraction",
        )
        if np.isfinite(fit.exponent):
            line = fit.prefactor * fit.epsilon[fit.fitted] ** fit.exponent
            fit_axes.loglog(
                fit.epsilon[fit.fitted],
                line,
                "-",
                color="#c44e52",
                label=f"alpha = {fit.exponent:.2f} [{fit.low:.2f}, {fit.high:.2f}]",
            )
        fit_axes.set_xlabel("perturbation size eps (radians)")
        fit_axes.set_ylabel("fraction of eps-uncertain points")
        fit_axes.set_title(
            f"uncertainty exponent, {fit.samples} base points", fontsize=9
        )
        fit_axes.legend(fontsize=8)
    figure.suptitle(title or f"Slice {slice_.name}")
    return _save(figure, output)


def plot_escapes(
    summaries: list[EscapeSummary],
    labels: list[str],
    output: str | Path,
    *,
    title: str = "",
) -> Path:
    """Draw the escape size of every direction, per attractor and target basin.

    Each row is an attractor and each dot a direction, placed at its escape size
    and coloured by the basin it reaches. A black bar marks the smallest size.

    Parameters
    ----------
    summaries : list of EscapeSummary
        As returned by `basins.escape.find_escapes`.
    labels : list of str
        Catalog labels, in id order.
    output : str or path
        Image file; the suffix picks the format.
    title : str, optional
        Figure title.
    """
    figure = Figure(figsize=(10, 1.0 + 0.55 * len(summaries)), layout="constrained")
    axes = figure.subplots()
    rng = np.random.default_rng(0)
    seen: dict[int, None] = {}
    for row, summary in enumerate(summaries):
        for target in np.unique(summary.target):
            if target == NO_ESCAPE:
                continue
            sizes = summary.size[summary.target == target]
            jitter = rng.uniform(-0.22, 0.22, len(sizes))
            axes.scatter(
                sizes, row + jitter, s=9, color=outcome_colour(int(target)), alpha=0.8
            )
            seen[int(target)] = None
        if np.isfinite(summary.smallest):
            axes.plot([summary.smallest] * 2, [row - 0.35, row + 0.35], color="black")
    axes.set_yticks(
        np.arange(len(summaries)), [f"{s.attractor}: {s.label}" for s in summaries]
    )
    axes.invert_yaxis()
    axes.set_xlabel("escape size (geodesic distance, radians)")
    largest = [np.nanmax(s.size) for s in summaries if np.isfinite(s.size).any()]
    axes.set_xlim(0.0, 1.05 * max(largest, default=1.0))
    handles = [
        Patch(color=outcome_colour(t), label=outcome_name(t, labels))
        for t in sorted(seen, key=lambda t: (t < 0, t))
    ]
    axes.legend(
        handles=handles,
        title="basin reached",
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    figure.suptitle(title or "Smallest perturbations that leave each basin")
    return _save(figure, output)
