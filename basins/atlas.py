"""The basin atlas: a Zarr v3 directory store holding one basin map.

Layout (``m`` initial conditions, ``n`` tokens, ``d`` components, ``k`` attractors):

=====================  ===========================  =======  ==========================
array                  dimensions                   dtype    fill value
=====================  ===========================  =======  ==========================
``status``             (ic,)                        int8     -1 (pending)
``steps``              (ic,)                        int32    -1
``final_state``        (ic, token, component)       float64  NaN
``local_label``        (ic,)                        int32    -1
``class``              (ic,)                        int8     -1
``attractor``          (ic,)                        int32    -1
``catalog/*``          (attractor, ...)             various  see `write_catalog`
=====================  ===========================  =======  ==========================

Every per-initial-condition array is chunked along ``ic`` with the run's chunk size,
and one task writes one chunk of each, so no two tasks write the same chunk. A task
writes ``status`` last: a chunk whose statuses are all set is complete. ``local_label``
numbers attractors within a chunk; ``attractor`` and ``class`` are rewritten from the
catalog when a run finishes (`finalize`), which merges the chunks' attractors in the
order of their first initial condition, so they never depend on the order in which
tasks finished.

The root attributes hold the whole configuration (``config``), the versions of the
software that wrote the atlas (``versions``), the seed and the atlas format version
(``basins_atlas_format``).
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from basins import lock, storage
from basins.classify import (
    CLASS_NAMES,
    CLASS_NONE,
    Attractor,
    Matcher,
    describe,
    eigenspaces,
)
from basins.config import Config
from basins.errors import AtlasError, AtlasInUseError, ConfigError
from basins.stability import RATE_RTOL, VERDICT_NAMES, catalog_columns, verdict_name
from basins.kernels import (
    STATUS_CONVERGED,
    STATUS_MAX_STEPS,
    STATUS_NONFINITE,
    STATUS_PENDING,
)

logger = logging.getLogger(__name__)

ATLAS_FORMAT_VERSION = 1

# Compression of every array: zstd, then a CRC-32C checksum of the compressed chunk,
# so that a damaged chunk fails to decode instead of returning wrong values.
COMPRESSORS = (ZstdCodec(level=0), Crc32cCodec())

# name: (dtype, fill value, dimension names after "ic")
PER_IC_ARRAYS: dict[str, tuple[str, Any, tuple[str, ...]]] = {
    "status": ("int8", STATUS_PENDING, ()),
    "steps": ("int32", -1, ()),
    "final_state": ("float64", float("nan"), ("token", "component")),
    "local_label": ("int32", -1, ()),
    "class": ("int8", CLASS_NONE, ()),
    "attractor": ("int32", -1, ()),
}


def software_versions() -> dict[str, str]:
    """Return the versions of basins and of the libraries that shape its results."""
    import dask
    import numba

    from basins import __version__

    return {
        "basins": __version__,
        "numba": numba.__version__,
        "numpy": np.__version__,
        "zarr": zarr.__version__,
        "dask": dask.__version__,
        "python": platform.python_version(),
    }


def _is_atlas(path: Path) -> bool:
    try:
        group = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, ValueError, zarr.errors.GroupNotFoundError):
        return False
    return "basins_atlas_format" in group.attrs


def _unfinished(path: Path) -> bool:
    """Return whether ``path`` contains an atlas whose creation never completed.

    `create_atlas` writes the root attributes last, under the writer lock. A
    directory with a lock file and no such attributes is therefore the remains of a
    run that stopped while creating it, and contains no results.
    """
    return lock.lock_path(path).exists() and not _is_atlas(path)


def check_target(
    path: str | Path, *, overwrite: bool = False, token: str | None = None
) -> None:
    """Check that a new atlas may be created at ``path``.

    A missing path, an empty directory and the remains of an unfinished creation
    may be used; an existing atlas only with ``overwrite``; anything else never.
    A writer lock must be stale or hold ``token`` (the caller's own lock).

    Raises
    ------
    AtlasError
        If ``path`` is an atlas and ``overwrite`` is false, or contains anything
        else.
    AtlasInUseError
        If a process that may still be running holds the atlas's writer lock.
    """
    path = Path(path)
    if not path.exists():
        return
    if not path.is_dir():
        raise AtlasError(
            f"{str(path)!r} exists and is not a directory; choose another path"
        )
    holder = lock.read_lock(path)
    foreign = holder is not None and holder.token != token
    if foreign and holder.is_running() is not False:
        raise AtlasInUseError(lock.in_use_message(path, holder))
    if _is_atlas(path):
        if not overwrite:
            raise AtlasError(
                f"atlas {str(path)!r} already exists; use 'basins resume {path}' to "
                f"complete it, or --overwrite to replace it"
            )
        _check_only_atlas_entries(path)
        return
    if _unfinished(path):
        _check_only_atlas_entries(path)
        return
    if any(not lock.is_lock_file(entry.name) for entry in path.iterdir()):
        raise AtlasError(
            f"{str(path)!r} exists and is not a basins atlas; choose another path"
        )


# Entries of an atlas directory that basins writes: the root metadata, the arrays,
# the catalog and the groups of the geometry commands. Zarr's atomic writes leave
# "*.partial" files behind when a process is killed mid-write.
ATLAS_ENTRIES = frozenset(
    {"zarr.json", "catalog", "initial_state", "boundary", "slices", "escape"}
    | set(PER_IC_ARRAYS)
)


def _check_only_atlas_entries(path: Path) -> None:
    """Reject clearing an atlas directory that also contains files basins did not write."""
    foreign = sorted(
        entry.name
        for entry in path.iterdir()
        if entry.name not in ATLAS_ENTRIES
        and not lock.is_lock_file(entry.name)
        and not entry.name.endswith(".partial")
    )
    if foreign:
        listed = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise AtlasError(
            f"atlas {str(path)!r} also contains {len(foreign)} entries that basins "
            f"did not write ({listed}); move them elsewhere before replacing the atlas"
        )


def create_atlas(
    path: str | Path,
    config: Config,
    *,
    overwrite: bool = False,
    token: str | None = None,
    initial_state: np.ndarray | None = None,
) -> None:
    """Create an empty atlas for ``config`` at ``path``.

    Parameters
    ----------
    path : str or path
        Directory of the new Zarr store.
    config : Config
        The configuration; stored whole in the attributes.
    overwrite : bool, optional
        Replace an existing atlas at ``path``. A path that contains anything other
        than an atlas (or the remains of an unfinished creation) is never removed.
    token : str, optional
        Token of the caller's writer lock on ``path`` (`basins.lock.acquire`).
    initial_state : numpy.ndarray, optional
        Initial conditions that no seed regenerates (such as a model's token
        states), shape ``(n_initial, n_tokens, dim)``; stored as ``initial_state``.

    Raises
    ------
    AtlasError
        If ``path`` exists and ``overwrite`` is false, or if it exists and is not an
        atlas.
    AtlasInUseError
        If another process holds the writer lock of ``path``.
    ValueError
        If ``initial_state`` does not have the shape of the sampling.

    Notes
    -----
    Call it while holding the writer lock; the lock file is kept when an old atlas
    is cleared. The root attributes are written last, so an interrupted creation
    never looks like an atlas. Every chunk of the per-initial-condition arrays
    carries a CRC-32C checksum, so a damaged chunk fails to decode instead of
    returning wrong values.
    """
    path = Path(path)
    check_target(path, overwrite=overwrite, token=token)
    try:
        if path.exists() and any(e.name != lock.LOCK_NAME for e in path.iterdir()):
            logger.info("clearing %s for a new atlas", path)
            storage.clear_directory(path, keep=lambda name: name == lock.LOCK_NAME)
        group = zarr.create_group(str(path), zarr_format=3)
    except OSError as exc:
        raise AtlasError(f"cannot create atlas {str(path)!r}: {exc}") from None

    sampling = config.sampling
    system = config.system
    expected = (sampling.n_initial, system.n_tokens, system.dim)
    if initial_state is not None and initial_state.shape != expected:
        raise ValueError(
            f"initial_state has shape {initial_state.shape}: expected {expected}"
        )
    for name, (dtype, fill_value, trailing) in PER_IC_ARRAYS.items():
        extra = {"token": system.n_tokens, "component": system.dim}
        group.create_array(
            name,
            shape=(sampling.n_initial, *(extra[t] for t in trailing)),
            chunks=(sampling.chunk_size, *(extra[t] for t in trailing)),
            dtype=dtype,
            fill_value=fill_value,
            compressors=COMPRESSORS,
            dimension_names=("ic", *trailing),
        )
    # One write of the root metadata: ``group.attrs.update`` would write it once per
    # key, and a run killed between two of them would leave an atlas without its
    # configuration.
    group.update_attributes(
        {
            "basins_atlas_format": ATLAS_FORMAT_VERSION,
            "name": config.name,
            "config": config.to_dict(),
            "seed": sampling.seed,
            "versions": software_versions(),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "status_names": {"-1": "pending", "0": "converged", "1": "max_steps", "2": "nonfinite"},
            "class_names": list(CLASS_NAMES),
            "finalized": False,
        }
    )
    if initial_state is not None:
        group.create_array(
            "initial_state",
            shape=expected,
            chunks=(sampling.chunk_size, system.n_tokens, system.dim),
            dtype="float64",
            fill_value=float("nan"),
            dimension_names=("ic", "token", "component"),
        )[...] = initial_state
    logger.debug("created atlas %s with %d chunks", path, sampling.n_chunks)


# Codecs that basins writes or accepts. A chunk with any other codec (a pickle codec
# in an edited store, say) is never decoded: the atlas is rejected on opening.
SAFE_CODECS = frozenset({"bytes", "zstd", "crc32c", "gzip", "blosc", "transpose"})


def _codec_problems(name: str, array: zarr.Array) -> list[str]:
    codecs = [codec.to_dict()["name"] for codec in array.metadata.codecs]
    unsafe = [codec for codec in codecs if codec not in SAFE_CODECS]
    if unsafe:
        return [
            f"array {name!r} uses codec(s) {', '.join(map(repr, unsafe))}; basins "
            f"decodes only {', '.join(sorted(SAFE_CODECS))}"
        ]
    return []


# Exceptions that zarr raises on unreadable metadata (zarr.json). JSONDecodeError
# and zarr's metadata errors are ValueErrors; missing or mistyped fields raise
# KeyError or TypeError.
METADATA_ERRORS = (ValueError, TypeError, KeyError)


def catalog_problems(group: zarr.Group, path: str | Path) -> list[str]:
    """Return what makes the catalog of the atlas at ``path`` unreadable or unsafe.

    Reports unreadable catalog metadata, a catalog that is not a group, and catalog
    arrays that use codecs outside `SAFE_CODECS`. An atlas without a catalog has
    no problem here.
    """
    if not os.path.lexists(Path(path) / "catalog"):
        return []
    try:
        catalog = group["catalog"]
        if not isinstance(catalog, zarr.Group):
            return ["'catalog' is an array, expected a group"]
        catalog_arrays = list(catalog.arrays())
    except METADATA_ERRORS as exc:
        return [f"the catalog has invalid metadata ({type(exc).__name__}: {exc})"]
    problems = []
    for name, array in catalog_arrays:
        problems.extend(_codec_problems(f"catalog/{name}", array))
    return problems


def metadata_problems(group: zarr.Group, config: Config) -> list[str]:
    """Return what is wrong with the per-initial-condition arrays' metadata.

    Checks that every per-initial-condition array exists with the dtype, shape and
    chunks that the stored configuration ``config`` implies, and uses only
    `SAFE_CODECS`. The catalog is checked by `catalog_problems`.
    """
    sampling, system = config.sampling, config.system
    sizes = {"token": system.n_tokens, "component": system.dim}
    problems = []
    for name, (dtype, _, trailing) in PER_IC_ARRAYS.items():
        try:
            array = group[name]
        except KeyError:
            problems.append(f"array {name!r} is missing")
            continue
        except METADATA_ERRORS as exc:
            problems.append(f"array {name!r} has invalid metadata: {exc}")
            continue
        if not isinstance(array, zarr.Array):
            problems.append(f"{name!r} is a group, expected an array")
            continue
        shape = (sampling.n_initial, *(sizes[t] for t in trailing))
        chunks = (sampling.chunk_size, *(sizes[t] for t in trailing))
        if array.dtype != np.dtype(dtype):
            problems.append(f"array {name!r} has dtype {array.dtype}, expected {dtype}")
        if array.shape != shape:
            problems.append(
                f"array {name!r} has shape {array.shape}, but the stored configuration "
                f"(sampling.n_initial, system.n_tokens, system.dim) implies {shape}"
            )
        if array.chunks != chunks:
            problems.append(
                f"array {name!r} has chunks {array.chunks}, but the stored "
                f"configuration (sampling.chunk_size) implies {chunks}"
            )
        problems.extend(_codec_problems(name, array))
    return problems


def read_stored_config(group: zarr.Group, path: Path) -> Config:
    """Return the configuration stored in the root attributes of an open atlas."""
    if "config" not in group.attrs:
        raise AtlasError(
            f"atlas {str(path)!r} has no 'config' in its root attributes, so its "
            f"arrays cannot be interpreted; create it again with 'basins run CONFIG "
            f"--out {path} --overwrite'"
        )
    try:
        return Config.from_dict(group.attrs["config"], name=group.attrs.get("name", ""))
    except (KeyError, ConfigError) as exc:
        raise AtlasError(
            f"atlas {str(path)!r} stores an invalid configuration: {exc}"
        ) from None


def read_initial_state(path: str | Path, start: int, stop: int) -> np.ndarray:
    """Return the stored initial conditions ``start .. stop-1``, ``(m, n, d)``.

    Raises
    ------
    AtlasError
        If the atlas stores no initial conditions.
    """
    group = open_store(path)
    if "initial_state" not in group:
        raise AtlasError(
            f"atlas {str(path)!r} stores no initial_state, but its configuration "
            f"asks for stored initial conditions"
        )
    return np.ascontiguousarray(group["initial_state"][start:stop])


def open_store(
    path: str | Path, mode: str = "r", *, check_metadata: bool = True
) -> zarr.Group:
    """Open an existing atlas, checking that it is one and of a known format.

    Returns the root group, see `_open`. With ``check_metadata`` false the arrays'
    metadata are not compared with the configuration; `metadata_problems` lists
    what disagrees.
    """
    return _open(path, mode, check_metadata=check_metadata)[0]


def _open(
    path: str | Path, mode: str = "r", *, check_metadata: bool = True
) -> tuple[zarr.Group, Config]:
    """Open an existing atlas and return its root group and stored configuration.

    Raises
    ------
    AtlasError
        If ``path`` is missing, is not a Zarr v3 group, not an atlas, an atlas
        whose creation never completed, of another format version, or if its
        stored configuration or array metadata are invalid (`metadata_problems`).
    AtlasInUseError
        If the atlas is still being created by a running process.
    """
    path = Path(path)
    if not path.exists():
        raise AtlasError(f"atlas {str(path)!r} not found")
    if _unfinished(path):
        holder = lock.read_lock(path)
        if holder is not None and holder.is_running() is not False:
            raise AtlasInUseError(lock.in_use_message(path, holder))
        raise AtlasError(
            f"atlas {str(path)!r} was never completely created (the run that created "
            f"it stopped early) and holds no results; create it again with "
            f"'basins run CONFIG --out {path}'"
        )
    try:
        group = zarr.open_group(str(path), mode=mode, zarr_format=3)
    except (ValueError, zarr.errors.GroupNotFoundError) as exc:
        raise AtlasError(f"{str(path)!r} is not a Zarr v3 group: {exc}") from None
    version = group.attrs.get("basins_atlas_format")
    if version is None:
        raise AtlasError(f"{str(path)!r} is a Zarr group but not a basins atlas")
    if version != ATLAS_FORMAT_VERSION:
        raise AtlasError(
            f"atlas {str(path)!r} has format version {version}; this basins reads "
            f"version {ATLAS_FORMAT_VERSION}"
        )
    config = read_stored_config(group, path)
    problems = metadata_problems(group, config) if check_metadata else []
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise AtlasError(
            f"atlas {str(path)!r} is invalid: {problems[0]}{more}; "
            f"'basins verify {path}' lists them"
        )
    return group, config


def read_config(path: str | Path) -> Config:
    """Return the configuration stored in the atlas at ``path``."""
    return _open(path)[1]


def chunk_bounds(config: Config, chunk: int) -> tuple[int, int]:
    """Return the half-open range of initial-condition indices of ``chunk``."""
    start = chunk * config.sampling.chunk_size
    return start, min(start + config.sampling.chunk_size, config.sampling.n_initial)


# Arrays written by the task of a chunk. `finalize` rewrites `attractor` and `class`
# whole, which repairs a damaged chunk of them without recomputing anything.
TASK_ARRAYS = ("status", "steps", "final_state", "local_label")

# Exceptions that zarr 3.1 raises on damaged chunk bytes: zstd raises RuntimeError,
# a checksum mismatch or a chunk of the wrong size ValueError, an unreadable file
# OSError.
DECODE_ERRORS = (ValueError, RuntimeError, OSError)

# Status codes by the names used in the totals attribute and the fraction tables.
STATUS_CODES = {
    "converged": STATUS_CONVERGED,
    "max_steps": STATUS_MAX_STEPS,
    "nonfinite": STATUS_NONFINITE,
    "pending": STATUS_PENDING,
}

VALID_STATUSES = (STATUS_CONVERGED, STATUS_MAX_STEPS, STATUS_NONFINITE)

# The problem `chunk_problem` reports for a chunk that no task has written yet.
NOT_COMPUTED = "not computed yet"

# Bytes of per-initial-condition data that `chunk_problems` reads at once.
READ_BLOCK_BYTES = 64 << 20


def _content_problem(values: dict[str, np.ndarray], config: Config) -> str | None:
    status = values["status"]
    pending = status == STATUS_PENDING
    if pending.all():
        return NOT_COMPUTED
    if pending.any():
        return f"{int(pending.sum())} of {len(status)} statuses are pending"
    invalid = ~np.isin(status, VALID_STATUSES)
    if invalid.any():
        return f"status holds invalid codes {sorted(set(status[invalid].tolist()))}"
    converged = status == STATUS_CONVERGED
    if np.any((values["local_label"] >= 0) != converged):
        return (
            "local_label is set where the status is not converged, or missing where "
            "it is"
        )
    steps = values["steps"]
    max_steps = config.integration.max_steps
    if np.any((steps < 0) | (steps > max_steps)):
        return f"steps holds values outside [0, {max_steps}]"
    finite = np.isfinite(values["final_state"]).all(axis=(1, 2))
    if np.any(~finite & (status != STATUS_NONFINITE)):
        return "final_state is not finite where the status is converged or max_steps"
    return None


def _read_task_arrays(
    group: zarr.Group, start: int, stop: int
) -> tuple[dict[str, np.ndarray] | None, str | None]:
    values = {}
    for name in TASK_ARRAYS:
        try:
            values[name] = group[name][start:stop]
        except DECODE_ERRORS as exc:
            return None, f"{name} cannot be decoded ({type(exc).__name__}: {exc})"
    return values, None


def chunk_problem(group: zarr.Group, config: Config, chunk: int) -> str | None:
    """Return why ``chunk`` is not complete and consistent, or None if it is.

    A chunk is complete when every array that its task writes decodes (the checksum
    matches) and the values agree. The values agree when no status is pending, every
    status code is valid, a local label is set exactly where the status is
    converged, steps lie within ``max_steps``, and the final state is finite unless
    the status is nonfinite. `NOT_COMPUTED` is returned for a chunk that no task has
    written yet.
    """
    start, stop = chunk_bounds(config, chunk)
    values, problem = _read_task_arrays(group, start, stop)
    if values is None:
        return problem
    return _content_problem(values, config)


def chunk_problems(group: zarr.Group, config: Config) -> dict[int, str]:
    """Return `chunk_problem` for every chunk that has one.

    Reads blocks of chunks at once and goes chunk by chunk only through a block that
    fails to decode.
    """
    sampling, system = config.sampling, config.system
    bytes_per_ic = storage.SCALAR_BYTES_PER_IC + 8 * system.n_tokens * system.dim
    bytes_per_chunk = sampling.chunk_size * bytes_per_ic
    block = max(1, READ_BLOCK_BYTES // bytes_per_chunk)
    problems = {}
    for first in range(0, sampling.n_chunks, block):
        last = min(first + block, sampling.n_chunks)
        start, stop = chunk_bounds(config, first)[0], chunk_bounds(config, last - 1)[1]
        values, _ = _read_task_arrays(group, start, stop)
        for chunk in range(first, last):
            if values is None:
                problem = chunk_problem(group, config, chunk)
            else:
                lo, hi = chunk_bounds(config, chunk)
                part = {name: a[lo - start : hi - start] for name, a in values.items()}
                problem = _content_problem(part, config)
            if problem is not None:
                problems[chunk] = problem
    return problems


def discard_damaged_catalog(path: str | Path) -> bool:
    """Remove a catalog whose metadata is unreadable or unsafe; return whether it was.

    The catalog holds only what `finalize` derives from the per-initial-condition
    arrays, so the next `finalize` rebuilds it. Only with the writer lock held.
    """
    problems = catalog_problems(open_store(path), path)
    if not problems:
        return False
    logger.warning(
        "the catalog of %s is damaged (%s); it will be rebuilt", path, problems[0]
    )
    storage.remove_entry(Path(path) / "catalog")
    return True


def reset_chunk(group: zarr.Group, config: Config, chunk: int) -> None:
    """Return a chunk to the pending state by writing fill values, ``status`` first.

    Zarr does not store a chunk equal to the fill value, so this removes the chunk's
    files, damaged ones included, without reading them.
    """
    start, stop = chunk_bounds(config, chunk)
    for name in ("status", *(n for n in PER_IC_ARRAYS if n != "status")):
        array = group[name]
        array[start:stop] = np.full((stop - start, *array.shape[1:]), array.fill_value)


def pending_chunks(path: str | Path, *, reset_damaged: bool = False) -> list[int]:
    """Return the chunks of the atlas whose initial conditions are not all computed.

    A damaged chunk (one that fails `chunk_problem` for another reason than not
    being computed) counts as pending, with a warning in the log.

    Parameters
    ----------
    path : str or path
        The atlas.
    reset_damaged : bool, optional
        Also return damaged chunks to the pending state (`reset_chunk`), so that
        `finalize` never reads them. Only with the writer lock held.
    """
    group, config = _open(path, mode="r+" if reset_damaged else "r")
    problems = chunk_problems(group, config)
    for chunk, problem in problems.items():
        if problem == NOT_COMPUTED:
            continue
        logger.warning(
            "chunk %d of %s is damaged (%s); it counts as pending and will be "
            "recomputed",
            chunk,
            path,
            problem,
        )
        if reset_damaged:
            reset_chunk(group, config, chunk)
    return sorted(problems)


@dataclass(frozen=True)
class ChunkResult:
    """Per-initial-condition results of one chunk, ready to be written."""

    chunk: int
    status: np.ndarray
    steps: np.ndarray
    final_state: np.ndarray
    local_label: np.ndarray
    class_code: np.ndarray


def write_chunk(path: str | Path, config: Config, result: ChunkResult) -> None:
    """Write one chunk of every per-initial-condition array, ``status`` last."""
    group = zarr.open_group(str(path), mode="r+")
    start, stop = chunk_bounds(config, result.chunk)
    group["final_state"][start:stop] = result.final_state
    group["steps"][start:stop] = result.steps
    group["local_label"][start:stop] = result.local_label
    group["class"][start:stop] = result.class_code
    group["status"][start:stop] = result.status


@dataclass
class _LocalAttractors:
    """The local attractors of every chunk, as read by the first pass of `finalize`.

    A pair is one (chunk, local label). Pairs are listed chunk by chunk, labels in
    increasing order within a chunk; ``labels[c]`` and ``offset[c]`` locate the
    pairs of chunk ``c``.
    """

    labels: list[np.ndarray]
    offset: np.ndarray
    first_ic: np.ndarray
    count: np.ndarray
    steps: np.ndarray
    status_count: dict[str, int]


def _read_local_attractors(group: zarr.Group, config: Config) -> _LocalAttractors:
    """Read the per-chunk attractors, one chunk at a time, so memory stays flat."""
    n_chunks = config.sampling.n_chunks
    labels, first_ic, count, steps = [], [], [], []
    offset = np.zeros(n_chunks + 1, dtype=np.int64)
    status_count = dict.fromkeys(STATUS_CODES, 0)
    for chunk in range(n_chunks):
        start, stop = chunk_bounds(config, chunk)
        status = group["status"][start:stop]
        for name, code in STATUS_CODES.items():
            status_count[name] += int(np.count_nonzero(status == code))
        local_label = group["local_label"][start:stop]
        labelled = np.flatnonzero(local_label >= 0)
        unique, first, inverse, members = np.unique(
            local_label[labelled],
            return_index=True,
            return_inverse=True,
            return_counts=True,
        )
        chunk_steps = group["steps"][start:stop][labelled]
        labels.append(unique)
        first_ic.append(start + labelled[first])
        count.append(members)
        steps.append(np.bincount(inverse.ravel(), weights=chunk_steps, minlength=len(unique)))
        offset[chunk + 1] = offset[chunk] + len(unique)
    return _LocalAttractors(
        labels=labels,
        offset=offset,
        first_ic=np.concatenate(first_ic).astype(np.int64),
        count=np.concatenate(count).astype(np.int64),
        steps=np.concatenate(steps),
        status_count=status_count,
    )


def finalize(path: str | Path) -> list[Attractor]:
    """Merge the chunks' attractors into the catalog and write the attractor ids.

    Attractor ids are ordered by decreasing count, ties by the index of the first
    initial condition. Both depend only on the final states, so the catalog and the
    per-initial-condition ids are the same for any chunking or completion order.
    Chunks still pending are left out; finalizing again after they are computed
    gives the full catalog. The per-initial-condition arrays are read and written
    one chunk at a time, so memory grows with the number of local attractors, not
    with the number of initial conditions.

    Returns
    -------
    list of Attractor
        The catalog, in id order, with counts.
    """
    group = open_store(path, mode="r+")
    config = read_config(path)
    # Until the catalog below is complete, the atlas must not claim to be finalized.
    group.attrs["finalized"] = False
    local = _read_local_attractors(group, config)

    # The first member of each chunk's local attractor, in global index order.
    order_of_pairs = np.argsort(local.first_ic, kind="stable")
    first_ic = local.first_ic[order_of_pairs]
    position = np.empty(len(order_of_pairs), dtype=np.int64)
    position[order_of_pairs] = np.arange(len(order_of_pairs))
    states = group["final_state"].get_orthogonal_selection(
        (first_ic, slice(None), slice(None))
    ) if len(first_ic) else np.empty((0, config.system.n_tokens, config.system.dim))

    # Merge the local attractors across chunks; each merged group is represented by
    # its earliest initial condition.
    matcher = Matcher(config.system, config.classification)
    features = matcher.features(states, np.ones(len(first_ic), dtype=bool))
    group_of_pair, representatives = matcher.group_representatives(
        features, np.arange(len(first_ic))
    )
    counts = np.bincount(
        group_of_pair, weights=local.count[order_of_pairs], minlength=len(representatives)
    ).astype(np.int64)
    step_sums = np.bincount(
        group_of_pair, weights=local.steps[order_of_pairs], minlength=len(representatives)
    )

    # Ids by decreasing count, ties by first initial condition.
    order = sorted(
        range(len(representatives)),
        key=lambda g: (-counts[g], first_ic[representatives[g]]),
    )
    id_of_group = np.empty(len(order), dtype=np.int32)
    id_of_group[order] = np.arange(len(order), dtype=np.int32)

    spaces = eigenspaces(config.system.V)
    catalog = []
    for g in order:
        rep = representatives[g]
        attractor = describe(states[rep], first_ic[rep], spaces, config.classification)
        attractor.count = int(counts[g])
        attractor.steps_total = int(step_sums[g])
        catalog.append(attractor)

    # Second pass: the attractor id and class of every initial condition.
    codes = np.array([a.class_code for a in catalog], dtype=np.int8)
    id_of_pair = id_of_group[group_of_pair[position]]
    for chunk in range(config.sampling.n_chunks):
        start, stop = chunk_bounds(config, chunk)
        local_label = group["local_label"][start:stop]
        labelled = np.flatnonzero(local_label >= 0)
        pair = local.offset[chunk] + np.searchsorted(
            local.labels[chunk], local_label[labelled]
        )
        attractor_id = np.full(stop - start, -1, dtype=np.int32)
        class_code = np.full(stop - start, CLASS_NONE, dtype=np.int8)
        if len(labelled):
            attractor_id[labelled] = id_of_pair[pair]
            class_code[labelled] = codes[attractor_id[labelled]]
        group["attractor"][start:stop] = attractor_id
        group["class"][start:stop] = class_code
    write_catalog(group, config, catalog, spaces)

    totals = local.status_count
    group.update_attributes({"finalized": totals["pending"] == 0, "totals": totals})
    logger.info(
        "catalog of %s: %d attractors, totals %s", path, len(catalog), totals
    )
    return catalog


def write_catalog(group: zarr.Group, config: Config, catalog: list[Attractor], spaces) -> None:
    """Write the catalog arrays (dimension ``attractor``) into the ``catalog`` group.

    Per attractor: ``class``, ``count``, ``first_ic``, ``mean_steps``, ``n_clusters``,
    ``state`` (token, component); per cluster (padded to ``n_tokens`` with 0, -1 or
    NaN): ``multiplicity``, ``centre``, ``eigenspace`` (from 1; 0 for padding),
    ``sign`` and ``cos``; the stability certificate of each attractor (see
    `basins.stability.catalog_columns`). The attributes hold the labels, the shapes
    and the eigenvalues of ``V``.
    """
    n, d = config.system.n_tokens, config.system.dim
    k = len(catalog)
    columns = {
        "class": np.array([a.class_code for a in catalog], dtype=np.int8),
        "count": np.array([a.count for a in catalog], dtype=np.int64),
        "first_ic": np.array([a.first_ic for a in catalog], dtype=np.int64),
        "mean_steps": np.array(
            [a.steps_total / a.count if a.count else np.nan for a in catalog]
        ),
        "n_clusters": np.array([len(a.multiplicity) for a in catalog], dtype=np.int32),
        "state": np.array([a.state for a in catalog]).reshape(k, n, d),
        "multiplicity": np.zeros((k, n), dtype=np.int32),
        "centre": np.full((k, n, d), np.nan),
        "eigenspace": np.zeros((k, n), dtype=np.int32),
        "sign": np.zeros((k, n), dtype=np.int8),
        "cos": np.full((k, n), np.nan),
    }
    for row, attractor in enumerate(catalog):
        clusters = len(attractor.multiplicity)
        columns["multiplicity"][row, :clusters] = attractor.multiplicity
        columns["centre"][row, :clusters] = attractor.centres
        columns["eigenspace"][row, :clusters] = [a.eigenspace for a in attractor.alignment]
        columns["sign"][row, :clusters] = [a.sign for a in attractor.alignment]
        columns["cos"][row, :clusters] = [a.cos for a in attractor.alignment]

    dimensions = {
        1: ("attractor",),
        2: ("attractor", "cluster"),
        3: ("attractor", "cluster", "component"),
    }
    certificates = catalog_columns(config.system, [a.state for a in catalog])
    columns.update({name: values for name, (values, _) in certificates.items()})
    catalog_group = group.require_group("catalog")
    for name, values in columns.items():
        names = dimensions[values.ndim]
        if name == "state":
            names = ("attractor", "token", "component")
        if name in certificates:
            names = certificates[name][1]
        catalog_group.create_array(
            name,
            shape=values.shape,
            chunks=tuple(max(1, s) for s in values.shape),
            dtype=values.dtype,
            compressors=COMPRESSORS,
            dimension_names=names,
            overwrite=True,
        )[...] = values
    catalog_group.update_attributes(
        {
            "label": [a.label for a in catalog],
            "shape": [a.shape for a in catalog],
            "eigenvalues": [[v.eigenvalue.real, v.eigenvalue.imag] for v in spaces],
            "eigenspace_dimension": [int(v.basis.shape[1]) for v in spaces],
            "stability_names": list(VERDICT_NAMES),
            "rate_rtol": RATE_RTOL,
        }
    )


@dataclass(frozen=True)
class CatalogEntry:
    """One row of a stored catalog, as read back by `read_catalog`."""

    id: int
    class_name: str
    label: str
    count: int
    first_ic: int
    mean_steps: float
    state: np.ndarray
    stability: str = ""
    unstable_directions: int = 0


def _catalog_value_problem(
    labels: object,
    classes: np.ndarray,
    counts: np.ndarray,
    first_ic: np.ndarray,
    n_initial: int,
) -> str | None:
    """Return why catalog columns cannot be right for ``n_initial`` ICs, or None.

    A cheap guard for catalogs written before they carried checksums.
    """
    k = len(classes)
    if not isinstance(labels, list) or len(labels) != k:
        return "the labels do not match the class column"
    if len(counts) != k or len(first_ic) != k:
        return "its columns have different lengths"
    if np.any((classes < 0) | (classes >= len(CLASS_NAMES))):
        return "class holds invalid codes"
    if np.any(counts < 1) or counts.sum() > n_initial:
        return f"count holds values outside [1, {n_initial}] or sums past it"
    if np.any((first_ic < 0) | (first_ic >= n_initial)):
        return f"first_ic holds values outside [0, {n_initial - 1}]"
    return None


def read_catalog(path: str | Path) -> list[CatalogEntry]:
    """Read the catalog of the atlas at ``path``, in id order.

    Raises
    ------
    AtlasError
        If the atlas has no catalog yet (no chunk has been finalized).
    """
    group = open_store(path)
    unsafe = catalog_problems(group, path)
    if unsafe:
        raise AtlasError(
            f"atlas {str(path)!r} is invalid: {unsafe[0]}; 'basins resume {path}' "
            f"rebuilds the catalog"
        )
    if "catalog" not in group:
        raise AtlasError(
            f"atlas {str(path)!r} has no catalog yet; run 'basins resume {path}'"
        )
    catalog = group["catalog"]
    try:
        labels = catalog.attrs["label"]
        classes = catalog["class"][:]
        counts = catalog["count"][:]
        first = catalog["first_ic"][:]
        mean_steps = catalog["mean_steps"][:]
        states = catalog["state"][:]
        # Catalogs written before certificates existed have no stability arrays.
        stability = catalog["stability"][:] if "stability" in catalog else None
        unstable = catalog["unstable_directions"][:] if stability is not None else None
    except (KeyError, *DECODE_ERRORS) as exc:
        raise AtlasError(
            f"the catalog of atlas {str(path)!r} is incomplete or damaged ({exc}); "
            f"'basins resume {path}' rebuilds it"
        ) from None
    problem = _catalog_value_problem(
        labels, classes, counts, first, group["status"].shape[0]
    )
    if problem:
        raise AtlasError(
            f"the catalog of atlas {str(path)!r} is damaged: {problem}; "
            f"'basins resume {path}' rebuilds it"
        )
    return [
        CatalogEntry(
            id=i,
            class_name=CLASS_NAMES[classes[i]],
            label=labels[i],
            count=int(counts[i]),
            first_ic=int(first[i]),
            mean_steps=float(mean_steps[i]),
            state=states[i],
            stability="" if stability is None else verdict_name(int(stability[i])),
            unstable_directions=0 if unstable is None else int(unstable[i]),
        )
        for i in range(len(labels))
    ]
