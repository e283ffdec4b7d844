from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr

from basins import AtlasError, Execution, resume, run
from basins.atlas import PER_IC_ARRAYS, pending_chunks, read_catalog, read_config
from basins.examples import example_config
from basins.kernels import STATUS_PENDING
from basins.report import basin_fractions

SYNCHRONOUS = Execution(cluster="synchronous", progress=False)
COMPARED = ("status", "steps", "final_state", "attractor", "class")


def per_ic_arrays(path) -> dict[str, bytes]:
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:].tobytes() for name in COMPARED}


def assert_identical(first, second):
    left, right = per_ic_arrays(first), per_ic_arrays(second)
    for name in COMPARED:
        assert left[name] == right[name], f"per-IC array {name!r} differs"


def test_run_writes_a_complete_atlas(tmp_path, small_config):
    path = tmp_path / "atlas.zarr"
    summary = run(small_config, path, execution=SYNCHRONOUS)
    assert summary.chunks_computed == 6
    assert summary.chunks_pending == 0

    group = zarr.open_group(str(path), mode="r")
    assert group.attrs["basins_atlas_format"] == 1
    assert group.attrs["config"] == small_config.to_dict()
    assert group.attrs["seed"] == 3
    assert set(group.attrs["versions"]) >= {"basins", "numba", "numpy", "zarr"}
    assert group.attrs["finalized"] is True
    for name, (_, _, trailing) in PER_IC_ARRAYS.items():
        array = group[name]
        assert array.metadata.dimension_names == ("ic", *trailing)
        assert array.chunks[0] == 100
        assert array.shape[0] == 600
    assert not np.any(group["status"][:] == STATUS_PENDING)

    catalog = read_catalog(path)
    attractor = group["attractor"][:]
    assert sum(entry.count for entry in catalog) == np.sum(attractor >= 0)
    for entry in catalog:
        assert np.sum(attractor == entry.id) == entry.count
        assert attractor[entry.first_ic] == entry.id
    counts = [entry.count for entry in catalog]
    assert counts == sorted(counts, reverse=True)


def test_fractions_add_up_to_one(tmp_path, small_config):
    path = tmp_path / "atlas.zarr"
    run(small_config, path, execution=SYNCHRONOUS)
    rows = basin_fractions(path)
    assert sum(row.count for row in rows) == 600
    assert sum(row.fraction for row in rows) == pytest.approx(1.0)
    assert {row.class_name for row in rows} >= {"max_steps", "nonfinite"}
    for row in rows:
        assert row.low <= row.fraction <= row.high


def test_chunk_size_changes_no_per_ic_result(tmp_path, small_config):
    for chunk_size in (100, 37, 600):
        config = small_config.with_sampling(chunk_size=chunk_size)
        run(config, tmp_path / f"chunks-{chunk_size}.zarr", execution=SYNCHRONOUS)
    assert_identical(tmp_path / "chunks-100.zarr", tmp_path / "chunks-37.zarr")
    assert_identical(tmp_path / "chunks-100.zarr", tmp_path / "chunks-600.zarr")


def test_thread_count_changes_no_per_ic_result(tmp_path, small_config):
    run(small_config, tmp_path / "one.zarr",
        execution=Execution(cluster="synchronous", numba_threads=1, progress=False))
    run(small_config, tmp_path / "two.zarr",
        execution=Execution(cluster="synchronous", numba_threads=2, progress=False))
    assert_identical(tmp_path / "one.zarr", tmp_path / "two.zarr")


def test_resume_after_partial_run_is_identical(tmp_path, small_config):
    whole = tmp_path / "whole.zarr"
    parts = tmp_path / "parts.zarr"
    run(small_config, whole, execution=SYNCHRONOUS)

    first = run(small_config, parts, execution=SYNCHRONOUS, max_chunks=2)
    assert first.chunks_pending == 4
    assert pending_chunks(parts) == [2, 3, 4, 5]
    rows = basin_fractions(parts)
    assert [row.count for row in rows if row.class_name == "pending"] == [400]

    second = resume(parts, execution=SYNCHRONOUS, max_chunks=3)
    assert second.chunks_pending == 1
    resume(parts, execution=SYNCHRONOUS)
    assert pending_chunks(parts) == []
    assert_identical(whole, parts)
    assert [e.label for e in read_catalog(whole)] == [e.label for e in read_catalog(parts)]


def test_existing_atlas_is_not_overwritten(tmp_path, small_config):
    path = tmp_path / "atlas.zarr"
    run(small_config.with_sampling(n_initial=100), path, execution=SYNCHRONOUS)
    before = per_ic_arrays(path)
    with pytest.raises(AtlasError, match="already exists"):
        run(small_config, path, execution=SYNCHRONOUS)
    assert per_ic_arrays(path) == before
    run(small_config, path, execution=SYNCHRONOUS, overwrite=True)
    assert read_config(path).sampling.n_initial == 600


def test_foreign_directory_is_never_removed(tmp_path, small_config):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    with pytest.raises(AtlasError, match="not a basins atlas"):
        run(small_config, folder, execution=SYNCHRONOUS, overwrite=True)
    assert (folder / "keep.txt").read_text() == "precious"


def test_resume_of_missing_atlas_fails(tmp_path):
    with pytest.raises(AtlasError, match="not found"):
        resume(tmp_path / "absent.zarr", execution=SYNCHRONOUS)


def test_oversubscribed_local_cluster_is_rejected(tmp_path, small_config):
    from basins import ConfigError

    cores = len(os.sched_getaffinity(0))
    execution = Execution(n_workers=cores, numba_threads=2, progress=False)
    with pytest.raises(ConfigError, match="exceeds the .* available cores"):
        run(small_config, tmp_path / "atlas.zarr", execution=execution)
    assert not (tmp_path / "atlas.zarr").exists()


def test_oversubscribed_synchronous_run_is_rejected(tmp_path, small_config):
    from basins import ConfigError

    cores = len(os.sched_getaffinity(0))
    execution = Execution(cluster="synchronous", numba_threads=cores + 1, progress=False)
    with pytest.raises(ConfigError, match=f"{cores + 1} Numba threads .* exceed the"):
        run(small_config, tmp_path / "atlas.zarr", execution=execution)
    assert not (tmp_path / "atlas.zarr").exists()


@pytest.mark.slow
def test_worker_count_changes_no_result(tmp_path, small_config):
    run(small_config, tmp_path / "synchronous.zarr", execution=SYNCHRONOUS)
    for workers in (1, 2):
        run(small_config, tmp_path / f"workers-{workers}.zarr",
            execution=Execution(n_workers=workers, progress=False))
        assert_identical(tmp_path / "synchronous.zarr", tmp_path / f"workers-{workers}.zarr")


@pytest.mark.slow
def test_existing_scheduler_is_used(tmp_path, small_config):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster:
        run(small_config, tmp_path / "remote.zarr",
            execution=Execution(scheduler=cluster.scheduler_address, progress=False))
    run(small_config, tmp_path / "synchronous.zarr", execution=SYNCHRONOUS)
    assert_identical(tmp_path / "remote.zarr", tmp_path / "synchronous.zarr")


@pytest.mark.slow
def test_oja_consensus_fractions_agree(tmp_path):
    config = example_config("oja")
    path = tmp_path / "oja.zarr"
    run(config, path, execution=SYNCHRONOUS)
    rows = {row.label: row for row in basin_fractions(path) if row.id is not None}
    assert set(rows) == {"consensus 4@+v1", "consensus 4@-v1"}
    plus, minus = rows["consensus 4@+v1"], rows["consensus 4@-v1"]
    assert plus.count + minus.count == config.sampling.n_initial
    assert plus.low <= minus.high
    assert minus.low <= plus.high


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_atlas(tmp_path, small_config):
    """SIGKILL the command midway, resume, and compare with an uninterrupted run."""
    config_path = tmp_path / "system.toml"
    config_path.write_text(
        "[system]\nn_tokens = 4\ndim = 3\nbeta = 2.0\n"
        "K = { diagonal = [1.0, 0.5, -3.0] }\nV = { diagonal = [1.0, 0.5, -3.0] }\n"
        "[sampling]\nn_initial = 6000\nseed = 9\nchunk_size = 200\n"
    )
    killed = tmp_path / "killed.zarr"
    command = [sys.executable, "-m", "basins.cli", "-q", "run", str(config_path),
               "--out", str(killed), "--cluster", "synchronous", "--threads", "1",
               "--no-progress"]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        try:
            status = zarr.open_group(str(killed), mode="r")["status"][:]
        except (FileNotFoundError, KeyError, ValueError):
            continue
        done = int(np.sum(status != STATUS_PENDING))
        if done >= 600:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 0 < done < 6000, f"the kill came too late or too early: {done} computed"
    assert pending_chunks(killed)

    result = subprocess.run(
        [sys.executable, "-m", "basins.cli", "-q", "resume", str(killed),
         "--cluster", "synchronous", "--no-progress"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    reference = tmp_path / "reference.zarr"
    from basins import load_config
    run(load_config(config_path), reference, execution=SYNCHRONOUS)
    assert_identical(killed, reference)


@pytest.mark.slow
def test_dashboard_address_is_logged(tmp_path, small_config, caplog):
    """The scheduler serves a dashboard only where bokeh is installed (test extra)."""
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1,
                      dashboard_address="127.0.0.1:0") as cluster:
        with caplog.at_level(logging.INFO, logger="basins.mapping"):
            run(small_config.with_sampling(n_initial=100), tmp_path / "atlas.zarr",
                execution=Execution(scheduler=cluster.scheduler_address, progress=False))
        link = cluster.dashboard_link
    assert any(
        record.getMessage() == f"Dask dashboard at {link}" for record in caplog.records
    ), [record.getMessage() for record in caplog.records]


@pytest.mark.slow
def test_local_cluster_compiles_in_fresh_cache(tmp_path):
    """Workers that compile the kernels themselves (an empty Numba cache) must not
    trip over the NUMBA_NUM_THREADS that their Dask nanny set."""
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    environment.pop("NUMBA_NUM_THREADS", None)
    result = subprocess.run(
        [sys.executable, "-m", "basins.cli", "-q", "run", "example:oja",
         "--n-initial", "200", "--chunk-size", "100", "--out", str(tmp_path / "a.zarr"),
         "--no-progress"],
        capture_output=True, text=True, env=environment, check=False, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "200 initial conditions" in result.stdout


def test_run_needs_a_config_object(tmp_path):
    with pytest.raises(TypeError, match="config must be a basins.Config, not str"):
        run("system.toml", tmp_path / "atlas.zarr")
    assert not (tmp_path / "atlas.zarr").exists()
