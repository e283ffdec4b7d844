"""Measure what one Dask task costs a basin map, to size chunks and clusters.

The workload is the built-in ``multistable`` example (4 tokens in R^3, softmax,
``dt = 0.05``). The script measures four things on a `distributed.LocalCluster` of
``--workers`` single-threaded worker processes and in this process.

1. Scheduler throughput: ``--tasks`` empty tasks, submitted one by one with their own
   keys and collected with ``as_completed``, as `basins.mapping` does with chunks. It
   reports tasks per second and the wall time per task and worker (the per-task
   overhead that a worker pays for scheduling, transfer and bookkeeping).
2. Chunk cost in one process: `basins.mapping.compute_chunk` on one chunk of each size
   in ``--chunk-sizes``, with one Numba thread, best of ``--repeats``. A line
   ``seconds = fixed + per_ic * size``, fitted by least squares of the relative error,
   splits the fixed cost of a chunk (configuration, classifier, five Zarr writes) from
   the cost of one initial condition.
3. End-to-end overhead: ``--tiny-chunks`` chunks of one initial condition each,
   computed through the LocalCluster: the whole per-task cost with the atlas writes.
4. Finalize: `basins.atlas.finalize` on atlases of ``--finalize-ics`` initial
   conditions and of four times as many, which the driver runs once at the end of a
   map: its time, and its peak memory at both sizes. `finalize` reads and writes
   the per-IC arrays one chunk at a time, so the peak should grow with the number
   of local attractors (chunks times attractors), not with the initial conditions.

Results go to stdout as a Markdown table, progress to the log on stderr. Other load
on the machine slows every measurement; the header reports the load average before
and after.

Examples
--------
Measure with the defaults (about two minutes on a 2-core machine under load)::

    python benchmarks/task_overhead.py
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

import basins
from basins import atlas
from basins.examples import example_config
from basins.mapping import Execution, compute_chunk, run

logger = logging.getLogger("task_overhead")


def noop(index: int) -> int:
    """Return ``index``; the task body of the throughput measurement."""
    return index


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure_throughput(client, n_tasks: int) -> float:
    """Return the wall time of ``n_tasks`` empty tasks, first submit to last result."""
    from distributed import as_completed

    token = time.time_ns()
    started = time.perf_counter()
    futures = [
        client.submit(noop, i, key=f"noop-{i}-{token}", pure=False)
        for i in range(n_tasks)
    ]
    for future in as_completed(futures):
        future.result()
    return time.perf_counter() - started


def measure_chunk_cost(
    folder: Path, sizes: list[int], repeats: int
) -> dict[int, float]:
    """Return the best time of `compute_chunk` per chunk size, with one Numba thread."""
    config = example_config("multistable")
    seconds = {}
    for size in sizes:
        sized = config.with_sampling(n_initial=size * 2, chunk_size=size)
        path = folder / f"chunk-{size}.zarr"
        atlas.create_atlas(path, sized, overwrite=True)
        compute_chunk(sized.to_dict(), str(path), 1, 1)  # compile or load the cache
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            compute_chunk(sized.to_dict(), str(path), 0, 1)
            times.append(time.perf_counter() - started)
        seconds[size] = min(times)
        logger.info("chunk of %d: %.4f s", size, seconds[size])
    return seconds


def measure_tiny_chunks(client, folder: Path, n_chunks: int) -> float:
    """Return the wall time of ``n_chunks`` one-IC chunks computed on ``client``'s
    workers, submitted as `basins.mapping` submits them."""
    from distributed import as_completed

    config = example_config("multistable").with_sampling(
        n_initial=n_chunks, chunk_size=1
    )
    path = folder / "tiny.zarr"
    atlas.create_atlas(path, config, overwrite=True)
    token = time.time_ns()
    started = time.perf_counter()
    futures = [
        client.submit(
            compute_chunk,
            config.to_dict(),
            str(path),
            chunk,
            1,
            key=f"chunk-{chunk}-{token}",
            pure=False,
        )
        for chunk in range(n_chunks)
    ]
    for future in as_completed(futures):
        future.result()
    return time.perf_counter() - started


def measure_finalize(folder: Path, n_ics: int) -> tuple[float, int]:
    """Return the time and the peak of traced memory of `atlas.finalize` on a complete
    atlas of ``n_ics`` ICs. NumPy reports its arrays to `tracemalloc`."""
    config = example_config("multistable").with_sampling(
        n_initial=n_ics, chunk_size=5000
    )
    path = folder / "finalize.zarr"
    run(
        config,
        path,
        overwrite=True,
        execution=Execution(cluster="synchronous", progress=False),
    )
    tracemalloc.start()
    started = time.perf_counter()
    atlas.finalize(path)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes (default 2)"
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=5000,
        help="empty tasks for the throughput (default 5000)",
    )
    parser.add_argument(
        "--chunk-sizes",
        default="1,10,100,1000,5000",
        help="chunk sizes timed in one process (default 1,10,100,1000,5000)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="repeats per chunk size")
    parser.add_argument(
        "--tiny-chunks",
        type=int,
        default=1000,
        help="one-IC chunks computed through the cluster (default 1000)",
    )
    parser.add_argument(
        "--finalize-ics",
        type=int,
        default=50000,
        help="initial conditions of the finalized atlas (default 50000)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s: %(message)s",
    )
    sizes = [int(size) for size in args.chunk_sizes.split(",")]
    load_before = os.getloadavg()[0]

    from distributed import Client, LocalCluster

    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            # Warm up: start the workers' connections and load the compiled kernels.
            measure_throughput(client, min(args.tasks, 500))
            measure_tiny_chunks(client, folder, 4 * args.workers)
            throughput_seconds = measure_throughput(client, args.tasks)
            logger.info("%d empty tasks: %.2f s", args.tasks, throughput_seconds)
            tiny_seconds = measure_tiny_chunks(client, folder, args.tiny_chunks)
            logger.info("%d one-IC chunks: %.2f s", args.tiny_chunks, tiny_seconds)
        chunk_seconds = measure_chunk_cost(folder, sizes, args.repeats)
        finalize_seconds, finalize_bytes = measure_finalize(folder, args.finalize_ics)
        logger.info("finalize of %d ICs: %.2f s", args.finalize_ics, finalize_seconds)
        larger_seconds, larger_bytes = measure_finalize(folder, 4 * args.finalize_ics)
        logger.info("finalize of %d ICs: %.2f s", 4 * args.finalize_ics, larger_seconds)

    times = np.array([chunk_seconds[size] for size in sizes])
    per_ic, fixed = np.polyfit(sizes, times, 1, w=1 / times)
    rows = [
        (
            "empty tasks per second (scheduler throughput)",
            f"{args.tasks / throughput_seconds:,.0f}",
        ),
        (
            "wall time per empty task and worker",
            f"{throughput_seconds * args.workers / args.tasks * 1e3:.2f} ms",
        ),
        *(
            (
                f"compute_chunk, {size} ICs, one thread",
                f"{chunk_seconds[size] * 1e3:.1f} ms",
            )
            for size in sizes
        ),
        ("fixed cost per chunk (fit)", f"{fixed * 1e3:.1f} ms"),
        ("cost per initial condition (fit)", f"{per_ic * 1e3:.3f} ms"),
        (
            "one-IC chunks per second through the cluster",
            f"{args.tiny_chunks / tiny_seconds:,.0f}",
        ),
        (
            "wall time per one-IC chunk and worker",
            f"{tiny_seconds * args.workers / args.tiny_chunks * 1e3:.1f} ms",
        ),
        (f"finalize, {args.finalize_ics:,} ICs", f"{finalize_seconds:.2f} s"),
        (f"finalize, {4 * args.finalize_ics:,} ICs", f"{larger_seconds:.2f} s"),
        (
            "finalize per million ICs (larger atlas)",
            f"{larger_seconds / (4 * args.finalize_ics) * 1e6:.1f} s",
        ),
        (
            f"finalize, peak memory at {args.finalize_ics:,} / "
            f"{4 * args.finalize_ics:,} ICs",
            f"{finalize_bytes / 2**20:.1f} / {larger_bytes / 2**20:.1f} MiB",
        ),
    ]
    print(
        f"basins {basins.__version__}, {datetime.date.today()}, {cpu_model()}, "
        f"{os.cpu_count()} CPUs, {args.workers} workers x 1 thread, load average "
        f"{load_before:.1f} before and {os.getloadavg()[0]:.1f} after\n"
    )
    print("| measurement | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
