"""Exceptions and warnings raised by basins.

Every error that a user can cause by what they write (a configuration, a path, a
command-line option) derives from `BasinsError`; the command line prints its message
and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class BasinsError(Exception):
    """Base class of the errors that a user's input can cause."""


class ConfigError(BasinsError, ValueError):
    """Invalid configuration: a key, a value or a combination of values.

    The message names the key (as a dotted path such as ``system.beta``), the
    value received and what is allowed.
    """


class AtlasError(BasinsError):
    """An atlas store is missing, already exists, or does not match the request."""


class AtlasInUseError(AtlasError):
    """Another process holds the writer lock of the atlas.

    The message names the holder (host, process id, command and start time) and
    explains how to clear the lock if that process is gone.
    """


class LockLostError(AtlasError):
    """A task found that its run no longer owns the atlas, so it wrote nothing.

    The run's driver died, its lock was removed, or another run took the atlas over.
    """


class TaskError(RuntimeError):
    """Some chunks failed to compute; the others are stored and can be resumed."""


class CheckpointError(BasinsError):
    """A model checkpoint is missing, incomplete, malformed or not supported.

    The message names the file and, where one is at fault, the tensor.
    """


class ClusterError(BasinsError):
    """A Dask cluster cannot start, never gets a worker, or loses its scheduler.

    The message names what failed and what to check: the submit command, the job
    logs, the scheduler address or the queue. Chunks that finished stay stored, and
    ``basins resume`` computes the others.
    """


class Terminated(BaseException):
    """SIGTERM arrived; unwinds like KeyboardInterrupt, releasing locks and clusters."""


class BasinsWarning(UserWarning):
    """Base class of the warnings issued by basins."""


class StepSizeWarning(BasinsWarning):
    """The step ``dt`` exceeds the stability estimate of fixed-step RK4."""
