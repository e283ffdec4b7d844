"""PNG figures of attractors, basin fractions and spectra, drawn with matplotlib.

Every function builds a `matplotlib.figure.Figure` directly and saves it with the Agg
renderer, so nothing here touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from basins.classify import CLASS_NAMES, CLASS_POLYGONAL, cluster_tokens, eigenspaces

# Resolution of every figure; small enough to keep the PNGs committed in docs light.
DPI = 110

# One colour per class, in the order of CLASS_NAMES.
CLASS_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple")

# Colour of each verdict in the spectra.
VERDICT_COLOURS = {
    "stable": "tab:blue",
    "stable modulo symmetry": "tab:cyan",
    "marginal": "tab:gray",
    "unstable": "tab:red",
}


@dataclass(frozen=True)
class Panel:
    """A state to draw: tokens ``(n_tokens, dim)``, title, class code and ``V``."""

    state: np.ndarray
    title: str
    class_code: int
    V: np.ndarray


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def plot_states(
    path: str | Path,
    panels: Sequence[Panel],
    *,
    title: str = "",
    columns: int = 4,
    cluster_tol: float = 1e-3,
) -> Path:
    """Draw each state on the unit sphere (``dim = 3``) or circle (``dim = 2``).

    Clusters of tokens are drawn as one dot labelled with its multiplicity, its area
    growing with it. Dashed lines are the real eigenvectors of the panel's ``V``,
    labelled ``v1, v2, ...`` in the order of decreasing real part.

    Raises
    ------
    ValueError
        If a state has a dimension other than 2 or 3.
    """
    rows = -(-len(panels) // columns)
    columns = min(columns, len(panels))
    figure = Figure(figsize=(3.0 * columns, 3.1 * rows + (0.4 if title else 0.0)))
    for number, panel in enumerate(panels):
        dim = panel.state.shape[1]
        if dim not in (2, 3):
            raise ValueError(f"dim = {dim}: states can be drawn for dim 2 or 3 only")
        axes_kind = {"projection": "3d"} if dim == 3 else {}
        axes = figure.add_subplot(rows, columns, number + 1, **axes_kind)
        _draw_sphere(axes, dim)
        for space in eigenspaces(panel.V):
            if not space.is_vector or space.eigenvalue.imag != 0.0:
                continue
            vector = space.basis[:, 0]
            ends = np.stack([-1.25 * vector, 1.25 * vector])
            axes.plot(*ends.T, color="0.45", linestyle="--", linewidth=0.8)
            axes.text(*(1.35 * vector), space.name, color="0.3", fontsize=8)
        clusters = cluster_tokens(
            panel.state[None], np.ones(1, dtype=bool), cluster_tol
        )
        count = int(clusters.n_clusters[0])
        centres = clusters.centres[0, :count]
        multiplicity = clusters.multiplicity[0, :count]
        colour = CLASS_COLOURS[panel.class_code] if panel.class_code >= 0 else "black"
        if panel.class_code == CLASS_POLYGONAL:
            _draw_edges(axes, centres, colour)
        shading = {"depthshade": False} if dim == 3 else {}
        axes.scatter(
            *centres.T,
            s=40 + 40 * multiplicity,
            color=colour,
            edgecolor="black",
            zorder=5,
            **shading,
        )
        for centre, m in zip(centres, multiplicity):
            axes.text(*(1.22 * centre), str(m), fontsize=9, fontweight="bold", zorder=6)
        axes.set_title(panel.title, fontsize=8)
        axes.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0.0, 0.0, 1.0, 0.95 if title else 1.0))
    return _save(figure, path)


def _draw_edges(axes, centres: np.ndarray, colour: str) -> None:
    """Join every pair of centres at the smallest distance (within 1%): the edges."""
    distance = np.linalg.norm(centres[:, None] - centres[None, :], axis=-1)
    shortest = distance[~np.eye(len(centres), dtype=bool)].min()
    for i, j in zip(*np.nonzero(np.triu(distance <= 1.01 * shortest, k=1))):
        axes.plot(*np.stack([centres[i], centres[j]]).T, color=colour, linewidth=1.0)


def _draw_sphere(axes, dim: int) -> None:
    if dim == 2:
        angle = np.linspace(0.0, 2.0 * np.pi, 200)
        axes.plot(np.cos(angle), np.sin(angle), color="0.8", linewidth=1.0)
        axes.set_aspect("equal")
        axes.set_xlim(-1.5, 1.5)
        axes.set_ylim(-1.5, 1.5)
        return
    # Draw in call order, so that the tokens stay in front of the wireframe.
    axes.computed_zorder = False
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 25), np.linspace(0, np.pi, 13))
    axes.plot_wireframe(
        np.cos(u) * np.sin(v),
        np.sin(u) * np.sin(v),
        np.cos(v),
        color="0.85",
        linewidth=0.4,
    )
    axes.set_box_aspect((1, 1, 1))
    axes.view_init(elev=20, azim=35)
    for limits in (axes.set_xlim, axes.set_ylim, axes.set_zlim):
        limits(-1.1, 1.1)


@dataclass(frozen=True)
class Series:
    """Basin fractions of one group of attractors along a parameter sweep."""

    label: str
    fraction: np.ndarray
    low: np.ndarray
    high: np.ndarray


def plot_sweep(
    path: str | Path,
    parameter: np.ndarray,
    series: Sequence[Series],
    *,
    xlabel: str,
    title: str = "",
    markers: Sequence[tuple[float, str]] = (),
) -> Path:
    """Plot basin fractions with their 95% intervals against a parameter.

    ``markers`` are vertical lines ``(value, label)``, such as the parameter at which
    an equilibrium turns stable.
    """
    figure = Figure(figsize=(6.4, 4.0))
    axes = figure.add_subplot()
    for item in series:
        errors = np.stack([item.fraction - item.low, item.high - item.fraction])
        axes.errorbar(
            parameter,
            item.fraction,
            yerr=errors,
            marker="o",
            markersize=4,
            capsize=3,
            label=item.label,
        )
    for value, label in markers:
        axes.axvline(value, color="0.5", linestyle=":", linewidth=1.0)
        axes.text(value, 1.02, label, rotation=90, fontsize=7, va="bottom", ha="right")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("fraction of initial conditions")
    axes.set_ylim(-0.02, 1.02)
    axes.legend(fontsize=8, loc="center right")
    if title:
        axes.set_title(title, fontsize=9, pad=40 if markers else 6)
    figure.tight_layout()
    return _save(figure, path)


def plot_fractions(
    path: str | Path,
    labels: Sequence[str],
    fraction: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    class_codes: Sequence[int],
    *,
    title: str = "",
) -> Path:
    """Draw basin fractions as horizontal bars with their 95% intervals."""
    figure = Figure(figsize=(6.4, 0.8 + 0.22 * len(labels)))
    axes = figure.add_subplot()
    position = np.arange(len(labels))[::-1]
    colours = [CLASS_COLOURS[code] for code in class_codes]
    errors = np.stack([fraction - low, high - fraction])
    axes.barh(position, fraction, xerr=errors, color=colours, capsize=2)
    axes.set_yticks(position, labels, fontsize=7)
    axes.set_xlabel("fraction of initial conditions (95% Wilson interval)")
    handles = [
        Patch(color=colour, label=name)
        for name, colour in zip(CLASS_NAMES, CLASS_COLOURS)
    ]
    axes.legend(handles=handles, fontsize=7, loc="lower right")
    if title:
        axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def plot_spectra(
    path: str | Path,
    labels: Sequence[str],
    rates: Sequence[np.ndarray],
    verdicts: Sequence[str],
    *,
    title: str = "",
) -> Path:
    """Draw the real parts of the rates of each equilibrium, one row per equilibrium.

    Rates with a nonzero imaginary part are drawn as open circles.
    """
    figure = Figure(figsize=(7.0, 0.9 + 0.24 * len(labels)))
    axes = figure.add_subplot()
    for row, (values, verdict) in enumerate(zip(rates, verdicts)):
        y = len(labels) - 1 - row
        colour = VERDICT_COLOURS.get(verdict, "black")
        real = values.real
        complex_part = np.abs(values.imag) > 1e-9 * max(
            1.0, float(np.abs(values).max())
        )
        axes.scatter(
            real[~complex_part],
            np.full((~complex_part).sum(), y),
            s=14,
            color=colour,
            marker="|",
            linewidths=1.5,
        )
        axes.scatter(
            real[complex_part],
            np.full(complex_part.sum(), y),
            s=14,
            facecolors="none",
            edgecolors=colour,
        )
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_yticks(np.arange(len(labels))[::-1], labels, fontsize=7)
    axes.set_xlabel("real part of the rates of the Jacobian on the tangent space")
    handles = [
        axes.scatter([], [], color=colour, marker="s", label=name)
        for name, colour in VERDICT_COLOURS.items()
        if name in verdicts
    ]
    axes.legend(handles=handles, fontsize=7, loc="lower left")
    if title:
        axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def plot_rate_check(
    path: str | Path,
    analytic: dict[str, np.ndarray],
    certified: dict[str, np.ndarray],
    *,
    title: str = "",
) -> Path:
    """Plot certified rates against analytic ones, one colour and marker per weighting.

    Softmax and Oja rates coincide at consensus, so their markers are drawn so that
    both stay visible: hollow circles under small dots.
    """
    figure = Figure(figsize=(4.6, 4.4))
    axes = figure.add_subplot()
    everything = np.concatenate([*analytic.values(), *certified.values()])
    span = np.array([everything.min(), everything.max()])
    axes.plot(span, span, color="0.6", linewidth=0.8)
    styles = (
        {"s": 60, "facecolors": "none", "edgecolors": "tab:blue"},
        {"s": 30, "marker": "x", "color": "tab:orange"},
        {"s": 8, "color": "tab:green"},
    )
    for name, style in zip(analytic, itertools.cycle(styles)):
        axes.scatter(analytic[name], certified[name], label=name, **style)
    axes.set_xlabel("analytic rate")
    axes.set_ylabel("certified rate (real part)")
    axes.legend(fontsize=8)
    if title:
        axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def plot_attention(
    path: str | Path,
    matrices: Sequence[np.ndarray],
    titles: Sequence[str],
) -> Path:
    """Draw attention matrices as heat maps, one panel each."""
    figure = Figure(figsize=(2.4 * len(matrices), 2.7))
    for number, (matrix, title) in enumerate(zip(matrices, titles)):
        axes = figure.add_subplot(1, len(matrices), number + 1)
        image = axes.imshow(matrix, cmap="viridis", vmin=0.0)
        axes.set_title(title, fontsize=7)
        axes.set_xticks([])
        axes.set_yticks([])
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return _save(figure, path)
