"""Helpers shared by the reliability tests: comparing atlases and snapshots of files."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tomllib
from pathlib import Path

import zarr

from basins import Config
from basins.atlas import PER_IC_ARRAYS

# Root attributes that legitimately differ between two runs of one configuration.
RUN_SPECIFIC_ATTRIBUTES = ("created", "versions")

MULTISTABLE_SYSTEM = (
    "[system]\nn_tokens = 4\ndim = 3\nbeta = 2.0\n"
    "K = { diagonal = [1.0, 0.5, -3.0] }\nV = { diagonal = [1.0, 0.5, -3.0] }\n"
)


def multistable_toml(n_initial: int, chunk_size: int, seed: int = 9) -> str:
    """Return the TOML text of the multistable system with the given sampling."""
    return (
        f"{MULTISTABLE_SYSTEM}[sampling]\nn_initial = {n_initial}\nseed = {seed}\n"
        f"chunk_size = {chunk_size}\n"
    )


def multistable_config(n_initial: int, chunk_size: int, seed: int = 9) -> Config:
    """Return the multistable system with the given sampling as a `Config`."""
    return Config.from_dict(
        tomllib.loads(multistable_toml(n_initial, chunk_size, seed))
    )


def synchronous_run(config: str | Path, path: str | Path, *options: str) -> list[str]:
    """Return the arguments of a quiet synchronous ``basins run`` of ``config``."""
    return [
        "-q",
        "run",
        str(config),
        "--out",
        str(path),
        "--cluster",
        "synchronous",
        "--no-progress",
        *options,
    ]


def command(*arguments: str) -> list[str]:
    """Return the command that runs ``basins`` with ``arguments`` in a new process."""
    return [sys.executable, "-m", "basins.cli", *arguments]


def atlas_fingerprint(
    path: str | Path, *, same_chunking: bool = True
) -> dict[str, bytes]:
    """Return the bytes of every per-IC array, every catalog array and the attributes.

    The root attributes that name the creation time and software versions are left
    out, and everything else must agree byte for byte between two runs of one
    configuration. Without ``same_chunking`` the root attributes (which hold the
    chunk size) and ``local_label`` (numbered within each chunk) are left out too, to
    compare runs that differ only in how they were chunked.
    """
    group = zarr.open_group(str(path), mode="r")
    names = [n for n in PER_IC_ARRAYS if same_chunking or n != "local_label"]
    parts = {name: group[name][:].tobytes() for name in names}
    catalog = group["catalog"]
    for name in sorted(catalog.array_keys()):
        parts[f"catalog/{name}"] = catalog[name][:].tobytes()
    parts["catalog attributes"] = json.dumps(
        dict(catalog.attrs), sort_keys=True
    ).encode()
    if same_chunking:
        root = {
            k: v for k, v in group.attrs.items() if k not in RUN_SPECIFIC_ATTRIBUTES
        }
        parts["root attributes"] = json.dumps(root, sort_keys=True).encode()
    return parts


def assert_same_atlas(
    first: str | Path, second: str | Path, *, same_chunking: bool = True
) -> None:
    """Assert that two atlases agree in every per-IC array, catalog and attribute."""
    left = atlas_fingerprint(first, same_chunking=same_chunking)
    right = atlas_fingerprint(second, same_chunking=same_chunking)
    assert sorted(left) == sorted(right), "the atlases have different arrays"
    for name in left:
        assert left[name] == right[name], f"{name} differs"


def file_snapshot(path: str | Path) -> dict[str, tuple[int, str]]:
    """Return size and SHA-256 of every file under ``path``, by relative path."""
    snapshot = {}
    for directory, _, files in os.walk(path):
        for name in files:
            file = Path(directory) / name
            data = file.read_bytes()
            snapshot[str(file.relative_to(path))] = (
                len(data),
                hashlib.sha256(data).hexdigest(),
            )
    return snapshot


def chunk_files(path: str | Path, arrays=tuple(PER_IC_ARRAYS)) -> list[Path]:
    """Return the chunk files of the given per-IC arrays, oldest write first.

    Chunk keys are chunk indices, so other files are left out. One such file is the
    ``*.partial`` file that Zarr's atomic write leaves when a process is killed.
    """
    files = [
        file
        for name in arrays
        for file in (Path(path) / name / "c").rglob("*")
        if file.is_file()
        and all(part.isdigit() for part in file.relative_to(Path(path) / name / "c").parts)
    ]
    return sorted(files, key=lambda file: file.stat().st_mtime_ns)
