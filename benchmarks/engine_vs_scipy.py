"""Benchmark the basins RK4 engine against SciPy's ``solve_ivp`` on workload W8.

Workload W8 is ``n_tokens = 8``, ``dim = 3``, ``beta = 1``, ``Q = K = I``, the
symmetric value matrix ``V = [[1, .3, 0], [.3, .5, .2], [0, .2, -.5]]``, softmax
weighting, with ``dt = 0.05``, ``tol = 1e-7``, ``checks = 3``, ``max_steps = 20000``.
Initial conditions come from `basins.initial_conditions` with the given seed.

The script measures three things.

1. The engine: `basins.integrate` with ``parallel=True`` on ``--ics`` initial
   conditions, after one untimed warm-up call (JIT compilation or cache load). It
   reports RK4 steps per second per thread (total steps / wall time / Numba threads)
   and trajectories per second. The first ``--sample`` initial conditions are also
   timed on their own, so the engine and SciPy are compared on the same inputs.
2. SciPy: ``solve_ivp`` with method RK45, ``rtol = 1e-10``, ``atol = 1e-12``, one
   trajectory per call in one thread, on the first ``--sample`` initial conditions.
   It integrates the unconstrained ambient field until a terminal event reports
   ``max_i ||dx_i/dt|| < tol``, or until ``t = max_steps * dt``. Tokens are
   renormalised only once, at the end. The field is either a NumPy implementation
   written here, checked against `basins.vector_field` at startup, or
   `basins.vector_field` itself (``--scipy-field``).
3. Agreement: for each sampled initial condition, whether the engine and SciPy end
   on the same attractor according to `basins.classify.Matcher`. That means equal
   sorted cluster multiplicities and a centre distance of at most
   ``Classification().shape_tol``.

One thread of the engine is compared with one SciPy process: the ratio is of
trajectories per second per thread. The table goes to stdout, progress to the log
on stderr.

Examples
--------
Run the default workload (20,000 engine trajectories, 200 SciPy trajectories per
field)::

    python benchmarks/engine_vs_scipy.py
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
import scipy
from scipy.integrate import solve_ivp

import basins
from basins.classify import Matcher

logger = logging.getLogger("engine_vs_scipy")

V_W8 = [[1.0, 0.3, 0.0], [0.3, 0.5, 0.2], [0.0, 0.2, -0.5]]
SCIPY_METHOD = "RK45"
SCIPY_RTOL = 1e-10
SCIPY_ATOL = 1e-12
SCIPY_STATUS_NAMES = {1: "converged", 0: "time cap", -1: "failed"}
ENGINE_STATUS_NAMES = {0: "converged", 1: "max_steps", 2: "nonfinite"}


def build_workload() -> tuple[basins.System, basins.Integration]:
    """Return the system and integrator settings of workload W8."""
    system = basins.System(n_tokens=8, dim=3, beta=1.0, V=V_W8)
    integration = basins.Integration(dt=0.05, tol=1e-7, checks=3, max_steps=20000)
    return system, integration


@dataclass(frozen=True)
class Timing:
    """Wall time and work of one contender on a set of initial conditions.

    Attributes
    ----------
    name : str
        Row label in the table.
    trajectories : int
        Number of initial conditions integrated.
    threads : int
        Threads used: Numba threads for the engine, 1 for SciPy.
    wall_s : float
        Wall-clock time in seconds.
    steps : int
        Total steps: RK4 steps for the engine, accepted RK45 steps for SciPy.
    field_evaluations : int
        Total evaluations of the vector field (4 per RK4 step for the engine).
    final_state : numpy.ndarray
        Final states with unit tokens, shape ``(trajectories, n_tokens, dim)``.
    converged : numpy.ndarray
        Whether each trajectory met the convergence criterion, shape ``(trajectories,)``.
    """

    name: str
    trajectories: int
    threads: int
    wall_s: float
    steps: int
    field_evaluations: int
    final_state: np.ndarray
    converged: np.ndarray

    @property
    def trajectories_per_s(self) -> float:
        return self.trajectories / self.wall_s

    @property
    def trajectories_per_s_per_thread(self) -> float:
        return self.trajectories_per_s / self.threads

    @property
    def steps_per_s_per_thread(self) -> float:
        return self.steps / self.wall_s / self.threads


def run_engine(
    system: basins.System,
    integration: basins.Integration,
    initial_state: np.ndarray,
    name: str,
) -> Timing:
    """Time `basins.integrate` (parallel) on ``initial_state`` after a warm-up call."""
    basins.integrate(system, integration, initial_state[:1], parallel=True)
    threads = numba.get_num_threads()
    start = time.perf_counter()
    result = basins.integrate(system, integration, initial_state, parallel=True)
    wall_s = time.perf_counter() - start

    statuses = np.bincount(result.status, minlength=3)
    logger.info(
        "%s: %d trajectories in %.2f s on %d threads; %s",
        name,
        len(initial_state),
        wall_s,
        threads,
        ", ".join(f"{ENGINE_STATUS_NAMES[k]} {statuses[k]}" for k in range(3)),
    )
    steps = int(result.steps.sum(dtype=np.int64))
    # Each RK4 step evaluates the field 4 times; the first stage doubles as the
    # convergence test, which also costs one evaluation before the first step.
    field_evaluations = 4 * steps + len(initial_state)
    return Timing(
        name=name,
        trajectories=len(initial_state),
        threads=threads,
        wall_s=wall_s,
        steps=steps,
        field_evaluations=field_evaluations,
        final_state=result.final_state,
        converged=result.status == 0,
    )


def numpy_field(system: basins.System) -> Callable[[np.ndarray], np.ndarray]:
    """Return the softmax attention field ``X (n, d) -> dX/dt (n, d)`` in NumPy.

    ``dx_i/dt = (I - x_i x_i^T) sum_j w_ij V x_j`` with ``w_ij`` the row softmax of
    ``beta x_i^T A x_j``, ``A = Q^T K``, shifted by the row maximum.
    """
    if system.weighting != "softmax":
        raise ValueError(f"weighting {system.weighting!r} is not implemented here")
    a_transposed = np.ascontiguousarray(system.A.T)
    v_transposed = np.ascontiguousarray(system.V.T)
    beta = system.beta

    def field(state: np.ndarray) -> np.ndarray:
        logits = beta * (state @ (state @ a_transposed).T)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
        drift = weights @ (state @ v_transposed)
        radial = np.einsum("ia,ia->i", state, drift)
        return drift - radial[:, None] * state

    return field


def basins_field(system: basins.System) -> Callable[[np.ndarray], np.ndarray]:
    """Return `basins.vector_field` for ``system`` as a function of the state alone."""

    def field(state: np.ndarray) -> np.ndarray:
        return basins.vector_field(system, state)

    return field


FIELDS = {"numpy": numpy_field, "basins": basins_field}


def check_field(
    system: basins.System, field: Callable[[np.ndarray], np.ndarray], states: np.ndarray
) -> float:
    """Return the largest absolute difference between ``field`` and `basins.vector_field`."""
    return max(
        float(np.abs(field(state) - basins.vector_field(system, state)).max())
        for state in states
    )


def solve_one_scipy(
    field: Callable[[np.ndarray], np.ndarray],
    initial_state: np.ndarray,
    tol: float,
    time_cap: float,
) -> tuple[np.ndarray, int, int, int, float]:
    """Integrate one initial condition with ``solve_ivp`` until the speed drops below ``tol``.

    Returns
    -------
    final_state : numpy.ndarray
        State at the event (or at the time cap), tokens renormalised, shape ``(n, d)``.
    status : int
        ``solve_ivp`` status: 1 event reached (converged), 0 time cap, -1 failure.
    steps : int
        Accepted RK45 steps.
    field_evaluations : int
        Evaluations of ``field``, those of the event function included.
    norm_drift : float
        Largest ``| ||x_i|| - 1 |`` before the final renormalisation.
    """
    shape = initial_state.shape
    evaluations = 0
    cache: dict[str, np.ndarray] = {}

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        nonlocal evaluations
        evaluations += 1
        derivative = field(y.reshape(shape)).ravel()
        cache["y"] = y.copy()
        cache["derivative"] = derivative
        return derivative

    # solve_ivp calls the event at the end of each step, at the state where RK45
    # (first same as last) has just evaluated the field. Reusing that evaluation
    # spares one field evaluation per step. Root finding within a step still
    # calls the field at interpolated states.
    def speed_below_tol(t: float, y: np.ndarray) -> float:
        if "y" in cache and np.array_equal(y, cache["y"]):
            derivative = cache["derivative"]
        else:
            derivative = rhs(t, y)
        speed = np.sqrt((derivative.reshape(shape) ** 2).sum(axis=1)).max()
        return speed - tol

    speed_below_tol.terminal = True
    speed_below_tol.direction = -1

    solution = solve_ivp(
        rhs,
        (0.0, time_cap),
        initial_state.ravel(),
        method=SCIPY_METHOD,
        rtol=SCIPY_RTOL,
        atol=SCIPY_ATOL,
        events=speed_below_tol,
    )
    final = solution.y[:, -1].reshape(shape)
    norms = np.linalg.norm(final, axis=1)
    norm_drift = float(np.abs(norms - 1.0).max())
    steps = len(solution.t) - 1
    return final / norms[:, None], int(solution.status), steps, evaluations, norm_drift


def run_scipy(
    field: Callable[[np.ndarray], np.ndarray],
    initial_state: np.ndarray,
    integration: basins.Integration,
    name: str,
) -> Timing:
    """Time ``solve_ivp`` (RK45) on each initial condition in turn, in this thread."""
    time_cap = integration.max_steps * integration.dt
    solve_one_scipy(field, initial_state[0], integration.tol, time_cap)

    m = len(initial_state)
    final_state = np.empty_like(initial_state)
    status = np.empty(m, dtype=np.int64)
    steps = 0
    field_evaluations = 0
    norm_drift = 0.0
    start = time.perf_counter()
    for ic in range(m):
        final, status[ic], ic_steps, ic_evaluations, ic_drift = solve_one_scipy(
            field, initial_state[ic], integration.tol, time_cap
        )
        final_state[ic] = final
        steps += ic_steps
        field_evaluations += ic_evaluations
        norm_drift = max(norm_drift, ic_drift)
    wall_s = time.perf_counter() - start

    counts = {label: int(np.sum(status == code)) for code, label in SCIPY_STATUS_NAMES.items()}
    logger.info(
        "%s: %d trajectories in %.2f s; %s; largest token norm drift before the "
        "final renormalisation %.1e",
        name,
        m,
        wall_s,
        ", ".join(f"{label} {count}" for label, count in counts.items()),
        norm_drift,
    )
    return Timing(
        name=name,
        trajectories=m,
        threads=1,
        wall_s=wall_s,
        steps=steps,
        field_evaluations=field_evaluations,
        final_state=final_state,
        converged=status == 1,
    )


@dataclass(frozen=True)
class Agreement:
    """Comparison of the engine's and SciPy's attractors on the sampled initial conditions.

    Attributes
    ----------
    same : int
        Initial conditions that end on the same attractor in both.
    disagreements : list of tuple
        ``(index, engine multiplicities, SciPy multiplicities, distance)`` for every
        other initial condition, multiplicities in decreasing order. The distance is
        NaN where the multiplicities differ or a trajectory did not converge.
    """

    same: int
    disagreements: list[tuple[int, tuple[int, ...], tuple[int, ...], float]]


def compare_attractors(
    system: basins.System, engine: Timing, reference: Timing
) -> Agreement:
    """Decide, per initial condition, whether ``engine`` and ``reference`` agree.

    Both must have converged, with equal sorted cluster multiplicities and a distance
    of at most ``shape_tol`` between the engine's state and the reference's state.
    """
    classification = basins.Classification()
    matcher = Matcher(system, classification)
    m = engine.trajectories
    states = np.concatenate([engine.final_state, reference.final_state])
    selected = np.concatenate([engine.converged, reference.converged])
    features = matcher.features(states, selected)

    same = 0
    disagreements = []
    for i in range(m):
        multiplicities = features.sorted_multiplicity(np.array([i, m + i]))
        engine_clusters = tuple(int(k) for k in multiplicities[0] if k > 0)
        reference_clusters = tuple(int(k) for k in multiplicities[1] if k > 0)
        distance = float("nan")
        if selected[i] and selected[m + i] and engine_clusters == reference_clusters:
            distance = float(features.distance(np.array([i]), m + i)[0])
            if distance <= classification.shape_tol:
                same += 1
                continue
        disagreements.append((i, engine_clusters, reference_clusters, distance))
    return Agreement(same, disagreements)


def describe_machine() -> str:
    """Return the CPU model, CPU count, library versions, Numba threads and date."""
    cpu_model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        logger.warning("cannot read /proc/cpuinfo; CPU model taken from platform")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"# machine: {cpu_model}, {cpus} CPUs available | Python "
        f"{platform.python_version()}, basins {basins.__version__}, NumPy "
        f"{np.__version__}, SciPy {scipy.__version__}, Numba {numba.__version__} | "
        f"Numba threads {numba.get_num_threads()} | {date}"
    )


def format_table(
    system: basins.System,
    integration: basins.Integration,
    engine_all: Timing,
    engine_sample: Timing,
    scipy_runs: list[tuple[Timing, Agreement]],
) -> str:
    """Format the header, the timings, the ratios and the agreement as aligned text."""
    lines = [
        f"# workload W8: n_tokens={system.n_tokens}, dim={system.dim}, "
        f"beta={system.beta:g}, Q=K=I, V={V_W8}, {system.weighting}; engine RK4 "
        f"dt={integration.dt:g}, tol={integration.tol:g}, checks={integration.checks}, "
        f"max_steps={integration.max_steps}; SciPy {SCIPY_METHOD} rtol={SCIPY_RTOL:g}, "
        f"atol={SCIPY_ATOL:g}, stops when max speed < {integration.tol:g} or at "
        f"t={integration.max_steps * integration.dt:g}, tokens renormalised at the end",
        describe_machine(),
        "",
    ]

    header = (
        "contender",
        "ICs",
        "threads",
        "wall s",
        "traj/s",
        "traj/s/thread",
        "steps/traj",
        "evals/traj",
        "steps/s/thread",
        "engine speedup",
    )
    rows = []
    for timing in [engine_all, engine_sample] + [run for run, _ in scipy_runs]:
        if timing.threads == 1 and timing is not engine_all and timing is not engine_sample:
            speedup = (
                f"{engine_all.trajectories_per_s_per_thread / timing.trajectories_per_s:.1f}"
                f" / {engine_sample.trajectories_per_s_per_thread / timing.trajectories_per_s:.1f}"
            )
        else:
            speedup = "-"
        rows.append(
            (
                timing.name,
                f"{timing.trajectories}",
                f"{timing.threads}",
                f"{timing.wall_s:.2f}",
                f"{timing.trajectories_per_s:.1f}",
                f"{timing.trajectories_per_s_per_thread:.1f}",
                f"{timing.steps / timing.trajectories:.0f}",
                f"{timing.field_evaluations / timing.trajectories:.0f}",
                f"{timing.steps_per_s_per_thread:.3g}",
                speedup,
            )
        )
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells))

    lines += [
        "",
        "steps: RK4 steps for the engine, accepted RK45 steps for SciPy. evals: vector "
        "field evaluations, those of SciPy's event function included.",
        "engine speedup: engine traj/s/thread divided by SciPy traj/s (one thread), "
        f"with the engine timed on all {engine_all.trajectories} ICs / on the same "
        f"{engine_sample.trajectories} ICs as SciPy.",
        "",
    ]
    for run, agreement in scipy_runs:
        lines.append(
            f"agreement, engine vs {run.name}: {agreement.same}/{run.trajectories} ICs "
            f"on the same attractor (Matcher, shape_tol="
            f"{basins.Classification().shape_tol:g})"
        )
        for index, engine_clusters, scipy_clusters, distance in agreement.disagreements:
            lines.append(
                f"  IC {index}: engine clusters {engine_clusters}, SciPy clusters "
                f"{scipy_clusters}, distance {distance:.3g}"
            )
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the basins RK4 engine against scipy.integrate.solve_ivp "
        "(RK45) on workload W8 (8 tokens on S^2), and check that both reach the "
        "same attractors.",
    )
    parser.add_argument(
        "--ics",
        type=int,
        default=20000,
        metavar="N",
        help="initial conditions integrated by the engine (default 20000)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=200,
        metavar="N",
        help="initial conditions integrated by SciPy for each field, the first N of "
        "the engine's (default 200)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the initial conditions (default 0)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="Numba threads for the engine (default: Numba's default, "
        f"{numba.config.NUMBA_NUM_THREADS} here)",
    )
    parser.add_argument(
        "--scipy-field",
        choices=("numpy", "basins", "both"),
        default="both",
        help="vector field inside solve_ivp: the NumPy implementation of this script, "
        "basins.vector_field, or each in turn (default both)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log debug messages"
    )
    arguments = parser.parse_args(argv)
    if arguments.ics < 1:
        parser.error(f"--ics {arguments.ics} is invalid: expected at least 1")
    if not 1 <= arguments.sample <= arguments.ics:
        parser.error(
            f"--sample {arguments.sample} is invalid: expected 1 <= N <= --ics "
            f"({arguments.ics})"
        )
    if arguments.threads is not None and not (
        1 <= arguments.threads <= numba.config.NUMBA_NUM_THREADS
    ):
        parser.error(
            f"--threads {arguments.threads} is invalid: expected 1 <= N <= "
            f"{numba.config.NUMBA_NUM_THREADS} (NUMBA_NUM_THREADS)"
        )
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.DEBUG if arguments.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if arguments.threads is not None:
        numba.set_num_threads(arguments.threads)

    system, integration = build_workload()
    initial_state = basins.initial_conditions(
        arguments.seed, 0, arguments.ics, system.n_tokens, system.dim
    )
    sample = initial_state[: arguments.sample]

    engine_all = run_engine(system, integration, initial_state, "engine, all ICs")
    engine_sample = run_engine(system, integration, sample, "engine, SciPy's ICs")
    if not np.array_equal(engine_sample.final_state, engine_all.final_state[: len(sample)]):
        logger.error(
            "the engine's final states for the first %d ICs differ between the run on "
            "all ICs and the run on the sample alone",
            len(sample),
        )

    fields = ["numpy", "basins"] if arguments.scipy_field == "both" else [arguments.scipy_field]
    scipy_runs = []
    for field_name in fields:
        field = FIELDS[field_name](system)
        check_states = np.concatenate([sample[:10], engine_sample.final_state[:10]])
        difference = check_field(system, field, check_states)
        logger.info(
            "%s field: largest difference from basins.vector_field %.1e on %d states",
            field_name,
            difference,
            len(check_states),
        )
        run = run_scipy(field, sample, integration, f"SciPy RK45, {field_name} field")
        scipy_runs.append((run, compare_attractors(system, engine_sample, run)))

    print(format_table(system, integration, engine_all, engine_sample, scipy_runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
