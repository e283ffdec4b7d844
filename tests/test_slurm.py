"""Runs against a real SLURM scheduler: worker jobs through dask-jobqueue, killed jobs,
a lost cluster, retiring workers and the in-allocation batch script.

The tests need a SLURM controller and node that accept jobs on this machine, such as
the one that ``cluster/slurm/start-slurm.sh`` starts (partition ``debug``, two CPUs).
Without one they are skipped, or fail when ``CI=true``. Worker jobs import the
``basins`` package that the tests import, through ``PYTHONPATH`` in the job prologue,
and talk to the scheduler over loopback.
"""

from __future__ import annotations

import itertools
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numba
import numpy as np
import pytest
import yaml
import zarr
from test_mapping import assert_identical

import basins
from basins import ClusterError, Execution, load_config, run
from basins.atlas import create_atlas, pending_chunks
from basins.clusters import open_session
from basins.kernels import STATUS_PENDING
from basins.mapping import compute_chunk

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

PARTITION = "debug"
REPOSITORY = Path(__file__).resolve().parent.parent
PACKAGE_PARENT = Path(basins.__file__).resolve().parent.parent
# Seconds to wait for jobs to start, runs to finish and jobs to leave the queue.
TIMEOUT = 180
# 60 chunks of 400 initial conditions: each task is short, so a run consists mostly
# of scheduling and writing chunks and lasts long enough to be interrupted while both
# workers compute.
MEDIUM_TOML = """\
[system]
n_tokens = 4
dim = 3
beta = 2.0
K = { diagonal = [1.0, 0.5, -3.0] }
V = { diagonal = [1.0, 0.5, -3.0] }

[sampling]
n_initial = 24000
seed = 9
chunk_size = 400
"""
MEDIUM_CHUNKS = 60
SMALL_TOML = MEDIUM_TOML.replace("n_initial = 24000", "n_initial = 4000").replace(
    "chunk_size = 400", "chunk_size = 500"
)
_job_numbers = itertools.count()


def _slurm_unavailable() -> str | None:
    """Return why no SLURM can take jobs here, or None when one can."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return "the SLURM client commands (sbatch, scontrol) are not installed"
    ping = subprocess.run(
        ["scontrol", "ping"], capture_output=True, text=True, check=False
    )
    if "is UP" not in ping.stdout:
        return "no SLURM controller answers 'scontrol ping'"
    states = subprocess.run(
        ["sinfo", "-h", "-p", PARTITION, "-o", "%a %T"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if len(states) < 2 or states[0] != "up":
        return (
            f"partition {PARTITION!r} is missing or down (sinfo: {' '.join(states)!r})"
        )
    if states[1] not in ("idle", "mixed", "allocated", "completing"):
        return (
            f"the node of partition {PARTITION!r} cannot take jobs: it is {states[1]}"
        )
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    reason = _slurm_unavailable()
    if reason is None:
        return
    message = f"{reason}; start one with 'bash cluster/slurm/start-slurm.sh'"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"CI is set, so the SLURM tests must run: {message}")
    pytest.skip(message)


@pytest.fixture
def job_name(slurm):
    """A job name of this test alone; its jobs are cancelled when the test ends."""
    name = f"basins-test-{os.getpid()}-{next(_job_numbers)}"
    yield name
    subprocess.run(["scancel", "--name", name], check=False)


def batch_options(tmp_path: Path, job_name: str, **changes) -> dict:
    options = {
        "queue": PARTITION,
        "cores": 1,
        "processes": 1,
        "memory": "1GiB",
        "walltime": "00:10:00",
        "minimum_jobs": 2,
        "maximum_jobs": 2,
        "job_name": job_name,
        "interface": "lo",
        "dashboard_address": None,
        "log_directory": str(tmp_path / "logs"),
        "worker_timeout": TIMEOUT,
        "job_script_prologue": [
            f"export PYTHONPATH={shlex.quote(str(PACKAGE_PARENT))}"
        ],
    }
    options.update(changes)
    return options


def write_cluster_config(path: Path, options: dict) -> Path:
    jobqueue = {key.replace("_", "-"): value for key, value in options.items()}
    path.write_text(yaml.safe_dump({"basins": {"jobqueue": jobqueue}}))
    return path


def basins_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "basins.cli", "-q", *arguments]


def on_slurm(cluster_config: Path) -> list[str]:
    """Return the options of a run or resume on SLURM with ``cluster_config``."""
    return [
        "--cluster",
        "slurm",
        "--cluster-config",
        str(cluster_config),
        "--no-progress",
    ]


def driver_environment(**variables: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT), **variables}


def wait_until(condition, description: str, timeout: float = TIMEOUT):
    """Poll ``condition`` until it returns a true value, and return that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting until {description}")


def jobs(name: str, state: str | None = None) -> list[str]:
    command = ["squeue", "-h", "--name", name, "-o", "%A"]
    if state is not None:
        command += ["-t", state]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return output.split()


def chunks_done(path: Path) -> int:
    """Return the number of chunks whose statuses are all written."""
    try:
        status = zarr.open_group(str(path), mode="r")["status"][:]
        size = zarr.open_group(str(path), mode="r")["status"].chunks[0]
    except (FileNotFoundError, KeyError, ValueError):
        return 0
    pending = status == STATUS_PENDING
    return sum(
        1
        for start in range(0, len(status), size)
        if not pending[start : start + size].any()
    )


def job_logs(tmp_path: Path) -> dict[str, str]:
    """Return the error log of every worker job, by job id."""
    return {
        path.stem.rsplit("-", 1)[-1]: path.read_text()
        for path in sorted((tmp_path / "logs").glob("*.err"))
    }


@pytest.fixture(scope="module")
def medium(tmp_path_factory, slurm):
    """The configuration file of the medium run and its atlas from a local cluster."""
    folder = tmp_path_factory.mktemp("medium")
    config_path = folder / "medium.toml"
    config_path.write_text(MEDIUM_TOML)
    reference = folder / "reference.zarr"
    run(load_config(config_path), reference, execution=Execution(progress=False))
    return config_path, reference


def test_two_jobs_match_local_run(tmp_path, job_name, small_config):
    run(small_config, tmp_path / "local.zarr", execution=Execution(progress=False))
    execution = Execution(
        cluster="slurm",
        progress=False,
        cluster_options=batch_options(tmp_path, job_name),
    )
    summary = run(small_config, tmp_path / "slurm.zarr", execution=execution)

    assert summary.chunks_pending == 0
    assert_identical(tmp_path / "local.zarr", tmp_path / "slurm.zarr")
    logs = job_logs(tmp_path)
    assert len(logs) == 2, f"expected two worker jobs, found logs of {sorted(logs)}"
    for job_id, text in logs.items():
        assert "Registered to:" in text, f"the worker of job {job_id} never connected"
    # Cancelled jobs stay listed while SLURM completes them, longer on a busy machine.
    wait_until(
        lambda: jobs(job_name) == [],
        "the closed cluster's jobs leave the queue",
        timeout=120,
    )


def test_adaptive_jobs_start_for_waiting_tasks(tmp_path, job_name, small_config):
    options = batch_options(tmp_path, job_name, minimum_jobs=0, maximum_jobs=1)
    execution = Execution(cluster="slurm", progress=False, cluster_options=options)
    summary = run(small_config, tmp_path / "adaptive.zarr", execution=execution)

    assert summary.chunks_pending == 0
    assert len(job_logs(tmp_path)) >= 1
    run(small_config, tmp_path / "local.zarr", execution=Execution(progress=False))
    assert_identical(tmp_path / "local.zarr", tmp_path / "adaptive.zarr")


def test_jobs_that_never_connect_time_out(tmp_path, job_name, small_config):
    options = batch_options(
        tmp_path, job_name, job_script_prologue=["exit 3"], worker_timeout=8
    )
    execution = Execution(cluster="slurm", progress=False, cluster_options=options)
    with pytest.raises(ClusterError, match="no worker connected within 8 s"):
        run(small_config, tmp_path / "never.zarr", execution=execution)

    assert (
        len(pending_chunks(tmp_path / "never.zarr")) == small_config.sampling.n_chunks
    )
    wait_until(lambda: not jobs(job_name), "the failed jobs leave the queue")


def test_worker_threads_and_cache(tmp_path, job_name, small_config):
    """One job of 2 cores runs 2 worker processes with 1 Numba thread each."""
    options = batch_options(
        tmp_path, job_name, cores=2, processes=2, minimum_jobs=1, maximum_jobs=1
    )
    with open_session(Execution(cluster="slurm", cluster_options=options)) as session:
        client = session.client
        client.wait_for_workers(2, timeout=TIMEOUT)
        environment = {
            name: set(client.run(os.getenv, name).values())
            for name in (
                "NUMBA_NUM_THREADS",
                "NUMBA_THREADING_LAYER",
                "NUMBA_CACHE_DIR",
                "SLURM_JOB_ID",
                "SLURM_CPUS_PER_TASK",
            )
        }
        numba_threads = set(
            client.run(getattr, numba.config, "NUMBA_NUM_THREADS").values()
        )
        basins_files = set(client.run(getattr, basins, "__file__").values())
        address = client.scheduler.address
        run(
            small_config,
            tmp_path / "slurm.zarr",
            execution=Execution(scheduler=address, progress=False),
        )

    assert session.numba_threads == 1
    assert environment["NUMBA_NUM_THREADS"] == {"1"}
    assert numba_threads == {1}
    assert environment["NUMBA_THREADING_LAYER"] == {"workqueue"}
    (cache,) = environment["NUMBA_CACHE_DIR"]
    assert cache.endswith(f"/basins-numba-cache-{os.getuid()}")
    assert "$" not in cache
    assert len(environment["SLURM_JOB_ID"]) == 1, "both workers should share one job"
    assert environment["SLURM_CPUS_PER_TASK"] == {"2"}
    assert basins_files == {basins.__file__}
    run(small_config, tmp_path / "local.zarr", execution=Execution(progress=False))
    assert_identical(tmp_path / "local.zarr", tmp_path / "slurm.zarr")


def test_cancelled_worker_job_changes_nothing(tmp_path, job_name, medium):
    config_path, reference = medium
    cluster_config = write_cluster_config(
        tmp_path / "cluster.yaml", batch_options(tmp_path, job_name)
    )
    atlas = tmp_path / "cancelled.zarr"
    log = tmp_path / "driver.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            basins_command(
                "run",
                str(config_path),
                "--out",
                str(atlas),
                *on_slurm(cluster_config),
            ),
            stdout=output,
            stderr=subprocess.STDOUT,
            env=driver_environment(),
        )
    try:
        running = wait_until(
            lambda: (
                len(jobs(job_name, "R")) == 2
                and chunks_done(atlas) >= 2
                and jobs(job_name, "R")
            ),
            "both worker jobs run and two chunks are stored",
        )
        victim = running[0]
        subprocess.run(["scancel", victim], check=True)
        done_at_cancel = chunks_done(atlas)
        returncode = process.wait(timeout=TIMEOUT)
    finally:
        process.kill()

    assert returncode == 0, log.read_text()
    assert done_at_cancel < MEDIUM_CHUNKS, "the run ended before the job was cancelled"
    assert "CANCELLED" in job_logs(tmp_path)[victim]
    assert pending_chunks(atlas) == []
    assert_identical(reference, atlas)


def test_lost_cluster_completed_by_resume(tmp_path, job_name, medium):
    config_path, reference = medium
    options = batch_options(tmp_path, job_name)
    atlas = tmp_path / "lost.zarr"
    log = tmp_path / "driver.log"
    with open_session(Execution(cluster="slurm", cluster_options=options)) as session:
        session.client.wait_for_workers(2, timeout=TIMEOUT)
        with log.open("w") as output:
            process = subprocess.Popen(
                basins_command(
                    "run",
                    str(config_path),
                    "--out",
                    str(atlas),
                    "--scheduler",
                    session.client.scheduler.address,
                    "--threads",
                    "1",
                    "--no-progress",
                ),
                stdout=output,
                stderr=subprocess.STDOUT,
                env=driver_environment(),
            )
        try:
            wait_until(lambda: chunks_done(atlas) >= 4, "four chunks are stored")
        except AssertionError:
            process.kill()
            raise
    # Leaving the block closed the scheduler and cancelled both worker jobs.
    try:
        returncode = process.wait(timeout=TIMEOUT)
    finally:
        process.kill()
    wait_until(lambda: not jobs(job_name), "the cancelled jobs leave the queue")

    assert returncode == 2, log.read_text()
    assert "lost the connection to the Dask scheduler" in log.read_text()
    assert f"'basins resume {atlas}'" in log.read_text()
    unfinished = pending_chunks(atlas)
    assert 0 < len(unfinished) < MEDIUM_CHUNKS

    cluster_config = write_cluster_config(tmp_path / "cluster.yaml", options)
    resumed = subprocess.run(
        basins_command(
            "resume",
            str(atlas),
            *on_slurm(cluster_config),
        ),
        capture_output=True,
        text=True,
        env=driver_environment(),
        timeout=TIMEOUT,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert pending_chunks(atlas) == []
    assert_identical(reference, atlas)


# The medium system with a step 25 times shorter: each initial condition costs about
# 25 times more, so chunks of about 1 s of work stay small.
SLOW_TOML = MEDIUM_TOML + """
[integration]
dt = 0.002
max_steps = 500000
"""


def ics_per_second(folder: Path) -> float:
    """Return how many initial conditions of the slow system one core computes per
    second here, now, with the compiled kernels loaded, in chunks of 2000."""
    text = SLOW_TOML.replace("n_initial = 24000", "n_initial = 8000")
    config = load_config_text(folder / "rate.toml", text.replace("chunk_size = 400", "chunk_size = 2000"))
    path = folder / "rate.zarr"
    create_atlas(path, config)
    compute_chunk(config.to_dict(), str(path), 0, 1)
    started = time.perf_counter()
    for chunk in (1, 2, 3):
        compute_chunk(config.to_dict(), str(path), chunk, 1)
    return 3 * config.sampling.chunk_size / (time.perf_counter() - started)


def load_config_text(path: Path, text: str):
    path.write_text(text)
    return load_config(path)


def test_retired_workers_are_replaced(tmp_path, job_name):
    """One job at a time, whose worker retires after 20 s. The run contains about
    1.2 lifetimes of work for one core, so it needs at least two jobs: a worker also
    spends part of its lifetime starting up. Each chunk is about 1 s of work, so
    that a worker finishes chunks within its lifetime even on a loaded machine."""
    lifetime = 20
    chunk_size = max(400, round(ics_per_second(tmp_path)))
    chunks = math.ceil(1.2 * lifetime)
    config_path = tmp_path / "retired.toml"
    config = load_config_text(
        config_path,
        SLOW_TOML.replace("n_initial = 24000", f"n_initial = {chunk_size * chunks}")
        .replace("chunk_size = 400", f"chunk_size = {chunk_size}"),
    )
    options = batch_options(
        tmp_path,
        job_name,
        minimum_jobs=1,
        maximum_jobs=1,
        lifetime=f"{lifetime}s",
        lifetime_stagger="1s",
    )
    cluster_config = write_cluster_config(tmp_path / "cluster.yaml", options)
    atlas_path = tmp_path / "retired.zarr"
    # Replace a retired job 1 s after its worker leaves, instead of 15 s.
    environment = driver_environment(DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT="1s")
    try:
        result = subprocess.run(
            basins_command(
                "run",
                str(config_path),
                "--out",
                str(atlas_path),
                *on_slurm(cluster_config),
            ),
            capture_output=True,
            text=True,
            env=environment,
            timeout=2 * TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"the run did not finish within {2 * TIMEOUT} s; job logs: "
            f"{sorted(job_logs(tmp_path))}"
        )

    assert result.returncode == 0, result.stderr
    logs = job_logs(tmp_path)
    assert len(logs) >= 2, f"no job replaced a retired one: logs of {sorted(logs)}"
    assert any("worker-lifetime-reached" in text for text in logs.values())
    run(config, tmp_path / "reference.zarr", execution=Execution(progress=False))
    assert_identical(tmp_path / "reference.zarr", atlas_path)


def submit_map_in_allocation(
    tmp_path: Path, config_path: Path, atlas: Path, *options: str
) -> None:
    """Submit the in-allocation script with two one-core tasks and wait for it."""
    script = REPOSITORY / "cluster" / "slurm" / "map-in-allocation.sbatch"
    environment = driver_environment(
        BASINS_PYTHON=sys.executable,
        BASINS_INTERFACE="lo",
        BASINS_DASHBOARD_ADDRESS="none",
    )
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--ntasks=2",
            "--cpus-per-task=1",
            f"--partition={PARTITION}",
            "--job-name=basins-test-map",
            f"--output={tmp_path}/map-%j.out",
            str(script),
            str(config_path),
            str(atlas),
            "--no-progress",
            *options,
        ],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
        cwd=tmp_path,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    try:
        wait_until(
            lambda: (
                not subprocess.run(
                    ["squeue", "-h", "-j", job_id],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout.strip()
            ),
            f"job {job_id} ends",
        )
    finally:
        subprocess.run(["scancel", job_id], check=False)
    details = subprocess.run(
        ["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True
    ).stdout
    output = (tmp_path / f"map-{job_id}.out").read_text()
    assert "JobState=COMPLETED" in details, output
    assert "ExitCode=0:0" in details, output


def test_allocation_script_runs_and_resumes(tmp_path, slurm, small_config):
    config_path = tmp_path / "small.toml"
    config_path.write_text(SMALL_TOML)
    atlas = tmp_path / "allocation.zarr"

    submit_map_in_allocation(tmp_path, config_path, atlas, "--max-chunks", "3")
    assert len(pending_chunks(atlas)) == 5
    submit_map_in_allocation(tmp_path, config_path, atlas)
    assert pending_chunks(atlas) == []

    reference = tmp_path / "reference.zarr"
    run(
        load_config(config_path),
        reference,
        execution=Execution(cluster="synchronous", progress=False),
    )
    assert_identical(reference, atlas)
    assert not list(tmp_path.glob("basins-scheduler-*.json"))
    assert np.all(zarr.open_group(str(atlas), mode="r")["status"][:] != STATUS_PENDING)
