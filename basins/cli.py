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

from basins import __version__
from basins.errors import BasinsError, TaskError, Terminated

logger = logging.getLogger("basins")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INVALID_ATLAS = 3
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def _add_execution_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("execution")
    group.add_argument(
        "--cluster",
        choices=("local", "synchronous"),
        default="local",
        help="local: start a Dask LocalCluster of worker processes (default); "
        "synchronous: run every chunk in this process, for debugging",
    )
    group.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="address of a running Dask scheduler (e.g. tcp://host:8786); its "
        "workers must see the atlas path. Overrides --cluster",
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
        "synchronous). Workers x threads may not exceed the cores",
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
    return parser


def _execution(args: argparse.Namespace):
    from basins.mapping import Execution

    return Execution(
        cluster=args.cluster,
        scheduler=args.scheduler,
        n_workers=args.workers,
        numba_threads=args.threads,
        progress=not args.no_progress,
    )


def _print_fractions(path: Path) -> None:
    from basins.report import basin_fractions, format_table, nonfinite_note

    rows = basin_fractions(path)
    print(format_table(rows))
    note = nonfinite_note(path, rows)
    if note:
        print(f"basins: warning: {note}", file=sys.stderr)


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

    summary = resume(args.atlas, execution=_execution(args), max_chunks=args.max_chunks)
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


def _command_verify(args: argparse.Namespace) -> int:
    from basins.verify import verify_atlas

    verification = verify_atlas(args.atlas)
    for note in verification.notes:
        print(f"note: {note}")
    if verification.valid:
        print(
            f"atlas {args.atlas} is valid: {verification.chunks} chunks, all complete "
            f"and consistent with the catalog"
        )
        return 0
    print(f"atlas {args.atlas} is invalid or incomplete:")
    for problem in verification.problems:
        print(f"  {problem}")
    return EXIT_INVALID_ATLAS


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
    "report": _command_report,
    "verify": _command_verify,
    "unlock": _command_unlock,
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


def main(argv: list[str] | None = None) -> int:
    """Run the ``basins`` command and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args)
    interrupted = (
        "finished chunks are stored, continue with 'basins resume ATLAS'"
    )
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
        print(f"basins: interrupted; {interrupted}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"basins: terminated by SIGTERM; {interrupted}", file=sys.stderr)
        return EXIT_TERMINATED


if __name__ == "__main__":
    sys.exit(main())
