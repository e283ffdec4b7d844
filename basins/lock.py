"""The writer lock of an atlas: one run, resume or sweep writes to an atlas at a time.

The lock is the file ``ATLAS/.basins-lock``, a JSON object naming its holder: host
name and boot id, process id and that process's start time, the command, the UTC time
the lock was taken and a random token. It is created with a hard link from a complete
temporary file, and the link fails if the lock exists. So a lock file is never seen
half written, and two processes can never both hold it, because ``link`` is atomic on
local file systems and on NFS. The Linux open(2) manual page recommends this scheme
where ``O_EXCL`` cannot be trusted on NFS.

Each task of a run receives the token and calls `check_writer` right before it
writes its chunk. The check fails, and the task writes nothing, when the lock no
longer holds that token (the lock was removed, or another run took the atlas over),
when the holder runs on this host and has died, or when the task runs on a Dask
worker whose scheduler has cancelled it because the driver's client disconnected.

A lock whose holder ran on this host and is no longer running is stale: `acquire`
removes it with a warning in the log. A lock taken on another host cannot be checked,
because process ids mean nothing across machines; `unlock` removes it only when asked
with ``force=True``, after the user has made sure that the holder has stopped.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from basins.errors import AtlasError, AtlasInUseError, LockLostError

logger = logging.getLogger(__name__)

LOCK_NAME = ".basins-lock"

# Linux's identifier of the current boot; a process id is meaningful only within one.
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str | None:
    try:
        return BOOT_ID_FILE.read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """Return the start time of process ``pid`` in clock ticks after boot, if known.

    Read from ``/proc/PID/stat`` (field 22); ``None`` where there is no procfs or no
    such process. Together with the pid it names one process even after the pid is
    reused.
    """
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[19])


@dataclass(frozen=True)
class LockHolder:
    """The process that holds, or held, the writer lock of an atlas."""

    host: str
    boot_id: str | None
    pid: int
    process_start: int | None
    command: str
    started: str
    token: str

    def describe(self) -> str:
        """Return a one-line description: process, host, command and start time."""
        return (
            f"process {self.pid} on host {self.host} (basins {self.command}, "
            f"started {self.started})"
        )

    def on_this_host(self) -> bool:
        """Return whether the holder ran on this machine, in its current boot."""
        return self.host == socket.gethostname() and self.boot_id == _boot_id()

    def is_running(self) -> bool | None:
        """Return whether the holder is still running, or None if that is unknowable.

        Only a holder on this host can be checked. A pid that now belongs to another
        process (a different start time) counts as not running.
        """
        if not self.on_this_host():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # the process exists but belongs to another user
        if self.process_start is None:
            return True
        return _process_start(self.pid) == self.process_start


def current_holder(command: str) -> LockHolder:
    """Return a `LockHolder` describing this process, with a fresh random token."""
    pid = os.getpid()
    return LockHolder(
        host=socket.gethostname(),
        boot_id=_boot_id(),
        pid=pid,
        process_start=_process_start(pid),
        command=command,
        started=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        token=secrets.token_hex(16),
    )


def lock_path(path: str | Path) -> Path:
    """Return the path of the lock file of the atlas at ``path``."""
    return Path(path) / LOCK_NAME


def read_lock(path: str | Path) -> LockHolder | None:
    """Return the holder of the atlas's lock, or None if the atlas is not locked.

    Raises
    ------
    AtlasError
        If the lock file exists but is not a lock written by basins.
    """
    file = lock_path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AtlasError(f"cannot read the lock file {str(file)!r}: {exc}") from None
    try:
        data = json.loads(text)
        holder = LockHolder(**data)
        if not isinstance(holder.pid, int) or not isinstance(holder.token, str):
            raise TypeError("pid or token of the wrong type")
    except (ValueError, TypeError) as exc:
        raise AtlasError(
            f"the lock file {str(file)!r} is damaged ({exc}); if no basins process "
            f"uses the atlas, remove it with 'basins unlock {path} --force'"
        ) from None
    return holder


@contextlib.contextmanager
def _guard(path: Path) -> Iterator[None]:
    """Serialise lock changes by processes of this host with ``flock`` on the atlas.

    Without it two processes that both find a stale lock could each remove it, the
    second removing the fresh lock of the first. Some network file systems refuse
    ``flock`` on a directory. The lock changes then go unguarded, so two processes
    that find the same stale lock at the same moment can still race.
    """
    import fcntl

    descriptor = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError as exc:
            logger.debug("no flock on %s (%s); changing the lock unguarded", path, exc)
        yield
    finally:
        os.close(descriptor)


def _link_lock(path: Path, holder: LockHolder) -> bool:
    """Create the lock file with ``holder``'s content; return False if it exists."""
    temporary = path / f"{LOCK_NAME}.{holder.token}.tmp"
    with open(temporary, "x", encoding="utf-8") as file:
        json.dump(asdict(holder), file)
        file.flush()
        os.fsync(file.fileno())
    try:
        os.link(temporary, lock_path(path))
    except FileExistsError:
        # On NFS a retried link can fail although the first attempt succeeded; the
        # Linux open(2) manual page advises checking the unique file's link count.
        linked = os.stat(temporary).st_nlink == 2
    else:
        linked = True
    finally:
        temporary.unlink()
    return linked


def in_use_message(path: Path, holder: LockHolder) -> str:
    """Return the error message for an atlas whose lock ``holder`` may be running."""
    message = f"atlas {str(path)!r} is in use by {holder.describe()}"
    if holder.on_this_host():
        return f"{message}; wait for it to finish or stop it"
    if holder.host == socket.gethostname():
        where = (
            "the lock was taken before this host last booted, or on another machine "
            "of the same name, so basins cannot check that process"
        )
    else:
        where = "basins cannot check whether a process on another host is still running"
    return (
        f"{message}; {where}. If it has stopped, remove the lock with "
        f"'basins unlock {path} --force'"
    )


class AtlasLock:
    """The writer lock of one atlas, held by this process.

    Use `acquire` to take it. Leaving a ``with`` block releases it.
    """

    def __init__(self, path: Path, holder: LockHolder) -> None:
        self.path = path
        self.holder = holder

    @property
    def token(self) -> str:
        """The random token that this run's tasks present to `check_writer`."""
        return self.holder.token

    def release(self) -> None:
        """Remove the lock file if it still holds this lock's token."""
        try:
            with _guard(self.path):
                current = read_lock(self.path)
                if current is not None and current.token == self.token:
                    lock_path(self.path).unlink()
                    logger.debug("released the lock of %s", self.path)
                else:
                    logger.warning(
                        "the lock of %s was removed or taken over while this run "
                        "held it; left as found",
                        self.path,
                    )
        except (OSError, AtlasError) as exc:
            logger.warning("could not release the lock of %s: %s", self.path, exc)

    def __enter__(self) -> AtlasLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def acquire(path: str | Path, command: str, *, create: bool = False) -> AtlasLock:
    """Take the writer lock of the atlas at ``path``.

    Parameters
    ----------
    path : str or path
        The atlas directory.
    command : str
        What the lock is for (``run``, ``resume``, ``sweep``); shown to a process
        that finds the atlas in use.
    create : bool, optional
        Create the directory (and its parents) if it does not exist.

    Returns
    -------
    AtlasLock
        The lock; release it with `AtlasLock.release` or a ``with`` block.

    Raises
    ------
    AtlasInUseError
        If a running process holds the lock, or a process on another host whose
        state cannot be checked.
    AtlasError
        If the directory is missing (and ``create`` is false) or cannot be written.
    """
    path = Path(path)
    holder = current_holder(command)
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        with _guard(path):
            if _link_lock(path, holder):
                logger.debug("locked %s for %s", path, holder.describe())
                return AtlasLock(path, holder)
            existing = read_lock(path)
            if existing is not None and existing.is_running() is False:
                logger.warning(
                    "removing the stale lock of %s: %s is no longer running",
                    path,
                    existing.describe(),
                )
                lock_path(path).unlink()
                if _link_lock(path, holder):
                    return AtlasLock(path, holder)
                existing = read_lock(path)
    except FileNotFoundError:
        raise AtlasError(f"atlas {str(path)!r} not found") from None
    except OSError as exc:
        raise AtlasError(f"cannot lock atlas {str(path)!r}: {exc}") from None
    if existing is None:  # released between the two reads; rare, so ask for a retry
        raise AtlasInUseError(
            f"atlas {str(path)!r} was locked and released while this process tried "
            f"to lock it; try again"
        )
    raise AtlasInUseError(in_use_message(path, existing))


def unlock(path: str | Path, *, force: bool = False) -> LockHolder | None:
    """Remove the lock of the atlas at ``path`` if its holder has stopped.

    Parameters
    ----------
    path : str or path
        The atlas directory.
    force : bool, optional
        Also remove a lock taken on another host, or a damaged lock file, whose
        holder cannot be checked. The caller vouches that the holder has stopped;
        if it is still running, its tasks find the lock gone and write nothing more.

    Returns
    -------
    LockHolder or None
        The holder of the removed lock, or None if the atlas was not locked (or the
        lock file was damaged and removed with ``force``).

    Raises
    ------
    AtlasInUseError
        If the holder is running, or cannot be checked and ``force`` is false.
    """
    path = Path(path)
    if not path.is_dir():
        raise AtlasError(f"atlas {str(path)!r} not found")
    with _guard(path):
        try:
            holder = read_lock(path)
        except AtlasError:
            if not force:
                raise
            lock_path(path).unlink()
            return None
        if holder is None:
            return None
        running = holder.is_running()
        if running or (running is None and not force):
            raise AtlasInUseError(in_use_message(path, holder))
        lock_path(path).unlink()
    logger.debug("removed the lock of %s held by %s", path, holder.describe())
    return holder


def _task_cancelled() -> bool:
    """Return whether this code runs in a Dask task that its scheduler cancelled.

    The scheduler cancels the running tasks of a client that disconnects, which is
    how a worker on another host learns that the driver died. Reads the worker's
    state (``Worker.state.tasks``), which distributed does not document as public.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not inside a Dask worker
        return False
    key = worker.get_current_task()
    task = worker.state.tasks.get(key)
    return task is not None and task.state == "cancelled"


def check_writer(path: str | Path, token: str) -> None:
    """Check, right before a write, that the run with ``token`` still owns the atlas.

    Raises
    ------
    LockLostError
        If the lock is gone or holds another token, if its holder ran on this host
        and has died, or if the scheduler cancelled the calling Dask task.
    """
    try:
        holder = read_lock(path)
    except AtlasError as exc:
        raise LockLostError(f"chunk not written: {exc}") from None
    if holder is None or holder.token != token:
        raise LockLostError(
            f"chunk not written: the run that started this task no longer holds the "
            f"lock of atlas {str(path)!r}"
        )
    if holder.is_running() is False:
        raise LockLostError(
            f"chunk not written: {holder.describe()}, which owns atlas "
            f"{str(path)!r}, is no longer running"
        )
    if _task_cancelled():
        raise LockLostError(
            f"chunk not written: the scheduler cancelled this task, because the run "
            f"that owns atlas {str(path)!r} disconnected"
        )


def is_lock_file(name: str) -> bool:
    """Return whether a file name in an atlas belongs to the lock (or its temporary)."""
    return name == LOCK_NAME or (
        name.startswith(f"{LOCK_NAME}.") and name.endswith(".tmp")
    )
