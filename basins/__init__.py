"""Basins of attraction of self-attention dynamics on the sphere.

The main entry points are `Config` and `System` (what to map), `run` and `resume`
(map it into a Zarr atlas) and `basin_fractions` (read the result). The shape of the
basins of a finished atlas is measured by `sample_boundary`, `compute_slice` and
`find_escapes`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from basins.boundary import BoundarySettings, sample_boundary
from basins.config import (
    Classification,
    Config,
    Integration,
    Sampling,
    System,
    load_config,
)
from basins.entropy import SliceSettings, compute_slice
from basins.errors import AtlasError, BasinsError, BasinsWarning, ConfigError
from basins.escape import EscapeSettings, find_escapes
from basins.integrate import integrate, vector_field
from basins.mapping import Execution, resume, run
from basins.report import basin_fractions, wilson_interval
from basins.sampling import initial_conditions

__all__ = [
    "AtlasError",
    "BasinsError",
    "BasinsWarning",
    "BoundarySettings",
    "Classification",
    "Config",
    "ConfigError",
    "EscapeSettings",
    "Execution",
    "Integration",
    "Sampling",
    "SliceSettings",
    "System",
    "__version__",
    "basin_fractions",
    "compute_slice",
    "find_escapes",
    "initial_conditions",
    "integrate",
    "load_config",
    "resume",
    "run",
    "sample_boundary",
    "vector_field",
    "wilson_interval",
]
