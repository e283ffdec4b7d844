"""Parameter sweeps: one basin map per value of one parameter, in one store.

A sweep store is a Zarr v3 group whose attributes describe the sweep (the parameter's
key, its values, the base configuration) and which contains one ordinary atlas per
value, in the subgroups ``p000``, ``p001``, ... Every member atlas has the base
configuration with the parameter set to its value and the same sampling, so initial
condition ``i`` is the same state at every value. The tasks of all members are
(member, chunk) pairs submitted together to one cluster, and `resume_sweep`
computes the pairs still pending.

When the chunks are in, `finalize_sweep` merges each member's catalog and follows
attractors from one value to the next (`track_attractors`). The same attractor keeps
one track id along the sweep. The values where a track appears or disappears are
listed as births and deaths.

Parameter keys
--------------
``system.beta``, ``integration.dt``, ``integration.tol``, ``integration.max_steps``,
``integration.checks``, ``classification.cluster_tol`` and
``classification.shape_tol`` set that scalar. ``system.Q.scale`` (likewise ``K``,
``V``) multiplies the base configuration's resolved matrix by the value,
``system.V.spectral_norm`` rescales it to that spectral norm, and ``system.V[i][j]``
sets one entry (rows and columns from 0). Sampling keys and ``system.n_tokens`` or
``system.dim`` cannot be swept: they change the initial conditions or the shape of
the arrays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import math
import re
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from basins import atlas, lock
from basins.classify import Matcher
from basins.config import RK4_STABILITY_LIMIT, Config
from basins.errors import AtlasError, ConfigError, StepSizeWarning
from basins.mapping import (
    Execution,
    RunSummary,
    WorkItem,
    _select,
    check_execution,
    execute,
)

logger = logging.getLogger(__name__)

SWEEP_FORMAT_VERSION = 1

# Scalar keys that a sweep may set, with the type of their values.
SCALAR_KEYS: dict[str, type] = {
    "system.beta": float,
    "integration.dt": float,
    "integration.tol": float,
    "integration.max_steps": int,
    "integration.checks": int,
    "classification.cluster_tol": float,
    "classification.shape_tol": float,
}
MATRIX_KEY = re.compile(r"^system\.(?P<matrix>[QKV])\.(?P<modifier>scale|spectral_norm)$")
ENTRY_KEY = re.compile(r"^system\.(?P<matrix>[QKV])\[(?P<row>\d+)\]\[(?P<column>\d+)\]$")
ALLOWED_KEYS = (
    f"{', '.join(SCALAR_KEYS)}, system.Q|K|V.scale, system.Q|K|V.spectral_norm "
    f"or system.Q|K|V[i][j]"
)

# Default largest distance between the representative states of one attractor at two
# neighbouring values (the distance of `classify.StateFeatures.distance`: chordal
# distance between matching cluster centres, or between rotation invariants).
TRACK_DISTANCE = 0.5


def parse_values(text: str) -> tuple[float, ...]:
    """Parse the values of a sweep from ``START:STOP:COUNT`` or ``A,B,C``.

    ``START:STOP:COUNT`` gives ``COUNT >= 2`` evenly spaced values from ``START`` to
    ``STOP``, both included; ``A,B,C`` lists the values. Values must be finite and
    strictly increasing or strictly decreasing, so that neighbouring values are
    those next to each other in the list.

    Raises
    ------
    ConfigError
        If the text matches neither form or the values break a rule above.
    """
    text = text.strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError("expected three fields")
            start, stop, count_text = float(parts[0]), float(parts[1]), parts[2].strip()
            count = int(count_text)
            if str(count) != count_text.lstrip("+") or count < 2:
                raise ValueError("COUNT must be an integer >= 2")
            values = np.linspace(start, stop, count)
        else:
            values = np.array([float(item) for item in text.split(",")])
    except ValueError as exc:
        raise ConfigError(
            f"sweep values {text!r} are invalid ({exc}): expected START:STOP:COUNT "
            f"(COUNT >= 2 evenly spaced values, both ends included, e.g. 0:8:33) or "
            f"a comma-separated list such as 0.5,1,2"
        ) from None
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"sweep values {text!r} are invalid: every value must be finite")
    steps = np.diff(values)
    if len(values) > 1 and not (np.all(steps > 0) or np.all(steps < 0)):
        raise ConfigError(
            f"sweep values {text!r} are invalid: expected strictly increasing or "
            f"strictly decreasing values, so that attractors can be followed from "
            f"each value to the next"
        )
    return tuple(float(value) for value in values)


def _set_matrix(data: dict[str, Any], key: str, value: float) -> None:
    scaled = MATRIX_KEY.match(key)
    entry = ENTRY_KEY.match(key)
    name = (scaled or entry)["matrix"]
    matrix = np.array(data["system"][name], dtype=np.float64)
    if scaled and scaled["modifier"] == "scale":
        matrix = matrix * value
    elif scaled:
        if value < 0:
            raise ConfigError(
                f"{key} = {value!r} is invalid: expected a spectral norm >= 0"
            )
        norm = float(np.linalg.norm(matrix, 2))
        if norm == 0.0:
            raise ConfigError(f"{key} cannot rescale system.{name}: it is zero")
        matrix = matrix * (value / norm)
    else:
        row, column = int(entry["row"]), int(entry["column"])
        if row >= len(matrix) or column >= len(matrix):
            raise ConfigError(
                f"{key} is invalid: system.{name} is {len(matrix)} x {len(matrix)}, so "
                f"rows and columns run from 0 to {len(matrix) - 1}"
            )
        matrix[row, column] = value
    data["system"][name] = matrix.tolist()


def check_parameter(key: str) -> None:
    """Raise `ConfigError` unless ``key`` names a parameter that a sweep can set."""
    if key in SCALAR_KEYS or MATRIX_KEY.match(key) or ENTRY_KEY.match(key):
        return
    if key.startswith("sampling."):
        reason = "every value of a sweep uses the same initial conditions"
    elif key in ("system.n_tokens", "system.dim"):
        reason = "it changes the shape of the atlas arrays; run one atlas per value"
    elif key == "system.weighting":
        reason = "it is not a number; run one atlas per weighting"
    else:
        reason = "it is not a numeric setting of the configuration"
    raise ConfigError(
        f"sweep parameter {key!r} is invalid because {reason}; allowed parameters "
        f"are {ALLOWED_KEYS}"
    )


def apply_parameter(config: Config, key: str, value: float) -> Config:
    """Return ``config`` with the parameter ``key`` set to ``value``, validated.

    Raises
    ------
    ConfigError
        If ``key`` cannot be swept, or the configuration with ``value`` is invalid
        (the message names the key and the value).
    """
    check_parameter(key)
    if not math.isfinite(value):
        raise ConfigError(f"{key} = {value!r} is invalid: expected a finite number")
    data = config.to_dict()
    if key in SCALAR_KEYS:
        section, name = key.split(".")
        if SCALAR_KEYS[key] is int:
            if value != int(value):
                raise ConfigError(f"{key} = {value!r} is invalid: expected an integer")
            value = int(value)
        data[section][name] = value
    else:
        _set_matrix(data, key, value)
    return Config.from_dict(data, name=config.name)


# Largest number of values of one sweep. Each value is an atlas directory with its
# own arrays and catalog, so ten thousand values are already about 70,000 files.
MAX_SWEEP_VALUES = 10_000


@dataclass(frozen=True)
class Sweep:
    """A configuration and the values of one of its parameters.

    Parameters
    ----------
    config : Config
        The base configuration; its sampling is shared by every value.
    parameter : str
        Key of the swept parameter (see the module documentation).
    values : sequence of float
        The values, strictly increasing or strictly decreasing.
    """

    config: Config
    parameter: str
    values: tuple[float, ...]

    def __post_init__(self) -> None:
        check_parameter(self.parameter)
        values = tuple(float(value) for value in self.values)
        if not values:
            raise ConfigError("sweep values are missing: give at least one value")
        if len(values) > MAX_SWEEP_VALUES:
            raise ConfigError(
                f"{len(values)} sweep values are too many: each value is an atlas of "
                f"its own, at most {MAX_SWEEP_VALUES}; use fewer values, or several "
                f"sweeps"
            )
        parse_values(",".join(repr(value) for value in values))
        object.__setattr__(self, "values", values)

    @property
    def dimension(self) -> str:
        """Name of the parameter's dimension: ``beta``, ``V_scale``, ``V_0_0``."""
        name = self.parameter.split(".", 1)[1]
        return re.sub(r"_+", "_", re.sub(r"[^0-9A-Za-z]", "_", name)).strip("_")

    def member_name(self, index: int) -> str:
        """Name of the subgroup holding the atlas of value ``index``."""
        return f"p{index:0{max(3, len(str(len(self.values) - 1)))}d}"

    def member_configs(self) -> list[Config]:
        """Return the configuration of every value, each validated."""
        return [
            apply_parameter(self.config, self.parameter, value) for value in self.values
        ]


def _warn_step_size(sweep: Sweep, configs: list[Config]) -> None:
    """Issue one `StepSizeWarning` for the values whose step exceeds the estimate."""
    rates = np.array([c.system.max_rate() * c.integration.dt for c in configs])
    over = np.flatnonzero(rates > RK4_STABILITY_LIMIT)
    if not len(over):
        return
    worst = configs[int(np.argmax(rates))]
    safe = RK4_STABILITY_LIMIT / worst.system.max_rate()
    warnings.warn(
        f"integration.dt = {worst.integration.dt:g} exceeds the RK4 stability "
        f"estimate at {len(over)} of {len(configs)} values of {sweep.parameter} "
        f"(from {sweep.values[over[0]]:g} to {sweep.values[over[-1]]:g}); dt <= "
        f"{safe:.3g} is safe by the estimate at every value. The estimate is an upper "
        f"bound, so watch the count of nonfinite trajectories.",
        StepSizeWarning,
        stacklevel=3,
    )


def is_sweep(path: str | Path) -> bool:
    """Return whether ``path`` is a sweep store."""
    try:
        group = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, ValueError, zarr.errors.GroupNotFoundError):
        return False
    return "basins_sweep_format" in group.attrs


def open_sweep(path: str | Path, mode: str = "r") -> zarr.Group:
    """Open an existing sweep store, checking that it is one of a known format."""
    path = Path(path)
    if not path.exists():
        raise AtlasError(f"sweep {str(path)!r} not found")
    if not is_sweep(path):
        raise AtlasError(f"{str(path)!r} is not a basins sweep")
    group = zarr.open_group(str(path), mode=mode)
    version = group.attrs["basins_sweep_format"]
    if version != SWEEP_FORMAT_VERSION:
        raise AtlasError(
            f"sweep {str(path)!r} has format version {version}; this basins reads "
            f"version {SWEEP_FORMAT_VERSION}"
        )
    return group


def read_sweep(path: str | Path) -> Sweep:
    """Return the sweep stored at ``path``."""
    group = open_sweep(path)
    config = Config.from_dict(group.attrs["config"], name=group.attrs.get("name", ""))
    return Sweep(config, group.attrs["parameter"], tuple(group.attrs["values"]))


def member_paths(path: str | Path) -> list[Path]:
    """Return the paths of the member atlases of the sweep at ``path``, in order."""
    group = open_sweep(path)
    return [Path(path) / name for name in group.attrs["members"]]


def create_sweep(path: str | Path, sweep: Sweep, *, overwrite: bool = False) -> None:
    """Create an empty sweep store with one empty atlas per value.

    Raises
    ------
    AtlasError
        If ``path`` exists and ``overwrite`` is false, or if it exists and is neither
        a sweep nor an atlas (such a path is never removed).
    ConfigError
        If the configuration is invalid at one of the values.
    """
    path = Path(path)
    configs = sweep.member_configs()
    if path.exists():
        if not (is_sweep(path) or atlas._is_atlas(path)):
            raise AtlasError(
                f"{str(path)!r} exists and is not a basins sweep or atlas; choose "
                f"another path"
            )
        if not overwrite:
            raise AtlasError(
                f"{str(path)!r} already exists; use 'basins resume {path}' to complete "
                f"it, or --overwrite to replace it"
            )
        logger.info("removing existing store %s", path)
        shutil.rmtree(path)

    # The root attributes come first, so that an interrupted creation leaves a sweep
    # whose missing members `resume_sweep` creates.
    group = zarr.open_group(str(path), mode="w-", zarr_format=3)
    members = [sweep.member_name(index) for index in range(len(sweep.values))]
    group.update_attributes(
        {
            "basins_sweep_format": SWEEP_FORMAT_VERSION,
            "name": sweep.config.name,
            "parameter": sweep.parameter,
            "dimension": sweep.dimension,
            "values": list(sweep.values),
            "members": members,
            "config": sweep.config.to_dict(),
            "seed": sweep.config.sampling.seed,
            "versions": atlas.software_versions(),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "finalized": False,
        }
    )
    _create_missing_members(path, sweep, configs)
    logger.info(
        "created sweep %s: %s over %d values, %d chunks each",
        path,
        sweep.parameter,
        len(members),
        sweep.config.sampling.n_chunks,
    )


def _create_missing_members(
    path: Path, sweep: Sweep, configs: list[Config] | None = None
) -> None:
    configs = configs or sweep.member_configs()
    for index, config in enumerate(configs):
        member = path / sweep.member_name(index)
        if not atlas._is_atlas(member):
            if member.exists():
                shutil.rmtree(member)  # an atlas whose creation was interrupted
            atlas.create_atlas(member, config)


def _pending_items(path: Path, tokens: dict[Path, str] | None = None) -> list[WorkItem]:
    items = []
    for member in member_paths(path):
        config = atlas.read_config(member)
        token = (tokens or {}).get(member)
        items.extend(
            WorkItem(member, config, c, writer_token=token)
            for c in atlas.pending_chunks(member)
        )
    return items


@contextlib.contextmanager
def _member_locks(path: Path, command: str) -> Iterator[dict[Path, str]]:
    """Lock every member atlas as well as the sweep; yield the tokens by member.

    The tasks present a member's token before writing to it, so a task of a sweep
    that has stopped (killed, or its lock broken with ``basins unlock``) writes
    nothing once another process has taken over.
    """
    with contextlib.ExitStack() as stack:
        tokens = {
            member: stack.enter_context(lock.acquire(member, command)).token
            for member in member_paths(path)
        }
        yield tokens


def _compute(path: Path, items: list[WorkItem], execution: Execution) -> RunSummary:
    started = time.perf_counter()
    logger.info("computing %d (value, chunk) tasks of sweep %s", len(items), path)
    steps = execute(items, execution)
    finalize_sweep(path)
    pending = len(_pending_items(path))
    seconds = time.perf_counter() - started
    logger.info(
        "computed %d tasks in %.1f s (%.3g RK4 steps); %d tasks pending",
        len(items),
        seconds,
        steps,
        pending,
    )
    return RunSummary(path, len(items), pending, steps, seconds)


def run_sweep(
    sweep: Sweep,
    path: str | Path,
    *,
    overwrite: bool = False,
    execution: Execution | None = None,
    max_chunks: int | None = None,
) -> RunSummary:
    """Map the basins of every value of ``sweep`` into a new sweep store.

    Parameters
    ----------
    sweep : Sweep
        The configuration, the parameter and its values.
    path : str or path
        Directory of the new Zarr store.
    overwrite : bool, optional
        Replace an existing sweep or atlas at ``path``.
    execution : Execution, optional
        Where the tasks run; by default a local cluster sized to the cores.
    max_chunks : int, optional
        Compute at most this many (value, chunk) tasks, in the order of the values,
        and stop; `resume_sweep` computes the rest.

    Returns
    -------
    RunSummary
        Tasks computed and pending, RK4 steps and wall time.

    Raises
    ------
    AtlasError
        If ``path`` exists and ``overwrite`` is false.
    ConfigError
        If the configuration is invalid at a value, or an execution setting is.
    """
    execution = execution or Execution()
    _warn_step_size(sweep, sweep.member_configs())
    check_execution(execution)
    _select([], max_chunks)
    path = Path(path)
    create_sweep(path, sweep, overwrite=overwrite)
    # NOTE: the lock is taken once the sweep exists, so two sweeps started at the
    # same moment on one new path can both pass. Resumes are always checked.
    with lock.acquire(path, "sweep"), _member_locks(path, "sweep") as tokens:
        items = _select(_pending_items(path, tokens), max_chunks)
        return _compute(path, items, execution)


def resume_sweep(
    path: str | Path,
    *,
    execution: Execution | None = None,
    max_chunks: int | None = None,
) -> RunSummary:
    """Compute the (value, chunk) tasks of the sweep at ``path`` still pending.

    The result is identical to that of an uninterrupted sweep.
    """
    execution = execution or Execution()
    path = Path(path)
    with lock.acquire(path, "resume"):
        _create_missing_members(path, read_sweep(path))
        with _member_locks(path, "resume") as tokens:
            items = _select(_pending_items(path, tokens), max_chunks)
            return _compute(path, items, execution)


@dataclass(frozen=True)
class CatalogSummary:
    """The parts of one member's catalog that attractor tracking compares."""

    signature: list[tuple]
    states: np.ndarray
    count: np.ndarray
    label: list[str]
    class_code: np.ndarray


def _catalog_summary(path: Path, config: Config) -> CatalogSummary:
    group = atlas.open_store(path)
    n, d = config.system.n_tokens, config.system.dim
    if "catalog" not in group:
        empty = np.empty(0, dtype=np.int64)
        return CatalogSummary([], np.empty((0, n, d)), empty, [], empty.astype(np.int8))
    catalog = group["catalog"]
    class_code = catalog["class"][:]
    multiplicity = catalog["multiplicity"][:]
    eigenspace = catalog["eigenspace"][:]
    sign = catalog["sign"][:]
    shapes = catalog.attrs["shape"]
    signature = []
    for row in range(len(class_code)):
        clusters = sorted(
            zip(multiplicity[row].tolist(), eigenspace[row].tolist(), sign[row].tolist()),
            reverse=True,
        )
        signature.append((int(class_code[row]), shapes[row], tuple(clusters)))
    return CatalogSummary(
        signature,
        catalog["state"][:].reshape(-1, n, d),
        catalog["count"][:],
        list(catalog.attrs["label"]),
        class_code,
    )


@dataclass
class Track:
    """One attractor followed along a sweep.

    Attributes
    ----------
    attractor : numpy.ndarray
        Catalog id of the attractor at each value, -1 where the track is absent.
    count : numpy.ndarray
        Initial conditions that reach it at each value.
    signature : tuple
        Class, shape and sorted (multiplicity, eigenspace, sign) of its clusters.
    state : numpy.ndarray
        Representative state at the last value where the track was seen.
    last : int
        Index of that value.
    """

    attractor: np.ndarray
    count: np.ndarray
    signature: tuple
    state: np.ndarray
    last: int
    labels: dict[int, str] = dataclasses.field(default_factory=dict)
    class_code: int = -1

    @property
    def label(self) -> str:
        """The catalog label at the value where the track has its largest count."""
        return self.labels[int(np.argmax(np.where(self.attractor >= 0, self.count, -1)))]


def track_attractors(
    configs: Sequence[Config],
    catalogs: Sequence[CatalogSummary],
    *,
    max_distance: float = TRACK_DISTANCE,
) -> list[Track]:
    """Follow attractors from each value of a sweep to the next.

    An attractor at value ``k`` continues a track when both have the same class,
    polygon name and (multiplicity, eigenspace, sign) of every cluster. The distance
    between its representative state and the track's latest one, measured by the
    `classify.Matcher` of value ``k``, must also be at most ``max_distance``. Tracks seen at
    the previous value are preferred, then the closest states; each track takes at
    most one attractor per value. An attractor that continues no track starts a new
    one, so a track absent at some values and found again later keeps its id.

    Returns
    -------
    list of Track
        Ordered by decreasing total count over the sweep, ties by first value and
        catalog id.
    """
    n_values = len(catalogs)
    tracks: list[Track] = []
    for k, (config, catalog) in enumerate(zip(configs, catalogs)):
        candidates = []
        if tracks and len(catalog.signature):
            matcher = Matcher(config.system, config.classification)
            states = np.concatenate([catalog.states, [t.state for t in tracks]])
            features = matcher.features(states, np.ones(len(states), dtype=bool))
            offset = len(catalog.signature)
            for row, signature in enumerate(catalog.signature):
                same = [
                    number for number, track in enumerate(tracks)
                    if track.signature == signature and track.attractor[k] < 0
                ]
                if not same:
                    continue
                distances = features.distance(np.array(same) + offset, row)
                for number, distance in zip(same, distances):
                    if distance <= max_distance:
                        gap = k - tracks[number].last
                        candidates.append((gap, float(distance), row, number))

        matched_rows = set()
        for gap, distance, row, number in sorted(candidates):
            track = tracks[number]
            if row in matched_rows or track.attractor[k] >= 0:
                continue
            matched_rows.add(row)
            track.attractor[k] = row
        for row, signature in enumerate(catalog.signature):
            if row not in matched_rows:
                tracks.append(
                    Track(
                        attractor=np.full(n_values, -1, dtype=np.int32),
                        count=np.zeros(n_values, dtype=np.int64),
                        signature=signature,
                        state=catalog.states[row],
                        last=k,
                        class_code=int(catalog.class_code[row]),
                    )
                )
                tracks[-1].attractor[k] = row
        for track in tracks:
            row = int(track.attractor[k])
            if row >= 0:
                track.count[k] = catalog.count[row]
                track.state = catalog.states[row]
                track.last = k
                track.labels[k] = catalog.label[row]

    def first_seen(track: Track) -> int:
        return int(np.flatnonzero(track.attractor >= 0)[0])

    return sorted(
        tracks,
        key=lambda t: (-int(t.count.sum()), first_seen(t), int(t.attractor[first_seen(t)])),
    )


def track_events(
    tracks: Sequence[Track],
    values: Sequence[float],
    complete: Sequence[bool] | None = None,
) -> list[dict[str, Any]]:
    """List the births and deaths of tracks along the values.

    A birth at ``value`` means the track is present there and absent at the previous
    value ``previous``. A death at ``value`` means it is absent there and present at
    ``previous``. The change itself happens somewhere between the two values, or in
    a basin too small for the sampling to find. Where ``complete`` is given, pairs
    of values with an incomplete member (pending chunks) are skipped.
    """
    complete = [True] * len(values) if complete is None else list(complete)
    events = []
    for number, track in enumerate(tracks):
        present = track.attractor >= 0
        for k in range(1, len(values)):
            if present[k] == present[k - 1] or not (complete[k] and complete[k - 1]):
                continue
            events.append(
                {
                    "track": number,
                    "label": track.label,
                    "event": "birth" if present[k] else "death",
                    "value": values[k],
                    "previous": values[k - 1],
                }
            )
    events.sort(key=lambda event: (values.index(event["value"]), event["track"]))
    return events


def finalize_sweep(path: str | Path, *, max_distance: float = TRACK_DISTANCE) -> list[Track]:
    """Finalize every member atlas, follow the attractors and store the tracks.

    The group ``tracks`` receives ``attractor`` and ``count`` (dimensions ``track``
    and the parameter's dimension) and ``class`` (``track``); its attributes hold
    the track labels. The root attributes receive ``events`` (births and deaths) and
    ``finalized``.
    """
    path = Path(path)
    group = open_sweep(path, mode="r+")
    sweep = read_sweep(path)
    configs, catalogs, complete = [], [], []
    for member in member_paths(path):
        atlas.finalize(member)
        config = atlas.read_config(member)
        configs.append(config)
        catalogs.append(_catalog_summary(member, config))
        complete.append(atlas.open_store(member).attrs["totals"]["pending"] == 0)
    tracks = track_attractors(configs, catalogs, max_distance=max_distance)

    n_values = len(sweep.values)
    shapes = {
        "attractor": (np.array([t.attractor for t in tracks], dtype=np.int32), -1),
        "count": (np.array([t.count for t in tracks], dtype=np.int64), 0),
    }
    tracks_group = group.require_group("tracks")
    for name, (values, fill_value) in shapes.items():
        values = values.reshape(len(tracks), n_values)
        tracks_group.create_array(
            name,
            shape=values.shape,
            chunks=tuple(max(1, s) for s in values.shape),
            dtype=values.dtype,
            fill_value=fill_value,
            dimension_names=("track", sweep.dimension),
            overwrite=True,
        )[...] = values
    tracks_group.create_array(
        "class",
        shape=(len(tracks),),
        chunks=(max(1, len(tracks)),),
        dtype="int8",
        fill_value=-1,
        dimension_names=("track",),
        overwrite=True,
    )[...] = np.array([t.class_code for t in tracks], dtype=np.int8)
    tracks_group.update_attributes({"label": [t.label for t in tracks]})
    events = track_events(tracks, list(sweep.values), complete)
    group.update_attributes(
        {
            "events": events,
            "tracking": {"max_distance": max_distance},
            "finalized": all(complete),
        }
    )
    logger.info(
        "sweep %s: %d attractor tracks, %d births and deaths", path, len(tracks), len(events)
    )
    return tracks
