"""The ``basins`` command line.

Exit statuses:

- 0: success.
- 1: a failure that is not the user's input (chunks that failed, a file system error
  such as a full disk).
- 2: a user error (an invalid configuration, a missing or existing atlas, an atlas in
  use, a bad option), printed as one line.
- 3: ``basins verify`` found the atlas invalid or incomplete.
- 130 and 143: a run interrupted by SIGINT (Ctrl-C) or SIGTERM. It keeps every chunk
  it finished and releases the atlas's lock.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

from basins import __version__, geometry_cli
from basins.errors import BasinsError, ConfigError, TaskError, Terminated
from basins.transformer.cli import add_transformer_parser, command_transformer

logger = logging.getLogger("basins")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INVALID_ATLAS = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def _add_execution_options(
    parser: argparse.ArgumentParser, *, resume_hint: str = "'basins resume' continues"
) -> None:
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
        help=f"compute at most N pending chunks, then stop; {resume_hint}",
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

    _add_sweep_parser(commands)

    report = commands.add_parser(
        "report",
        help="print the basin fractions of an atlas, or write a summary document",
        description="Print the basin fractions of an atlas or a sweep, or write a "
        "Markdown or HTML summary with the tables and figures.",
    )
    report.add_argument("atlas", type=Path, help="atlas or sweep directory")
    report.add_argument(
        "--format",
        choices=("text", "markdown", "html"),
        default="text",
        help="text: print the fraction table (default); markdown: write a document "
        "and its figures (PNG files in the folder OUTPUT-STEM_figures beside it); "
        "html: write one self-contained page",
    )
    report.add_argument(
        "--output", "-o", type=Path, metavar="FILE",
        help="file to write; required with --format markdown or html",
    )
    _add_plot_parser(commands)

    equilibria = commands.add_parser(
        "equilibria",
        help="list the equilibria of a system, stable and unstable, with certificates",
        description="Search equilibria by Newton's method from sampled final states, "
        "from splits of the tokens on each real eigenvector of V, from regular "
        "polygons and polytopes in invariant subspaces and from random points; print "
        "each distinct one with its class, alignment, stability verdict and the rank "
        "of its attention matrix. The search is local: it cannot prove that no other "
        "equilibrium exists.",
    )
    equilibria.add_argument("config", help="TOML configuration file, or example:NAME")
    equilibria.add_argument(
        "--n-initial", type=int, default=256, metavar="N",
        help="random initial conditions integrated to final states (default 256)",
    )
    equilibria.add_argument(
        "--random-starts", type=int, default=32, metavar="N",
        help="random points used directly as Newton starts (default 32)",
    )
    equilibria.add_argument(
        "--seed", type=int, help="seed of both random sets (default: sampling.seed)"
    )
    equilibria.add_argument(
        "--spectra", action="store_true", help="print the rates of each equilibrium"
    )
    equilibria.add_argument(
        "--save", type=Path, metavar="FILE.npz",
        help="write states, rates, verdicts and attention matrices to a NumPy file",
    )

    reproduce = commands.add_parser(
        "reproduce",
        help="check each claim of the theory and draw its figure",
        description="Map small atlases, search and certify equilibria, and print one "
        "row per claim: the system, the figure, the measured value, pass or fail. "
        "Exits with status 1 if a claim fails.",
    )
    reproduce.add_argument(
        "--out", "-o", type=Path, default=Path("reproduction"),
        help="folder of the PNG figures (default ./reproduction)",
    )
    reproduce.add_argument(
        "--only", nargs="+", metavar="CLAIM", help="check only these claims"
    )
    reproduce.add_argument(
        "--keep-atlases", type=Path, metavar="DIR",
        help="keep the atlases mapped on the way in DIR (default: a temporary folder)",
    )

    verify = commands.add_parser(
        "verify",
        help="check that an atlas is readable, complete and consistent",
        description="Read every chunk of an atlas and check it: chunks decode and "
        "are complete, status, class and attractor codes are valid, counts match the "
        "catalog and the stored configuration matches the arrays. Prints what is "
        f"wrong; exits with status {EXIT_INVALID_ATLAS} if anything is.",
    )
    verify.add_argument("atlas", type=Path, help="atlas directory")

    unlock = commands.add_parser(
        "unlock",
        help="remove the writer lock left by a run that stopped",
        description="Remove the writer lock of an atlas whose holder is no longer "
        "running. A lock from a process of this host is checked and removed (run and "
        "resume also remove such stale locks themselves); a lock from another host "
        "cannot be checked and needs --force.",
    )
    unlock.add_argument("atlas", type=Path, help="atlas directory")
    unlock.add_argument(
        "--force",
        action="store_true",
        help="also remove a lock taken on another host, or a damaged lock file; make "
        "sure first that its holder has stopped",
    )

    examples = commands.add_parser("examples", help="list the built-in example systems")
    examples.add_argument("--show", metavar="NAME", help="print the TOML of one example")

    geometry_cli.add_parsers(commands, _add_execution_options)
    add_transformer_parser(commands)
    return parser


SWEEP_HELP = """\
A sweep maps the configuration once per value of one parameter, with the same initial
conditions at every value, into one store holding one atlas per value. The tasks of
all values are (value, chunk) pairs run on one cluster; 'basins resume SWEEP'
computes those still pending.

--param takes a key of the configuration:
  system.beta, integration.dt, integration.tol, integration.max_steps,
  integration.checks, classification.cluster_tol, classification.shape_tol
                      set that number
  system.V.scale      multiply the configuration's V by the value (also Q, K)
  system.V.spectral_norm
                      rescale V to that largest singular value (also Q, K)
  system.V[i][j]      set one entry of V, rows and columns from 0 (also Q, K)

--values takes START:STOP:COUNT, COUNT evenly spaced values with both ends included
(0:8:33 is 0, 0.25, ..., 8), or a comma-separated list (0.5,1,2). Values must be
strictly increasing or strictly decreasing: attractors are followed from each value
to the next, and their births and deaths are listed with the value. Write a first
value below zero with an equals sign: --values=-1:1:5.

example:
  basins sweep example:multistable --param system.beta --values 0:4:33 \\
      --n-initial 20000 --out beta.zarr
"""


def _add_sweep_parser(commands) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="map a configuration over the values of one parameter",
        description=SWEEP_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sweep.add_argument("config", help="TOML configuration file, or example:NAME")
    sweep.add_argument(
        "--param", required=True, metavar="KEY", help="parameter to sweep, e.g. system.beta"
    )
    sweep.add_argument(
        "--values", required=True, metavar="SPEC",
        help="START:STOP:COUNT (both ends included) or A,B,C",
    )
    sweep.add_argument("--out", "-o", required=True, type=Path, help="sweep directory to create")
    sweep.add_argument(
        "--overwrite", action="store_true", help="replace an existing sweep or atlas at --out"
    )
    sweep.add_argument("--n-initial", type=int, metavar="N", help="override sampling.n_initial")
    sweep.add_argument("--chunk-size", type=int, metavar="N", help="override sampling.chunk_size")
    sweep.add_argument("--seed", type=int, help="override sampling.seed")
    _add_execution_options(sweep)


def _add_plot_parser(commands) -> None:
    plot = commands.add_parser(
        "plot",
        help="draw a figure of an atlas or a sweep into a PNG file",
        description="bars: basin fractions with 95% Wilson intervals; sweep: fractions "
        "against the swept parameter; steps: histograms of the RK4 steps to "
        "convergence per attractor; slice: for dim = 3, the attractor reached as one "
        "token's initial position moves over a latitude-longitude grid, the other "
        "tokens fixed (integrates RES x 2 RES new trajectories). For a sweep, bars, "
        "steps and slice show one value, chosen with --value.",
    )
    plot.add_argument("atlas", type=Path, help="atlas or sweep directory")
    plot.add_argument(
        "--kind", required=True, choices=("bars", "sweep", "steps", "slice"),
        help="the figure to draw",
    )
    plot.add_argument("--output", "-o", required=True, type=Path, metavar="FILE.png",
                      help="image file to write")
    plot.add_argument(
        "--by", choices=("attractor", "class", "alignment"), default="attractor",
        help="group of bars and sweep: each attractor (default), each class, or the "
        "eigenvectors of V the attractor lies on",
    )
    plot.add_argument("--value", type=float, help="parameter value of a sweep to show")
    plot.add_argument(
        "--stacked", action="store_true", help="sweep: stack the fractions instead of lines"
    )
    plot.add_argument(
        "--log", action="store_true",
        help="sweep: logarithmic fraction axis, so that small basins show",
    )
    plot.add_argument("--token", type=int, default=0, help="slice: the token that moves")
    plot.add_argument(
        "--ic", type=int, default=0,
        help="slice: index of the initial condition that gives the other tokens",
    )
    plot.add_argument(
        "--resolution", type=int, default=90, metavar="RES",
        help="slice: RES latitudes x 2 RES longitudes (default 90)",
    )
    plot.add_argument("--dpi", type=int, default=120, help="image resolution (default 120)")
    plot.add_argument("--no-progress", action="store_true", help="do not show the progress bar")


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
    from basins.report import basin_fractions, format_table, nonfinite_note
    from basins.sweep import is_sweep

    if is_sweep(path):
        from basins.summary import sweep_text

        print(sweep_text(path), end="")
        return
    rows = basin_fractions(path)
    print(format_table(rows))
    note = nonfinite_note(path, rows)
    if note:
        print(f"basins: warning: {note}", file=sys.stderr)


def _load_config(args: argparse.Namespace):
    """Load the configuration with the sampling overrides of the command line."""
    from basins.config import load_config

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
    return config


def _command_run(args: argparse.Namespace) -> int:
    from basins.mapping import run

    with _cluster_config(args):
        summary = run(
            _load_config(args),
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


def _command_sweep(args: argparse.Namespace) -> int:
    from basins.sweep import Sweep, parse_values, run_sweep

    sweep = Sweep(_load_config(args), args.param, parse_values(args.values))
    with _cluster_config(args):
        summary = run_sweep(
            sweep,
            args.out,
            overwrite=args.overwrite,
            execution=_execution(args),
            max_chunks=args.max_chunks,
        )
    _print_fractions(args.out)
    if summary.chunks_pending:
        print(
            f"{summary.chunks_pending} (value, chunk) tasks pending: continue with "
            f"'basins resume {args.out}'"
        )
    return 0


def _command_resume(args: argparse.Namespace) -> int:
    from basins.mapping import resume
    from basins.sweep import is_sweep, resume_sweep

    if is_sweep(args.atlas):
        resume = resume_sweep
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
    if args.output is not None and args.output.is_dir():
        raise ConfigError(
            f"--output {str(args.output)!r} is a directory: give the document's file, "
            f"such as {str(args.output / 'report.md')!r}"
        )
    if args.output is None:
        if args.format != "text":
            raise ConfigError(
                f"--format {args.format} writes a document: give its file with --output"
            )
        _print_fractions(args.atlas)
        return 0
    from basins.summary import write_summary

    write_summary(args.atlas, args.output, format=args.format)
    print(f"wrote {args.output}")
    return 0


# Largest --dpi of `basins plot`: a default-sized figure is then about 8000 x 6000
# pixels, 180 MB in memory.
MAX_DPI = 1200


def _check_plot_output(output: Path, dpi: int) -> None:
    """Reject an image format that matplotlib cannot write, or an impossible dpi."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = output.suffix.lstrip(".").lower()
    if suffix not in formats:
        raise ConfigError(
            f"--output {str(output)!r} has format {suffix or '(no suffix)'!r}: expected "
            f"a file ending in one of {', '.join('.' + name for name in sorted(formats))}"
        )
    if not 1 <= dpi <= MAX_DPI:
        raise ConfigError(f"--dpi {dpi} is invalid: expected 1 to {MAX_DPI}")


def _command_plot(args: argparse.Namespace) -> int:
    from basins.plots import plot_atlas

    _check_plot_output(args.output, args.dpi)
    figure = plot_atlas(
        args.atlas,
        args.kind,
        by=args.by,
        value=args.value,
        stacked=args.stacked,
        log=args.log,
        token=args.token,
        ic=args.ic,
        resolution=args.resolution,
        progress=not args.no_progress,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.output, dpi=args.dpi)
    print(f"wrote {args.output}")
    return 0


def _command_equilibria(args: argparse.Namespace) -> int:
    from basins.config import load_config
    from basins.equilibria import format_equilibria, save_equilibria, search

    config = load_config(args.config)
    if args.save:
        args.save = _npz_path(args.save)
    found = search(
        config, n_initial=args.n_initial, n_random=args.random_starts, seed=args.seed
    )
    print(format_equilibria(found, spectra=args.spectra))
    if args.save:
        save_equilibria(args.save, found)
        print(f"saved to {args.save}")
    return 0


def _npz_path(path: Path) -> Path:
    """Return the file `numpy.savez` writes for ``path``, checking its folder exists."""
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if not path.parent.is_dir():
        raise ConfigError(
            f"--save {str(path)!r} is invalid: folder {str(path.parent)!r} does not "
            f"exist; create it or choose another path"
        )
    return path


def _command_reproduce(args: argparse.Namespace) -> int:
    from basins.reproduce import format_claims, reproduce

    # One line per claim is enough; the atlases mapped on the way log at debug level.
    if not args.verbose:
        for name in ("basins.mapping", "basins.atlas"):
            logging.getLogger(name).setLevel(logging.WARNING)
    claims = reproduce(args.out, only=args.only, work=args.keep_atlases)
    print(format_claims(claims))
    print(f"figures in {args.out}")
    return 0 if all(claim.passed for claim in claims) else 1


def _command_verify(args: argparse.Namespace) -> int:
    from basins.sweep import is_sweep, member_paths

    # A sweep is verified member by member.
    paths = member_paths(args.atlas) if is_sweep(args.atlas) else [args.atlas]
    valid = [_verify_one(path) for path in paths]
    return 0 if all(valid) else EXIT_INVALID_ATLAS


def _verify_one(path: Path) -> bool:
    from basins.verify import verify_atlas

    verification = verify_atlas(path)
    for note in verification.notes:
        print(f"note: {note}")
    if verification.valid:
        print(
            f"atlas {path} is valid: {verification.chunks} chunks, all complete "
            f"and consistent with the catalog"
        )
        return True
    print(f"atlas {path} is invalid or incomplete:")
    for problem in verification.problems:
        print(f"  {problem}")
    return False


def _command_unlock(args: argparse.Namespace) -> int:
    from basins.lock import unlock

    holder = unlock(args.atlas, force=args.force)
    if holder is None:
        print(f"atlas {args.atlas} has no valid lock; nothing to remove")
    else:
        print(f"removed the lock of {args.atlas} held by {holder.describe()}")
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
    "sweep": _command_sweep,
    "report": _command_report,
    "plot": _command_plot,
    "equilibria": _command_equilibria,
    "reproduce": _command_reproduce,
    "verify": _command_verify,
    "unlock": _command_unlock,
    "examples": _command_examples,
    **geometry_cli.COMMANDS,
    "transformer": command_transformer,
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
    # Numba logs its compiler passes at DEBUG, thousands of lines per kernel: -v is
    # for the messages of basins.
    logging.getLogger("numba").setLevel(max(level, logging.WARNING))

    def show_warning(message, category, filename, lineno, file=None, line=None):
        print(f"basins: warning: {message}", file=sys.stderr)

    warnings.showwarning = show_warning


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into `Terminated` while a command runs in the main thread.

    Batch schedulers send SIGTERM before SIGKILL at the end of a job; unwinding
    releases the atlas's lock and closes the cluster in that grace period. The
    handler also sets `basins.mapping.STOP_REQUESTED`, because Python ignores an
    exception raised while a finalizer (``__del__``) runs; the loops over chunks
    then raise `Terminated` themselves.
    """
    from basins.mapping import STOP_REQUESTED

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        STOP_REQUESTED.set()
        raise Terminated

    def drop_terminated(unraisable):
        if not isinstance(unraisable.exc_value, Terminated):
            previous_hook(unraisable)

    previous = signal.signal(signal.SIGTERM, terminate)
    previous_hook = sys.unraisablehook
    sys.unraisablehook = drop_terminated
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook
        STOP_REQUESTED.clear()


def _print_error(exc: BaseException) -> None:
    """Print an error as exactly one line, even if its message spans several."""
    message = " ".join(str(exc).split())
    print(f"basins: error: {message}", file=sys.stderr)


def _continuation(args: argparse.Namespace) -> str:
    """Return how to continue an interrupted command, as a clause after a semicolon.

    Maps and sweeps continue with ``basins resume``; the geometry commands store
    their finished chunks too and continue when run again with the same options.
    Other commands store nothing partial, so there is nothing to continue.
    """
    target = getattr(args, "out", None) or getattr(args, "atlas", None) or "ATLAS"
    if args.command in ("run", "resume", "sweep"):
        return f"; finished chunks are stored, continue with 'basins resume {target}'"
    if args.command in geometry_cli.COMMANDS:
        return (
            f"; finished chunks are stored, continue by running the same "
            f"'basins {args.command} {target} ...' command again"
        )
    return ""


def main(argv: list[str] | None = None) -> int:
    """Run the ``basins`` command and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    interrupted = _continuation(args)
    try:
        with _sigterm_unwinds():
            return COMMANDS[args.command](args)
    except BasinsError as exc:
        _print_error(exc)
        return EXIT_USAGE
    except TaskError as exc:
        _print_error(exc)
        return EXIT_FAILURE
    except OSError as exc:
        atlas = getattr(args, "out", None) or getattr(args, "atlas", None)
        if args.command in ("run", "resume") and atlas is not None:
            exc = OSError(
                f"{exc}; finished chunks are stored: fix the cause, then continue with "
                f"'basins resume {atlas}'"
            )
        _print_error(exc)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"basins: interrupted{interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"basins: terminated by SIGTERM{interrupted}", file=sys.stderr)
        return EXIT_TERMINATED


if __name__ == "__main__":
    sys.exit(main())
