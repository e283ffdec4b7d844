"""File-system checks around an atlas: free space, links that leave it, leftovers.

Every path that basins writes is built from the atlas path the user named, fixed
array names and chunk indices. Nothing read from a configuration or an atlas becomes
part of a path. What remains to check is the file system itself: a symbolic link
inside an atlas that points elsewhere would carry writes out of it, and a disk that
cannot hold the atlas would fail hours into a run.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from basins import lock
from basins.config import Config
from basins.errors import AtlasError

logger = logging.getLogger(__name__)

# Uncompressed bytes per initial condition besides the final state: status (int8),
# steps (int32), local_label (int32), class (int8) and attractor (int32).
SCALAR_BYTES_PER_IC = 1 + 4 + 4 + 1 + 4

# Per-initial-condition arrays, each storing one file per chunk.
FILES_PER_CHUNK = 6

# Space a small file takes on a typical file system (one 4 KiB block).
FILE_BLOCK_BYTES = 4096

# Allowance for metadata, attributes and the catalog.
METADATA_BYTES = 1 << 20

# zarr's LocalStore writes a chunk to NAME.<32 hex digits>.partial and renames it
# into place (zarr >= 3.1.3); a writer killed in between leaves that file behind.
LEFTOVER_PATTERN = re.compile(r"\.[0-9a-f]{32}\.partial$")


def atlas_bytes(config: Config, n_chunks: int | None = None) -> int:
    """Return an upper estimate of the disk space of an atlas, or of some chunks.

    The estimate counts the per-initial-condition arrays uncompressed, one file
    block per chunk file and a fixed allowance for metadata and the catalog.
    Compression (zstd) usually makes an atlas smaller, never much larger.

    Parameters
    ----------
    config : Config
        The atlas's configuration.
    n_chunks : int, optional
        Estimate only this many chunks (for a resume); by default all of them.
    """
    sampling = config.sampling
    system = config.system
    if n_chunks is None:
        n_chunks = sampling.n_chunks
        n_ics = sampling.n_initial
    else:
        n_ics = min(n_chunks * sampling.chunk_size, sampling.n_initial)
    per_ic = SCALAR_BYTES_PER_IC + 8 * system.n_tokens * system.dim
    return (
        n_ics * per_ic + n_chunks * FILES_PER_CHUNK * FILE_BLOCK_BYTES + METADATA_BYTES
    )


def _format_bytes(count: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    unit = 0
    while count >= 1024 and unit < len(units) - 1:
        count /= 1024
        unit += 1
    return f"{count:.3g} {units[unit]}"


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def tree_bytes(path: str | Path) -> int:
    """Return the total size of the files under ``path``, not following links."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def check_free_space(
    path: str | Path, needed: int, *, what: str, freed: int = 0
) -> None:
    """Check that the file system of ``path`` has ``needed`` bytes free.

    Parameters
    ----------
    path : str or path
        The atlas; it need not exist yet.
    needed : int
        Bytes that the operation will write, from `atlas_bytes`.
    what : str
        What needs the space, for the message (such as ``"the atlas of 10 initial
        conditions"``).
    freed : int, optional
        Bytes that the operation frees first (an atlas being replaced).

    Raises
    ------
    AtlasError
        If the free space (plus ``freed``) is smaller than ``needed``, or the file
        system has no storage at all (such as ``/proc``).
    """
    anchor = _existing_ancestor(Path(path))
    usage = shutil.disk_usage(anchor)
    if usage.total == 0:
        # procfs, sysfs and similar report no capacity at all: nothing can be stored.
        raise AtlasError(
            f"cannot create {str(path)!r}: {str(anchor)!r} is on a virtual file "
            f"system with no storage; choose a path on a disk"
        )
    free = usage.free + freed
    if needed > free:
        raise AtlasError(
            f"{what} needs about {_format_bytes(needed)} (estimated without "
            f"compression) but only {_format_bytes(free)} is free on the file system "
            f"of {str(anchor)!r}; lower sampling.n_initial or choose another path"
        )


def escaping_links(root: str | Path) -> list[Path]:
    """Return the symbolic links under ``root`` whose targets lie outside it.

    The root itself may be a link: it is the path the user named.
    """
    resolved_root = Path(root).resolve()
    escaping = []
    for directory, directories, files in os.walk(root):
        for name in directories + files:
            entry = Path(directory) / name
            if entry.is_symlink() and not entry.resolve().is_relative_to(resolved_root):
                escaping.append(entry)
    return escaping


def check_links(root: str | Path) -> None:
    """Raise `AtlasError` if a symbolic link inside the atlas points outside it."""
    escaping = escaping_links(root)
    if escaping:
        first = escaping[0]
        raise AtlasError(
            f"atlas {str(root)!r} contains {len(escaping)} symbolic link(s) that point "
            f"outside it, such as {str(first)!r} -> {str(first.resolve())!r}; basins "
            f"writes only inside the atlas, so replace them with real files or "
            f"directories"
        )


def _is_leftover(name: str) -> bool:
    return bool(LEFTOVER_PATTERN.search(name)) or (
        lock.is_lock_file(name) and name != lock.LOCK_NAME
    )


def leftover_files(root: str | Path) -> list[Path]:
    """Return the temporary files that writers killed mid-write left in the atlas.

    These are zarr's temporary chunk files and temporary lock files of processes
    killed while taking the lock.
    """
    found = []
    for directory, _, files in os.walk(root):
        found.extend(Path(directory) / name for name in files if _is_leftover(name))
    return found


def remove_leftovers(root: str | Path) -> int:
    """Remove the temporary files of killed writers; return how many were removed.

    Only call this while holding the atlas's writer lock, so that no live writer's
    temporary file is removed.
    """
    leftovers = leftover_files(root)
    for file in leftovers:
        file.unlink(missing_ok=True)
    if leftovers:
        logger.info("removed %d temporary files of interrupted writes", len(leftovers))
    return len(leftovers)


def remove_entry(entry: Path) -> None:
    """Remove a file, a link or a directory tree, never following links."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


def clear_directory(path: str | Path, *, keep: Callable[[str], bool]) -> None:
    """Remove everything in directory ``path`` except the entries that ``keep`` names.

    Links are removed, never followed, so nothing outside ``path`` is touched.
    """
    for entry in Path(path).iterdir():
        if not keep(entry.name):
            remove_entry(entry)
