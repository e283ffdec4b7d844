from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import (
    chunk_files,
    command,
    file_snapshot,
    multistable_toml,
    synchronous_run,
)

from basins import Execution, load_config, resume, run
from basins.atlas import create_atlas, pending_chunks, read_config
from basins.cli import main
from basins.errors import AtlasError, AtlasInUseError, LockLostError, Terminated
from basins.kernels import STATUS_PENDING
from basins.lock import (
    LOCK_NAME,
    acquire,
    check_writer,
    current_holder,
    read_lock,
    unlock,
)
from basins.mapping import STOP_REQUESTED, compute_chunk

SYNCHRONOUS = Execution(cluster="synchronous", numba_threads=1, progress=False)

# Generous bound on how long a subprocess may take to reach a state the test waits
# for; only exceeded when something is broken.
WAIT_SECONDS = 120


def write_lock(path, holder) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / LOCK_NAME).write_text(json.dumps(dataclasses.asdict(holder)))


def dead_pid() -> int:
    """Return the pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def created(path) -> bool:
    """Return whether the atlas at ``path`` exists with its root attributes."""
    root = path / "zarr.json"
    return root.exists() and b"basins_atlas_format" in root.read_bytes()


def start_long_run(tmp_path, stderr):
    """Start a 'basins run' of 400 chunks in a real process; return once locked."""
    config = tmp_path / "system.toml"
    config.write_text(multistable_toml(n_initial=40000, chunk_size=100))
    path = tmp_path / "atlas.zarr"
    arguments = synchronous_run(config, path, "--threads", "1")
    process = subprocess.Popen(command(*arguments), stderr=stderr, text=True)
    try:
        wait_for(lambda: created(path) and read_lock(path), "the atlas and its lock")
    except AssertionError:
        process.kill()
        raise
    return config, path, process


def test_lock_is_exclusive(tmp_path):
    first = acquire(tmp_path, "run")
    with pytest.raises(AtlasInUseError) as refused:
        acquire(tmp_path, "resume")
    message = str(refused.value)
    assert f"process {os.getpid()} on host {socket.gethostname()}" in message
    assert "basins run" in message
    assert first.holder.started in message
    first.release()
    assert read_lock(tmp_path) is None
    with acquire(tmp_path, "resume") as second:
        assert read_lock(tmp_path) == second.holder
    assert sorted(os.listdir(tmp_path)) == []


def test_run_and_resume_refused_while_locked(tmp_path, small_config, capsys):
    path = tmp_path / "atlas.zarr"
    run(small_config, path, execution=SYNCHRONOUS, max_chunks=2)
    before = file_snapshot(path)
    holder = acquire(path, "sweep")
    try:
        with pytest.raises(AtlasInUseError, match="basins sweep"):
            resume(path, execution=SYNCHRONOUS)
        with pytest.raises(AtlasInUseError, match="basins sweep"):
            run(small_config, path, execution=SYNCHRONOUS, overwrite=True)
        assert main(["resume", str(path), "--cluster", "synchronous"]) == 2
        err = capsys.readouterr().err
        assert f"is in use by process {os.getpid()}" in err
        assert err.count("\n") == 1
    finally:
        holder.release()
    assert file_snapshot(path) == before


def test_stale_lock_is_cleared_with_a_warning(tmp_path, small_config, caplog):
    path = tmp_path / "atlas.zarr"
    run(small_config, path, execution=SYNCHRONOUS, max_chunks=1)
    stale = dataclasses.replace(current_holder("run"), pid=dead_pid())
    write_lock(path, stale)
    with caplog.at_level(logging.WARNING, logger="basins.lock"):
        resume(path, execution=SYNCHRONOUS)
    assert f"removing the stale lock of {path}: process {stale.pid}" in caplog.text
    assert pending_chunks(path) == []
    assert read_lock(path) is None


def test_reused_pid_counts_as_stopped(tmp_path):
    holder = current_holder("run")
    assert holder.is_running() is True
    reused = dataclasses.replace(holder, process_start=holder.process_start + 1)
    assert reused.is_running() is False
    write_lock(tmp_path, reused)
    assert unlock(tmp_path) == reused
    assert read_lock(tmp_path) is None


def test_lock_of_another_host_needs_force(tmp_path, capsys):
    foreign = dataclasses.replace(current_holder("run"), host="node-elsewhere")
    write_lock(tmp_path, foreign)
    assert foreign.is_running() is None
    with pytest.raises(
        AtlasInUseError, match="cannot check whether a process on another"
    ):
        acquire(tmp_path, "resume")
    with pytest.raises(AtlasInUseError, match="--force"):
        unlock(tmp_path)
    assert main(["unlock", str(tmp_path)]) == 2
    assert "on host node-elsewhere" in capsys.readouterr().err
    assert main(["unlock", str(tmp_path), "--force"]) == 0
    assert "removed the lock" in capsys.readouterr().out
    assert read_lock(tmp_path) is None


def test_lock_of_a_running_process_is_kept(tmp_path):
    with acquire(tmp_path, "run") as held:
        with pytest.raises(AtlasInUseError):
            unlock(tmp_path, force=True)
        assert read_lock(tmp_path) == held.holder


def test_damaged_lock_file(tmp_path, capsys):
    (tmp_path / LOCK_NAME).write_text("{not json")
    with pytest.raises(AtlasError, match="lock file .* is damaged"):
        acquire(tmp_path, "run")
    assert main(["unlock", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["unlock", str(tmp_path), "--force"]) == 0
    assert not (tmp_path / LOCK_NAME).exists()
    assert main(["unlock", str(tmp_path)]) == 0
    assert "nothing to remove" in capsys.readouterr().out


def test_check_writer(tmp_path):
    with acquire(tmp_path, "run") as held:
        check_writer(tmp_path, held.token)
        with pytest.raises(LockLostError, match="no longer holds the lock"):
            check_writer(tmp_path, "another run's token")
    with pytest.raises(LockLostError, match="no longer holds the lock"):
        check_writer(tmp_path, held.token)

    dead = dataclasses.replace(current_holder("run"), pid=dead_pid())
    write_lock(tmp_path, dead)
    with pytest.raises(LockLostError, match="is no longer running"):
        check_writer(tmp_path, dead.token)


def test_task_without_lock_writes_nothing(tmp_path, small_config):
    path = tmp_path / "atlas.zarr"
    with acquire(path, "run", create=True) as held:
        create_atlas(path, small_config, token=held.token)
    before = file_snapshot(path)
    with pytest.raises(LockLostError):
        compute_chunk(small_config.to_dict(), str(path), 0, 1, held.token)
    assert file_snapshot(path) == before


def test_unfinished_creation_is_replaced(tmp_path, small_config):
    """A run killed while creating the atlas leaves a lock and no root attributes."""
    path = tmp_path / "atlas.zarr"
    stale = dataclasses.replace(current_holder("run"), pid=dead_pid())
    write_lock(path, stale)
    zarr.create_group(str(path), zarr_format=3).create_array(
        "status", shape=(5,), dtype="int8"
    )
    with pytest.raises(AtlasError, match="never completely created"):
        resume(path, execution=SYNCHRONOUS)
    run(small_config, path, execution=SYNCHRONOUS)
    assert pending_chunks(path) == []
    assert not (path / LOCK_NAME).exists()


class RootWriteFailed(BaseException):
    """Stands for SIGKILL: raised by a write of the root metadata."""


@pytest.mark.parametrize("failing_write", [1, 2, 3, 4])
def test_creation_killed_at_root_write(
    tmp_path, small_config, monkeypatch, failing_write
):
    """Whichever write of the root ``zarr.json`` a creation dies at, the remains are
    either no atlas (replaced by the next run) or a whole one, never an atlas
    without its configuration."""
    from zarr.storage import LocalStore

    path = tmp_path / "atlas.zarr"
    original = LocalStore.set
    writes = 0

    async def counting_set(self, key, value):
        nonlocal writes
        if key == "zarr.json" and Path(self.root) == path:
            writes += 1
            if writes == failing_write:
                raise RootWriteFailed
        return await original(self, key, value)

    write_lock(path, dataclasses.replace(current_holder("run"), pid=dead_pid()))
    monkeypatch.setattr(LocalStore, "set", counting_set)
    try:
        create_atlas(path, small_config)
    except RootWriteFailed:
        monkeypatch.setattr(LocalStore, "set", original)
        with pytest.raises(AtlasError, match="never completely created"):
            resume(path, execution=SYNCHRONOUS)
        run(small_config, path, execution=SYNCHRONOUS)
    else:
        assert writes < failing_write
        monkeypatch.setattr(LocalStore, "set", original)
        assert read_config(path).to_dict() == small_config.to_dict()
        resume(path, execution=SYNCHRONOUS)
    assert pending_chunks(path) == []


def test_stop_request_ends_the_run(tmp_path, small_config):
    """The flag that SIGTERM sets stops a run even if the exception was lost."""
    path = tmp_path / "atlas.zarr"
    STOP_REQUESTED.set()
    try:
        with pytest.raises(Terminated):
            run(small_config, path, execution=SYNCHRONOUS)
    finally:
        STOP_REQUESTED.clear()
    assert read_lock(path) is None
    assert pending_chunks(path) == [0, 1, 2, 3, 4, 5]


@pytest.mark.slow
def test_live_holder_refuses_then_stale_lock_resumes(tmp_path, capsys):
    """A real second process is refused; once it is killed, resume takes over."""
    log = open(tmp_path / "holder.log", "w")
    config, path, process = start_long_run(tmp_path, stderr=log)
    try:
        status = main(["-q", "resume", str(path), "--cluster", "synchronous"])
        err = capsys.readouterr().err
        assert status == 2, err
        holder = f"is in use by process {process.pid} on host {socket.gethostname()}"
        assert holder in err
        assert "(basins run, started " in err
        status = main(["-q", "run", str(config), "--out", str(path), "--overwrite"])
        err = capsys.readouterr().err
        assert status == 2, err
        assert f"process {process.pid}" in err
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
        log.close()
    holder_log = (tmp_path / "holder.log").read_text()
    assert read_lock(path).pid == process.pid, holder_log
    resume_arguments = ["-q", "resume", str(path), "--cluster", "synchronous"]
    status = main([*resume_arguments, "--max-chunks", "2", "--no-progress"])
    assert status == 0, capsys.readouterr().err
    assert read_lock(path) is None


@pytest.mark.slow
def test_sigterm_releases_the_lock(tmp_path):
    _, path, process = start_long_run(tmp_path, stderr=subprocess.PIPE)
    try:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=WAIT_SECONDS)
    finally:
        process.kill()
    assert process.returncode == 143
    assert "terminated by SIGTERM" in err
    assert read_lock(path) is None


@pytest.mark.slow
def test_ctrl_c_stops_a_local_cluster_quietly(tmp_path):
    """SIGINT to the whole process group, as a terminal sends it on Ctrl-C: the
    workers ignore it, and the driver stops the run and closes the cluster. A worker
    may still log a failed heartbeat while the scheduler closes, but none dies of
    KeyboardInterrupt."""
    config = tmp_path / "system.toml"
    # A step 100 times shorter than the example's: minutes of work, never finished.
    slow = "[integration]\ndt = 0.0005\nmax_steps = 2000000\n"
    config.write_text(multistable_toml(n_initial=40000, chunk_size=100) + slow)
    path = tmp_path / "atlas.zarr"
    process = subprocess.Popen(
        command("run", str(config), "--out", str(path), "--workers", "2",
                "--threads", "1", "--no-progress"),
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: created(path) and chunk_files(path, ("status",)), "a first chunk"
        )
        os.killpg(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=WAIT_SECONDS)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.rstrip().splitlines()[-1].startswith("basins: interrupted")
    assert "KeyboardInterrupt" not in err
    assert read_lock(path) is None
    assert 0 < len(pending_chunks(path)) < 400


@pytest.mark.slow
def test_cancelled_task_writes_nothing(tmp_path):
    """A worker whose client disconnected skips the write, even with the lock alive.

    This is how a worker on another host learns that its driver died: the test
    process holds the lock (alive, on this host), so only the cancellation can stop
    the write.
    """
    from distributed import Client, LocalCluster

    example = tmp_path / "system.toml"
    example.write_text(multistable_toml(n_initial=4000, chunk_size=4000))
    config = load_config(example)
    path = tmp_path / "atlas.zarr"
    with acquire(path, "run", create=True) as held:
        create_atlas(path, config, token=held.token)
        with (
            LocalCluster(
                n_workers=1, threads_per_worker=1, dashboard_address=None
            ) as cluster,
            Client(cluster.scheduler_address) as observer,
        ):

            def executing(dask_worker):
                return len(dask_worker.state.executing)

            driver = Client(cluster.scheduler_address)
            future = driver.submit(
                compute_chunk, config.to_dict(), str(path), 0, 1, held.token, pure=False
            )
            wait_for(lambda: sum(observer.run(executing).values()) == 1, "the task")
            driver.close()
            del future
            wait_for(
                lambda: sum(observer.run(executing).values()) == 0, "the task's end"
            )
        status = zarr.open_group(str(path), mode="r")["status"][:]
        assert np.all(status == STATUS_PENDING)
        assert not (path / "final_state" / "c").exists()
