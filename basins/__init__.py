"""Basins of attraction of self-attention dynamics on the sphere.

The main entry points are `Config` and `System` (what to map), `run` and `resume`
(map it into a Zarr atlas), `Sweep` and `run_sweep` (map it over the values of one
parameter), `open_atlas` (the result as a lazy `xarray.Dataset`), `open_catalog` and
`basin_fractions` (tables of attractors and fractions with Wilson intervals).
`basins.report.basin_fractions` returns the rows that the command line prints. The
shape of the basins of a finished atlas is measured by `sample_boundary`,
`compute_slice` and `find_escapes`.
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
from basins.errors import (
    AtlasError,
    BasinsError,
    BasinsWarning,
    ClusterError,
    ConfigError,
)
from basins.escape import EscapeSettings, find_escapes
from basins.integrate import integrate, vector_field
from basins.mapping import Execution, resume, run
from basins.report import wilson_interval
from basins.sampling import initial_conditions
from basins.sweep import Sweep, resume_sweep, run_sweep

# The xarray and pandas API is imported on first use, so that the command line and
# the Dask workers start without loading xarray, pandas and dask.array.
ANALYSIS_NAMES = ("basin_fractions", "basin_slice", "open_atlas", "open_catalog")


def __getattr__(name: str):
    if name in ANALYSIS_NAMES:
        from basins import analysis

        return getattr(analysis, name)
    raise AttributeError(f"module 'basins' has no attribute {name!r}")


__all__ = [
    "AtlasError",
    "BasinsError",
    "BasinsWarning",
    "BoundarySettings",
    "Classification",
    "ClusterError",
    "Config",
    "ConfigError",
    "EscapeSettings",
    "Execution",
    "Integration",
    "Sampling",
    "SliceSettings",
    "Sweep",
    "System",
    "__version__",
    "basin_fractions",
    "basin_slice",
    "compute_slice",
    "find_escapes",
    "initial_conditions",
    "integrate",
    "load_config",
    "open_atlas",
    "open_catalog",
    "resume",
    "resume_sweep",
    "run",
    "run_sweep",
    "sample_boundary",
    "vector_field",
    "wilson_interval",
]
