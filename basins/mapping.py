"""Basin mapping: one task per chunk of initial conditions, spread over Dask workers.

Each task generates its initial conditions from ``(seed, index)``, integrates them,
classifies the final states and writes its chunk of the atlas. The driver only
schedules tasks, tracks progress and merges the catalog at the end. A chunk that was
written survives any later interruption, and `resume` computes only the chunks still
pending.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import CancelledError
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba

from basins import atlas, clusters, lock, storage
from basins.classify import Matcher, classify_states, eigenspaces
from basins.config import Config
from basins.errors import ClusterError, ConfigError, TaskError, Terminated
from basins.integrate import integrate
from basins.sampling import initial_conditions

logger = logging.getLogger(__name__)

CLUSTERS = ("local", "synchronous", *clusters.BATCH_SYSTEMS)

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

    if config.sampling.initial == "random":
        initial = initial_conditions(
            config.sampling.seed, start, stop - start, system.n_tokens, system.dim
        )
    else:
        initial = atlas.read_initial_state(path, start, stop)
    outcome = integrate(system, config.integration, initial)
    integrated = time.perf_counter()

    matcher = Matcher(system, config.classification)
    labels = classify_states(
        outcome.final_state, outcome.status, matcher, eigenspaces(system.V), start
    )
    classified = time.perf_counter()
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
    """Execution settings: the scheduler, the workers and the threads per worker.

    Parameters
    ----------
    cluster : {'local', 'synchronous', 'slurm', 'pbs'}
        ``local`` starts a `distributed.LocalCluster` of worker processes;
        ``synchronous`` runs every task in this process, one after the other;
        ``slurm`` and ``pbs`` start a Dask scheduler in this process and submit
        worker jobs through dask-jobqueue (see `basins.clusters`). Ignored when
        ``scheduler`` is given.
    scheduler : str, optional
        Address of a running Dask scheduler, such as ``tcp://10.0.0.1:8786``, or
        the path of its scheduler file (``*.json``).
    n_workers : int, optional
        Worker processes of the local cluster; by default the number of cores
        divided by ``numba_threads``.
    numba_threads : int, optional
        Numba threads per worker (per task); default 1 for a local cluster, all
        cores for ``synchronous`` and ``cores // processes`` for batch jobs.
    progress : bool
        Show a progress bar on standard error.
    cluster_options : mapping, optional
        Settings of the batch jobs that replace the configured ones, such as
        ``{"queue": "short", "minimum_jobs": 4, "maximum_jobs": 4}``; the keys are
        those of `basins.clusters.JobSettings`. Only for ``slurm`` and ``pbs``.
    """

    cluster: str = "local"
    scheduler: str | None = None
    n_workers: int | None = None
    numba_threads: int | None = None
    progress: bool = True
    cluster_options: Mapping[str, Any] = field(default_factory=dict)

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
        if self.scheduler is not None and not str(self.scheduler).endswith(".json"):
            _check_scheduler_address(self.scheduler)
        if not self.batch:
            if self.cluster_options:
                raise ConfigError(
                    f"cluster_options = {dict(self.cluster_options)!r} is invalid with "
                    f"cluster = {self.cluster!r}: batch-job settings (--queue, --cores "
                    f"and the like) apply only to --cluster slurm or pbs, without "
                    f"--scheduler"
                )
            return
        if self.n_workers is not None:
            raise ConfigError(
                f"n_workers = {self.n_workers} is invalid with cluster = "
                f"{self.cluster!r}: set the number of jobs and the processes per job "
                f"instead (--jobs, --processes)"
            )
        self.job_settings().numba_threads(self.numba_threads)

    @property
    def batch(self) -> bool:
        """Whether the tasks run in worker jobs of a SLURM or PBS cluster."""
        return self.scheduler is None and self.cluster in clusters.BATCH_SYSTEMS

    def job_settings(self) -> clusters.JobSettings:
        """Return the batch-job settings: the configured ones with the overrides.

        Raises
        ------
        ConfigError
            If an option is unknown or invalid.
        """
        return clusters.job_settings(self.cluster_options)

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
    """Summary of a call to `run` or `resume`."""

    path: Path
    chunks_computed: int
    chunks_pending: int
    steps: int
    seconds: float


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="chunk", disable=not enabled, desc="basins", leave=True)


# A task function: (configuration as plain data, atlas path, chunk index, Numba
# threads or None) -> a dict with at least the RK4 steps it took under "steps".
Task = Callable[[dict[str, Any], str, int, int | None], dict[str, Any]]


@dataclass(frozen=True)
class WorkItem:
    """One task: run ``task`` on chunk ``chunk`` of the atlas at ``path``.

    ``name`` names the task's Dask key; the default task computes one chunk of a map.
    ``writer_token``, when set, is passed to the task as its fifth argument, so that
    it writes only while the run owns the atlas (`basins.lock`).
    """

    path: Path
    config: Config
    chunk: int
    task: Task = compute_chunk
    name: str = "chunk"
    writer_token: str | None = None

    def arguments(self, config_data: dict[str, Any], threads: int | None) -> tuple:
        """Return the task's positional arguments."""
        arguments = (config_data, str(self.path.resolve()), self.chunk, threads)
        if self.writer_token is not None:
            arguments += (self.writer_token,)
        return arguments


def _add_seconds(totals: dict[str, float] | None, result: dict[str, Any]) -> None:
    """Add a task's ``*_seconds`` timings to ``totals``, when totals are collected."""
    if totals is None:
        return
    for key, value in result.items():
        if key.endswith("_seconds"):
            totals[key] = totals.get(key, 0.0) + value


def _run_synchronous(
    items: list[WorkItem], execution: Execution, totals: dict[str, float] | None
) -> int:
    threads = execution.numba_threads or available_cores()
    steps = 0
    with _progress_bar(len(items), execution.progress) as bar:
        for item in items:
            _check_stop()
            result = item.task(*item.arguments(item.config.to_dict(), threads))
            steps += result["steps"]
            _add_seconds(totals, result)
            bar.update(1)
    return steps


def _call_task(task: Task, *arguments: Any) -> dict[str, Any]:
    """Run ``task`` on a worker after pinning ``NUMBA_NUM_THREADS``.

    Numba re-reads its environment whenever it compiles and raises if
    ``NUMBA_NUM_THREADS`` then differs from the size of its running thread pool. A
    Dask worker's environment can differ from the one Numba saw at import, so the
    variable is set to the value Numba uses before the task compiles anything.
    """
    os.environ["NUMBA_NUM_THREADS"] = str(numba.config.NUMBA_NUM_THREADS)
    return task(*arguments)


def _log_dashboard(client) -> None:
    """Log the address of the scheduler's dashboard, if it serves one."""
    services = client.scheduler_info().get("services", {})
    if "dashboard" in services:
        logger.info("Dask dashboard at %s", client.dashboard_link)


def _run_distributed(
    items: list[WorkItem],
    execution: Execution,
    retry_hint: str,
    totals: dict[str, float] | None,
) -> int:
    from distributed import as_completed
    from distributed.comm.core import CommClosedError

    # Each atlas's configuration is converted once, not once per chunk.
    config_data = {item.path: item.config.to_dict() for item in items}
    failures = []
    lost = 0
    steps = 0
    with clusters.open_session(execution) as session:
        _log_dashboard(session.client)
        # Each chunk gets its own key, so no two tasks are ever merged.
        token = time.time_ns()
        futures = [
            session.client.submit(
                _call_task,
                item.task,
                *item.arguments(config_data[item.path], session.numba_threads),
                key=f"basins-{item.name}-{item.chunk}-{item.path.resolve()}-{token}",
                pure=False,
                retries=1,
            )
            for item in items
        ]
        session.wait_for_first_worker()
        with _progress_bar(len(futures), execution.progress) as bar:
            for future in as_completed(futures):
                _check_stop()
                # The client cancels every future when it loses the scheduler.
                if future.cancelled():
                    lost += 1
                elif future.status == "error":
                    failures.append((future, future.exception()))
                    logger.error("task %s failed: %s", future.key, future.exception())
                else:
                    try:
                        result = future.result()
                    except (CancelledError, CommClosedError):
                        # The scheduler went away after the check above, or while
                        # the result was on its way.
                        lost += 1
                    else:
                        steps += result["steps"]
                        _add_seconds(totals, result)
                bar.update(1)
    if lost:
        raise ClusterError(
            f"lost the connection to the Dask scheduler with {lost} of {len(items)} "
            f"chunks unfinished; the finished chunks are stored, and '{retry_hint}' "
            f"computes the others"
        )
    if failures:
        _, first_error = failures[0]
        raise TaskError(
            f"{len(failures)} of {len(items)} chunks failed; the others are stored, "
            f"and '{retry_hint}' retries the failed ones. First error: "
            f"{first_error!r}"
        ) from first_error
    return steps


def execute(
    items: list[WorkItem],
    execution: Execution,
    *,
    retry_hint: str | None = None,
    totals: dict[str, float] | None = None,
) -> int:
    """Run every work item as ``execution`` specifies; return the RK4 steps taken.

    The items may belong to several atlases (the members of a sweep). They are
    submitted together, so one cluster serves them all. ``retry_hint`` is the
    command that retries failed chunks, quoted in the error message.

    Raises
    ------
    RuntimeError
        If a task failed; the other tasks' chunks are stored.
    """
    if not items:
        return 0
    if execution.scheduler is None and execution.cluster == "synchronous":
        return _run_synchronous(items, execution, totals)
    paths = sorted({str(item.path) for item in items})
    retry_hint = retry_hint or f"basins resume {paths[0] if len(paths) == 1 else 'PATH'}"
    return _run_distributed(items, execution, retry_hint, totals)


def run_tasks(
    config: Config,
    path: Path,
    chunks: list[int],
    execution: Execution,
    task: Task = compute_chunk,
    *,
    name: str = "chunk",
    retry_hint: str | None = None,
) -> int:
    """Run ``task`` once per chunk of one atlas and return the total RK4 steps.

    Parameters
    ----------
    config : Config
        The atlas's configuration, sent to every task as plain data.
    path : path
        The atlas; each task writes its own chunks into it.
    chunks : list of int
        Chunk indices, each passed to one call of ``task``.
    execution : Execution
        Where the tasks run.
    task : callable, optional
        Called as ``task(config_data, path, chunk, numba_threads)``; returns a dict
        with the RK4 steps it took under ``"steps"``. Default: one chunk of a map.
    name : str, optional
        Names the tasks' Dask keys.
    retry_hint : str, optional
        The command that retries failed chunks, for the error message; default
        ``basins resume PATH``.
    """
    items = [WorkItem(Path(path), config, chunk, task, name) for chunk in chunks]
    return execute(items, execution, retry_hint=retry_hint)


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
    items = [WorkItem(path, config, chunk, writer_token=token) for chunk in chunks]
    totals: dict[str, float] = {}
    steps = execute(items, execution, totals=totals)
    lock.check_writer(path, token)
    merge_started = time.perf_counter()
    atlas.finalize(path)
    logger.info(
        "time in tasks, all workers together: integrate %.1f s, classify %.1f s, "
        "write %.1f s; catalog merge %.1f s",
        totals.get("integrate_seconds", 0.0),
        totals.get("classify_seconds", 0.0),
        totals.get("write_seconds", 0.0),
        time.perf_counter() - merge_started,
    )
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

    With ``sampling.initial = 'tokens'`` the model's token states are computed here,
    once, and stored in the atlas as ``initial_state``; the tasks read them from it.
    ClusterError
        If the cluster cannot start or gets no worker, or if the scheduler is lost
        before every chunk finished; the finished chunks stay stored.
    """
    if not isinstance(config, Config):
        raise TypeError(
            f"config must be a basins.Config, not {type(config).__name__}; read a "
            f"TOML file or a built-in example with basins.load_config(path) or "
            f"basins.load_config('example:NAME')"
        )
    execution = execution or Execution()
    config.check_step_size(stacklevel=2)
    check_execution(execution)
    path = Path(path)
    initial_state = None
    if config.sampling.initial == "tokens":
        initial_state = config.system.token_states(config.sampling.text)
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
        atlas.create_atlas(
            path,
            config,
            overwrite=overwrite,
            token=writer.token,
            initial_state=initial_state,
        )
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
    ClusterError
        If the cluster cannot start or gets no worker, or if the scheduler is lost
        before every chunk finished; the finished chunks stay stored.
    """
    execution = execution or Execution()
    check_execution(execution)
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


def check_execution(execution: Execution) -> None:
    """Check, before anything is written, that ``execution`` can start its workers.

    Raises
    ------
    ConfigError
        If a local cluster, or a synchronous run, would use more threads than there
        are cores.
    ClusterError
        If the submit command of a batch system is missing.
    """
    if execution.scheduler is None and execution.cluster == "local":
        execution.local_layout()
    threads = execution.numba_threads
    if execution.scheduler is None and execution.cluster == "synchronous" and threads:
        cores = available_cores()
        if threads > cores:
            raise ConfigError(
                f"{threads} Numba threads (--threads) exceed the {cores} available "
                f"cores of a synchronous run; use at most {cores}"
            )
    if execution.batch:
        clusters.check_submit_command(execution.cluster)

