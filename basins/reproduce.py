"""Reproduction of the claims of the theory, each with a measurement and a figure.

`reproduce` runs the claims of `basins.claims`, one row each: it maps small basin
atlases, searches equilibria and certifies them, and writes a PNG figure per claim
where one helps. Every claim is measured, never assumed. A row passes only when its
numbers do, and the test suite checks the same numbers. Sampled fractions come with
95% Wilson intervals.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from basins import atlas
from basins.config import Config
from basins.equilibria import Equilibrium, search
from basins.errors import ConfigError
from basins.mapping import Execution, run
from basins.report import FractionRow, basin_fractions, wilson_interval

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """A small basin atlas, read back: fractions and the catalog's clusters."""

    config: Config
    path: Path
    rows: list[FractionRow]
    eigenspace: np.ndarray
    sign: np.ndarray
    multiplicity: np.ndarray
    states: np.ndarray
    attractor: np.ndarray

    @property
    def total(self) -> int:
        """Number of initial conditions."""
        return sum(row.count for row in self.rows)

    @property
    def attractors(self) -> list[FractionRow]:
        """Rows of the catalog, in id order."""
        return [row for row in self.rows if row.id is not None]

    def share(self, selected: Callable[[FractionRow], bool]) -> Share:
        """Return the fraction of initial conditions that reach selected attractors."""
        count = sum(row.count for row in self.attractors if selected(row))
        low, high = wilson_interval(count, self.total)
        return Share(count, self.total, count / self.total, low, high)

    def on_eigenvector(self, row: FractionRow, index: int) -> bool:
        """Return whether every cluster of the attractor is on eigenvector ``index``."""
        clusters = self.multiplicity[row.id] > 0
        return bool(np.all(self.eigenspace[row.id][clusters] == index))

    def mirror_of(self, row: FractionRow) -> FractionRow | None:
        """Return the attractor with the same clusters at opposite signs, if sampled."""
        key = self._signature(row.id, flip=True)
        for other in self.attractors:
            if self._signature(other.id, flip=False) == key:
                return other
        return None

    def _signature(self, id_: int, *, flip: bool) -> tuple:
        clusters = self.multiplicity[id_] > 0
        sign = -self.sign[id_] if flip else self.sign[id_]
        return tuple(
            sorted(
                zip(
                    self.multiplicity[id_][clusters].tolist(),
                    self.eigenspace[id_][clusters].tolist(),
                    sign[clusters].tolist(),
                )
            )
        )


@dataclass(frozen=True)
class Share:
    """A count out of a total with its 95% Wilson interval."""

    count: int
    total: int
    fraction: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.fraction:.3f} [{self.low:.3f}, {self.high:.3f}]"


def difference_in_sigmas(first: int, second: int, total: int) -> float:
    """Return ``|p1 - p2|`` in standard errors, for two counts of one sample.

    The variance of ``p1 - p2`` is ``(p1 + p2 - (p1 - p2)^2) / total``.
    """
    p1, p2 = first / total, second / total
    variance = (p1 + p2 - (p1 - p2) ** 2) / total
    if variance == 0.0:
        return 0.0
    return abs(p1 - p2) / math.sqrt(variance)


@dataclass
class Reproduction:
    """Shared state of one reproduction: output folder, atlas folder and caches.

    Parameters
    ----------
    out : path
        Folder of the figures.
    work : path
        Folder of the atlases mapped on the way.
    """

    out: Path
    work: Path
    _samples: dict[str, Sample] = field(default_factory=dict)
    _equilibria: dict[str, list[Equilibrium]] = field(default_factory=dict)

    def figure(self, name: str) -> Path:
        """Return the path of figure ``name`` inside the output folder."""
        return Path(self.out) / name

    def sample(self, key: str, config: Config) -> Sample:
        """Map ``config`` into an atlas (once per key) and read it back."""
        if key not in self._samples:
            path = Path(self.work) / f"{key}.zarr"
            run(
                config,
                path,
                overwrite=True,
                execution=Execution(cluster="synchronous", progress=False),
            )
            catalog = atlas.open_store(path)["catalog"]
            self._samples[key] = Sample(
                config=config,
                path=path,
                rows=basin_fractions(path),
                eigenspace=catalog["eigenspace"][:],
                sign=catalog["sign"][:],
                multiplicity=catalog["multiplicity"][:],
                states=catalog["state"][:],
                attractor=atlas.open_store(path)["attractor"][:],
            )
        return self._samples[key]

    def equilibria(self, key: str, config: Config) -> list[Equilibrium]:
        """Search the equilibria of ``config`` (once per key)."""
        if key not in self._equilibria:
            self._equilibria[key] = search(config, n_initial=256, n_random=0)
        return self._equilibria[key]


@dataclass(frozen=True)
class Claim:
    """One reproduced claim.

    Attributes
    ----------
    name : str
        Short identifier, such as ``beta-sweep``.
    statement : str
        The claim in a few words.
    system : str
        The system it was measured on.
    figure : str
        File name of its figure in the output folder, or empty.
    measured : str
        The measured values, in words and numbers.
    passed : bool
        Whether the measured values meet the claim.
    values : dict
        The numbers behind ``measured``, for tests and further checks.
    """

    name: str
    statement: str
    system: str
    figure: str
    measured: str
    passed: bool
    values: dict[str, Any]


def reproduce(
    out: str | Path,
    *,
    only: list[str] | None = None,
    work: str | Path | None = None,
) -> list[Claim]:
    """Check every claim (or those named in ``only``) and write their figures.

    Parameters
    ----------
    out : str or path
        Folder of the PNG figures; created if missing.
    only : list of str, optional
        Names of the claims to check (keys of `basins.claims.CLAIMS`); all by
        default.
    work : str or path, optional
        Folder for the atlases mapped on the way; by default a temporary folder that
        is removed afterwards.

    Returns
    -------
    list of Claim
        One per claim, in the order of `basins.claims.CLAIMS`.

    Raises
    ------
    ConfigError
        If ``only`` names an unknown claim.
    """
    # The claims module builds on the classes above, so it is imported here.
    from basins.claims import CLAIMS

    names = list(CLAIMS) if not only else list(only)
    unknown = [name for name in names if name not in CLAIMS]
    if unknown:
        raise ConfigError(
            f"unknown claim {unknown[0]!r}: expected one of {', '.join(CLAIMS)}"
        )
    Path(out).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="basins-reproduce-") as scratch:
        context = Reproduction(Path(out), Path(work) if work else Path(scratch))
        Path(context.work).mkdir(parents=True, exist_ok=True)
        results = []
        for name in names:
            claim = CLAIMS[name](context)
            logger.info("claim %s: %s", name, "pass" if claim.passed else "FAIL")
            results.append(claim)
    return results


def format_claims(claims: list[Claim]) -> str:
    """Render claims as a fixed-width table: claim, system, figure, measured, result."""
    header = ("claim", "statement", "system", "figure", "measured", "result")
    rows = [
        (
            c.name,
            c.statement,
            c.system,
            c.figure or "-",
            c.measured,
            "pass" if c.passed else "FAIL",
        )
        for c in claims
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(header, widths)).rstrip(),
        "  ".join("-" * width for width in widths),
    ]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in rows
    ]
    passed = sum(c.passed for c in claims)
    lines.append(f"{passed} of {len(claims)} claims pass")
    return "\n".join(lines)
