"""Checks of a whole atlas: readable, complete, consistent with its catalog.

`verify_atlas` reads every chunk of every array once and never writes. It reports
problems (the atlas is damaged, inconsistent or unfinished) and notes (facts worth
knowing that do not make the atlas wrong, such as a lock or leftover temporary files).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from basins import atlas, lock, storage
from basins.classify import CLASS_NAMES, CLASS_NONE
from basins.config import Config
from basins.errors import AtlasError
from basins.kernels import STATUS_CONVERGED, STATUS_MAX_STEPS, STATUS_NONFINITE

# Damaged chunks listed one by one before the rest are summarised in one line.
MAX_LISTED_CHUNKS = 20


@dataclass
class Verification:
    """Outcome of `verify_atlas`."""

    path: Path
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    chunks: int = 0
    chunks_complete: int = 0
    chunks_damaged: list[int] = field(default_factory=list)
    chunks_not_computed: list[int] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """Whether the atlas is complete and no problem was found."""
        return not self.problems


def _chunk_lines(
    verification: Verification, problems: dict[int, str], path: Path
) -> None:
    damaged = {c: p for c, p in problems.items() if p != atlas.NOT_COMPUTED}
    not_computed = sorted(c for c, p in problems.items() if p == atlas.NOT_COMPUTED)
    verification.chunks_damaged = sorted(damaged)
    verification.chunks_not_computed = not_computed
    for chunk in sorted(damaged)[:MAX_LISTED_CHUNKS]:
        verification.problems.append(f"chunk {chunk} is damaged: {damaged[chunk]}")
    if len(damaged) > MAX_LISTED_CHUNKS:
        verification.problems.append(
            f"{len(damaged) - MAX_LISTED_CHUNKS} more chunks are damaged"
        )
    if not_computed:
        verification.problems.append(
            f"{len(not_computed)} of {verification.chunks} chunks are not computed yet "
            f"(the first is chunk {not_computed[0]})"
        )
    if problems:
        verification.problems.append(
            f"'basins resume {path}' recomputes the damaged and missing chunks"
        )


def _read_whole(group: zarr.Group, name: str, problems: list[str]) -> np.ndarray | None:
    try:
        return group[name][:]
    except atlas.DECODE_ERRORS as exc:
        problems.append(
            f"array {name!r} cannot be decoded ({type(exc).__name__}: {exc})"
        )
        return None


def _catalog_problems(
    group: zarr.Group, config: Config, status: np.ndarray, path: Path
) -> list[str]:
    """Compare the catalog with the per-IC arrays ``attractor`` and ``class``."""
    problems: list[str] = []
    attractor = _read_whole(group, "attractor", problems)
    class_code = _read_whole(group, "class", problems)
    if attractor is None or class_code is None:
        return problems
    if "catalog" not in group:
        if group.attrs.get("finalized"):
            problems.append("the atlas is marked finalized but has no catalog")
        return problems
    catalog = group["catalog"]
    names = ("class", "count", "first_ic", "state")
    try:
        labels = catalog.attrs["label"]
        columns = {name: catalog[name][:] for name in names}
    except (KeyError, *atlas.DECODE_ERRORS) as exc:
        return [f"the catalog is incomplete or damaged ({type(exc).__name__}: {exc})"]

    k = len(labels)
    n, d = config.system.n_tokens, config.system.dim
    for name, values in columns.items():
        if len(values) != k:
            problems.append(f"catalog/{name} has {len(values)} rows for {k} labels")
    if columns["state"].shape[1:] != (n, d):
        problems.append(
            f"catalog/state has shape {columns['state'].shape}, expected (k, {n}, {d}) "
            f"from system.n_tokens and system.dim"
        )
    if problems:
        return problems

    bad_ids = (attractor < -1) | (attractor >= k)
    if bad_ids.any():
        problems.append(
            f"attractor holds ids outside [-1, {k - 1}] at {int(bad_ids.sum())} "
            f"initial conditions"
        )
        return problems
    bad_classes = (class_code < CLASS_NONE) | (class_code >= len(CLASS_NAMES))
    if bad_classes.any():
        problems.append(
            f"class holds invalid codes at {int(bad_classes.sum())} initial conditions"
        )

    counts = np.bincount(attractor[attractor >= 0], minlength=k)
    for i in np.flatnonzero(counts != columns["count"]):
        problems.append(
            f"attractor {i} has count {int(columns['count'][i])} in the catalog but "
            f"{int(counts[i])} initial conditions"
        )
    labelled = attractor >= 0
    converged = status == STATUS_CONVERGED
    if np.any(labelled & ~converged):
        problems.append("attractor ids are set where the status is not converged")
    if group.attrs.get("finalized") and np.any(converged & ~labelled):
        problems.append("some converged initial conditions have no attractor id")
    if np.any(class_code[labelled] != columns["class"][attractor[labelled]]):
        problems.append("class disagrees with the catalog's class of the attractor")
    if group.attrs.get("finalized") and np.any(class_code[~labelled] != CLASS_NONE):
        problems.append("class is set where there is no attractor")

    first = np.full(k, -1, dtype=np.int64)
    ids, positions = np.unique(attractor[labelled], return_index=True)
    first[ids] = np.flatnonzero(labelled)[positions]
    for i in np.flatnonzero(first != columns["first_ic"]):
        problems.append(
            f"attractor {i} has first_ic {int(columns['first_ic'][i])} in the catalog, "
            f"but its first initial condition is {int(first[i])}"
        )
    order = list(zip(-columns["count"], columns["first_ic"]))
    if order != sorted(order):
        problems.append("catalog ids are not ordered by decreasing count and first_ic")
    return problems


def _totals_problems(group: zarr.Group, status: np.ndarray) -> list[str]:
    totals = group.attrs.get("totals")
    if totals is None:
        return []
    counts = {
        "converged": int(np.sum(status == STATUS_CONVERGED)),
        "max_steps": int(np.sum(status == STATUS_MAX_STEPS)),
        "nonfinite": int(np.sum(status == STATUS_NONFINITE)),
    }
    return [
        f"the totals attribute gives {totals.get(name)} {name} initial conditions, "
        f"the status array {count}"
        for name, count in counts.items()
        if totals.get(name) != count
    ]


def _notes(path: Path) -> list[str]:
    notes = []
    try:
        holder = lock.read_lock(path)
    except AtlasError as exc:
        notes.append(str(exc))
        holder = None
    if holder is not None:
        running = holder.is_running()
        state = {True: "running", False: "no longer running", None: "on another host"}
        notes.append(f"locked by {holder.describe()}, {state[running]}")
    leftovers = storage.leftover_files(path)
    if leftovers:
        notes.append(
            f"{len(leftovers)} temporary files of interrupted writes; 'basins resume' "
            f"removes them"
        )
    return notes


def verify_atlas(path: str | Path) -> Verification:
    """Check every chunk of an atlas and its consistency with the catalog.

    Checks that the stored configuration is valid and matches the arrays' shapes,
    chunks, dtypes and codecs. Checks that every chunk of every array decodes and
    that every chunk is computed, with valid status codes, labels and step counts
    (`basins.atlas.chunk_problem`). Checks that the attractor ids and class codes
    are valid and agree with the catalog (counts, first initial conditions,
    classes, order), that the totals attribute matches the statuses, and that no
    symbolic link points out of the atlas.

    Parameters
    ----------
    path : str or path
        The atlas.

    Returns
    -------
    Verification
        Problems and notes; ``valid`` is true when there is no problem.
    """
    path = Path(path)
    verification = Verification(path)
    try:
        # Opening would report only the first metadata problem; all are listed here.
        group = atlas.open_store(path, check_metadata=False)
        config = atlas.read_stored_config(group, path)
    except AtlasError as exc:
        verification.problems.append(str(exc))
        return verification
    verification.problems.extend(atlas.metadata_problems(group, config))
    verification.problems.extend(atlas.catalog_problems(group, path))
    if verification.problems:
        return verification

    verification.chunks = config.sampling.n_chunks
    for link in storage.escaping_links(path):
        verification.problems.append(
            f"symbolic link {str(link)!r} points outside the atlas, to "
            f"{str(link.resolve())!r}"
        )
    problems = atlas.chunk_problems(group, config)
    verification.chunks_complete = verification.chunks - len(problems)
    _chunk_lines(verification, problems, path)

    # A status chunk that fails to decode is already reported by chunk_problems.
    status = _read_whole(group, "status", [])
    if status is not None:
        verification.problems.extend(_catalog_problems(group, config, status, path))
        verification.problems.extend(_totals_problems(group, status))
        finalized = group.attrs.get("finalized")
        if not problems and not finalized:
            verification.problems.append(
                f"every chunk is computed but the catalog is not final; "
                f"'basins resume {path}' completes it"
            )
    verification.notes.extend(_notes(path))
    return verification
