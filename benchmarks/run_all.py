"""Benchmark suite: the engine and the alternatives, side by side, on three workloads.

Workloads (softmax weighting, ``Q = K = I``, ``dt = 0.05``, ``tol = 1e-7``,
``checks = 3``, ``max_steps = 20000``):

- W8: ``n_tokens = 8``, ``dim = 3``, ``beta = 1``, ``V`` of `engine_vs_scipy`;
- W32: ``n_tokens = 32``, ``dim = 16``, ``beta = 1``;
- W128: ``n_tokens = 128``, ``dim = 64``, ``beta = 1 / sqrt(64)``;

W32 and W128 use ``V = {random_symmetric = 0, spectral_norm = 1}``. Contenders, all
on one core and on the same initial conditions (a prefix of one list):

- the engine, `basins.integrate`, with its default settings and with each kernel
  and precision it offers for the workload;
- the straightforward Numba kernel and the NumPy RK4 of `baseline`;
- SciPy ``solve_ivp`` (RK45, ``rtol = 1e-10``, ``atol = 1e-12``), through
  `engine_vs_scipy.solve_one_scipy`, in ``--processes`` worker processes, and again
  with ``rtol = 1e-8``, ``atol = 1e-10``: its step count shows what an adaptive
  embedded pair would save over fixed-step RK4.

Every contender but SciPy runs ``--repeats`` times, interleaved with the others, and
its best run counts. Rates are per second of CPU time of the processes that did the
work, so that other programs on a shared machine slow the wall clock but not the
rates. The ratios are what the suite claims. "agree" is the share of a contender's
final states on the same attractor as the engine's default (`Matcher`, the rule of
`engine_vs_scipy.compare_attractors`); every disagreement is listed with the outcome
of a perturbation test that tells whether the initial condition lies near a basin
boundary. The roofline block counts floating-point operations per RK4 step with
`model_flops` and compares the best engine rate with the peak of one core, measured
by ``fma_peak.c`` when a C compiler is found, else estimated from the clock.

Examples
--------
The full suite (about 15 minutes on an idle 2-core machine)::

    python benchmarks/run_all.py

A quick check of the machinery on small samples::

    python benchmarks/run_all.py --quick
"""

from __future__ import annotations

import os

# One thread per process for every library, set before NumPy loads its BLAS: the
# suite compares contenders per core.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import argparse  # noqa: E402
import concurrent.futures  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import basins  # noqa: E402
from basins.classify import Matcher  # noqa: E402
from basins.integrate import Trajectories, select_kernel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baseline  # noqa: E402
import engine_vs_scipy  # noqa: E402

logger = logging.getLogger("run_all")

# Flops charged for one exponential: the polynomial exponential of the engine takes
# about 20 vector operations (reduction, 11 fused multiply-adds, clamps, scaling).
EXP_FLOPS = 20

# Perturbations of a disagreeing initial condition, and their size (per
# coordinate, before the tokens are renormalised), for the basin-boundary test.
BOUNDARY_SAMPLES = 16
BOUNDARY_RADIUS = 1e-4

# Float32 needs a larger tol (basins.config.FLOAT32_MIN_TOL); this is the one used.
FLOAT32_TOL = 1e-5

# SciPy's (rtol, atol) for the measurement of adaptive steps at an accuracy close
# to the engine's. solve_one_scipy never renormalises the tokens, so the drift of
# their norms (about rtol) must stay below tol = 1e-7 for the stopping test to
# fire: with rtol = 1e-6, 9 of 10 W8 trajectories ran to the time cap.
ADAPTIVE_TOLERANCES = (1e-8, 1e-10)


@dataclass(frozen=True)
class Workload:
    """A system, its integrator settings and the sample size of each contender kind.

    ``fast`` is for the engine's vectorised kernels, ``slow`` for the scalar
    kernels and NumPy, ``scipy`` for solve_ivp.
    """

    name: str
    system: basins.System
    integration: basins.Integration
    fast: int
    slow: int
    scipy: int


def build_workloads(scale: float) -> dict[str, Workload]:
    """Return W8, W32 and W128 with sample sizes multiplied by ``scale``."""
    integration = basins.Integration(dt=0.05, tol=1e-7, checks=3, max_steps=20000)
    random_v = {"random_symmetric": 0, "spectral_norm": 1.0}

    def size(count: int, minimum: int) -> int:
        return max(minimum, round(count * scale))

    return {
        "W8": Workload(
            "W8",
            basins.System(n_tokens=8, dim=3, beta=1.0, V=engine_vs_scipy.V_W8),
            integration,
            fast=size(20000, 64),
            slow=size(2000, 16),
            scipy=size(2000, 8),
        ),
        "W32": Workload(
            "W32",
            basins.System(n_tokens=32, dim=16, beta=1.0, V=random_v),
            integration,
            fast=size(400, 8),
            slow=size(100, 4),
            scipy=size(100, 4),
        ),
        "W128": Workload(
            "W128",
            basins.System(n_tokens=128, dim=64, beta=1.0 / math.sqrt(64), V=random_v),
            integration,
            fast=size(8, 2),
            slow=size(2, 1),
            scipy=size(4, 2),
        ),
    }


def model_flops(n: int, d: int) -> int:
    """Return the floating-point operations of one RK4 step of a dense system.

    One field evaluation computes ``A x_j`` and ``V x_j`` (``4 n d^2``), the
    logits and the weighted sum of values (``2 n^2 d`` each), the softmax (``n^2``
    exponentials at `EXP_FLOPS`, plus ``3 n^2`` for shift, sum and scaling) and the
    projection with the speed (``7 n d``). A step takes four evaluations, plus
    ``12 n d`` for the stage states, the combination and the renormalisation. A
    fused multiply-add counts two.
    """
    field_evaluation = 4 * n * d * d + 4 * n * n * d + (EXP_FLOPS + 3) * n * n + 7 * n * d
    return 4 * field_evaluation + 12 * n * d


@dataclass(frozen=True)
class Contender:
    """One way to integrate a workload; ``sample`` is "fast", "slow" or "scipy".

    ``tolerances`` are SciPy's ``(rtol, atol)``, for the SciPy contenders only.
    """

    name: str
    sample: str
    run: Callable[[basins.System, basins.Integration, np.ndarray], Trajectories]
    tolerances: tuple[float, float] | None = None


@dataclass
class Measurement:
    """Best run of one contender on one workload."""

    contender: Contender
    trajectories: int
    cpu_s: float = math.inf
    wall_s: float = math.inf
    steps: int = 0
    evaluations: int = 0
    result: Trajectories | None = None
    agree: float = math.nan
    largest_difference: float = math.nan
    disagreements: list[str] = field(default_factory=list)

    @property
    def steps_per_core_s(self) -> float:
        return self.steps / self.cpu_s

    @property
    def trajectories_per_core_s(self) -> float:
        return self.trajectories / self.cpu_s


def engine_contenders(workload: Workload) -> list[Contender]:
    """Return the engine's default and every other kernel and precision it offers."""
    default = select_kernel(workload.system, workload.integration)

    def with_settings(**changes) -> Callable:
        def run(system, integration, initial):
            settings = basins.Integration(
                dt=integration.dt,
                max_steps=integration.max_steps,
                tol=changes.get("tol", integration.tol),
                checks=integration.checks,
                kernel=changes.get("kernel", "auto"),
                precision=changes.get("precision", "float64"),
            )
            return basins.integrate(system, settings, initial)

        return run

    contenders = [Contender(f"engine, auto ({default})", "fast", with_settings())]
    for kernel in ("lanes", "rows", "scalar"):
        if kernel == default:
            continue
        try:
            select_kernel(workload.system, basins.Integration(kernel=kernel))
        except basins.ConfigError:
            continue
        sample = "slow" if kernel == "scalar" else "fast"
        if kernel == "rows" and default == "lanes":
            sample = "slow"
        contenders.append(
            Contender(f"engine, kernel={kernel}", sample, with_settings(kernel=kernel))
        )
    if default == "lanes":
        contenders.append(
            Contender(
                f"engine, float32 (tol={FLOAT32_TOL:g})",
                "fast",
                with_settings(precision="float32", tol=FLOAT32_TOL),
            )
        )
    return contenders


def all_contenders(workload: Workload) -> list[Contender]:
    contenders = engine_contenders(workload) + [
        Contender("straightforward Numba", "slow", baseline.integrate_straightforward),
        Contender("NumPy RK4 over ICs", "slow", baseline.integrate_numpy),
    ]
    # The tolerances of engine_vs_scipy, and looser ones whose error is still far
    # below the distances that tell attractors apart: the step-count saving an
    # adaptive embedded pair would bring to the engine.
    for rtol, atol in (
        (engine_vs_scipy.SCIPY_RTOL, engine_vs_scipy.SCIPY_ATOL),
        ADAPTIVE_TOLERANCES,
    ):
        contenders.append(
            Contender(
                f"SciPy {engine_vs_scipy.SCIPY_METHOD} rtol={rtol:g}",
                "scipy",
                _integrate_scipy_serial,
                (rtol, atol),
            )
        )
    return contenders


def _integrate_scipy_serial(
    system: basins.System,
    integration: basins.Integration,
    initial: np.ndarray,
    tolerances: tuple[float, float],
) -> tuple[Trajectories, float, int]:
    """Integrate ``initial`` with solve_ivp in this process.

    Returns the trajectories, the CPU seconds and the field evaluations.
    """
    # solve_one_scipy reads its tolerances from these module constants; this runs in
    # a worker process of its own.
    engine_vs_scipy.SCIPY_RTOL, engine_vs_scipy.SCIPY_ATOL = tolerances
    field_function = engine_vs_scipy.numpy_field(system)
    time_cap = integration.max_steps * integration.dt
    final = np.empty_like(initial)
    status = np.empty(len(initial), dtype=np.int8)
    steps = np.empty(len(initial), dtype=np.int32)
    evaluations = 0
    started = time.process_time()
    for ic, state in enumerate(initial):
        final[ic], code, steps[ic], count, _ = engine_vs_scipy.solve_one_scipy(
            field_function, state, integration.tol, time_cap
        )
        evaluations += count
        # solve_ivp status 1: the convergence event fired.
        status[ic] = 0 if code == 1 else 1
    return Trajectories(final, status, steps), time.process_time() - started, evaluations


def _scipy_task(arguments: tuple) -> tuple[Trajectories, float, int]:
    name, scale, start, stop, tolerances = arguments
    workload = build_workloads(scale)[name]
    initial = _initial_conditions(workload, stop)[start:stop]
    return _integrate_scipy_serial(
        workload.system, workload.integration, initial, tolerances
    )


def _initial_conditions(workload: Workload, count: int) -> np.ndarray:
    return basins.initial_conditions(
        0, 0, count, workload.system.n_tokens, workload.system.dim
    )


def measure_scipy(
    workload: Workload, measurement: Measurement, scale: float, processes: int
) -> None:
    """Run the SciPy contender once, split over ``processes`` worker processes."""
    count = measurement.trajectories
    bounds = np.linspace(0, count, processes + 1).round().astype(int)
    tasks = [
        (workload.name, scale, int(start), int(stop), measurement.contender.tolerances)
        for start, stop in zip(bounds[:-1], bounds[1:])
        if stop > start
    ]
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(len(tasks), mp_context=context) as pool:
        parts = list(pool.map(_scipy_task, tasks))
    measurement.wall_s = time.perf_counter() - started
    measurement.cpu_s = sum(cpu for _, cpu, _ in parts)
    measurement.evaluations = sum(count for _, _, count in parts)
    measurement.result = Trajectories(
        np.concatenate([part.final_state for part, _, _ in parts]),
        np.concatenate([part.status for part, _, _ in parts]),
        np.concatenate([part.steps for part, _, _ in parts]),
    )
    measurement.steps = int(measurement.result.steps.sum(dtype=np.int64))


def measure_workload(
    workload: Workload, repeats: int, scale: float, processes: int
) -> list[Measurement]:
    """Time every contender on ``workload``; return the best run of each."""
    contenders = all_contenders(workload)
    counts = {"fast": workload.fast, "slow": workload.slow, "scipy": workload.scipy}
    initial = _initial_conditions(workload, max(counts.values()))
    measurements = [Measurement(c, counts[c.sample]) for c in contenders]

    # Compile (or load from the caches) before any timing.
    for measurement in measurements:
        if measurement.contender.sample != "scipy":
            measurement.contender.run(workload.system, workload.integration, initial[:2])

    for repeat in range(repeats):
        for measurement in measurements:
            contender = measurement.contender
            if contender.sample == "scipy":
                continue
            sample = initial[: measurement.trajectories]
            wall_started = time.perf_counter()
            cpu_started = time.process_time()
            result = contender.run(workload.system, workload.integration, sample)
            cpu_s = time.process_time() - cpu_started
            wall_s = time.perf_counter() - wall_started
            logger.info(
                "%s, %s, run %d: %d ICs, %.2f s CPU, %.2f s wall",
                workload.name,
                contender.name,
                repeat + 1,
                len(sample),
                cpu_s,
                wall_s,
            )
            if cpu_s < measurement.cpu_s:
                measurement.cpu_s = cpu_s
                measurement.wall_s = wall_s
                measurement.result = result
                measurement.steps = int(result.steps.sum(dtype=np.int64))
                # Four evaluations per RK4 step, and the first stage of the step
                # that stops the trajectory.
                measurement.evaluations = 4 * measurement.steps + len(sample)

    for measurement in measurements:
        if measurement.contender.sample == "scipy":
            measure_scipy(workload, measurement, scale, processes)
            logger.info(
                "%s, %s: %d ICs, %.2f s CPU, %.2f s wall",
                workload.name,
                measurement.contender.name,
                measurement.trajectories,
                measurement.cpu_s,
                measurement.wall_s,
            )
    compare_with_engine(workload, measurements, initial)
    return measurements


def _timing(name: str, result: Trajectories) -> engine_vs_scipy.Timing:
    return engine_vs_scipy.Timing(
        name=name,
        trajectories=len(result.status),
        threads=1,
        wall_s=math.nan,
        cpu_s=math.nan,
        other_cpu_s=math.nan,
        steps=int(result.steps.sum(dtype=np.int64)),
        field_evaluations=0,
        final_state=result.final_state,
        converged=result.status == 0,
    )


def compare_with_engine(
    workload: Workload, measurements: list[Measurement], initial: np.ndarray
) -> None:
    """Fill in each contender's share of attractors equal to the engine default's."""
    reference = measurements[0].result
    for measurement in measurements[1:] if len(measurements) > 1 else []:
        count = measurement.trajectories
        engine = _timing("engine", _prefix(reference, count))
        other = _timing(measurement.contender.name, measurement.result)
        agreement = engine_vs_scipy.compare_attractors(workload.system, engine, other)
        measurement.agree = agreement.same / count
        both = engine.converged & other.converged
        if both.any():
            measurement.largest_difference = float(
                np.abs(engine.final_state[both] - other.final_state[both]).max()
            )
        for index, engine_clusters, other_clusters, distance in agreement.disagreements:
            boundary = near_boundary(workload, initial[index])
            measurement.disagreements.append(
                f"IC {index}: engine clusters {engine_clusters}, "
                f"{measurement.contender.name} {other_clusters}, distance "
                f"{distance:.3g}; {boundary}"
            )
    measurements[0].agree = 1.0
    measurements[0].largest_difference = 0.0


def _prefix(result: Trajectories, count: int) -> Trajectories:
    return Trajectories(
        result.final_state[:count], result.status[:count], result.steps[:count]
    )


def near_boundary(workload: Workload, state: np.ndarray) -> str:
    """Describe whether small perturbations of ``state`` reach different attractors.

    Integrates `BOUNDARY_SAMPLES` copies of the initial condition, each moved by
    Gaussian noise of size `BOUNDARY_RADIUS` per coordinate and renormalised, with
    the engine's default settings, and counts their distinct attractors.
    """
    rng = np.random.default_rng(0)
    perturbed = state[None] + BOUNDARY_RADIUS * rng.standard_normal(
        (BOUNDARY_SAMPLES, *state.shape)
    )
    perturbed /= np.linalg.norm(perturbed, axis=2, keepdims=True)
    result = basins.integrate(workload.system, workload.integration, perturbed)
    converged = result.status == 0
    matcher = Matcher(workload.system, basins.Classification())
    features = matcher.features(result.final_state, converged)
    _, representatives = matcher.group_representatives(
        features, np.flatnonzero(converged)
    )
    attractors = len(representatives)
    unconverged = int(np.sum(~converged))
    if attractors > 1 or unconverged:
        return (
            f"near a basin boundary: {BOUNDARY_SAMPLES} perturbations of size "
            f"{BOUNDARY_RADIUS:g} reach {attractors} attractors"
            + (f" ({unconverged} do not converge)" if unconverged else "")
        )
    return (
        f"not within {BOUNDARY_RADIUS:g} of a boundary: all {BOUNDARY_SAMPLES} "
        f"perturbations reach one attractor"
    )


def measure_peak() -> tuple[float, str]:
    """Return the float64 peak of one core in GFLOP/s and how it was obtained."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    source = Path(__file__).resolve().parent / "fma_peak.c"
    if compiler is not None:
        best = 0.0
        with tempfile.TemporaryDirectory() as directory:
            for flags in (["-mavx512f", "-mfma"], ["-mavx2", "-mfma"]):
                binary = Path(directory) / "fma_peak"
                built = subprocess.run(
                    [compiler, "-O2", *flags, str(source), "-o", str(binary)],
                    capture_output=True,
                )
                if built.returncode != 0:
                    continue
                ran = subprocess.run([str(binary)], capture_output=True, text=True)
                if ran.returncode != 0:
                    continue
                for line in ran.stdout.splitlines():
                    best = max(best, float(line.split()[1]))
        if best > 0.0:
            return best, "measured by fma_peak.c (independent FMA chains, best width)"
    clock_ghz = _nominal_clock_ghz()
    # Two FMA units of 8 float64 lanes: 32 flops per cycle (AVX-512 servers).
    return 32.0 * clock_ghz, f"estimated as 32 flops/cycle x {clock_ghz:.2f} GHz"


def _nominal_clock_ghz() -> float:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("cpu MHz"):
                    return float(line.split(":", 1)[1]) / 1000.0
    except OSError:
        logger.warning("cannot read /proc/cpuinfo; assuming a 2.5 GHz clock")
    return 2.5


def format_workload(workload: Workload, measurements: list[Measurement], peak: float) -> str:
    """Format one workload's table and its disagreements."""
    system, integration = workload.system, workload.integration
    flops = model_flops(system.n_tokens, system.dim)
    engine = measurements[0]
    lines = [
        f"## {workload.name}: n_tokens={system.n_tokens}, dim={system.dim}, "
        f"beta={system.beta:g}, dt={integration.dt:g}, tol={integration.tol:g}, "
        f"max_steps={integration.max_steps}; {flops} model flops per RK4 step",
        "",
    ]
    header = (
        "contender",
        "ICs",
        "steps/traj",
        "evals/traj",
        "steps/s/core",
        "traj/s/core",
        "engine x",
        "agree",
        "max |dx|",
        "GFLOP/s",
        "% peak",
    )
    rows = []
    for measurement in measurements:
        ratio = engine.trajectories_per_core_s / measurement.trajectories_per_core_s
        gflops = measurement.steps_per_core_s * flops / 1e9
        is_rk4 = measurement.contender.sample != "scipy"
        # A vector contains twice as many float32 numbers: twice the float64 peak.
        precision_peak = 2.0 * peak if "float32" in measurement.contender.name else peak
        rows.append(
            (
                measurement.contender.name,
                str(measurement.trajectories),
                f"{measurement.steps / measurement.trajectories:.0f}",
                f"{measurement.evaluations / measurement.trajectories:.0f}",
                f"{measurement.steps_per_core_s:.3g}",
                f"{measurement.trajectories_per_core_s:.3g}",
                "1" if measurement is engine else f"{ratio:.1f}",
                f"{100 * measurement.agree:.1f}%",
                f"{measurement.largest_difference:.1e}",
                f"{gflops:.2f}" if is_rk4 else "-",
                f"{100 * gflops / precision_peak:.1f}" if is_rk4 else "-",
            )
        )
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:])
        ]
        lines.append("  ".join(cells))
    lines.append("")
    for measurement in measurements:
        for disagreement in measurement.disagreements:
            lines.append(f"- {workload.name} disagreement: {disagreement}")
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the basins engine against a straightforward Numba kernel, "
        "NumPy and SciPy on workloads W8, W32 and W128, and print one table each.",
    )
    parser.add_argument(
        "--workloads",
        default="W8,W32,W128",
        help="comma-separated workloads to run (default W8,W32,W128)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each contender but SciPy; the best counts (default 3)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every sample size by this factor (default 1)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="worker processes for SciPy (default: the available cores)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small samples and one run each (--scale 0.02 --repeats 1), to check "
        "the machinery",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.scale = 0.02
        arguments.repeats = 1
    names = [name.strip() for name in arguments.workloads.split(",") if name.strip()]
    unknown = sorted(set(names) - {"W8", "W32", "W128"})
    if unknown:
        parser.error(f"--workloads {arguments.workloads!r}: unknown {', '.join(unknown)}")
    arguments.names = names
    if arguments.repeats < 1 or arguments.processes < 1 or arguments.scale <= 0:
        parser.error("--repeats and --processes must be at least 1, --scale above 0")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    numba.set_num_threads(1)
    peak, peak_source = measure_peak()
    workloads = build_workloads(arguments.scale)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    sections = []
    figures = {}
    for name in arguments.names:
        workload = workloads[name]
        measurements = measure_workload(
            workload, arguments.repeats, arguments.scale, arguments.processes
        )
        sections.append(format_workload(workload, measurements, peak))
        figures[name] = [
            {
                "contender": m.contender.name,
                "trajectories": m.trajectories,
                "steps": m.steps,
                "evaluations": m.evaluations,
                "cpu_s": m.cpu_s,
                "wall_s": m.wall_s,
                "agree": m.agree,
                "largest_difference": m.largest_difference,
                "disagreements": m.disagreements,
            }
            for m in measurements
        ]

    header = "\n".join(engine_vs_scipy.describe_machine(load_before))
    print(header.replace("# machine", "# run_all: machine"))
    print(
        f"# peak of one core: {peak:.1f} GFLOP/s float64, {peak_source}; "
        f"{time.perf_counter() - started:.0f} s wall for the suite"
    )
    print(
        "# rates per second of CPU time, one thread per contender; steps: RK4 steps, "
        "accepted RK45 steps for SciPy; evals: field evaluations (SciPy's include its "
        "stopping event); engine x: the "
        "engine default's traj/s/core divided by the row's; agree: share of the row's "
        "final states on the engine default's attractor; max |dx|: largest difference "
        "of final states where both converged; GFLOP/s: steps/s/core x model flops "
        "per step; % peak: of the float64 peak, of twice that for float32"
    )
    print()
    print("\n\n".join(sections))
    if arguments.json:
        arguments.json.write_text(
            json.dumps({"peak_gflops": peak, "workloads": figures}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
