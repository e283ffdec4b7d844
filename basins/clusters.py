"""Dask clusters for a basin map: local worker processes, an existing scheduler, or
worker jobs on a SLURM or PBS batch system.

Batch jobs go through dask-jobqueue. Their settings (queue, cores, memory, walltime,
number of jobs and others) have defaults in ``clusters.yaml`` beside this module,
loaded into ``dask.config`` under ``basins.jobqueue``. A user's Dask configuration
files and ``DASK_BASINS__JOBQUEUE__*`` environment variables override the defaults,
and explicit options override both (see `job_settings`).

Every worker process runs one task at a time (one Dask thread) with a pool of
``cores // processes`` Numba threads, so that the Numba threads of a job never exceed
its cores. The job script exports ``NUMBA_NUM_THREADS``, ``NUMBA_THREADING_LAYER`` and
``NUMBA_CACHE_DIR`` (a node-local directory) before the worker starts, because Numba
reads them once, at import.

Workers retire before the walltime (``lifetime``), and the cluster replaces every job
that ends, whether by lifetime, walltime, preemption or ``scancel``. A task that was
running on a lost worker runs again elsewhere. Since a task writes whole chunks, with
``status`` last, the repeat writes the same bytes.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.config
import yaml
from dask.utils import parse_bytes, parse_timedelta

from basins.errors import ClusterError, ConfigError

if TYPE_CHECKING:
    from distributed import Client
    from distributed.deploy import Cluster

    from basins.mapping import Execution

logger = logging.getLogger(__name__)

DEFAULTS_FILE = Path(__file__).with_name("clusters.yaml")
CONFIG_KEY = "basins.jobqueue"
BATCH_SYSTEMS = ("slurm", "pbs")
# Command that submits a job, per batch system.
SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub"}
# Start of the walltime line that dask-jobqueue writes into a job script's header.
WALLTIME_DIRECTIVES = {"slurm": "#SBATCH -t ", "pbs": "#PBS -l walltime="}
THREADING_LAYERS = ("workqueue", "omp", "tbb")
# Seconds between two log lines while the run waits for its first worker.
WAIT_LOG_INTERVAL = 60.0
# Walltime as [D-]HH:MM:SS, the form that both SLURM and PBS (without the day) read.
WALLTIME_PATTERN = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$")


def _read_defaults() -> dict[str, Any]:
    with DEFAULTS_FILE.open() as file:
        return yaml.safe_load(file)


DEFAULTS = _read_defaults()
dask.config.update_defaults(DEFAULTS)


def _config_name(field_name: str) -> str:
    return f"{CONFIG_KEY}.{field_name.replace('_', '-')}"


def _invalid(field_name: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(
        f"{_config_name(field_name)} = {value!r} is invalid: expected {expected}"
    )


def _is_count(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _walltime_seconds(value: Any) -> int | None:
    """Return the walltime in seconds. An integer is seconds, as YAML reads 01:00:00."""
    if value is None:
        return None
    if _is_count(value, 1):
        return value
    match = WALLTIME_PATTERN.match(value) if isinstance(value, str) else None
    if match is None:
        raise _invalid(
            "walltime", value, "HH:MM:SS, D-HH:MM:SS, a number of seconds, or null"
        )
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total < 1:
        raise _invalid("walltime", value, "a positive duration")
    return total


def _duration_seconds(
    field_name: str, value: Any, *, allow_zero: bool = False
) -> float:
    try:
        seconds = parse_timedelta(value)
    except (ValueError, TypeError, KeyError):
        seconds = None
    if seconds is None or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise _invalid(field_name, value, f"a duration {bound} such as '50m' or 3000")
    return float(seconds)


def _lines(field_name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise _invalid(field_name, value, "a list of strings")
    if not all(isinstance(line, str) for line in value):
        raise _invalid(field_name, value, "a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class JobSettings:
    """Settings of the worker jobs of a SLURM or PBS cluster.

    Every field is a key of ``basins.jobqueue`` in ``clusters.yaml``, with dashes
    for underscores; that file gives the meaning and the default of each. Build one
    with `job_settings`, which merges the configuration and explicit overrides.

    Raises
    ------
    ConfigError
        If a value is invalid; the message names its configuration key.
    """

    queue: str | None
    account: str | None
    cores: int
    memory: str
    processes: int
    walltime: str | None
    minimum_jobs: int
    maximum_jobs: int
    job_name: str
    job_script_prologue: tuple[str, ...]
    job_extra_directives: tuple[str, ...]
    interface: str | None
    dashboard_address: str | None
    log_directory: str | None
    local_directory: str | None
    python: str | None
    lifetime: str | float | None
    lifetime_stagger: str | float
    lifetime_restart: bool
    numba_threading_layer: str
    numba_cache_dir: str
    worker_timeout: str | float | None

    def __post_init__(self) -> None:
        self._check_text()
        self._check_resources()
        self._check_timing()

    def _check_text(self) -> None:
        for name in (
            "queue",
            "account",
            "interface",
            "dashboard_address",
            "log_directory",
            "local_directory",
            "python",
        ):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise _invalid(name, value, "a non-empty string or null")
        for name in ("job_name", "numba_cache_dir"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise _invalid(name, value, "a non-empty string")
        for name in ("job_script_prologue", "job_extra_directives"):
            object.__setattr__(self, name, _lines(name, getattr(self, name)))
        if self.numba_threading_layer not in THREADING_LAYERS:
            raise _invalid(
                "numba_threading_layer",
                self.numba_threading_layer,
                f"one of {', '.join(THREADING_LAYERS)}",
            )

    def _check_resources(self) -> None:
        if not _is_count(self.cores, 1):
            raise _invalid("cores", self.cores, "an integer >= 1")
        if not _is_count(self.processes, 1) or self.processes > self.cores:
            raise _invalid(
                "processes",
                self.processes,
                f"an integer from 1 to cores = {self.cores}",
            )
        try:
            memory = parse_bytes(self.memory)
        except (ValueError, TypeError):
            memory = 0
        if memory <= 0:
            raise _invalid("memory", self.memory, "a size with a unit such as '4GiB'")
        if not _is_count(self.maximum_jobs, 1):
            raise _invalid("maximum_jobs", self.maximum_jobs, "an integer >= 1")
        if not _is_count(self.minimum_jobs, 0) or self.minimum_jobs > self.maximum_jobs:
            raise _invalid(
                "minimum_jobs",
                self.minimum_jobs,
                f"an integer from 0 to maximum-jobs = {self.maximum_jobs}",
            )

    def _check_timing(self) -> None:
        walltime = _walltime_seconds(self.walltime)
        if walltime is not None:
            hours, rest = divmod(walltime, 3600)
            object.__setattr__(
                self, "walltime", f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
            )
        if not isinstance(self.lifetime_restart, bool):
            raise _invalid("lifetime_restart", self.lifetime_restart, "true or false")
        # lifetime_seconds checks the lifetime and the stagger against the walltime.
        if self.lifetime_seconds() is None and self.lifetime_restart:
            raise _invalid(
                "lifetime_restart",
                True,
                "false when workers have no lifetime; set lifetime or walltime",
            )
        if self.worker_timeout is not None:
            _duration_seconds("worker_timeout", self.worker_timeout)

    def lifetime_seconds(self) -> float | None:
        """Return the worker lifetime in seconds, or None when workers never retire.

        An unset lifetime is ``walltime - 2 * lifetime_stagger``, so that a worker
        retires between one and three staggers before its job's walltime.

        Raises
        ------
        ConfigError
            If a worker could outlive the walltime, or if the walltime is too short
            to derive a lifetime from it.
        """
        stagger = _duration_seconds(
            "lifetime_stagger", self.lifetime_stagger, allow_zero=True
        )
        walltime = _walltime_seconds(self.walltime)
        if self.lifetime is None:
            if walltime is None:
                return None
            if walltime <= 3 * stagger:
                raise _invalid(
                    "walltime",
                    self.walltime,
                    f"more than 3 x lifetime-stagger = {3 * stagger:g} s to derive the "
                    f"lifetime from it; set lifetime or a shorter lifetime-stagger",
                )
            return walltime - 2 * stagger

        lifetime = _duration_seconds("lifetime", self.lifetime)
        if stagger >= lifetime:
            raise _invalid(
                "lifetime_stagger",
                self.lifetime_stagger,
                f"less than lifetime = {lifetime:g} s",
            )
        if walltime is not None and lifetime + stagger >= walltime:
            raise _invalid(
                "lifetime",
                self.lifetime,
                f"lifetime + lifetime-stagger below the walltime of {walltime} s, so "
                f"that workers retire before their job is killed",
            )
        return lifetime

    def worker_timeout_seconds(self) -> float | None:
        """Return the time to wait for the first worker, or None to wait without end."""
        if self.worker_timeout is None:
            return None
        return _duration_seconds("worker_timeout", self.worker_timeout)

    def numba_threads(self, requested: int | None = None) -> int:
        """Return the Numba threads of each worker process.

        Parameters
        ----------
        requested : int, optional
            Threads asked for; by default all of the worker's share of the job,
            ``cores // processes``.

        Raises
        ------
        ConfigError
            If ``processes * requested`` exceeds the cores of a job.
        """
        share = self.cores // self.processes
        threads = requested or share
        if threads > share:
            raise ConfigError(
                f"{self.processes} worker processes x {threads} Numba threads = "
                f"{self.processes * threads} threads exceeds the {self.cores} cores "
                f"of a job; lower --threads or --processes, or raise --cores"
            )
        return threads


FIELD_NAMES = tuple(field.name for field in fields(JobSettings))


def job_settings(overrides: Mapping[str, Any] | None = None) -> JobSettings:
    """Return the job settings from ``dask.config``, with ``overrides`` applied.

    Parameters
    ----------
    overrides : mapping, optional
        Values that replace the configured ones, keyed by `JobSettings` field names
        (``minimum_jobs``) or configuration keys (``minimum-jobs``).

    Returns
    -------
    JobSettings
        The validated settings.

    Raises
    ------
    ConfigError
        If a key is unknown or a value is invalid.
    """
    allowed = ", ".join(name.replace("_", "-") for name in FIELD_NAMES)
    values = {
        key.replace("-", "_"): value
        for key, value in DEFAULTS["basins"]["jobqueue"].items()
    }
    for key, value in dask.config.get(CONFIG_KEY, default={}).items():
        name = key.replace("-", "_")
        if name not in FIELD_NAMES:
            raise ConfigError(
                f"unknown key {CONFIG_KEY}.{key}: allowed keys are {allowed}"
            )
        values[name] = value
    for key, value in (overrides or {}).items():
        name = key.replace("-", "_")
        if name not in FIELD_NAMES:
            raise ConfigError(f"unknown cluster option {key!r}: allowed are {allowed}")
        values[name] = value
    return JobSettings(**values)


@contextlib.contextmanager
def config_file(path: str | Path) -> Iterator[None]:
    """Apply the Dask configuration in the YAML file ``path`` inside the block.

    The file has the layout of ``clusters.yaml`` (``basins: jobqueue: ...``) and may
    hold any other Dask settings, such as ``jobqueue:`` or ``distributed:``.

    Raises
    ------
    ConfigError
        If the file cannot be read or is not a YAML mapping.
    """
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cluster configuration {str(path)!r} cannot be read: {exc}"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"cluster configuration {str(path)!r} is invalid: expected a YAML mapping "
            f"such as 'basins: {{jobqueue: {{queue: debug}}}}', not a "
            f"{type(data).__name__}"
        )
    # Leaving the block removes every key that was missing when it began, so the
    # defaults of dask-jobqueue must be loaded (by importing it) before it begins.
    import dask_jobqueue  # noqa: F401

    with dask.config.set(_flatten(data)):
        yield


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return ``{"a.b.c": value}`` for a nested mapping, so that settings merge."""
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def worker_environment(settings: JobSettings, numba_threads: int) -> dict[str, str]:
    """Return the environment variables that a job exports before its worker starts.

    ``NUMBA_CACHE_DIR`` is left for the job's shell to expand, so that it names a
    directory on the compute node.
    """
    return {
        "NUMBA_NUM_THREADS": str(numba_threads),
        "NUMBA_THREADING_LAYER": settings.numba_threading_layer,
        "NUMBA_CACHE_DIR": settings.numba_cache_dir,
    }


def job_script_prologue(settings: JobSettings, numba_threads: int) -> list[str]:
    """Return the shell lines that run before the worker: the configured prologue
    (from dask-jobqueue's configuration, then basins'), then the Numba exports."""
    exports = [
        f'export {name}="{value}"'
        for name, value in worker_environment(settings, numba_threads).items()
    ]
    return [*settings.job_script_prologue, *exports]


def _worker_arguments(settings: JobSettings) -> list[str]:
    lifetime = settings.lifetime_seconds()
    if lifetime is None:
        return []
    stagger = _duration_seconds(
        "lifetime_stagger", settings.lifetime_stagger, allow_zero=True
    )
    restart = (
        "--lifetime-restart" if settings.lifetime_restart else "--no-lifetime-restart"
    )
    return [
        "--lifetime",
        f"{lifetime:g}s",
        "--lifetime-stagger",
        f"{stagger:g}s",
        restart,
    ]


def _job_keywords(
    system: str, settings: JobSettings, numba_threads: int
) -> dict[str, Any]:
    """Return the keyword arguments of dask-jobqueue's cluster and job classes.

    dask-jobqueue gives each worker process ``cores / processes`` Dask threads. basins
    wants one Dask thread per process and the job's cores for Numba, so it passes
    ``cores = processes`` and requests the cores of the job directly: ``job_cpu`` on
    SLURM, ``resource_spec`` on PBS.
    """
    from dask_jobqueue.pbs import pbs_format_bytes_ceil

    section = f"jobqueue.{system}"

    def configured(key: str) -> list[str]:
        return list(dask.config.get(f"{section}.{key}", default=None) or [])

    keywords: dict[str, Any] = {
        "queue": settings.queue,
        "account": settings.account,
        "cores": settings.processes,
        "processes": settings.processes,
        "memory": settings.memory,
        "walltime": settings.walltime,
        "job_name": settings.job_name,
        "interface": settings.interface,
        "local_directory": settings.local_directory,
        "python": settings.python,
        "job_script_prologue": [
            *configured("job-script-prologue"),
            *job_script_prologue(settings, numba_threads),
        ],
        "job_extra_directives": [
            *configured("job-extra-directives"),
            *settings.job_extra_directives,
        ],
        "worker_extra_args": [
            *configured("worker-extra-args"),
            *_worker_arguments(settings),
        ],
    }
    if settings.walltime is None:
        # Without a walltime line the queue's default limit applies; dask-jobqueue
        # would otherwise write its own default.
        keywords["job_directives_skip"] = [
            *configured("job-directives-skip"),
            WALLTIME_DIRECTIVES[system],
        ]
    if settings.log_directory is not None:
        keywords["log_directory"] = str(Path(settings.log_directory).resolve())
    if system == "slurm":
        keywords["job_cpu"] = settings.cores
    else:
        memory = pbs_format_bytes_ceil(parse_bytes(settings.memory))
        keywords["resource_spec"] = f"select=1:ncpus={settings.cores}:mem={memory}"
    # Unset values fall back to dask-jobqueue's own configuration.
    return {key: value for key, value in keywords.items() if value is not None}


def _job_class(system: str):
    if system == "slurm":
        from dask_jobqueue.slurm import SLURMJob

        return SLURMJob
    if system == "pbs":
        from dask_jobqueue.pbs import PBSJob

        return PBSJob
    raise ConfigError(
        f"cluster = {system!r} is invalid: expected one of {', '.join(BATCH_SYSTEMS)}"
    )


def job_script(
    system: str, settings: JobSettings, numba_threads: int | None = None
) -> str:
    """Return the job script that a worker job of ``system`` would run.

    Needs no batch system: the scheduler address in the script is a placeholder.
    dask-jobqueue creates the log directory, if one is set and missing.

    Parameters
    ----------
    system : {'slurm', 'pbs'}
        The batch system.
    settings : JobSettings
        The job settings.
    numba_threads : int, optional
        Numba threads per worker process; by default ``cores // processes``.
    """
    job_class = _job_class(system)
    threads = settings.numba_threads(numba_threads)
    job = job_class(
        scheduler="tcp://SCHEDULER-ADDRESS:8786",
        name="basins-worker",
        **_job_keywords(system, settings, threads),
    )
    return job.job_script()


def check_submit_command(system: str) -> None:
    """Raise `ClusterError` unless the command that submits jobs to ``system`` is on
    ``PATH``."""
    submit = SUBMIT_COMMANDS[system]
    if shutil.which(submit) is None:
        raise ClusterError(
            f"--cluster {system} submits worker jobs with {submit}, which is not on "
            f"PATH; run basins where {submit} works (a login node), or use --cluster "
            f"local"
        )


def start_batch_cluster(
    system: str, settings: JobSettings, numba_threads: int
) -> Cluster:
    """Start a Dask scheduler here and submit worker jobs to ``system``.

    The jobs are kept between ``settings.minimum_jobs`` and ``settings.maximum_jobs``
    by Dask's adaptive scaling, which also replaces every job that ends.

    Raises
    ------
    ClusterError
        If the command that submits jobs is not on ``PATH``.
    """
    job_class = _job_class(system)
    check_submit_command(system)
    if system == "slurm":
        from dask_jobqueue import SLURMCluster as cluster_class
    else:
        from dask_jobqueue import PBSCluster as cluster_class

    if settings.dashboard_address is None:
        scheduler_options = {"dashboard": False, "dashboard_address": None}
    else:
        scheduler_options = {"dashboard_address": settings.dashboard_address}
    cluster = cluster_class(
        scheduler_options=scheduler_options,
        **_job_keywords(system, settings, numba_threads),
    )
    logger.debug(
        "job script of the %s workers:\n%s", job_class.__name__, cluster.job_script()
    )
    cluster.adapt(
        minimum_jobs=settings.minimum_jobs, maximum_jobs=settings.maximum_jobs
    )
    logger.info(
        "scheduler %s; %s jobs of %d cores, %s, walltime %s, %d worker processes x %d "
        "Numba threads each; job logs in %s",
        cluster.scheduler_address,
        settings.minimum_jobs
        if settings.minimum_jobs == settings.maximum_jobs
        else f"{settings.minimum_jobs} to {settings.maximum_jobs}",
        settings.cores,
        settings.memory,
        settings.walltime or "default",
        settings.processes,
        numba_threads,
        settings.log_directory or "the working directory",
    )
    return cluster


def wait_for_first_worker(
    client: Client, timeout: float | None, log_directory: str | None
) -> None:
    """Block until a worker has connected, logging every minute while it waits.

    Raises
    ------
    ClusterError
        If no worker connected within ``timeout`` seconds.
    """
    started = time.monotonic()
    while True:
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            logs = log_directory or "the working directory"
            raise ClusterError(
                f"no worker connected within {timeout:g} s: the jobs may still wait in "
                f"the queue, or exit at start. See squeue or qstat, and the job logs "
                f"in {logs}"
            )
        step = WAIT_LOG_INTERVAL
        if timeout is not None:
            step = min(step, timeout - waited)
        try:
            client.wait_for_workers(1, timeout=step)
        except TimeoutError:
            logger.info(
                "no worker has connected after %.0f s; waiting",
                time.monotonic() - started,
            )
        else:
            logger.info(
                "first worker connected after %.1f s", time.monotonic() - started
            )
            return


def connect(address: str) -> Client:
    """Return a client of the running scheduler at ``address``.

    Parameters
    ----------
    address : str
        A scheduler address such as ``tcp://10.0.0.1:8786``, or the path of a
        scheduler file (``*.json``) as written by ``dask scheduler --scheduler-file``.

    Raises
    ------
    ClusterError
        If the scheduler file is missing or the scheduler does not respond.
    """
    from distributed import Client

    try:
        if "://" not in address and address.endswith(".json"):
            if not Path(address).is_file():
                raise ClusterError(f"scheduler file {address!r} not found")
            return Client(scheduler_file=address)
        return Client(address)
    except OSError as exc:
        raise ClusterError(
            f"cannot connect to the Dask scheduler at {address!r}: {exc}"
        ) from None


@dataclass(frozen=True)
class Session:
    """A client of a running cluster, and the Numba threads that each task uses.

    ``settings`` are the job settings of a batch cluster, None for other clusters.
    """

    client: Client
    numba_threads: int | None
    settings: JobSettings | None = None

    def wait_for_first_worker(self) -> None:
        """Block until a worker of a batch cluster has connected; return at once for
        other clusters. Call it after submitting the tasks, because adaptive scaling
        with ``minimum_jobs = 0`` submits jobs only for waiting tasks.

        Raises
        ------
        ClusterError
            If no worker connected within the worker timeout.
        """
        if self.settings is not None:
            wait_for_first_worker(
                self.client,
                self.settings.worker_timeout_seconds(),
                self.settings.log_directory,
            )


def _close_client(client: Client) -> None:
    if client.status == "running":
        client.close()
        return
    # The client lost its scheduler and is trying to reconnect. Closing it cancels the
    # attempt, which distributed logs as an error with a traceback; the run reports
    # the lost scheduler itself.
    client_logger = logging.getLogger("distributed.client")
    level = client_logger.level
    client_logger.setLevel(logging.CRITICAL)
    try:
        client.close()
    finally:
        client_logger.setLevel(level)


@contextlib.contextmanager
def _workers_ignore_sigint() -> Iterator[None]:
    """Start worker processes with SIGINT ignored, which they inherit.

    Ctrl-C reaches every process of the terminal's foreground group. The driver
    turns it into an orderly stop that closes the cluster; workers that caught it
    themselves would each print a traceback first. Outside the main thread the
    handler cannot be changed, and workers keep the default.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def open_session(execution: Execution) -> Iterator[Session]:
    """Start or connect to the cluster that ``execution`` names; close it on exit.

    Closing a batch cluster cancels its jobs. The session does not wait for workers;
    see `Session.wait_for_first_worker`.

    Raises
    ------
    ClusterError
        If the cluster cannot start.
    ConfigError
        If the execution settings are invalid.
    """
    from distributed import Client, LocalCluster

    if execution.scheduler is not None:
        client = connect(execution.scheduler)
        logger.info("connected to scheduler %s", execution.scheduler)
        try:
            yield Session(client, execution.numba_threads)
        finally:
            _close_client(client)
        return

    settings = None
    if execution.cluster == "local":
        workers, threads = execution.local_layout()
        with _workers_ignore_sigint():
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                # Loopback only, on a free port; served only where bokeh is installed.
                dashboard_address="127.0.0.1:0",
                env={"NUMBA_NUM_THREADS": str(threads)},
            )
        logger.info(
            "started a local cluster: %d workers x %d Numba threads", workers, threads
        )
    else:
        settings = execution.job_settings()
        threads = settings.numba_threads(execution.numba_threads)
        cluster = start_batch_cluster(execution.cluster, settings, threads)
    try:
        with Client(cluster) as client:
            yield Session(client, threads, settings)
    finally:
        cluster.close()
