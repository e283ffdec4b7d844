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
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from basins.classify import (
    CLASS_NAMES,
    CLASS_NONE,
    Attractor,
    Matcher,
    describe,
    eigenspaces,
)
from basins.config import Config
from basins.errors import AtlasError
from basins.kernels import (
    STATUS_CONVERGED,
    STATUS_MAX_STEPS,
    STATUS_NONFINITE,
    STATUS_PENDING,
)

logger = logging.getLogger(__name__)

ATLAS_FORMAT_VERSION = 1

# Names of the status codes in the run totals, in the order they are reported.
STATUS_NAMES = {
    STATUS_CONVERGED: "converged",
    STATUS_MAX_STEPS: "max_steps",
    STATUS_NONFINITE: "nonfinite",
    STATUS_PENDING: "pending",
}

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


def create_atlas(path: str | Path, config: Config, *, overwrite: bool = False) -> None:
    """Create an empty atlas for ``config`` at ``path``.

    Parameters
    ----------
    path : str or path
        Directory of the new Zarr store.
    config : Config
        The configuration; stored whole in the attributes.
    overwrite : bool, optional
        Replace an existing atlas at ``path``. A path that holds anything other than
        an atlas is never removed.

    Raises
    ------
    AtlasError
        If ``path`` exists and ``overwrite`` is false, or if it exists and is not an
        atlas.
    """
    path = Path(path)
    if path.exists():
        if not _is_atlas(path):
            raise AtlasError(
                f"{str(path)!r} exists and is not a basins atlas; choose another path"
            )
        if not overwrite:
            raise AtlasError(
                f"atlas {str(path)!r} already exists; use 'basins resume {path}' to "
                f"complete it, or --overwrite to replace it"
            )
        logger.info("removing existing atlas %s", path)
        shutil.rmtree(path)

    sampling = config.sampling
    system = config.system
    group = zarr.open_group(str(path), mode="w-", zarr_format=3)
    for name, (dtype, fill_value, trailing) in PER_IC_ARRAYS.items():
        extra = {"token": system.n_tokens, "component": system.dim}
        group.create_array(
            name,
            shape=(sampling.n_initial, *(extra[t] for t in trailing)),
            chunks=(sampling.chunk_size, *(extra[t] for t in trailing)),
            dtype=dtype,
            fill_value=fill_value,
            dimension_names=("ic", *trailing),
        )
    group.attrs.update(
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
    logger.debug("created atlas %s with %d chunks", path, sampling.n_chunks)


def open_store(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open an existing atlas, checking that it is one and of a known format."""
    path = Path(path)
    if not path.exists():
        raise AtlasError(f"atlas {str(path)!r} not found")
    try:
        group = zarr.open_group(str(path), mode=mode)
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
    return group


def read_config(path: str | Path) -> Config:
    """Return the configuration stored in the atlas at ``path``."""
    group = open_store(path)
    return Config.from_dict(group.attrs["config"], name=group.attrs.get("name", ""))


def chunk_bounds(config: Config, chunk: int) -> tuple[int, int]:
    """Return the half-open range of initial-condition indices of ``chunk``."""
    start = chunk * config.sampling.chunk_size
    return start, min(start + config.sampling.chunk_size, config.sampling.n_initial)


def pending_chunks(path: str | Path) -> list[int]:
    """Return the chunks of the atlas whose initial conditions are not all computed."""
    group = open_store(path)
    config = read_config(path)
    status = group["status"][:]
    size = config.sampling.chunk_size
    pending = []
    for chunk in range(config.sampling.n_chunks):
        if np.any(status[chunk * size : (chunk + 1) * size] == STATUS_PENDING):
            pending.append(chunk)
    return pending


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


@dataclass(frozen=True)
class _ChunkAttractors:
    """Every (chunk, local label) pair of an atlas, in the order of its first member.

    Local labels number a chunk's attractors in order of first appearance, so
    chunk by chunk and label by label is the order of the first members; pair
    ``offset[c] + label`` is label ``label`` of chunk ``c``.
    """

    first_ic: np.ndarray
    count: np.ndarray
    steps: np.ndarray
    offset: np.ndarray
    totals: dict[str, int]


def _scan_chunks(group: zarr.Group, config: Config) -> _ChunkAttractors:
    """Read the atlas chunk by chunk and tabulate its local attractors and statuses.

    Holds one chunk of the per-initial-condition arrays at a time, so that the
    memory of `finalize` does not grow with the number of initial conditions.
    """
    first_ic, count, steps = [], [], []
    offset = np.zeros(config.sampling.n_chunks + 1, dtype=np.int64)
    totals = dict.fromkeys(STATUS_NAMES.values(), 0)
    for chunk in range(config.sampling.n_chunks):
        start, stop = chunk_bounds(config, chunk)
        status = group["status"][start:stop]
        for code, name in STATUS_NAMES.items():
            totals[name] += int(np.count_nonzero(status == code))
        labels = group["local_label"][start:stop]
        labelled = np.flatnonzero(labels >= 0)
        k = int(labels.max(initial=-1)) + 1
        if k:
            chunk_steps = group["steps"][start:stop][labelled]
            _, first = np.unique(labels[labelled], return_index=True)
            first_ic.append(start + labelled[first])
            count.append(np.bincount(labels[labelled], minlength=k))
            steps.append(np.bincount(labels[labelled], weights=chunk_steps, minlength=k))
        offset[chunk + 1] = offset[chunk] + k

    def joined(parts: list[np.ndarray], dtype) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)

    return _ChunkAttractors(
        first_ic=joined(first_ic, np.int64),
        count=joined(count, np.int64),
        steps=joined(steps, np.float64),
        offset=offset,
        totals=totals,
    )


def finalize(path: str | Path) -> list[Attractor]:
    """Merge the chunks' attractors into the catalog and write the attractor ids.

    Attractor ids are ordered by decreasing count, ties by the index of the first
    initial condition; both depend only on the final states, so the catalog and the
    per-initial-condition ids are the same for any chunking or completion order.
    Chunks still pending are left out; finalizing again after they are computed
    gives the full catalog. The atlas is read and written one chunk at a time.

    Returns
    -------
    list of Attractor
        The catalog, in id order, with counts.
    """
    group = open_store(path, mode="r+")
    config = read_config(path)
    pairs = _scan_chunks(group, config)

    # Merge the local attractors across chunks; each merged group is represented by
    # its earliest initial condition.
    n_pairs = len(pairs.first_ic)
    if n_pairs:
        states = group["final_state"].get_orthogonal_selection(
            (pairs.first_ic, slice(None), slice(None))
        )
    else:
        states = np.empty((0, config.system.n_tokens, config.system.dim))
    matcher = Matcher(config.system, config.classification)
    features = matcher.features(states, np.ones(n_pairs, dtype=bool))
    group_of_pair, representatives = matcher.group_representatives(
        features, np.arange(n_pairs)
    )
    counts = np.bincount(
        group_of_pair, weights=pairs.count, minlength=len(representatives)
    ).astype(np.int64)
    step_sums = np.bincount(
        group_of_pair, weights=pairs.steps, minlength=len(representatives)
    )

    # Ids by decreasing count, ties by first initial condition.
    order = sorted(
        range(len(representatives)),
        key=lambda g: (-counts[g], pairs.first_ic[representatives[g]]),
    )
    id_of_group = np.empty(len(order), dtype=np.int32)
    id_of_group[order] = np.arange(len(order), dtype=np.int32)

    spaces = eigenspaces(config.system.V)
    catalog = []
    for g in order:
        rep = representatives[g]
        attractor = describe(states[rep], pairs.first_ic[rep], spaces, config.classification)
        attractor.count = int(counts[g])
        attractor.steps_total = int(step_sums[g])
        catalog.append(attractor)

    id_of_pair = id_of_group[group_of_pair] if n_pairs else np.empty(0, dtype=np.int32)
    codes = np.array([a.class_code for a in catalog], dtype=np.int8)
    for chunk in range(config.sampling.n_chunks):
        start, stop = chunk_bounds(config, chunk)
        labels = group["local_label"][start:stop]
        labelled = labels >= 0
        attractor_id = np.full(stop - start, -1, dtype=np.int32)
        class_code = np.full(stop - start, CLASS_NONE, dtype=np.int8)
        if labelled.any():
            attractor_id[labelled] = id_of_pair[pairs.offset[chunk] + labels[labelled]]
            class_code[labelled] = codes[attractor_id[labelled]]
        group["attractor"][start:stop] = attractor_id
        group["class"][start:stop] = class_code
    write_catalog(group, config, catalog, spaces)

    totals = pairs.totals
    group.attrs.update({"finalized": totals["pending"] == 0, "totals": totals})
    logger.info(
        "catalog of %s: %d attractors, totals %s", path, len(catalog), totals
    )
    return catalog


def write_catalog(group: zarr.Group, config: Config, catalog: list[Attractor], spaces) -> None:
    """Write the catalog arrays (dimension ``attractor``) into the ``catalog`` group.

    Per attractor: ``class``, ``count``, ``first_ic``, ``mean_steps``, ``n_clusters``,
    ``state`` (token, component); per cluster (padded to ``n_tokens`` with 0, -1 or
    NaN): ``multiplicity``, ``centre``, ``eigenspace`` (from 1; 0 for padding),
    ``sign`` and ``cos``. The attributes hold the labels, the shapes and the
    eigenvalues of ``V``.
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
    catalog_group = group.require_group("catalog")
    for name, values in columns.items():
        names = dimensions[values.ndim]
        if name == "state":
            names = ("attractor", "token", "component")
        catalog_group.create_array(
            name,
            shape=values.shape,
            chunks=tuple(max(1, s) for s in values.shape),
            dtype=values.dtype,
            dimension_names=names,
            overwrite=True,
        )[...] = values
    catalog_group.attrs.update(
        {
            "label": [a.label for a in catalog],
            "shape": [a.shape for a in catalog],
            "eigenvalues": [[v.eigenvalue.real, v.eigenvalue.imag] for v in spaces],
            "eigenspace_dimension": [int(v.basis.shape[1]) for v in spaces],
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


def read_catalog(path: str | Path) -> list[CatalogEntry]:
    """Read the catalog of the atlas at ``path``, in id order.

    Raises
    ------
    AtlasError
        If the atlas has no catalog yet (no chunk has been finalized).
    """
    group = open_store(path)
    if "catalog" not in group:
        raise AtlasError(
            f"atlas {str(path)!r} has no catalog yet; run 'basins resume {path}'"
        )
    catalog = group["catalog"]
    labels = catalog.attrs["label"]
    classes = catalog["class"][:]
    counts = catalog["count"][:]
    first = catalog["first_ic"][:]
    mean_steps = catalog["mean_steps"][:]
    states = catalog["state"][:]
    return [
        CatalogEntry(
            id=i,
            class_name=CLASS_NAMES[classes[i]],
            label=labels[i],
            count=int(counts[i]),
            first_ic=int(first[i]),
            mean_steps=float(mean_steps[i]),
            state=states[i],
        )
        for i in range(len(labels))
    ]
