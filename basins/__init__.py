"""Basins of attraction of self-attention dynamics on the sphere.

The main entry points are `Config` and `System` (what to map), `run` and `resume`
(map it into a Zarr atlas) and `basin_fractions` (read the result).
"""

from __future__ import annotations

__version__ = "0.1.0"

from basins.config import (
    Classification,
    Config,
    Integration,
    Sampling,
    System,
    load_config,
)
from basins.errors import (
    AtlasError,
    BasinsError,
    BasinsWarning,
    ClusterError,
    ConfigError,
)
from basins.integrate import integrate, vector_field
from basins.mapping import Execution, resume, run
from basins.report import basin_fractions, wilson_interval
from basins.sampling import initial_conditions

__all__ = [
    "AtlasError",
    "BasinsError",
    "BasinsWarning",
    "Classification",
    "ClusterError",
    "Config",
    "ConfigError",
    "Execution",
    "Integration",
    "Sampling",
    "System",
    "__version__",
    "basin_fractions",
    "initial_conditions",
    "integrate",
    "load_config",
    "resume",
    "run",
    "vector_field",
    "wilson_interval",
]
