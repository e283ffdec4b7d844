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
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba

from basins import atlas, lock, storage
from basins.classify import Matcher, classify_states, eigenspaces
from basins.config import Config
from basins.errors import ConfigError, TaskError, Terminated
from basins.integrate import integrate
from basins.sampling import initial_conditions

logger = logging.getLogger(__name__)

CLUSTERS = ("local", "synchronous")

# Set by the command line's SIGTERM handler. The loops over chunks check it, because
# an exception that the handler raises inside a finalizer (__del__) is ignored.
STOP_REQUESTED = threading.Event()


def _check_stop() -> None:
    if STOP_REQUESTED.is_set():
        raise Terminated


def available_cores() -> int:
    """Return the number of cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not every platform has affinity masks
        return os.cpu_count() or 1


def compute_chunk(
    config_data: dict[str, Any],
    path: str,
    chunk: int,
    numba_threads: int | None = None,
    writer_token: str | None = None,
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
    writer_token : str, optional
        Token of the run's writer lock. When given, the chunk is written only if
        `basins.lock.check_writer` confirms, right before writing, that this run
        still owns the atlas.

    Returns
    -------
    dict
        The chunk index and its counts of initial conditions per status.

    Raises
    ------
    LockLostError
        If the run no longer owns the atlas; nothing is written.
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
    if writer_token is not None:
        lock.check_writer(path, writer_token)
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
        "chunk %d: %d initial conditions, integrate %.3f s, classify and write %.3f s",
        chunk,
        stop - start,
        integrated - started,
        finished - integrated,
    )
    return {
        "chunk": chunk,
        "steps": int(outcome.steps.sum()),
        "integrate_seconds": integrated - started,
        "write_seconds": finished - integrated,
    }


def _check_scheduler_address(address: Any) -> None:
    """Raise `ConfigError` unless ``address`` parses as a Dask scheduler address."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        _, location = parse_address(address)
        if not location.startswith("["):  # an IPv6 literal is checked on connecting
            parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"scheduler = {address!r} is invalid ({exc}): expected an address such as "
            f"tcp://10.0.0.1:8786"
        ) from None


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
        if self.scheduler is not None:
            _check_scheduler_address(self.scheduler)

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


@dataclass(frozen=True)
class RunSummary:
    """What a call to `run` or `resume` did."""

    path: Path
    chunks_computed: int
    chunks_pending: int
    steps: int
    seconds: float


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="chunk", disable=not enabled, desc="basins", leave=True)


def _run_synchronous(
    config: Config, path: Path, chunks: list[int], execution: Execution, token: str
) -> int:
    threads = execution.numba_threads or available_cores()
    steps = 0
    with _progress_bar(len(chunks), execution.progress) as bar:
        for chunk in chunks:
            _check_stop()
            result = compute_chunk(config.to_dict(), str(path), chunk, threads, token)
            steps += result["steps"]
            bar.update(1)
    return steps


def _run_distributed(
    config: Config, path: Path, chunks: list[int], execution: Execution, token: str
) -> int:
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
    steps = 0
    try:
        # Each chunk gets its own key, so no two tasks are ever merged.
        futures = [
            client.submit(
                compute_chunk,
                config_data,
                str(path.resolve()),
                chunk,
                threads,
                token,
                key=f"basins-chunk-{chunk}-{token}",
                pure=False,
                retries=1,
            )
            for chunk in chunks
        ]
        with _progress_bar(len(futures), execution.progress) as bar:
            for future in as_completed(futures):
                _check_stop()
                if future.status == "error":
                    failures.append((future, future.exception()))
                    logger.error("task %s failed: %s", future.key, future.exception())
                else:
                    steps += future.result()["steps"]
                bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    if failures:
        _, first_error = failures[0]
        raise TaskError(
            f"{len(failures)} of {len(chunks)} chunks failed; the others are stored, "
            f"and 'basins resume {path}' retries the failed ones. First error: "
            f"{first_error!r}"
        ) from first_error
    return steps


def _compute(
    config: Config, path: Path, chunks: list[int], execution: Execution, token: str
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
        steps = 0
    elif execution.scheduler is None and execution.cluster == "synchronous":
        steps = _run_synchronous(config, path, chunks, execution, token)
    else:
        steps = _run_distributed(config, path, chunks, execution, token)
    lock.check_writer(path, token)
    atlas.finalize(path)
    seconds = time.perf_counter() - started
    pending = len(atlas.pending_chunks(path))
    logger.info(
        "computed %d chunks in %.1f s (%.3g RK4 steps); %d chunks pending",
        len(chunks),
        seconds,
        steps,
        pending,
    )
    return RunSummary(path, len(chunks), pending, steps, seconds)


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
        If ``path`` exists and ``overwrite`` is false, contains something other than
        an atlas, or lies on a file system without room for the atlas.
    AtlasInUseError
        If another process holds the atlas's writer lock.
    ConfigError
        If an execution setting is invalid.
    TaskError
        If some chunks failed; the others are stored, and `resume` retries.

    Notes
    -----
    The run holds the atlas's writer lock (`basins.lock`) from before the atlas is
    created until the catalog is written. Everything is checked before the first
    write, so an invalid request leaves the file system as it was.
    """
    execution = execution or Execution()
    config.check_step_size(stacklevel=2)
    _check_layout(execution)
    path = Path(path)
    atlas.check_target(path, overwrite=overwrite)
    freed = storage.tree_bytes(path) if path.is_dir() else 0
    storage.check_free_space(
        path,
        storage.atlas_bytes(config),
        what=f"the atlas of {config.sampling.n_initial} initial conditions",
        freed=freed,
    )
    chunks = _select(range(config.sampling.n_chunks), max_chunks)
    with lock.acquire(path, "run", create=True) as writer:
        atlas.create_atlas(path, config, overwrite=overwrite, token=writer.token)
        return _compute(config, path, chunks, execution, writer.token)


def resume(
    path: str | Path,
    *,
    execution: Execution | None = None,
    max_chunks: int | None = None,
) -> RunSummary:
    """Compute the chunks of the atlas at ``path`` that are still pending.

    The configuration is read from the atlas; the result is identical to that of an
    uninterrupted run.

    Before computing, resume checks that no symbolic link in the atlas points out of
    it and removes the temporary files of writes that a crash interrupted. It returns
    damaged chunks (ones that fail to decode or are inconsistent) to the pending
    state, so that they are recomputed.

    Raises
    ------
    AtlasError
        If ``path`` is not an atlas, contains links that point out of it, or lies
        on a file system without room for the pending chunks.
    AtlasInUseError
        If another process holds the atlas's writer lock.
    TaskError
        If some chunks failed; the others are stored.
    """
    execution = execution or Execution()
    _check_layout(execution)
    path = Path(path)
    atlas.open_store(path)
    with lock.acquire(path, "resume") as writer:
        storage.check_links(path)
        storage.remove_leftovers(path)
        atlas.discard_damaged_catalog(path)
        config = atlas.read_config(path)
        chunks = _select(atlas.pending_chunks(path, reset_damaged=True), max_chunks)
        storage.check_free_space(
            path,
            storage.atlas_bytes(config, len(chunks)),
            what=f"resuming {len(chunks)} chunks of {config.sampling.chunk_size}",
        )
        return _compute(config, path, chunks, execution, writer.token)


def _check_layout(execution: Execution) -> None:
    if execution.scheduler is None and execution.cluster == "local":
        execution.local_layout()

