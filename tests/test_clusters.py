"""Cluster settings and generated job scripts; none of these tests needs a scheduler."""

from __future__ import annotations

import os
import re
import subprocess

import dask.config
import pytest
import yaml

from basins import ClusterError, ConfigError, Execution, run
from basins.cli import main
from basins.clusters import (
    DEFAULTS_FILE,
    FIELD_NAMES,
    config_file,
    job_script,
    job_script_prologue,
    job_settings,
)

SITE = {
    "queue": "compute",
    "account": "proj42",
    "cores": 8,
    "memory": "16GiB",
    "processes": 2,
    "walltime": "04:00:00",
    "job_script_prologue": ["module load python/3.11", "source ~/venv/bin/activate"],
    "interface": "ib0",
}


@pytest.fixture(autouse=True)
def in_temporary_directory(tmp_path, monkeypatch):
    """Run each test in its own directory: dask-jobqueue creates the job log
    directory, relative to the working directory, when it builds a job script."""
    monkeypatch.chdir(tmp_path)


def script_lines(script: str) -> list[str]:
    return script.splitlines()


def test_defaults_file_lists_every_setting():
    defaults = yaml.safe_load(DEFAULTS_FILE.read_text())["basins"]["jobqueue"]
    assert {key.replace("-", "_") for key in defaults} == set(FIELD_NAMES)


def test_every_default_key_has_a_comment():
    lines = DEFAULTS_FILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^    [a-z-]+:", line):
            above = lines[number - 1].strip()
            assert above.startswith("#"), (
                f"key without a comment above it: {line.strip()}"
            )


def test_settings_default_to_the_file():
    defaults = yaml.safe_load(DEFAULTS_FILE.read_text())["basins"]["jobqueue"]
    settings = job_settings()
    for key, value in defaults.items():
        expected = tuple(value) if isinstance(value, list) else value
        assert getattr(settings, key.replace("-", "_")) == expected, key


def test_overrides_beat_config_and_defaults():
    with dask.config.set({"basins.jobqueue.queue": "long", "basins.jobqueue.cores": 4}):
        settings = job_settings({"queue": "short"})
    assert settings.queue == "short"
    assert settings.cores == 4
    assert job_settings().queue is None


def test_config_file_applies_inside_its_block(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(
        "basins:\n  jobqueue:\n    queue: gpu\n"
        "    minimum_jobs: 3\n    maximum-jobs: 5\n"
        "jobqueue:\n  slurm:\n    job-extra-directives: ['--constraint=skylake']\n"
    )
    with config_file(path):
        settings = job_settings()
        script = job_script("slurm", settings)
    assert (settings.queue, settings.minimum_jobs, settings.maximum_jobs) == (
        "gpu",
        3,
        5,
    )
    assert "#SBATCH --constraint=skylake" in script_lines(script)
    assert job_settings().queue is None


@pytest.mark.parametrize(
    "text", ["basins: [1, 2\n", "- just\n- a list\n"], ids=["broken", "not-a-mapping"]
)
def test_bad_config_file_is_rejected(tmp_path, text):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="cluster configuration"), config_file(path):
        pass


def test_slurm_job_script_requests_the_resources():
    lines = script_lines(job_script("slurm", job_settings(SITE)))
    for directive in (
        "#SBATCH -J basins-worker",
        "#SBATCH -p compute",
        "#SBATCH -A proj42",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=16G",
        "#SBATCH -t 04:00:00",
    ):
        assert directive in lines
    worker = lines[-1]
    assert " --nthreads 1 " in worker
    assert " --nworkers 2 " in worker
    assert " --memory-limit 8.00GiB " in worker
    assert worker.endswith("--interface ib0")


def test_pbs_job_script_requests_the_resources():
    lines = script_lines(job_script("pbs", job_settings(SITE)))
    for directive in (
        "#PBS -N basins-worker",
        "#PBS -q compute",
        "#PBS -A proj42",
        "#PBS -l select=1:ncpus=8:mem=16GB",
        "#PBS -l walltime=04:00:00",
    ):
        assert directive in lines
    assert " --nthreads 1 " in lines[-1]


@pytest.mark.parametrize("system", ["slurm", "pbs"])
def test_prologue_runs_before_the_numba_settings(system):
    lines = script_lines(job_script(system, job_settings(SITE)))
    start = lines.index("module load python/3.11")
    assert lines[start + 1] == "source ~/venv/bin/activate"
    assert lines[start + 2] == 'export NUMBA_NUM_THREADS="4"'
    assert lines[start + 3] == 'export NUMBA_THREADING_LAYER="workqueue"'
    assert lines[start + 4].startswith('export NUMBA_CACHE_DIR="${TMPDIR:-/tmp}/')
    assert (
        "python" in lines[start + 5]
        and "distributed.cli.dask_worker" in lines[start + 5]
    )


def test_prologue_sets_the_worker_environment(tmp_path):
    """The exports, run by bash, give the thread count and a cache under $TMPDIR."""
    settings = job_settings({"cores": 6, "processes": 3})
    prologue = "\n".join(job_script_prologue(settings, settings.numba_threads()))
    result = subprocess.run(
        ["bash", "-c", f"{prologue}\nenv"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)},
    )
    environment = dict(
        line.split("=", 1) for line in result.stdout.splitlines() if "=" in line
    )
    assert environment["NUMBA_NUM_THREADS"] == "2"
    assert environment["NUMBA_THREADING_LAYER"] == "workqueue"
    assert (
        environment["NUMBA_CACHE_DIR"] == f"{tmp_path}/basins-numba-cache-{os.getuid()}"
    )


@pytest.mark.parametrize(
    ("cores", "processes", "requested", "threads"),
    [(1, 1, None, 1), (8, 2, None, 4), (8, 8, None, 1), (8, 3, None, 2), (8, 2, 3, 3)],
)
def test_numba_threads_fit_the_job(cores, processes, requested, threads):
    settings = job_settings({"cores": cores, "processes": processes})
    assert settings.numba_threads(requested) == threads
    assert processes * settings.numba_threads(requested) <= cores
    script = job_script("slurm", settings, requested)
    assert f'export NUMBA_NUM_THREADS="{threads}"' in script_lines(script)


def test_too_many_numba_threads_are_rejected():
    settings = job_settings({"cores": 8, "processes": 2})
    with pytest.raises(ConfigError, match="2 worker processes x 5 Numba threads = 10"):
        settings.numba_threads(5)
    with pytest.raises(ConfigError, match="exceeds the 8 cores of a job"):
        Execution(
            cluster="slurm",
            numba_threads=5,
            cluster_options={"cores": 8, "processes": 2},
        )


def test_lifetime_is_derived_from_the_walltime():
    settings = job_settings({"walltime": "01:00:00", "lifetime_stagger": "2m"})
    assert settings.lifetime_seconds() == 3600 - 240
    worker = script_lines(job_script("slurm", settings))[-1]
    assert "--lifetime 3360s --lifetime-stagger 120s --no-lifetime-restart" in worker


def test_explicit_lifetime_reaches_worker():
    settings = job_settings(
        {"lifetime": "50m", "lifetime_stagger": "5m", "lifetime_restart": True}
    )
    worker = script_lines(job_script("pbs", settings))[-1]
    assert "--lifetime 3000s --lifetime-stagger 300s --lifetime-restart" in worker


def test_no_walltime_means_no_lifetime():
    settings = job_settings({"walltime": None})
    assert settings.lifetime_seconds() is None
    lines = script_lines(job_script("slurm", settings))
    assert "--lifetime" not in lines[-1]
    assert not any(line.startswith("#SBATCH -t") for line in lines)
    assert "#SBATCH -n 1" in lines
    lines = script_lines(job_script("pbs", settings))
    assert not any(line.startswith("#PBS -l walltime") for line in lines)


def test_yaml_walltime_seconds_are_formatted():
    # PyYAML reads an unquoted 01:30:00 as the sexagesimal integer 5400.
    settings = job_settings(yaml.safe_load("walltime: 01:30:00"))
    assert settings.walltime == "01:30:00"
    assert job_settings({"walltime": "1-12:00:00"}).walltime == "36:00:00"


def test_log_directory_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = job_script("slurm", job_settings({"log_directory": "logs"}))
    assert f"#SBATCH -o {tmp_path}/logs/basins-worker-%J.out" in script_lines(script)


def test_configured_jobqueue_lines_are_kept():
    with dask.config.set(
        {
            "jobqueue.slurm.job-script-prologue": ["ulimit -c 0"],
            "jobqueue.slurm.worker-extra-args": ["--no-dashboard"],
        }
    ):
        lines = script_lines(job_script("slurm", job_settings(SITE)))
    assert lines.index("ulimit -c 0") < lines.index("module load python/3.11")
    assert "--no-dashboard" in lines[-1]


INVALID = {
    "cores": (0, "basins.jobqueue.cores = 0 is invalid: expected an integer >= 1"),
    "processes": (
        9,
        "basins.jobqueue.processes = 9 is invalid: expected an integer from 1",
    ),
    "memory": ("lots", "basins.jobqueue.memory = 'lots' is invalid"),
    "walltime": (
        "1 hour",
        "basins.jobqueue.walltime = '1 hour' is invalid: expected HH:MM:SS",
    ),
    "minimum_jobs": (
        9,
        "basins.jobqueue.minimum-jobs = 9 is invalid: expected an integer from 0",
    ),
    "maximum_jobs": (0, "basins.jobqueue.maximum-jobs = 0 is invalid"),
    "lifetime": (
        "59m",
        "basins.jobqueue.lifetime = '59m' is invalid: expected lifetime",
    ),
    "lifetime_stagger": (
        "soon",
        "basins.jobqueue.lifetime-stagger = 'soon' is invalid",
    ),
    "numba_threading_layer": ("gnu", "expected one of workqueue, omp, tbb"),
    "job_script_prologue": ("module load x", "expected a list of strings"),
    "worker_timeout": (-5, "basins.jobqueue.worker-timeout = -5 is invalid"),
    "queue": ("", "basins.jobqueue.queue = '' is invalid"),
}


@pytest.mark.parametrize("key", sorted(INVALID))
def test_invalid_setting_names_its_key(key):
    value, message = INVALID[key]
    with pytest.raises(ConfigError, match=re.escape(message)):
        job_settings({"cores": 8, key: value})


def test_restart_needs_a_lifetime():
    message = "lifetime-restart = True is invalid: expected false when workers"
    with pytest.raises(ConfigError, match=message):
        job_settings({"walltime": None, "lifetime_restart": True})
    settings = job_settings(
        {"walltime": None, "lifetime": "1h", "lifetime_restart": True}
    )
    assert settings.lifetime_seconds() == 3600


def test_short_walltime_needs_an_explicit_lifetime():
    with pytest.raises(ConfigError, match="more than 3 x lifetime-stagger"):
        job_settings({"walltime": "00:05:00", "lifetime_stagger": "2m"})
    settings = job_settings(
        {"walltime": "00:05:00", "lifetime": "3m", "lifetime_stagger": "1m"}
    )
    assert settings.lifetime_seconds() == 180


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown cluster option 'partition'"):
        job_settings({"partition": "debug"})
    unknown = pytest.raises(ConfigError, match="unknown key basins.jobqueue.nodes")
    with dask.config.set({"basins.jobqueue.nodes": 2}), unknown:
        job_settings()


def test_execution_rejects_options_of_another_cluster():
    message = "cluster_options = {'queue': 'debug'} is invalid with cluster = 'local'"
    with pytest.raises(ConfigError, match=re.escape(message)):
        Execution(cluster="local", cluster_options={"queue": "debug"})
    with pytest.raises(ConfigError, match="apply only to --cluster slurm or pbs"):
        Execution(
            cluster="slurm", scheduler="tcp://127.0.0.1:1", cluster_options={"cores": 2}
        )
    with pytest.raises(
        ConfigError, match="n_workers = 4 is invalid with cluster = 'slurm'"
    ):
        Execution(cluster="slurm", n_workers=4)


def test_missing_sbatch_fails_before_atlas(tmp_path, monkeypatch, small_config):
    monkeypatch.setenv("PATH", str(tmp_path))
    execution = Execution(cluster="slurm", progress=False)
    with pytest.raises(ClusterError, match="sbatch, which is not on PATH"):
        run(small_config, tmp_path / "atlas.zarr", execution=execution)
    assert not (tmp_path / "atlas.zarr").exists()


def test_cli_reports_missing_qsub(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    out = tmp_path / "atlas.zarr"
    status = main(
        [
            "run",
            "example:oja",
            "--out",
            str(out),
            "--cluster",
            "pbs",
            "--queue",
            "short",
            "--jobs",
            "2",
        ]
    )
    assert status == 2
    assert "qsub, which is not on PATH" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--cores", "0"], "basins.jobqueue.cores = 0 is invalid"),
        (
            ["--jobs", "2", "--max-jobs", "4"],
            "--jobs and --min-jobs/--max-jobs are exclusive",
        ),
        (["--walltime", "forever"], "basins.jobqueue.walltime = 'forever' is invalid"),
        (
            ["--cores", "2", "--threads", "4"],
            "4 Numba threads = 4 threads exceeds the 2 cores",
        ),
    ],
)
def test_cli_rejects_bad_batch_options(tmp_path, capsys, arguments, message):
    out = tmp_path / "atlas.zarr"
    status = main(
        ["run", "example:oja", "--out", str(out), "--cluster", "slurm", *arguments]
    )
    assert status == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_cli_batch_options_reach_settings(tmp_path):
    from basins.cli import _cluster_options, build_parser

    config = tmp_path / "site.yaml"
    config.write_text(
        "basins:\n  jobqueue:\n    job-script-prologue: ['module load a']\n"
    )
    args = build_parser().parse_args(
        [
            "run",
            "example:oja",
            "--out",
            "x",
            "--cluster",
            "slurm",
            "--queue",
            "short",
            "--cores",
            "4",
            "--memory",
            "8GiB",
            "--processes",
            "2",
            "--walltime",
            "02:00:00",
            "--min-jobs",
            "1",
            "--max-jobs",
            "6",
            "--job-prologue",
            "module load b",
            "--interface",
            "lo",
            "--log-directory",
            "logs",
            "--lifetime",
            "90m",
            "--lifetime-stagger",
            "5m",
            "--lifetime-restart",
            "--worker-timeout",
            "300",
            "--account",
            "proj",
        ]
    )
    with config_file(config):
        settings = job_settings(_cluster_options(args))
    assert settings.queue == "short"
    assert settings.account == "proj"
    assert (settings.cores, settings.memory, settings.processes) == (4, "8GiB", 2)
    assert settings.walltime == "02:00:00"
    assert (settings.minimum_jobs, settings.maximum_jobs) == (1, 6)
    assert settings.job_script_prologue == ("module load a", "module load b")
    assert settings.interface == "lo"
    assert settings.log_directory == "logs"
    assert (settings.lifetime, settings.lifetime_stagger) == ("90m", "5m")
    assert settings.lifetime_restart is True
    assert settings.worker_timeout_seconds() == 300


def test_cli_jobs_sets_both_bounds():
    from basins.cli import _cluster_options, build_parser

    args = build_parser().parse_args(
        ["resume", "atlas.zarr", "--cluster", "pbs", "--jobs", "3"]
    )
    options = _cluster_options(args)
    assert (options["minimum_jobs"], options["maximum_jobs"]) == (3, 3)


@pytest.mark.parametrize("system", ["slurm", "pbs"])
def test_example_site_configs_are_valid(system, tmp_path, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(tmp_path)
    example = (
        Path(__file__).resolve().parent.parent / "cluster" / system / "basins.yaml"
    )
    with config_file(example):
        settings = job_settings()
        script = job_script(system, settings)
    assert settings.cores % settings.processes == 0
    threads = settings.cores // settings.processes
    assert f'export NUMBA_NUM_THREADS="{threads}"' in script_lines(script)
    assert "--lifetime " in script_lines(script)[-1]
