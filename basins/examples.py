"""Built-in example systems, shipped as TOML files inside the package.

``basins examples`` lists them and ``basins run example:NAME`` runs one; each file is
also a template to copy and edit.
"""

from __future__ import annotations

import tomllib
from importlib import resources

from basins.config import Config
from basins.errors import ConfigError


def _example_files() -> dict[str, resources.abc.Traversable]:
    folder = resources.files("basins") / "examples"
    return {
        entry.name.removesuffix(".toml"): entry
        for entry in folder.iterdir()
        if entry.name.endswith(".toml")
    }


def list_examples() -> dict[str, str]:
    """Return each example's name with its one-line description, sorted by name."""
    descriptions = {}
    for name, entry in sorted(_example_files().items()):
        first_line = entry.read_text(encoding="utf-8").splitlines()[0]
        descriptions[name] = first_line.removeprefix("#").strip()
    return descriptions


def example_text(name: str) -> str:
    """Return the TOML text of the example ``name``."""
    files = _example_files()
    if name not in files:
        raise ConfigError(
            f"unknown example {name!r}: available examples are "
            f"{', '.join(sorted(files))}"
        )
    return files[name].read_text(encoding="utf-8")


def example_config(name: str) -> Config:
    """Return the validated configuration of the example ``name``."""
    return Config.from_dict(tomllib.loads(example_text(name)), name=name)
