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
   ``max_i ||dx_i/dt|| < tol``, or until ``t = max_steps * dt``. The event stops
   at the first crossing of ``tol``, found by root finding, where the engine takes
   ``checks - 1`` more steps. Tokens are renormalised only once, at the end, and
   the log reports the largest norm drift before that. The field is either a NumPy
   implementation written here or `basins.vector_field` itself (``--scipy-field``).
   Each is checked against `basins.vector_field` before it is timed.
3. Agreement: for each sampled initial condition, whether the engine and SciPy end
   on the same attractor according to `basins.classify.Matcher`. That means equal
   sorted cluster multiplicities and a centre distance of at most
   ``Classification().shape_tol``.

One engine thread is compared with SciPy running in one thread, so the speedup is
a ratio of trajectories per second per thread. Other processes competing for the
cores slow every timing down, so the table also gives the CPU time that this and
all other processes used. The table goes to stdout, the log to stderr.

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
import math
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

# Largest absolute difference allowed between a field used inside solve_ivp and
# basins.vector_field. Both compute the same float64 expression, so they differ
# only by rounding.
FIELD_CHECK_TOL = 1e-12


def build_workload() -> tuple[basins.System, basins.Integration]:
    """Return the system and integrator settings of workload W8."""
    system = basins.System(n_tokens=8, dim=3, beta=1.0, V=V_W8)
    integration = basins.Integration(dt=0.05, tol=1e-7, checks=3, max_steps=20000)
    return system, integration


def read_busy_cpu_s() -> float:
    """Return the CPU seconds all processes have used since boot, or NaN if unknown.

    Sums the user, nice, system, irq, softirq and steal columns of the ``cpu`` line
    of ``/proc/stat`` (Linux), in clock ticks.
    """
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    ticks = user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK")


class Stopwatch:
    """Wall time, this process's CPU time and other processes' CPU time of a block.

    Other processes competing for the cores slow a timing down. Their CPU time is
    the machine's busy time minus this process's, accurate to a few clock ticks.
    """

    def __enter__(self) -> Stopwatch:
        self._busy = read_busy_cpu_s()
        self._cpu = time.process_time()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.cpu_s = time.process_time() - self._cpu
        other_cpu_s = read_busy_cpu_s() - self._busy - self.cpu_s
        # Counting in clock ticks can make the difference slightly negative.
        if not math.isnan(other_cpu_s):
            other_cpu_s = max(0.0, other_cpu_s)
        self.other_cpu_s = other_cpu_s


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
    cpu_s : float
        CPU time of this process (all threads) in seconds.
    other_cpu_s : float
        CPU time of all other processes in the same interval, in seconds; NaN where
        ``/proc/stat`` cannot be read.
    steps : int
        Total steps: RK4 steps for the engine, accepted RK45 steps for SciPy.
    field_evaluations : int
        Total evaluations of the vector field (4 per RK4 step for the engine).
    final_state : numpy.ndarray
        Final states with unit tokens, shape ``(trajectories, n_tokens, dim)``.
    converged : numpy.ndarray
        Whether each trajectory met the convergence criterion, one entry per
        trajectory.
    """

    name: str
    trajectories: int
    threads: int
    wall_s: float
    cpu_s: float
    other_cpu_s: float
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

    @property
    def trajectories_per_cpu_s(self) -> float:
        return self.trajectories / self.cpu_s


def run_engine(
    system: basins.System,
    integration: basins.Integration,
    initial_state: np.ndarray,
    name: str,
) -> Timing:
    """Time `basins.integrate` (parallel) on ``initial_state`` after a warm-up call."""
    basins.integrate(system, integration, initial_state[:1], parallel=True)
    threads = numba.get_num_threads()
    with Stopwatch() as stopwatch:
        result = basins.integrate(system, integration, initial_state, parallel=True)
    wall_s = stopwatch.wall_s
    cpu_s = stopwatch.cpu_s

    statuses = np.bincount(result.status, minlength=3)
    logger.info(
        "%s: %d trajectories in %.2f s on %d threads; %s",
        name,
        len(initial_state),
        wall_s,
        threads,
        ", ".join(f"{ENGINE_STATUS_NAMES[k]} {statuses[k]}" for k in range(3)),
    )
    # A wall time of 0.1 s or more lets the thread pool show in the CPU time.
    if wall_s >= 0.1 and cpu_s < 0.75 * threads * wall_s:
        logger.warning(
            "%s: CPU time %.2f s / wall time %.2f s = %.2f, far below the %d Numba "
            "threads, and other processes used %.2f CPU s meanwhile. Either they "
            "competed for the cores or the kernel ran serially, so the per-thread "
            "figures understate the engine's speed per thread",
            name,
            cpu_s,
            wall_s,
            cpu_s / wall_s,
            threads,
            stopwatch.other_cpu_s,
        )
    steps = int(result.steps.sum(dtype=np.int64))
    # Each RK4 step evaluates the field 4 times. The first stage doubles as the
    # convergence test, so the final test adds one evaluation per trajectory.
    field_evaluations = 4 * steps + len(initial_state)
    return Timing(
        name=name,
        trajectories=len(initial_state),
        threads=threads,
        wall_s=wall_s,
        cpu_s=cpu_s,
        other_cpu_s=stopwatch.other_cpu_s,
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
        raise ValueError(
            f"weighting {system.weighting!r} is not supported: numpy_field implements "
            f"only 'softmax'"
        )
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
    """Return the largest absolute difference of ``field`` from the package field."""
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
    """Integrate one initial condition with ``solve_ivp`` until its speed is below tol.

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
    def convergence_event(t: float, y: np.ndarray) -> float:
        if "y" in cache and np.array_equal(y, cache["y"]):
            derivative = cache["derivative"]
        else:
            derivative = rhs(t, y)
        speed = np.sqrt((derivative.reshape(shape) ** 2).sum(axis=1)).max()
        return speed - tol

    convergence_event.terminal = True
    convergence_event.direction = -1

    solution = solve_ivp(
        rhs,
        (0.0, time_cap),
        initial_state.ravel(),
        method=SCIPY_METHOD,
        rtol=SCIPY_RTOL,
        atol=SCIPY_ATOL,
        events=convergence_event,
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
    with Stopwatch() as stopwatch:
        for ic in range(m):
            final, status[ic], ic_steps, ic_evaluations, ic_drift = solve_one_scipy(
                field, initial_state[ic], integration.tol, time_cap
            )
            final_state[ic] = final
            steps += ic_steps
            field_evaluations += ic_evaluations
            norm_drift = max(norm_drift, ic_drift)
    wall_s = stopwatch.wall_s

    counts = {
        label: int(np.sum(status == code)) for code, label in SCIPY_STATUS_NAMES.items()
    }
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
        cpu_s=stopwatch.cpu_s,
        other_cpu_s=stopwatch.other_cpu_s,
        steps=steps,
        field_evaluations=field_evaluations,
        final_state=final_state,
        converged=status == 1,
    )


@dataclass(frozen=True)
class Agreement:
    """Comparison of the engine's and SciPy's attractors on the same initial conditions.

    Attributes
    ----------
    same : int
        Initial conditions that end on the same attractor in both.
    disagreements : list of tuple
        ``(index, engine clusters, SciPy clusters, distance)`` for every other initial
        condition. The clusters are the multiplicities in decreasing order, or
        ``"not converged"``. The distance is NaN where the multiplicities differ or a
        trajectory did not converge.
    """

    same: int
    disagreements: list[tuple[int, str, str, float]]


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
        clusters = []
        for position, row in zip((i, m + i), multiplicities):
            if selected[position]:
                clusters.append(str(tuple(int(k) for k in row if k > 0)))
            else:
                clusters.append("not converged")
        distance = float("nan")
        both_converged = selected[i] and selected[m + i]
        if both_converged and np.array_equal(multiplicities[0], multiplicities[1]):
            distance = float(features.distance(np.array([i]), m + i)[0])
            if distance <= classification.shape_tol:
                same += 1
                continue
        disagreements.append((i, clusters[0], clusters[1], distance))
    return Agreement(same, disagreements)


def describe_machine(load_before: float) -> list[str]:
    """Return header lines: CPU model and count, load, Numba threads, date, versions.

    ``load_before`` is the 1-minute load average read before the first timing.
    """
    cpu_model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        logger.warning("cannot read /proc/cpuinfo; the CPU model comes from platform")
    if hasattr(os, "sched_getaffinity"):
        cpus = len(os.sched_getaffinity(0))
    else:
        cpus = os.cpu_count()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"# machine: {cpu_model}, {cpus} CPUs available to the process, 1-minute load "
        f"average {load_before:.2f} before the run; Numba threads "
        f"{numba.get_num_threads()}; {date}",
        f"# software: Python {platform.python_version()}, basins {basins.__version__}, "
        f"NumPy {np.__version__}, SciPy {scipy.__version__}, Numba {numba.__version__}",
    ]


def align_columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Return the rows as lines, the first column aligned left and the others right."""
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_table(
    system: basins.System,
    integration: basins.Integration,
    engine_all: Timing,
    engine_sample: Timing,
    scipy_runs: list[tuple[Timing, Agreement]],
    seed: int,
    load_before: float,
) -> str:
    """Format the header, timings, speedups and agreement as aligned text."""
    lines = [
        f"# workload W8: n_tokens={system.n_tokens}, dim={system.dim}, "
        f"beta={system.beta:g}, Q=K=I, V={V_W8}, {system.weighting} weighting, "
        f"seed {seed}",
        f"# engine: fixed-step RK4 dt={integration.dt:g}, tol={integration.tol:g}, "
        f"checks={integration.checks}, max_steps={integration.max_steps}",
        f"# SciPy: solve_ivp {SCIPY_METHOD} rtol={SCIPY_RTOL:g}, atol={SCIPY_ATOL:g}, "
        f"terminal event max speed < {integration.tol:g}, time cap "
        f"t={integration.max_steps * integration.dt:g}, tokens renormalised at the end",
        *describe_machine(load_before),
        "",
    ]

    rows = [
        (
            "contender",
            "ICs",
            "threads",
            "wall s",
            "cpu/wall",
            "others cpu/wall",
            "traj/s",
            "traj/s/thread",
            "steps/traj",
            "evals/traj",
            "steps/s/thread",
            "traj/CPU s",
        )
    ]
    for timing in [engine_all, engine_sample] + [run for run, _ in scipy_runs]:
        rows.append(
            (
                timing.name,
                f"{timing.trajectories}",
                f"{timing.threads}",
                f"{timing.wall_s:.2f}",
                f"{timing.cpu_s / timing.wall_s:.2f}",
                f"{timing.other_cpu_s / timing.wall_s:.2f}",
                f"{timing.trajectories_per_s:.1f}",
                f"{timing.trajectories_per_s_per_thread:.1f}",
                f"{timing.steps / timing.trajectories:.0f}",
                f"{timing.field_evaluations / timing.trajectories:.0f}",
                f"{timing.steps_per_s_per_thread:.3g}",
                f"{timing.trajectories_per_cpu_s:.1f}",
            )
        )
    lines += align_columns(rows)
    lines += [
        "",
        "cpu/wall: CPU time of this process / wall time. others cpu/wall: the same "
        "for all other processes (from /proc/stat), the cores they took away.",
        "steps: RK4 steps for the engine, accepted RK45 steps for SciPy. evals: vector "
        "field evaluations, SciPy's event function included.",
        "",
        "engine speedup = engine traj/s/thread / SciPy traj/s (one thread). The last "
        "column divides trajectories per CPU second instead, which other processes "
        "on the cores distort less.",
    ]

    rows = [("", engine_all.name, engine_sample.name, f"{engine_all.name}, by CPU s")]
    for run, _ in scipy_runs:
        speedup_all = engine_all.trajectories_per_s_per_thread / run.trajectories_per_s
        speedup_sample = (
            engine_sample.trajectories_per_s_per_thread / run.trajectories_per_s
        )
        speedup_cpu = engine_all.trajectories_per_cpu_s / run.trajectories_per_cpu_s
        rows.append(
            (
                run.name,
                f"{speedup_all:.1f}",
                f"{speedup_sample:.1f}",
                f"{speedup_cpu:.1f}",
            )
        )
    lines += align_columns(rows)
    lines.append("")

    shape_tol = basins.Classification().shape_tol
    for run, agreement in scipy_runs:
        lines.append(
            f"agreement, engine vs {run.name}: {agreement.same}/{run.trajectories} ICs "
            f"on the same attractor (Matcher, shape_tol={shape_tol:g})"
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
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if arguments.threads is not None:
        numba.set_num_threads(arguments.threads)

    load_before = os.getloadavg()[0]
    system, integration = build_workload()
    initial_state = basins.initial_conditions(
        arguments.seed, 0, arguments.ics, system.n_tokens, system.dim
    )
    sample = initial_state[: arguments.sample]

    engine_all = run_engine(system, integration, initial_state, "engine, all ICs")
    engine_sample = run_engine(system, integration, sample, "engine, SciPy's ICs")
    same_states = np.array_equal(
        engine_sample.final_state, engine_all.final_state[: len(sample)]
    )
    if not same_states:
        logger.error(
            "the engine's final states for the first %d ICs differ between the run on "
            "all ICs and the run on the sample alone, although basins.kernels "
            "documents results that do not depend on the batch",
            len(sample),
        )

    if arguments.scipy_field == "both":
        fields = ["numpy", "basins"]
    else:
        fields = [arguments.scipy_field]
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
        if difference > FIELD_CHECK_TOL:
            logger.error(
                "%s field differs from basins.vector_field by %.1e > %.0e. SciPy "
                "would integrate a different field, so the benchmark stops",
                field_name,
                difference,
                FIELD_CHECK_TOL,
            )
            return 1

        run = run_scipy(field, sample, integration, f"SciPy RK45, {field_name} field")
        scipy_runs.append((run, compare_attractors(system, engine_sample, run)))

    table = format_table(
        system,
        integration,
        engine_all,
        engine_sample,
        scipy_runs,
        arguments.seed,
        load_before,
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
