"""Crash consistency: kill runs at random moments, resume, compare byte for byte.

Each test ends with an atlas that must agree with an uninterrupted run in every
per-initial-condition array and in the catalog. The drivers are real
``python -m basins.cli`` processes, killed with SIGKILL.
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import assert_same_atlas, chunk_files, multistable_toml

from basins import Execution, load_config, run
from basins.atlas import TASK_ARRAYS, chunk_bounds, pending_chunks
from basins.lock import read_lock

# Driver kills that the random-kill test must reach.
DRIVER_KILLS = 20

# Every KILLS_PER_LOCAL_CLUSTER-th driver runs a local cluster of worker processes,
# which must all exit when the driver is killed.
KILLS_PER_LOCAL_CLUSTER = 4

# After this many kills in one campaign its next resume runs to the end, so that the
# kills spread over several campaigns, each starting with the creation of an atlas.
MAX_KILLS_PER_CAMPAIGN = 5

# Worker processes killed mid-task in the worker-kill test.
WORKER_KILLS = 3

# Generous bound on waits for subprocesses; only exceeded when something is broken.
WAIT_SECONDS = 180

N_INITIAL = 1200
CHUNK_SIZE = 40

pytestmark = pytest.mark.slow


def cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "basins.cli", "-q", *arguments, "--no-progress"]


def cluster_options(local: bool) -> list[str]:
    if local:
        return ["--cluster", "local", "--workers", "2", "--threads", "1"]
    return ["--cluster", "synchronous", "--threads", "1"]


def run_to_end(command: list[str]) -> float:
    """Run a command to completion, assert success, return its wall time."""
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=WAIT_SECONDS
    )
    assert result.returncode == 0, result.stderr
    return time.monotonic() - started


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """The configuration file, an uninterrupted reference atlas and run durations."""
    folder = tmp_path_factory.mktemp("crash")
    config = folder / "system.toml"
    config.write_text(multistable_toml(n_initial=N_INITIAL, chunk_size=CHUNK_SIZE))
    reference = folder / "reference.zarr"
    run(
        load_config(config),
        reference,
        execution=Execution(cluster="synchronous", numba_threads=1, progress=False),
    )
    durations = {}
    for local in (False, True):
        path = folder / f"timing-{local}.zarr"
        durations[local] = run_to_end(
            cli("run", str(config), "--out", str(path), *cluster_options(local))
        )
        assert_same_atlas(path, reference)
    return config, reference, durations


def is_atlas(path: Path) -> bool:
    root = path / "zarr.json"
    return root.exists() and b"basins_atlas_format" in root.read_bytes()


def finished_chunk_digests(path: Path) -> dict[Path, str]:
    """Return digests of the task-written files of every complete chunk."""
    if not is_atlas(path):
        return {}
    config = load_config_of(path)
    pending = set(pending_chunks(path))
    digests = {}
    for chunk in set(range(config.sampling.n_chunks)) - pending:
        for name in TASK_ARRAYS:
            trailing = ("0", "0") if name == "final_state" else ()
            file = path.joinpath(name, "c", str(chunk), *trailing)
            if file.exists():
                digests[file] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def newest_complete_chunk_file(path: Path, name: str) -> Path | None:
    """Return the newest file of array ``name`` that belongs to a complete chunk."""
    pending = set(pending_chunks(path))
    files = [
        file
        for file in chunk_files(path, (name,))
        if int(file.relative_to(path).parts[2]) not in pending
    ]
    return files[-1] if files else None


def load_config_of(path: Path):
    from basins.atlas import read_config

    return read_config(path)


def kill_tree(process: subprocess.Popen) -> list[psutil.Process]:
    """SIGKILL a driver and return its descendants as they were at the kill."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    process.send_signal(signal.SIGKILL)
    process.wait()
    return descendants


def test_driver_killed_at_random_moments(workload, tmp_path):
    """SIGKILL the driver at random moments, resume after each kill, compare.

    After every kill, the worker processes of a local cluster must exit, because
    they must not write once their driver is dead. Sometimes the newest chunk file
    is truncated as well, and resume must find it damaged. At the end of each
    campaign the atlas must equal the reference, and every chunk that was complete
    at a kill must still hold the same bytes (finished work is never lost or
    redone).
    """
    config, reference, durations = workload
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    kills = local_kills = truncations = detected = campaigns = finished_runs = 0
    phases = collections.Counter()
    while kills < DRIVER_KILLS:
        path = tmp_path / f"campaign-{campaigns}.zarr"
        kept: dict[Path, str] = {}
        campaign_kills = 0
        while True:
            local = kills % KILLS_PER_LOCAL_CLUSTER == KILLS_PER_LOCAL_CLUSTER - 1
            if is_atlas(path):
                command = cli("resume", str(path), *cluster_options(local))
            else:
                command = cli(
                    "run", str(config), "--out", str(path), *cluster_options(local)
                )
            process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            delay = rng.uniform(0.0, durations[local])
            finish = kills >= DRIVER_KILLS or campaign_kills >= MAX_KILLS_PER_CAMPAIGN
            try:
                _, err = process.communicate(timeout=WAIT_SECONDS if finish else delay)
            except subprocess.TimeoutExpired:
                if finish:
                    process.kill()
                    pytest.fail(
                        f"seed {seed}: {command} did not end in {WAIT_SECONDS} s"
                    )
            else:
                assert process.returncode == 0, f"seed {seed}: {err}"
                finished_runs += 1
                break

            descendants = kill_tree(process)
            kills += 1
            campaign_kills += 1
            local_kills += local
            _, alive = psutil.wait_procs(descendants, timeout=WAIT_SECONDS)
            assert alive == [], f"seed {seed}: workers outlived their driver: {alive}"
            if is_atlas(path):
                assert read_lock(path) is None or read_lock(path).is_running() is False
                pending = len(pending_chunks(path))
                phases["computing" if pending else "finalizing"] += 1
            else:
                phases["before the atlas existed"] += 1
            kept.update(finished_chunk_digests(path))

            if is_atlas(path) and rng.random() < 0.3:
                file = newest_complete_chunk_file(path, rng.choice(TASK_ARRAYS))
                if file is not None:
                    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
                    kept.pop(file, None)
                    truncations += 1
                    chunk = int(file.relative_to(path).parts[2])
                    detected += chunk in pending_chunks(path)

        assert_same_atlas(path, reference)
        for file, digest in kept.items():
            assert hashlib.sha256(file.read_bytes()).hexdigest() == digest, (
                f"seed {seed}: finished chunk file {file} was rewritten"
            )
        campaigns += 1
    assert truncations == detected, f"seed {seed}: a truncated chunk went unnoticed"
    print(
        f"\ndriver kills: {kills} ({local_kills} with a local cluster), campaigns: "
        f"{campaigns}, runs that ended on their own: {finished_runs}, "
        f"truncated chunks: {truncations}, detected: {detected}, seed: {seed}; "
        f"kills by phase: {dict(phases)}"
    )


def test_worker_killed_mid_task(workload, tmp_path):
    """SIGKILL workers of an existing scheduler mid-task; the run still completes."""
    from distributed import Client, LocalCluster

    config, reference, _ = workload
    path = tmp_path / "atlas.zarr"
    kills = 0
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster.scheduler_address) as client,
    ):

        def executing_chunks(dask_worker):
            return [str(task.key) for task in dask_worker.state.executing]

        driver = subprocess.Popen(
            cli(
                "run",
                str(config),
                "--out",
                str(path),
                "--scheduler",
                cluster.scheduler_address,
                "--threads",
                "1",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + WAIT_SECONDS
        while kills < WORKER_KILLS and driver.poll() is None:
            assert time.monotonic() < deadline, "timed out waiting for busy workers"
            busy = [
                address
                for address, keys in client.run(executing_chunks).items()
                if any(key.startswith("basins-chunk-") for key in keys)
            ]
            written = (
                len(list((path / "status" / "c").glob("*"))) if path.exists() else 0
            )
            if busy and written > kills:
                pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                kills += 1
                psutil.wait_procs([psutil.Process(pid)], timeout=WAIT_SECONDS)
            time.sleep(0.02)
        _, err = driver.communicate(timeout=WAIT_SECONDS)
    assert driver.returncode == 0, err
    assert kills >= 1, "the run finished before any worker could be killed"
    assert_same_atlas(path, reference)
    print(f"\nworker kills: {kills}")


def test_truncated_last_chunk_is_recomputed(workload, tmp_path, caplog):
    """A run stopped after some chunks; its newest chunk file is then truncated."""
    config, reference, _ = workload
    path = tmp_path / "atlas.zarr"
    configuration = load_config(config)
    synchronous = Execution(cluster="synchronous", numba_threads=1, progress=False)
    run(configuration, path, execution=synchronous, max_chunks=5)

    newest = chunk_files(path, TASK_ARRAYS)[-1]
    assert newest.parts[-3:] == ("status", "c", "4")
    newest.write_bytes(newest.read_bytes()[:7])
    assert pending_chunks(path)[0] == 4
    start, stop = chunk_bounds(configuration, 4)
    assert stop - start == CHUNK_SIZE

    from basins import resume

    resume(path, execution=synchronous)
    assert "chunk 4 of" in caplog.text
    assert "is damaged" in caplog.text
    assert_same_atlas(path, reference)


# Runs the command line with the size of written files limited (RLIMIT_FSIZE), so
# that writing a chunk fails with EFBIG as it would with a full disk.
LIMITED_CLI = (
    "import resource, runpy, signal, sys\n"
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    "resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))\n"
    "sys.argv = ['basins', *sys.argv[1:]]\n"
    "runpy.run_module('basins.cli', run_name='__main__')\n"
)


def test_failed_write_stops_cleanly(workload, tmp_path):
    """A chunk write that the file system refuses ends the run with one error line."""
    config, reference, _ = workload
    path = tmp_path / "atlas.zarr"
    bigger_chunks = tmp_path / "system.toml"
    bigger_chunks.write_text(
        config.read_text().replace(f"chunk_size = {CHUNK_SIZE}", "chunk_size = 400")
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LIMITED_CLI,
            "-q",
            "run",
            str(bigger_chunks),
            "--out",
            str(path),
            "--cluster",
            "synchronous",
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=WAIT_SECONDS,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "File too large" in result.stderr
    assert f"continue with 'basins resume {path}'" in result.stderr
    assert read_lock(path) is None
    assert pending_chunks(path) == [0, 1, 2]

    run_to_end(cli("resume", str(path), "--cluster", "synchronous"))
    assert_same_atlas(path, reference, same_chunking=False)
