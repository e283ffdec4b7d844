"""Basin mapping: one task per chunk of initial conditions, spread over Dask workers.

Each task generates its initial conditions from ``(seed, index)``, integrates them,
classifies the final states and writes its chunk of the atlas; the driver only
schedules tasks, tracks progress and merges the catalog at the end. A chunk that was
written survives any later interruption, and `resume` computes only the chunks still
pending.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba

from basins import atlas
from basins.classify import Matcher, classify_states, eigenspaces
from basins.config import Config
from basins.errors import ConfigError
from basins.integrate import integrate
from basins.sampling import initial_conditions

logger = logging.getLogger(__name__)

CLUSTERS = ("local", "synchronous")


def available_cores() -> int:
    """Return the number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not every platform has affinity masks
        return os.cpu_count() or 1


def compute_chunk(
    config_data: dict[str, Any], path: str, chunk: int, numba_threads: int | None = None
) -> dict[str, int]:
    """Compute one chunk of the atlas at ``path`` and write it.

    Parameters
    ----------
    config_data : dict
        The configuration as returned by `Config.to_dict` (plain data, so that the
        task is cheap to send to a worker).
    path : str
        The atlas.
    chunk : int
        Index of the chunk.
    numba_threads : int, optional
        Numba threads for this task; by default the pool size set at import.

    Returns
    -------
    dict
        The chunk index, its RK4 steps, and the seconds spent integrating (with
        the generation of the initial conditions), classifying and writing.
    """
    started = time.perf_counter()
    if numba_threads is not None:
        numba.set_num_threads(min(numba_threads, numba.config.NUMBA_NUM_THREADS))
    config = Config.from_dict(config_data)
    system = config.system
    start, stop = atlas.chunk_bounds(config, chunk)

    initial = initial_conditions(
        config.sampling.seed, start, stop - start, system.n_tokens, system.dim
    )
    outcome = integrate(system, config.integration, initial)
    integrated = time.perf_counter()

    matcher = Matcher(system, config.classification)
    labels = classify_states(
        outcome.final_state, outcome.status, matcher, eigenspaces(system.V), start
    )
    classified = time.perf_counter()
    atlas.write_chunk(
        path,
        config,
        atlas.ChunkResult(
            chunk=chunk,
            status=outcome.status,
            steps=outcome.steps,
            final_state=outcome.final_state,
            local_label=labels.local_label,
            class_code=labels.class_code,
        ),
    )
    finished = time.perf_counter()
    logger.debug(
        "chunk %d: %d initial conditions, integrate %.3f s, classify %.3f s, "
        "write %.3f s",
        chunk,
        stop - start,
        integrated - started,
        classified - integrated,
        finished - classified,
    )
    return {
        "chunk": chunk,
        "steps": int(outcome.steps.sum()),
        "integrate_seconds": integrated - started,
        "classify_seconds": classified - integrated,
        "write_seconds": finished - classified,
    }


@dataclass(frozen=True)
class Execution:
    """Where the tasks run.

    Parameters
    ----------
    cluster : {'local', 'synchronous'}
        ``local`` starts a `distributed.LocalCluster` of worker processes;
        ``synchronous`` runs every task in this process, one after the other.
        Ignored when ``scheduler`` is given.
    scheduler : str, optional
        Address of a running Dask scheduler, such as ``tcp://10.0.0.1:8786``.
    n_workers : int, optional
        Worker processes of the local cluster; by default the number of cores
        divided by ``numba_threads``.
    numba_threads : int, optional
        Numba threads per worker (per task); default 1 for a local cluster and all
        cores for ``synchronous``.
    progress : bool
        Show a progress bar on standard error.
    """

    cluster: str = "local"
    scheduler: str | None = None
    n_workers: int | None = None
    numba_threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.cluster not in CLUSTERS:
            raise ConfigError(
                f"cluster = {self.cluster!r} is invalid: expected one of "
                f"{', '.join(CLUSTERS)}"
            )
        for name in ("n_workers", "numba_threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} = {value!r} is invalid: expected an integer >= 1")

    def local_layout(self) -> tuple[int, int]:
        """Return (workers, Numba threads per worker) for a local cluster.

        Raises
        ------
        ConfigError
            If workers times threads would exceed the available cores.
        """
        cores = available_cores()
        threads = self.numba_threads or 1
        workers = self.n_workers or max(1, cores // threads)
        if workers * threads > cores:
            raise ConfigError(
                f"{workers} workers x {threads} Numba threads = {workers * threads} "
                f"threads exceeds the {cores} available cores; lower --workers or "
                f"--threads"
            )
        return workers, threads


# Per-task timings that `compute_chunk` returns and a run adds up.
TASK_TIMINGS = ("integrate_seconds", "classify_seconds", "write_seconds")


@dataclass(frozen=True)
class RunSummary:
    """What a call to `run` or `resume` did.

    ``task_seconds`` sums `TASK_TIMINGS` over the computed chunks: wall time inside
    the tasks, all workers together. ``finalize_seconds`` is the time of the
    catalog merge at the end.
    """

    path: Path
    chunks_computed: int
    chunks_pending: int
    steps: int
    seconds: float
    task_seconds: dict[str, float] = field(default_factory=dict)
    finalize_seconds: float = 0.0


def _add_timings(totals: dict[str, float], result: dict[str, Any]) -> None:
    for key in ("steps", *TASK_TIMINGS):
        totals[key] = totals.get(key, 0) + result[key]


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="chunk", disable=not enabled, desc="basins", leave=True)


def _run_synchronous(
    config: Config, path: Path, chunks: list[int], execution: Execution
) -> dict[str, float]:
    threads = execution.numba_threads or available_cores()
    totals: dict[str, float] = {}
    with _progress_bar(len(chunks), execution.progress) as bar:
        for chunk in chunks:
            _add_timings(totals, compute_chunk(config.to_dict(), str(path), chunk, threads))
            bar.update(1)
    return totals


def _run_distributed(
    config: Config, path: Path, chunks: list[int], execution: Execution
) -> dict[str, float]:
    from distributed import Client, LocalCluster, as_completed

    if execution.scheduler is not None:
        cluster = None
        client = Client(execution.scheduler)
        threads = execution.numba_threads
        logger.info("connected to scheduler %s", execution.scheduler)
    else:
        workers, threads = execution.local_layout()
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"NUMBA_NUM_THREADS": str(threads)},
        )
        client = Client(cluster)
        logger.info(
            "started a local cluster: %d workers x %d Numba threads", workers, threads
        )

    config_data = config.to_dict()
    failures = []
    totals: dict[str, float] = {}
    try:
        # Each chunk gets its own key, so no two tasks are ever merged.
        token = f"{path.resolve()}-{time.time_ns()}"
        futures = [
            client.submit(
                compute_chunk,
                config_data,
                str(path.resolve()),
                chunk,
                threads,
                key=f"basins-chunk-{chunk}-{token}",
                pure=False,
                retries=1,
            )
            for chunk in chunks
        ]
        with _progress_bar(len(futures), execution.progress) as bar:
            for future in as_completed(futures):
                if future.status == "error":
                    failures.append((future, future.exception()))
                    logger.error("task %s failed: %s", future.key, future.exception())
                else:
                    _add_timings(totals, future.result())
                bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    if failures:
        _, first_error = failures[0]
        raise RuntimeError(
            f"{len(failures)} of {len(chunks)} chunks failed; the others are stored, "
            f"and 'basins resume {path}' retries the failed ones. First error: "
            f"{first_error!r}"
        ) from first_error
    return totals


def _compute(
    config: Config, path: Path, chunks: list[int], execution: Execution
) -> RunSummary:
    started = time.perf_counter()
    logger.info(
        "computing %d of %d chunks (%d initial conditions per chunk) into %s",
        len(chunks),
        config.sampling.n_chunks,
        config.sampling.chunk_size,
        path,
    )
    if not chunks:
        totals = {}
    elif execution.scheduler is None and execution.cluster == "synchronous":
        totals = _run_synchronous(config, path, chunks, execution)
    else:
        totals = _run_distributed(config, path, chunks, execution)
    finalize_started = time.perf_counter()
    atlas.finalize(path)
    finished = time.perf_counter()
    seconds = finished - started
    pending = len(atlas.pending_chunks(path))
    steps = int(totals.pop("steps", 0))
    logger.info(
        "computed %d chunks in %.1f s (%.3g RK4 steps); %d chunks pending",
        len(chunks),
        seconds,
        steps,
        pending,
    )
    logger.info(
        "time in tasks, all workers together: integrate %.1f s, classify %.1f s, "
        "write %.1f s; catalog merge %.1f s",
        *(totals.get(key, 0.0) for key in TASK_TIMINGS),
        finished - finalize_started,
    )
    return RunSummary(
        path, len(chunks), pending, steps, seconds, totals, finished - finalize_started
    )


def _select(chunks: Iterable[int], max_chunks: int | None) -> list[int]:
    chunks = list(chunks)
    if max_chunks is not None:
        if not isinstance(max_chunks, int) or max_chunks < 1:
            raise ConfigError(
                f"max_chunks = {max_chunks!r} is invalid: expected an integer >= 1"
            )
        chunks = chunks[:max_chunks]
    return chunks


def run(
    config: Config,
    path: str | Path,
    *,
    overwrite: bool = False,
    execution: Execution | None = None,
    max_chunks: int | None = None,
) -> RunSummary:
    """Map the basins of ``config`` into a new atlas at ``path``.

    Parameters
    ----------
    config : Config
        What to map.
    path : str or path
        Directory of the new Zarr store.
    overwrite : bool, optional
        Replace an existing atlas at ``path``.
    execution : Execution, optional
        Where the tasks run; by default a local cluster sized to the cores.
    max_chunks : int, optional
        Compute at most this many chunks (the first ones) and stop; `resume`
        computes the rest.

    Returns
    -------
    RunSummary
        Chunks computed and pending, RK4 steps and wall time.

    Raises
    ------
    AtlasError
        If ``path`` exists and ``overwrite`` is false.
    ConfigError
        If an execution setting is invalid.
    """
    execution = execution or Execution()
    config.check_step_size(stacklevel=2)
    chunks = _select(range(config.sampling.n_chunks), max_chunks)
    if execution.scheduler is None and execution.cluster == "local":
        execution.local_layout()
    path = Path(path)
    atlas.create_atlas(path, config, overwrite=overwrite)
    return _compute(config, path, chunks, execution)


def resume(
    path: str | Path,
    *,
    execution: Execution | None = None,
    max_chunks: int | None = None,
) -> RunSummary:
    """Compute the chunks of the atlas at ``path`` that are still pending.

    The configuration is read from the atlas; the result is identical to that of an
    uninterrupted run.

    Raises
    ------
    AtlasError
        If ``path`` is not an atlas.
    """
    execution = execution or Execution()
    path = Path(path)
    config = atlas.read_config(path)
    chunks = _select(atlas.pending_chunks(path), max_chunks)
    return _compute(config, path, chunks, execution)

