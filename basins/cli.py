"""The ``basins`` command line.

User errors (an invalid configuration, a missing or existing atlas, a bad option) print
one message and exit with status 2; an interrupted run exits with status 130 and keeps
every chunk it finished.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from basins import __version__
from basins.errors import BasinsError

logger = logging.getLogger("basins")

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _add_execution_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("execution")
    group.add_argument(
        "--cluster",
        choices=("local", "synchronous", "slurm", "pbs"),
        default="local",
        help="local: start a Dask LocalCluster of worker processes (default); "
        "synchronous: run every chunk in this process, for debugging; slurm, pbs: "
        "start a Dask scheduler here and submit worker jobs (see docs/cluster.md)",
    )
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of a running Dask scheduler (e.g. tcp://host:8786), or its "
        "scheduler file (*.json); its workers must see the atlas path. Overrides "
        "--cluster",
    )
    group.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes of the local cluster (default: cores / --threads)",
    )
    group.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="Numba threads per worker (default 1; all cores with --cluster "
        "synchronous; cores / processes of a job with slurm or pbs). Workers x "
        "threads may not exceed the cores",
    )
    group.add_argument(
        "--max-chunks",
        type=int,
        metavar="N",
        help="compute at most N pending chunks, then stop; 'basins resume' continues",
    )
    group.add_argument(
        "--no-progress", action="store_true", help="do not show the progress bar"
    )
    _add_batch_options(parser)


def _add_batch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "batch jobs (--cluster slurm or pbs)",
        "Each option overrides the key of basins.jobqueue named in brackets, whose "
        "default is in basins/clusters.yaml.",
    )
    group.add_argument(
        "--cluster-config",
        type=Path,
        metavar="FILE",
        help="YAML file of Dask settings, laid out like basins/clusters.yaml, that "
        "overrides the defaults and your Dask configuration",
    )

    # Where the jobs go and what each one requests.
    group.add_argument(
        "--queue", metavar="NAME", help="SLURM partition or PBS queue [queue]"
    )
    group.add_argument(
        "--account", metavar="NAME", help="account charged for the jobs [account]"
    )
    group.add_argument(
        "--cores", type=int, metavar="N", help="CPU cores per job [cores]"
    )
    group.add_argument(
        "--memory", metavar="SIZE", help="memory per job, such as 8GiB [memory]"
    )
    group.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="worker processes per job [processes]",
    )
    group.add_argument(
        "--walltime",
        metavar="TIME",
        help="wall-clock limit per job, HH:MM:SS [walltime]",
    )

    # How many jobs run.
    group.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="keep N jobs running and replace those that end [minimum-jobs and "
        "maximum-jobs]",
    )
    group.add_argument(
        "--min-jobs",
        type=int,
        metavar="N",
        help="adaptive scaling: fewest jobs [minimum-jobs]",
    )
    group.add_argument(
        "--max-jobs",
        type=int,
        metavar="N",
        help="adaptive scaling: most jobs [maximum-jobs]",
    )

    # What runs inside a job.
    group.add_argument(
        "--job-prologue",
        action="append",
        metavar="LINE",
        help="shell line to run in each job before the worker starts, such as "
        "'module load python'; repeatable, appended to [job-script-prologue]",
    )
    group.add_argument(
        "--interface",
        metavar="NAME",
        help="network interface of scheduler and workers, such as ib0 [interface]",
    )
    group.add_argument(
        "--log-directory",
        metavar="DIR",
        help="directory of the job logs [log-directory]",
    )

    # When workers retire, and how long to wait for the first one.
    group.add_argument(
        "--lifetime",
        metavar="DURATION",
        help="retire each worker after this time, such as 50m; default: walltime - 2 x "
        "stagger [lifetime]",
    )
    group.add_argument(
        "--lifetime-stagger",
        metavar="DURATION",
        help="spread the lifetimes by +/- this time, such as 2m [lifetime-stagger]",
    )
    group.add_argument(
        "--lifetime-restart",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="restart a retired worker inside its job instead of ending the job "
        "[lifetime-restart]",
    )
    group.add_argument(
        "--worker-timeout",
        type=float,
        metavar="SECONDS",
        help="fail when no worker has connected after this time; default: wait "
        "[worker-timeout]",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``basins`` command."""
    parser = argparse.ArgumentParser(
        prog="basins",
        description="Map the basins of attraction of self-attention dynamics on the "
        "sphere into a Zarr atlas.",
    )
    parser.add_argument("--version", action="version", version=f"basins {__version__}")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", action="store_true", help="log chunk plans and timings"
    )
    verbosity.add_argument(
        "-q", "--quiet", action="store_true", help="log only warnings and errors"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="map the basins of a configuration into a new atlas",
        description="Integrate the configuration's initial conditions, classify their "
        "final states, store everything in a Zarr atlas and print the basin "
        "fractions.",
    )
    run.add_argument("config", help="TOML configuration file, or example:NAME")
    run.add_argument("--out", "-o", required=True, type=Path, help="atlas directory to create")
    run.add_argument(
        "--overwrite", action="store_true", help="replace an existing atlas at --out"
    )
    run.add_argument("--n-initial", type=int, metavar="N", help="override sampling.n_initial")
    run.add_argument("--chunk-size", type=int, metavar="N", help="override sampling.chunk_size")
    run.add_argument("--seed", type=int, help="override sampling.seed")
    _add_execution_options(run)

    resume = commands.add_parser(
        "resume",
        help="compute the chunks of an atlas that are still pending",
        description="Continue an interrupted run; the result is identical to an "
        "uninterrupted one.",
    )
    resume.add_argument("atlas", type=Path, help="atlas directory")
    _add_execution_options(resume)

    report = commands.add_parser(
        "report", help="print the basin fractions stored in an atlas"
    )
    report.add_argument("atlas", type=Path, help="atlas directory")

    examples = commands.add_parser("examples", help="list the built-in example systems")
    examples.add_argument("--show", metavar="NAME", help="print the TOML of one example")
    return parser


# Command-line option -> JobSettings field that it overrides.
BATCH_OPTIONS = {
    "queue": "queue",
    "account": "account",
    "cores": "cores",
    "memory": "memory",
    "processes": "processes",
    "walltime": "walltime",
    "min_jobs": "minimum_jobs",
    "max_jobs": "maximum_jobs",
    "interface": "interface",
    "log_directory": "log_directory",
    "lifetime": "lifetime",
    "lifetime_stagger": "lifetime_stagger",
    "lifetime_restart": "lifetime_restart",
    "worker_timeout": "worker_timeout",
}


def _cluster_options(args: argparse.Namespace) -> dict:
    import dask.config

    from basins.errors import ConfigError

    options = {
        name: getattr(args, option)
        for option, name in BATCH_OPTIONS.items()
        if getattr(args, option) is not None
    }
    if args.jobs is not None:
        if args.min_jobs is not None or args.max_jobs is not None:
            raise ConfigError(
                "--jobs and --min-jobs/--max-jobs are exclusive: give --jobs N for a "
                "fixed number of jobs, or --min-jobs and --max-jobs for adaptive "
                "scaling"
            )
        options["minimum_jobs"] = options["maximum_jobs"] = args.jobs
    if args.job_prologue:
        configured = dask.config.get("basins.jobqueue.job-script-prologue", default=[])
        options["job_script_prologue"] = [*configured, *args.job_prologue]
    return options


def _execution(args: argparse.Namespace):
    from basins.mapping import Execution

    return Execution(
        cluster=args.cluster,
        scheduler=args.scheduler,
        n_workers=args.workers,
        numba_threads=args.threads,
        progress=not args.no_progress,
        cluster_options=_cluster_options(args),
    )


def _cluster_config(args: argparse.Namespace):
    """Return a context that applies --cluster-config, if given."""
    import contextlib

    if args.cluster_config is None:
        return contextlib.nullcontext()
    from basins.clusters import config_file

    return config_file(args.cluster_config)


def _print_fractions(path: Path) -> None:
    from basins.report import basin_fractions, format_table

    print(format_table(basin_fractions(path)))


def _command_run(args: argparse.Namespace) -> int:
    from basins.config import load_config
    from basins.mapping import run

    config = load_config(args.config)
    overrides = {
        key: value
        for key, value in (
            ("n_initial", args.n_initial),
            ("chunk_size", args.chunk_size),
            ("seed", args.seed),
        )
        if value is not None
    }
    if overrides:
        config = config.with_sampling(**overrides)
    with _cluster_config(args):
        summary = run(
            config,
            args.out,
            overwrite=args.overwrite,
            execution=_execution(args),
            max_chunks=args.max_chunks,
        )
    _print_fractions(args.out)
    if summary.chunks_pending:
        print(
            f"{summary.chunks_pending} chunks pending: continue with "
            f"'basins resume {args.out}'"
        )
    return 0


def _command_resume(args: argparse.Namespace) -> int:
    from basins.mapping import resume

    with _cluster_config(args):
        summary = resume(
            args.atlas, execution=_execution(args), max_chunks=args.max_chunks
        )
    _print_fractions(args.atlas)
    if summary.chunks_pending:
        print(
            f"{summary.chunks_pending} chunks pending: continue with "
            f"'basins resume {args.atlas}'"
        )
    return 0


def _command_report(args: argparse.Namespace) -> int:
    _print_fractions(args.atlas)
    return 0


def _command_examples(args: argparse.Namespace) -> int:
    from basins.examples import example_text, list_examples

    if args.show:
        print(example_text(args.show), end="")
        return 0
    descriptions = list_examples()
    width = max(len(name) for name in descriptions)
    for name, description in descriptions.items():
        print(f"{name.ljust(width)}  {description}")
    print("\nrun one with: basins run example:NAME --out NAME.zarr")
    return 0


COMMANDS = {
    "run": _command_run,
    "resume": _command_resume,
    "report": _command_report,
    "examples": _command_examples,
}


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.INFO
    if args.verbose:
        level = logging.DEBUG
    elif args.quiet:
        level = logging.WARNING
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # Dask's info lines (cluster start and stop) are noise for a user of basins.
    # distributed sets its loggers' levels when imported, so import it first.
    import distributed  # noqa: F401

    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(max(level, logging.WARNING))

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"basins: warning: {message}", file=sys.stderr)

    warnings.showwarning = show_warning


def main(argv: list[str] | None = None) -> int:
    """Run the ``basins`` command and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    try:
        return COMMANDS[args.command](args)
    except BasinsError as exc:
        print(f"basins: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            "basins: interrupted; finished chunks are stored, continue with "
            "'basins resume ATLAS'",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
