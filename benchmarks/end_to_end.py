"""Time a real ``basins run`` and sample the memory of all of its processes.

Runs ``python -m basins.cli run CONFIG`` (by default W8 from ``w8.toml``) on a local
Dask cluster. Every ``--interval`` seconds it samples the resident memory of the
command's whole process tree: the driver with the scheduler, the nannies and the
workers. The wall time is split with the totals that the run logs: time inside the
tasks spent integrating (the kernel, with the generation of initial conditions),
classifying and writing to Zarr, and the catalog merge at the end. Whatever remains
of ``workers x wall time`` is Dask (cluster start, scheduling, communication) and
idle workers.

Examples
--------
One million initial conditions of W8 on two workers::

    python benchmarks/end_to_end.py --n-initial 1000000 --workers 2

Memory for ten million initial conditions, capped at 200 steps each::

    python benchmarks/end_to_end.py --n-initial 10000000 --max-steps 200
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
TIMINGS = re.compile(
    r"integrate (?P<integrate>[\d.]+) s, classify (?P<classify>[\d.]+) s, "
    r"write (?P<write>[\d.]+) s; catalog merge (?P<merge>[\d.]+) s"
)
COMPUTED = re.compile(r"computed \d+ chunks in (?P<seconds>[\d.]+) s \((?P<steps>[\d.e+]+) RK4")


class MemorySampler(threading.Thread):
    """Record the largest total resident memory of a process and its descendants,
    and the CPU time each of them has used by its last sample."""

    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_bytes = 0
        self.peak_processes = 0
        self.cpu_seconds: dict[int, float] = {}
        self.finished = threading.Event()

    def run(self) -> None:
        while not self.finished.is_set():
            total = 0
            processes = 0
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in tree:
                try:
                    total += process.memory_info().rss
                    times = process.cpu_times()
                    processes += 1
                except psutil.NoSuchProcess:
                    continue
                self.cpu_seconds[process.pid] = times.user + times.system
            if total > self.peak_bytes:
                self.peak_bytes = total
                self.peak_processes = processes
            self.finished.wait(self.interval)


@dataclass(frozen=True)
class Outcome:
    """Wall time, peak memory and the logged time split of one run."""

    wall_s: float
    cpu_s: float
    peak_mib: float
    processes: int
    run_s: float
    steps: float
    integrate_s: float
    classify_s: float
    write_s: float
    merge_s: float


def run_once(arguments: argparse.Namespace, atlas: Path) -> Outcome:
    """Run the command once and return what it measured."""
    command = [
        sys.executable,
        "-m",
        "basins.cli",
        "-v",
        "run",
        str(arguments.config),
        "--out",
        str(atlas),
        "--overwrite",
        "--no-progress",
        "--n-initial",
        str(arguments.n_initial),
        "--chunk-size",
        str(arguments.chunk_size),
        "--workers",
        str(arguments.workers),
    ]
    config = arguments.config
    if arguments.max_steps is not None:
        config = _with_max_steps(arguments.config, arguments.max_steps, atlas.parent)
        command[5] = str(config)
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = MemorySampler(process.pid, arguments.interval)
    sampler.start()
    output, log = process.communicate()
    wall_s = time.perf_counter() - started
    sampler.finished.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"basins run failed with status {process.returncode}:\n{log}")
    timings = TIMINGS.search(log)
    computed = COMPUTED.search(log)
    if timings is None or computed is None:
        raise SystemExit(f"the run did not log its timings:\n{log}")
    sys.stderr.write(log)
    sys.stdout.write(output)
    return Outcome(
        wall_s=wall_s,
        cpu_s=sum(sampler.cpu_seconds.values()),
        peak_mib=sampler.peak_bytes / 2**20,
        processes=sampler.peak_processes,
        run_s=float(computed["seconds"]),
        steps=float(computed["steps"]),
        integrate_s=float(timings["integrate"]),
        classify_s=float(timings["classify"]),
        write_s=float(timings["write"]),
        merge_s=float(timings["merge"]),
    )


def _with_max_steps(config: Path, max_steps: int, directory: Path) -> Path:
    """Return a copy of the TOML file ``config`` with ``max_steps`` replaced."""
    text = config.read_text(encoding="utf-8")
    text, count = re.subn(r"(?m)^max_steps\s*=.*$", f"max_steps = {max_steps}", text)
    if count != 1:
        raise SystemExit(f"{config}: expected one max_steps line, found {count}")
    copy = directory / f"max-steps-{max_steps}.toml"
    copy.write_text(text, encoding="utf-8")
    return copy


def report(arguments: argparse.Namespace, outcome: Outcome) -> str:
    """Format the outcome as lines of text."""
    busy = arguments.workers * outcome.wall_s
    kernel = outcome.integrate_s
    other = busy - kernel
    lines = [
        f"# end_to_end: {arguments.n_initial} initial conditions of {arguments.config.name}"
        f", chunks of {arguments.chunk_size}, {arguments.workers} workers"
        + (f", max_steps {arguments.max_steps}" if arguments.max_steps else ""),
        f"wall time of the command      {outcome.wall_s:8.1f} s",
        f"  run (cluster to catalog)    {outcome.run_s:8.1f} s",
        f"RK4 steps                     {outcome.steps:8.3g}",
        f"worker time (workers x wall)  {busy:8.1f} s  100.0%",
        f"  kernel (integrate)          {kernel:8.1f} s  {100 * kernel / busy:5.1f}%",
        f"  classify                    {outcome.classify_s:8.1f} s  "
        f"{100 * outcome.classify_s / busy:5.1f}%",
        f"  Zarr writes                 {outcome.write_s:8.1f} s  "
        f"{100 * outcome.write_s / busy:5.1f}%",
        f"  catalog merge (driver)      {outcome.merge_s:8.1f} s  "
        f"{100 * outcome.merge_s * arguments.workers / busy:5.1f}% (x workers idle)",
        f"  Dask, start-up and idle     "
        f"{other - outcome.classify_s - outcome.write_s - outcome.merge_s * arguments.workers:8.1f} s",
        f"overhead outside the kernel   {100 * other / busy:8.1f}%",
        f"peak resident memory          {outcome.peak_mib:8.0f} MiB over "
        f"{outcome.processes} processes (sum of RSS)",
        f"CPU time of those processes   {outcome.cpu_s:8.1f} s, "
        f"{outcome.cpu_s / outcome.wall_s:.2f} cores on average (at the last sample)",
    ]
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=HERE / "w8.toml", help="TOML file (default W8)"
    )
    parser.add_argument("--n-initial", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--max-steps", type=int, help="override integration.max_steps (memory runs)"
    )
    parser.add_argument(
        "--interval", type=float, default=0.1, help="memory sampling period in seconds"
    )
    parser.add_argument(
        "--out", type=Path, help="atlas directory (default: a temporary directory)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    with tempfile.TemporaryDirectory(prefix="basins-e2e-") as directory:
        atlas = arguments.out or Path(directory) / "atlas.zarr"
        outcome = run_once(arguments, atlas)
    print(report(arguments, outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
