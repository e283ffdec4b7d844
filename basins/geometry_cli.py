"""The ``basins boundary``, ``basins entropy`` and ``basins escape`` commands.

`add_parsers` registers the three subcommands on the main parser and `COMMANDS` maps
their names to handlers; `basins.cli` does both. Every command stores its results in
the atlas as it goes, so repeating an interrupted command computes only what is
missing.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

CONTINUE_HINT = "repeating the command continues"


def _epsilons(values: list[str]) -> tuple[float, ...]:
    low, high, count = float(values[0]), float(values[1]), int(values[2])
    return tuple(float(e) for e in np.geomspace(low, high, count))


def _attractor_ids(values: list[str]) -> list[int] | None:
    if values == ["all"]:
        return None
    ids = []
    for value in values:
        try:
            ids.append(int(value))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--attractor {value!r} is invalid: expected catalog ids or 'all'"
            ) from None
    return ids


def add_parsers(
    commands: argparse._SubParsersAction,
    add_execution_options: Callable[..., None],
) -> None:
    """Add the three geometry subcommands to ``commands``.

    ``add_execution_options(parser, resume_hint=...)`` adds the options that set
    where the tasks run, as for ``basins run``.
    """
    boundary = commands.add_parser(
        "boundary",
        help="locate points on the boundaries between basins",
        description="Bisect along geodesics between pairs of initial conditions "
        "that reach different attractors, store the boundary points in the atlas "
        "(group boundary/all or boundary/A-B) and print how many separate each pair "
        "of basins. Repeating the command completes an interrupted one; a larger "
        "--points adds points.",
    )
    boundary.add_argument("atlas", type=Path, help="atlas directory")
    boundary.add_argument(
        "--points",
        type=int,
        default=200,
        metavar="N",
        help="boundary points to locate (default 200)",
    )
    boundary.add_argument(
        "--tol",
        type=float,
        default=1e-6,
        help="bisection stops once the bracket is this short, in radians of "
        "geodesic distance (default 1e-6)",
    )
    boundary.add_argument(
        "--between",
        type=int,
        nargs=2,
        metavar=("A", "B"),
        help="only pairs whose initial conditions reach attractors A and B",
    )
    _add_common_options(boundary, chunk_default=50, chunk_unit="points")
    add_execution_options(boundary, resume_hint=CONTINUE_HINT)

    entropy = commands.add_parser(
        "entropy",
        help="basin entropy and uncertainty exponent of a slice (dim = 3)",
        description="Move one token of an initial condition over a latitude-"
        "longitude grid of the sphere with the other tokens fixed, store the "
        "attractor of every grid point (group slices/NAME), and print the basin "
        "entropy, the boundary basin entropy and the uncertainty exponent with its "
        "95% bootstrap interval.",
    )
    entropy.add_argument("atlas", type=Path, help="atlas directory")
    entropy.add_argument(
        "--slice",
        type=int,
        required=True,
        metavar="TOKEN",
        dest="token",
        help="index of the token that moves over the sphere",
    )
    entropy.add_argument(
        "--base-ic",
        type=int,
        default=0,
        metavar="N",
        help="atlas initial condition that fixes the other tokens (default 0)",
    )
    entropy.add_argument(
        "--grid",
        type=int,
        default=90,
        metavar="N",
        help="latitude rows of the grid; it has 2 N longitude columns (default 90)",
    )
    entropy.add_argument(
        "--box",
        type=int,
        default=5,
        metavar="N",
        help="box side in grid points for the basin entropy (default 5)",
    )
    entropy.add_argument(
        "--samples",
        type=int,
        default=2000,
        metavar="N",
        help="base points of the uncertainty exponent (default 2000)",
    )
    entropy.add_argument(
        "--epsilons",
        nargs=3,
        metavar=("MIN", "MAX", "COUNT"),
        help="perturbation sizes of the uncertainty exponent: COUNT sizes from MIN "
        "to MAX radians, evenly spaced in log (default 0.01 0.3 8)",
    )
    entropy.add_argument(
        "--seed", type=int, default=0, help="seed of the base points (default 0)"
    )
    _add_common_options(entropy, chunk_default=4096, chunk_unit="integrations")
    add_execution_options(entropy, resume_hint=CONTINUE_HINT)

    escape = commands.add_parser(
        "escape",
        help="smallest perturbations that move an attractor to another basin",
        description="From the representative state of each attractor, search along "
        "random tangent directions for the smallest geodesic perturbation that "
        "leads to another basin, store the results (group escape/ID) and print "
        "them per target basin. The smallest size found is an upper bound of the "
        "true minimum; more --directions tighten it.",
    )
    escape.add_argument("atlas", type=Path, help="atlas directory")
    escape.add_argument(
        "--attractor",
        nargs="+",
        required=True,
        metavar="ID",
        help="catalog ids of the attractors, or 'all'",
    )
    escape.add_argument(
        "--directions",
        type=int,
        default=128,
        metavar="N",
        help="random directions per attractor (default 128)",
    )
    escape.add_argument(
        "--max-size",
        type=float,
        default=math.pi,
        help="largest perturbation tried, in radians (default pi)",
    )
    escape.add_argument(
        "--scan-points",
        type=int,
        default=32,
        metavar="N",
        help="sizes tried along each direction before bisection (default 32)",
    )
    escape.add_argument(
        "--tol",
        type=float,
        default=1e-4,
        help="bisection stops once the bracket is this short (default 1e-4)",
    )
    escape.add_argument(
        "--seed", type=int, default=0, help="seed of the directions (default 0)"
    )
    _add_common_options(escape, chunk_default=32, chunk_unit="directions")
    add_execution_options(escape, resume_hint=CONTINUE_HINT)


def _add_common_options(
    parser: argparse.ArgumentParser, *, chunk_default: int, chunk_unit: str
) -> None:
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=chunk_default,
        metavar="N",
        help=f"{chunk_unit} per task and stored chunk, when the results are first "
        f"created (default {chunk_default})",
    )
    parser.add_argument("--plot", type=Path, metavar="FILE", help="write a figure")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="discard stored results of these settings and compute them again",
    )


def _catalog_labels(path: Path) -> list[str]:
    from basins.atlas import open_store

    return list(open_store(path)["catalog"].attrs["label"])


def _pending_line(pending: int, what: str) -> str:
    return f"{pending} {what} pending: repeat the command to compute them"


def _command_boundary(args: argparse.Namespace) -> int:
    from basins.boundary import BoundarySettings, boundary_table, sample_boundary
    from basins.cli import _execution
    from basins.geometry_plots import outcome_name, plot_boundary

    settings = BoundarySettings(
        n_points=args.points,
        tol=args.tol,
        between=args.between,
        chunk_size=args.chunk_size,
    )
    points = sample_boundary(
        args.atlas,
        settings,
        execution=_execution(args),
        max_chunks=args.max_chunks,
        overwrite=args.overwrite,
    )
    labels = _catalog_labels(args.atlas)
    rows = boundary_table(points)
    print(
        f"{len(points.width)} boundary points ({settings.name}) of {args.atlas}, "
        f"bisection tolerance {settings.tol:g}"
    )
    header = ("points", "max bracket", "attractors on the two sides")
    print(f"{header[0]:>6}  {header[1]:>11}  {header[2]}")
    for row in rows:
        sides = (
            f"{outcome_name(row.first, labels)}  |  {outcome_name(row.second, labels)}"
        )
        print(f"{row.count:>6}  {row.max_width:>11.3g}  {sides}")
    if points.pending:
        print(_pending_line(points.pending, "points"))
    elif args.plot:
        plot_boundary(
            points, labels, args.plot, title=f"Boundary points of {args.atlas}"
        )
        print(f"figure written to {args.plot}")
    return 0


def _command_entropy(args: argparse.Namespace) -> int:
    from basins.cli import _execution
    from basins.entropy import DEFAULT_EPSILONS, SliceSettings, compute_slice
    from basins.errors import ConfigError
    from basins.geometry_plots import plot_slice

    epsilons = DEFAULT_EPSILONS
    if args.epsilons:
        try:
            epsilons = _epsilons(args.epsilons)
        except ValueError:
            raise ConfigError(
                f"--epsilons {' '.join(args.epsilons)} is invalid: expected MIN MAX "
                f"COUNT, two numbers and an integer"
            ) from None
    settings = SliceSettings(
        token=args.token,
        base_ic=args.base_ic,
        grid=args.grid,
        samples=args.samples,
        epsilons=epsilons,
        seed=args.seed,
        chunk_size=args.chunk_size,
    )
    result = compute_slice(
        args.atlas,
        settings,
        box=args.box,
        execution=_execution(args),
        max_chunks=args.max_chunks,
        overwrite=args.overwrite,
    )
    print(
        f"slice {result.name} of {args.atlas}: token {settings.token} moves over a "
        f"{settings.grid} x {2 * settings.grid} latitude-longitude grid, the other "
        f"tokens stay at initial condition {settings.base_ic}"
    )
    if result.pending:
        print(_pending_line(result.pending, "grid and base points"))
        return 0
    entropy, fit = result.entropy, result.uncertainty
    print(
        f"basin entropy S_b = {entropy.entropy:.4f} over {entropy.boxes} boxes of "
        f"{entropy.box} x {entropy.box} points, {entropy.outcomes} outcomes"
    )
    print(
        f"boundary basin entropy S_bb = {entropy.boundary_entropy:.4f} over "
        f"{entropy.boundary_boxes} boxes with more than one outcome "
        f"(log 2 criterion for a fractal boundary, S_bb > 0.6931: "
        f"{'met' if entropy.fractal_sign else 'not met'})"
    )
    print(
        f"uncertainty exponent alpha = {fit.exponent:.3f}, 95% bootstrap interval "
        f"[{fit.low:.3f}, {fit.high:.3f}], from {fit.samples} base points"
    )
    print(f"{'eps':>8}  {'uncertain':>9}  {'fraction':>8}  fitted")
    for eps, count, fraction, used in zip(
        fit.epsilon, fit.uncertain, fit.fraction, fit.fitted
    ):
        print(f"{eps:>8.4f}  {count:>9d}  {fraction:>8.4f}  {'yes' if used else 'no'}")
    if args.plot:
        plot_slice(
            result,
            _catalog_labels(args.atlas),
            args.plot,
            title=f"Slice {result.name} of {args.atlas}",
        )
        print(f"figure written to {args.plot}")
    return 0


def _command_escape(args: argparse.Namespace) -> int:
    from basins.cli import _execution
    from basins.errors import ConfigError
    from basins.escape import NO_ESCAPE, EscapeSettings, find_escapes
    from basins.geometry_plots import outcome_name, plot_escapes

    try:
        attractors = _attractor_ids(args.attractor)
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(str(exc)) from None
    settings = EscapeSettings(
        n_directions=args.directions,
        max_size=args.max_size,
        scan_points=args.scan_points,
        tol=args.tol,
        seed=args.seed,
        chunk_size=args.chunk_size,
    )
    summaries = find_escapes(
        args.atlas,
        attractors,
        settings,
        execution=_execution(args),
        max_chunks=args.max_chunks,
        overwrite=args.overwrite,
    )
    labels = _catalog_labels(args.atlas)
    pending = sum(summary.pending for summary in summaries)
    for summary in summaries:
        computed = len(summary.size)
        print(
            f"attractor {summary.attractor} ({summary.label}): {computed} directions, "
            f"smallest escape {summary.smallest:.4f}"
        )
        print(f"  {'directions':>10}  {'smallest':>8}  {'median':>8}  basin reached")
        for row in summary.rows:
            if row.target == NO_ESCAPE:
                name = f"none up to {settings.max_size:.4g}"
                print(f"  {row.directions:>10}  {'':>8}  {'':>8}  {name}")
                continue
            print(
                f"  {row.directions:>10}  {row.smallest:>8.4f}  {row.median:>8.4f}  "
                f"{outcome_name(row.target, labels)}"
            )
    if pending:
        print(_pending_line(pending, "directions"))
    elif args.plot:
        plot_escapes(
            summaries,
            labels,
            args.plot,
            title=f"Smallest perturbations that leave each basin, {args.atlas}",
        )
        print(f"figure written to {args.plot}")
    return 0


COMMANDS = {
    "boundary": _command_boundary,
    "entropy": _command_entropy,
    "escape": _command_escape,
}
