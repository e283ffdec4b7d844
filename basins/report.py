"""Basin fractions with confidence intervals, read from an atlas."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from basins import atlas
from basins.config import RK4_STABILITY_LIMIT
from basins.errors import AtlasError

# Two-sided 95% quantile of the standard normal distribution.
Z_95 = 1.959963984540054

# Verdicts of a certificate under which a catalog entry counts as a basin.
STABLE_VERDICTS = ("stable", "stable modulo symmetry")


def wilson_interval(count: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """Return the Wilson score interval of the proportion ``count / total``.

    Parameters
    ----------
    count, total : int
        Successes and trials, ``0 <= count <= total``, ``total >= 1``.
    z : float, optional
        Normal quantile; the default gives a 95% interval.

    Notes
    -----
    With ``p = count / total`` the interval is the centre
    ``(p + z^2 / 2N) / (1 + z^2 / N)`` plus or minus
    ``z sqrt(p (1 - p) / N + z^2 / 4N^2) / (1 + z^2 / N)`` (Wilson, 1927). Unlike
    the normal approximation it stays inside [0, 1] and is not empty for counts of
    zero.
    """
    if total < 1 or not 0 <= count <= total:
        raise ValueError(f"count = {count}, total = {total}: need 0 <= count <= total, total >= 1")
    p = count / total
    denominator = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    low = 0.0 if count == 0 else max(0.0, centre - half_width)
    high = 1.0 if count == total else min(1.0, centre + half_width)
    return low, high


@dataclass(frozen=True)
class FractionRow:
    """One row of the basin-fraction table."""

    id: int | None
    class_name: str
    label: str
    count: int
    fraction: float
    low: float
    high: float
    mean_steps: float
    stability: str = ""
    unstable_directions: int = 0

    @property
    def flagged(self) -> bool:
        """Whether the row is an attractor that is not certified stable."""
        return self.id is not None and self.stability not in STABLE_VERDICTS


# Flagged attractors named in the warning under a table; the table lists them all.
MAX_FLAGGED_LISTED = 10


def basin_fractions(path: str | Path) -> list[FractionRow]:
    """Return the basin fraction of every attractor of an atlas, with 95% intervals.

    Fractions are of all initial conditions, so the rows add up to one: ``max_steps``
    and ``nonfinite`` always get rows of their own, and ``pending`` gets one when
    the atlas is unfinished.
    """
    group = atlas.open_store(path)
    config = atlas.read_config(path)
    codes = {name: atlas.STATUS_CODES[name] for name in ("max_steps", "nonfinite", "pending")}
    counts = dict.fromkeys(codes, 0)
    step_sums = dict.fromkeys(codes, 0)
    # One chunk at a time, so that memory does not grow with the atlas.
    try:
        for chunk in range(config.sampling.n_chunks):
            start, stop = atlas.chunk_bounds(config, chunk)
            status = group["status"][start:stop]
            steps = group["steps"][start:stop]
            for name, code in codes.items():
                selected = status == code
                counts[name] += int(np.count_nonzero(selected))
                step_sums[name] += int(steps[selected].sum(dtype=np.int64))
    except atlas.DECODE_ERRORS as exc:
        raise AtlasError(
            f"atlas {str(path)!r} has damaged chunks ({type(exc).__name__}: {exc}); "
            f"'basins verify {path}' lists them and 'basins resume {path}' recomputes "
            f"them"
        ) from None
    total = config.sampling.n_initial
    rows = []
    for entry in atlas.read_catalog(path):
        low, high = wilson_interval(entry.count, total)
        rows.append(
            FractionRow(
                entry.id,
                entry.class_name,
                entry.label,
                entry.count,
                entry.count / total,
                low,
                high,
                entry.mean_steps,
                entry.stability,
                entry.unstable_directions,
            )
        )
    for name, count in counts.items():
        if name == "pending" and count == 0:
            continue
        low, high = wilson_interval(count, total)
        mean_steps = step_sums[name] / count if count and name != "pending" else math.nan
        rows.append(FractionRow(None, name, "", count, count / total, low, high, mean_steps))
    return rows


def nonfinite_note(path: str | Path, rows: list[FractionRow]) -> str | None:
    """Return a hint on the step size if some trajectories became nonfinite, else None.

    The hint gives the step that is safe by the RK4 stability estimate of the
    stored configuration (`basins.config.Config.check_step_size`).
    """
    count = sum(
        row.count for row in rows if row.id is None and row.class_name == "nonfinite"
    )
    if count == 0:
        return None
    config = atlas.read_config(path)
    total = sum(row.count for row in rows)
    dt = config.integration.dt
    rate = config.system.max_rate()
    safe = RK4_STABILITY_LIMIT / rate if rate > 0 else math.inf
    if dt > safe:
        advice = f"dt <= {safe:.3g} is safe by the RK4 stability estimate"
    else:
        advice = "dt is within the RK4 stability estimate, but a smaller one may help"
    return (
        f"{count} of {total} initial conditions became nonfinite (NaN or infinity) "
        f"with integration.dt = {dt:g}; {advice}"
    )


def format_table(rows: list[FractionRow]) -> str:
    """Render fraction rows as a fixed-width text table.

    Attractors whose certificate is not ``stable`` or ``stable modulo symmetry`` are
    marked with ``!`` in the ``stability`` column and listed in a warning line after
    the table: their counts are initial conditions that stopped near them, not basins.
    """
    header = (
        "id", "class", "attractor", "count", "fraction", "95% interval", "mean steps",
        "stability",
    )
    lines = []
    for row in rows:
        lines.append(
            (
                "" if row.id is None else str(row.id),
                row.class_name,
                row.label,
                str(row.count),
                f"{row.fraction:.4f}",
                f"[{row.low:.4f}, {row.high:.4f}]",
                "" if np.isnan(row.mean_steps) else f"{row.mean_steps:.0f}",
                _stability_cell(row),
            )
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    right_aligned = {0, 3, 4, 6}

    def render(cells) -> str:
        return "  ".join(
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    separator = "  ".join("-" * width for width in widths)
    total = sum(row.count for row in rows)
    footer = f"{total} initial conditions; fractions of all of them, Wilson 95% intervals"
    text = [render(header), separator, *map(render, lines), footer]
    flagged = [row for row in rows if row.flagged]
    if flagged:
        ids = ", ".join(
            f"{row.id} ({row.stability or 'not certified'})"
            for row in flagged[:MAX_FLAGGED_LISTED]
        )
        if len(flagged) > MAX_FLAGGED_LISTED:
            ids += f" and {len(flagged) - MAX_FLAGGED_LISTED} more"
        text.append(
            f"warning: attractors {ids} are not certified stable; their counts are "
            f"initial conditions that stopped near them, not basins"
        )
    return "\n".join(text)


def _stability_cell(row: FractionRow) -> str:
    if row.id is None:
        return ""
    if row.stability == "unstable":
        return f"! unstable ({row.unstable_directions})"
    if row.flagged:
        return f"! {row.stability or 'not certified'}"
    return row.stability
