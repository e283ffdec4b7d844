"""Configuration of a basin map: the system, the integrator, the sampling, the classifier.

A configuration is written as a TOML file with four tables, or built in Python from the
dataclasses below. Both paths go through the same validation, so a bad value is
rejected before any work starts. The `ConfigError` names the key, the value and what
is allowed.

.. code-block:: toml

    [system]
    n_tokens = 4
    dim = 3
    beta = 2.0
    weighting = "softmax"            # or "unnormalized", "oja"
    Q = "identity"
    K = { diagonal = [1.0, 0.5, -3.0] }
    V = { diagonal = [1.0, 0.5, -3.0] }

    [integration]
    dt = 0.05
    max_steps = 20000
    tol = 1e-7
    checks = 3

    [sampling]
    n_initial = 100000
    seed = 0
    chunk_size = 8192

    [classification]
    cluster_tol = 1e-3
    shape_tol = 1e-2

A matrix (``Q``, ``K`` or ``V``) is one of:

- ``"identity"``;
- an explicit ``dim x dim`` array, written as a list of rows;
- a table with exactly one constructor key, ``identity = true``,
  ``diagonal = [...]`` (the spectrum, ``dim`` values) or ``random_symmetric = SEED``
  (``(G + G^T) / 2`` for a standard Gaussian ``G`` drawn with NumPy's default
  generator from ``SEED``), optionally followed by either ``scale = s`` (multiply by
  ``s``) or ``spectral_norm = r`` (rescale so that the largest singular value is ``r``).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from basins.errors import ConfigError, StepSizeWarning

WEIGHTINGS = ("softmax", "unnormalized", "oja")

# Integration kernels (see basins.integrate.select_kernel) and their floating-point
# types; "auto" takes the fastest kernel that applies to the system.
KERNELS = ("auto", "lanes", "rows", "scalar")
PRECISIONS = ("float64", "float32")

# In float32, rounding keeps the speed at an equilibrium near 1e-7 * ||V||_2 (for
# ||V||_2 = 1, 3e-7 stopped 87% of the trajectories of an 8-token system at the step
# cap), so the convergence test needs a larger tol.
FLOAT32_MIN_TOL = 1e-6

# Fixed-step RK4 is stable for a linear rate lam on the negative real axis while
# dt * |lam| stays below about 2.785. The limit 2.7 leaves a small margin.
RK4_STABILITY_LIMIT = 2.7

# exp overflows float64 past 709.78. The unnormalized weighting evaluates
# exp(beta * x_i^T A x_j) without a shift, so beta * ||A||_2 must stay below this.
MAX_UNNORMALIZED_EXPONENT = 700.0

# An initial condition's index is stored in int64 and hashed into the sampler.
MAX_INITIAL_CONDITIONS = 2**62

# Largest token dimension: Q, K and V are dense float64 matrices, 512 MiB each at
# this size, and resolving them takes several dense SVDs.
MAX_DIM = 8192

# Largest number of tokens. A state contains n_tokens x dim float64 values.
MAX_TOKENS = 65536

# A task keeps its chunk's states in memory several times over (initial and final
# states, classification features), so the final states of one chunk stay below this.
MAX_CHUNK_BYTES = 2**31

# Maximum length of the repr of a value quoted in an error message.
MAX_SHOWN_CHARACTERS = 60

# Sources of initial conditions: uniform samples indexed by (seed, i), or the token
# states of texts run through the model of a checkpoint system.
INITIAL_SOURCES = ("random", "tokens")

MATRIX_CONSTRUCTORS = ("identity", "diagonal", "random_symmetric")
MATRIX_MODIFIERS = ("scale", "spectral_norm")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )


def _show(value: Any) -> str:
    """Return the repr of ``value`` for a message, shortened if it is long."""
    text = repr(value)
    if len(text) > MAX_SHOWN_CHARACTERS:
        text = f"{text[: MAX_SHOWN_CHARACTERS - 5]}...{text[-2:]}"
    return text


def _show_key(key: Any) -> str:
    if isinstance(key, str) and key.isprintable() and len(key) <= MAX_SHOWN_CHARACTERS:
        return key
    return _show(key)


def _check_int(key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    invalid = f"{key} = {_show(value)} is invalid: expected an integer {allowed}"
    if not _is_int(value):
        raise ConfigError(invalid)
    if value < minimum or (maximum is not None and value > maximum):
        raise ConfigError(invalid)
    return int(value)


def _to_float(key: str, value: Any) -> float:
    """Convert a real number to float, rejecting integers beyond the float64 range."""
    try:
        return float(value)
    except OverflowError:
        raise ConfigError(
            f"{key} = {_show(value)} is invalid: too large for a float64 number"
        ) from None


def _check_real(key: str, value: Any, *, minimum: float, strict: bool) -> float:
    rule = f"> {minimum}" if strict else f">= {minimum}"
    if not _is_real(value):
        raise ConfigError(
            f"{key} = {_show(value)} is invalid: expected a finite number {rule}"
        )
    value = _to_float(key, value)
    if not math.isfinite(value):
        raise ConfigError(f"{key} = {value!r} is invalid: expected a finite number {rule}")
    if value < minimum or (strict and value == minimum):
        raise ConfigError(f"{key} = {value!r} is invalid: expected a finite number {rule}")
    return value


def _check_keys(section: str, table: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"{section} = {_show(table)} is invalid: expected a table with keys "
            f"{', '.join(allowed)}"
        )
    for key in table:
        if key not in allowed:
            raise ConfigError(
                f"unknown key {section}.{_show_key(key)}: allowed keys in [{section}] "
                f"are {', '.join(allowed)}"
            )


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def _real_entries(key: str, values: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Convert nested lists of real numbers to a float64 array of shape ``shape``.

    Strings, booleans and other non-numbers are rejected, although NumPy would
    convert some of them; the message names the first offending entry.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "iuf":
        array = values.astype(np.float64)
    else:
        rows = values if len(shape) == 2 else [values]
        if not _is_sequence(values) or (
            len(shape) == 2 and not all(_is_sequence(row) for row in values)
        ):
            layout = "list of rows" if len(shape) == 2 else "list"
            raise ConfigError(
                f"{key} = {_show(values)} is invalid: expected a "
                f"{' x '.join(map(str, shape))} array of numbers, written as a {layout}"
            )
        lengths = sorted({len(row) for row in rows})
        if len(shape) == 2 and len(lengths) > 1:
            raise ConfigError(
                f"{key} is invalid: its rows have different lengths {lengths}; "
                f"expected {shape[0]} rows of {shape[1]} numbers"
            )
        for i, row in enumerate(rows):
            for j, entry in enumerate(row):
                index = f"[{i}][{j}]" if len(shape) == 2 else f"[{j}]"
                if not _is_real(entry):
                    raise ConfigError(
                        f"{key}{index} = {_show(entry)} is invalid: expected a number"
                    )
                _to_float(f"{key}{index}", entry)
        array = np.array(values, dtype=np.float64)
    if array.shape != shape:
        because = f"system.dim = {shape[0]}"
        raise ConfigError(
            f"{key} has shape {array.shape}: expected {shape} because {because}"
        )
    if not np.all(np.isfinite(array)):
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        index = "".join(f"[{i}]" for i in bad)
        raise ConfigError(
            f"{key}{index} = {float(array[bad])!r} is invalid: every entry must be "
            f"finite"
        )
    return array


def _explicit_matrix(key: str, rows: Any, dim: int) -> np.ndarray:
    return _real_entries(key, rows, (dim, dim))


def spectral_norm(key: str, matrix: np.ndarray) -> float:
    """Return ``||matrix||_2``, rejecting a matrix too large for float64 arithmetic.

    Raises
    ------
    ConfigError
        If the matrix has a non-finite entry or its norm overflows.
    """
    norm = math.inf
    if np.all(np.isfinite(matrix)):
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                norm = float(np.linalg.norm(matrix, 2))
            except np.linalg.LinAlgError:
                pass  # the SVD did not converge, which overflow can cause
    if not math.isfinite(norm):
        raise ConfigError(
            f"{key} is invalid: its entries are too large for float64 arithmetic "
            f"(the spectral norm overflows); scale it down"
        )
    return norm


def resolve_matrix(key: str, spec: Any, dim: int) -> np.ndarray:
    """Build a ``dim x dim`` float64 matrix from its specification.

    Parameters
    ----------
    key : str
        Dotted name of the matrix in the configuration, used in error messages.
    spec : str, array_like or mapping
        ``"identity"``, an explicit array, or a table as described in the module
        documentation.
    dim : int
        Dimension of the token space.

    Returns
    -------
    numpy.ndarray
        C-contiguous float64 array of shape ``(dim, dim)``.

    Raises
    ------
    ConfigError
        If the specification is malformed, has the wrong shape or a non-finite entry.
    """
    if isinstance(spec, str):
        if spec != "identity":
            raise ConfigError(
                f"{key} = {_show(spec)} is invalid: the only named matrix is "
                f"'identity'; use a table such as {{ diagonal = [...] }} or an explicit "
                f"array"
            )
        return np.eye(dim)
    if not isinstance(spec, Mapping):
        return _explicit_matrix(key, spec, dim)

    _check_keys(key, spec, MATRIX_CONSTRUCTORS + MATRIX_MODIFIERS)
    constructors = [name for name in MATRIX_CONSTRUCTORS if name in spec]
    if len(constructors) != 1:
        raise ConfigError(
            f"{key} = {_show(dict(spec))} is invalid: expected exactly one of "
            f"{', '.join(MATRIX_CONSTRUCTORS)}"
        )
    constructor = constructors[0]
    value = spec[constructor]
    if constructor == "identity":
        if value is not True:
            raise ConfigError(
                f"{key}.identity = {_show(value)} is invalid: expected true"
            )
        matrix = np.eye(dim)
    elif constructor == "diagonal":
        matrix = np.diag(_real_entries(f"{key}.diagonal", value, (dim,)))
    else:
        seed = _check_int(f"{key}.random_symmetric", value, 0, 2**63 - 1)
        gaussian = np.random.default_rng(seed).standard_normal((dim, dim))
        matrix = (gaussian + gaussian.T) / 2.0

    if "scale" in spec and "spectral_norm" in spec:
        raise ConfigError(f"{key} is invalid: give scale or spectral_norm, not both")
    if "scale" in spec:
        scale = spec["scale"]
        if not _is_real(scale) or not math.isfinite(_to_float(f"{key}.scale", scale)):
            raise ConfigError(
                f"{key}.scale = {_show(scale)} is invalid: expected a finite number"
            )
        with np.errstate(over="ignore"):
            matrix = matrix * float(scale)
    if "spectral_norm" in spec:
        target = _check_real(
            f"{key}.spectral_norm", spec["spectral_norm"], minimum=0.0, strict=False
        )
        norm = spectral_norm(key, matrix)
        if norm == 0.0:
            raise ConfigError(
                f"{key}.spectral_norm cannot rescale a zero matrix; remove it"
            )
        with np.errstate(over="ignore"):
            matrix = matrix * (target / norm)
    if not np.all(np.isfinite(matrix)):
        raise ConfigError(
            f"{key} is invalid: scaling overflows float64 and makes entries infinite; "
            f"use a smaller scale"
        )
    return np.ascontiguousarray(matrix, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class System:
    """A self-attention system on the product of spheres ``(S^{dim-1})^n_tokens``.

    Parameters
    ----------
    n_tokens : int
        Number of tokens ``n >= 1``.
    dim : int
        Dimension ``d >= 2`` of each token.
    beta : float
        Inverse temperature ``beta >= 0``.
    Q, K, V : str, array_like or mapping
        Query, key and value matrices, each ``d x d`` or a specification accepted by
        `resolve_matrix`. After construction they are read-only float64 arrays.
    weighting : {'softmax', 'unnormalized', 'oja'}
        Attention weights: the row softmax of ``beta x_i^T A x_j``, the unnormalised
        ``exp(beta x_i^T A x_j) / n``, or the constant ``1 / n`` of the multiagent Oja
        flow.

    Notes
    -----
    The vector field is ``dx_i/dt = (I - x_i x_i^T) sum_j w_ij V x_j`` with
    ``w_ij`` given by the weighting and ``A = Q^T K``.
    """

    n_tokens: int
    dim: int
    beta: float
    Q: Any = "identity"
    K: Any = "identity"
    V: Any = "identity"
    weighting: str = "softmax"

    def __post_init__(self) -> None:
        n_tokens = _check_int("system.n_tokens", self.n_tokens, 1, MAX_TOKENS)
        dim = _check_int("system.dim", self.dim, 2, MAX_DIM)
        beta = _check_real("system.beta", self.beta, minimum=0.0, strict=False)
        if not isinstance(self.weighting, str) or self.weighting not in WEIGHTINGS:
            raise ConfigError(
                f"system.weighting = {_show(self.weighting)} is invalid: expected one "
                f"of {', '.join(WEIGHTINGS)}"
            )
        object.__setattr__(self, "n_tokens", n_tokens)
        object.__setattr__(self, "dim", dim)
        object.__setattr__(self, "beta", beta)
        for name in ("Q", "K", "V"):
            matrix = resolve_matrix(f"system.{name}", getattr(self, name), dim)
            matrix.setflags(write=False)
            object.__setattr__(self, name, matrix)

        spectral_norm("system.V", self.V)
        with np.errstate(over="ignore", invalid="ignore"):
            exponent = beta * spectral_norm("system.Q^T K", self.A)
        if self.weighting != "oja" and not math.isfinite(exponent):
            raise ConfigError(
                f"system.beta = {beta!r} is invalid: beta * ||Q^T K||_2 overflows "
                f"float64, so the attention logits would be infinite; lower beta or "
                f"scale Q and K down"
            )
        if self.weighting == "unnormalized" and exponent > MAX_UNNORMALIZED_EXPONENT:
            raise ConfigError(
                f"system.beta = {beta!r} is invalid for weighting 'unnormalized': "
                f"beta * ||Q^T K||_2 = {exponent:.4g} exceeds {MAX_UNNORMALIZED_EXPONENT}"
                f", so exp overflows; lower beta or use weighting 'softmax'"
            )

    @property
    def A(self) -> np.ndarray:
        """The bilinear form ``Q^T K`` of the attention logits, shape ``(d, d)``."""
        return self.Q.T @ self.K

    def max_rate(self) -> float:
        """Return an upper estimate of the largest rate of the linearised field.

        ``(1 + beta ||A||_2) ||V||_2`` for softmax, ``exp(beta ||A||_2) ||V||_2``
        for unnormalized and ``||V||_2`` for oja.
        """
        norm_a = float(np.linalg.norm(self.A, 2))
        norm_v = float(np.linalg.norm(self.V, 2))
        if self.weighting == "softmax":
            return (1.0 + self.beta * norm_a) * norm_v
        if self.weighting == "unnormalized":
            return math.exp(self.beta * norm_a) * norm_v
        return norm_v

    def to_dict(self) -> dict[str, Any]:
        """Return the system as plain Python types, matrices as lists of rows."""
        return {
            "n_tokens": self.n_tokens,
            "dim": self.dim,
            "beta": self.beta,
            "weighting": self.weighting,
            "Q": self.Q.tolist(),
            "K": self.K.tolist(),
            "V": self.V.tolist(),
        }


@dataclass(frozen=True)
class Integration:
    """Settings of the fixed-step RK4 integrator.

    Parameters
    ----------
    dt : float
        Step size, ``> 0``.
    max_steps : int
        Cap on the number of steps of one trajectory, ``>= 1``.
    tol : float
        A trajectory has converged when ``max_i ||dx_i/dt|| < tol`` at ``checks``
        consecutive steps; ``tol = 0`` disables the test.
    checks : int
        Number of consecutive steps below ``tol`` that count as convergence.
    kernel : {'auto', 'lanes', 'rows', 'scalar'}
        ``lanes`` integrates many trajectories side by side in SIMD lanes, with code
        generated for the system (small systems only). ``rows`` integrates one
        trajectory at a time, vectorised along tokens and components (for large
        systems). ``scalar``, the reference, integrates one trajectory at a time
        without vectorisation. ``auto`` takes ``lanes`` where it applies and
        ``rows`` elsewhere. The kernels agree to rounding error, not bit for bit.
    precision : {'float64', 'float32'}
        Floating-point type of the integration; ``float32`` needs the ``lanes``
        kernel and ``tol = 0`` or ``tol >= 1e-6``. Final states are stored as
        float64 either way.
    """

    dt: float = 0.05
    max_steps: int = 20000
    tol: float = 1e-7
    checks: int = 3
    kernel: str = "auto"
    precision: str = "float64"

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "dt", _check_real("integration.dt", self.dt, minimum=0.0, strict=True)
        )
        object.__setattr__(
            self,
            "max_steps",
            _check_int("integration.max_steps", self.max_steps, 1, 2**31 - 2),
        )
        object.__setattr__(
            self, "tol", _check_real("integration.tol", self.tol, minimum=0.0, strict=False)
        )
        object.__setattr__(
            self, "checks", _check_int("integration.checks", self.checks, 1, 10**6)
        )
        for key, allowed in (("kernel", KERNELS), ("precision", PRECISIONS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"integration.{key} = {getattr(self, key)!r} is invalid: expected "
                    f"one of {', '.join(allowed)}"
                )
        if self.precision == "float32" and self.kernel in ("rows", "scalar"):
            raise ConfigError(
                f"integration.precision = 'float32' is invalid with integration.kernel "
                f"= {self.kernel!r}, which computes in float64 only: use kernel 'auto' "
                f"or 'lanes', or precision 'float64'"
            )
        if self.precision == "float32" and 0.0 < self.tol < FLOAT32_MIN_TOL:
            raise ConfigError(
                f"integration.tol = {self.tol!r} is invalid with precision 'float32': "
                f"rounding keeps the speed near equilibria around 1e-7 * ||V||_2, so "
                f"use tol >= {FLOAT32_MIN_TOL:g} (or 0 to disable the test) or "
                f"precision 'float64'"
            )


@dataclass(frozen=True)
class Sampling:
    """Initial conditions: how many, from which seed, and how many per task.

    Parameters
    ----------
    n_initial : int
        Number of initial conditions, uniform on the product of spheres.
    seed : int
        Seed; initial condition ``i`` is a pure function of ``(seed, i)``.
    chunk_size : int
        Initial conditions per task and per chunk of the atlas arrays.
    initial : {'random', 'tokens'}
        ``random``: uniform on the product of spheres. ``tokens``: one initial
        condition per entry of ``text``, made of the model's own token states
        entering the layer of a checkpoint system. ``n_initial`` is then the number
        of texts.
    text : sequence of str
        The texts for ``initial = 'tokens'``.
    """

    n_initial: int = 10000
    seed: int = 0
    chunk_size: int = 8192
    initial: str = "random"
    text: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._resolve_initial()
        object.__setattr__(
            self,
            "n_initial",
            _check_int("sampling.n_initial", self.n_initial, 1, MAX_INITIAL_CONDITIONS),
        )
        object.__setattr__(
            self, "seed", _check_int("sampling.seed", self.seed, 0, 2**63 - 1)
        )
        object.__setattr__(
            self,
            "chunk_size",
            _check_int("sampling.chunk_size", self.chunk_size, 1, 2**31 - 1),
        )

    def _resolve_initial(self) -> None:
        if self.initial not in INITIAL_SOURCES:
            raise ConfigError(
                f"sampling.initial = {self.initial!r} is invalid: expected one of "
                f"{', '.join(INITIAL_SOURCES)}"
            )
        text = self.text
        if isinstance(text, str) or not all(isinstance(t, str) for t in text):
            raise ConfigError(
                f"sampling.text = {text!r} is invalid: expected a list of strings"
            )
        object.__setattr__(self, "text", tuple(text))
        if self.initial == "random":
            if text:
                raise ConfigError(
                    "sampling.text is given but sampling.initial = 'random': set "
                    "initial = 'tokens' to start from the texts' token states"
                )
            return
        if not text:
            raise ConfigError(
                "sampling.text is missing or empty: sampling.initial = 'tokens' needs "
                "at least one text"
            )
        default = Sampling.__dataclass_fields__["n_initial"].default
        if self.n_initial not in (default, len(text)):
            raise ConfigError(
                f"sampling.n_initial = {self.n_initial!r} is invalid with sampling."
                f"initial = 'tokens': there is one initial condition per text "
                f"({len(text)}); leave n_initial out"
            )
        object.__setattr__(self, "n_initial", len(text))

    @property
    def n_chunks(self) -> int:
        """Number of chunks, the last one possibly partial."""
        return -(-self.n_initial // self.chunk_size)


@dataclass(frozen=True)
class Classification:
    """Tolerances of the classifier of final states.

    Parameters
    ----------
    cluster_tol : float
        Two tokens closer than this geodesic angle (radians) share a cluster.
    shape_tol : float
        Tolerance on cosines for the geometric tests: antipodal centres, regular
        polygons and polytopes, alignment with an eigenvector, and matching of
        attractors.
    """

    cluster_tol: float = 1e-3
    shape_tol: float = 1e-2

    def __post_init__(self) -> None:
        for name in ("cluster_tol", "shape_tol"):
            value = _check_real(
                f"classification.{name}", getattr(self, name), minimum=0.0, strict=True
            )
            if value >= 1.0:
                raise ConfigError(
                    f"classification.{name} = {value!r} is invalid: expected a "
                    f"tolerance in (0, 1)"
                )
            object.__setattr__(self, name, value)


SECTIONS: dict[str, type] = {
    "system": System,
    "integration": Integration,
    "sampling": Sampling,
    "classification": Classification,
}


@dataclass(frozen=True, eq=False)
class Config:
    """A complete basin-mapping job: system, integrator, sampling and classifier."""

    system: System
    integration: Integration = field(default_factory=Integration)
    sampling: Sampling = field(default_factory=Sampling)
    classification: Classification = field(default_factory=Classification)
    name: str = ""

    def __post_init__(self) -> None:
        state_bytes = 8 * self.system.n_tokens * self.system.dim
        chunk_size = self.sampling.chunk_size
        if chunk_size * state_bytes > MAX_CHUNK_BYTES:
            largest = MAX_CHUNK_BYTES // state_bytes
            remedy = (
                f"use chunk_size <= {largest}"
                if largest
                else "even one state exceeds it, so lower system.n_tokens or system.dim"
            )
            raise ConfigError(
                f"sampling.chunk_size = {chunk_size} is invalid for system.n_tokens = "
                f"{self.system.n_tokens}, system.dim = {self.system.dim}: the final "
                f"states of one chunk would take "
                f"{chunk_size * state_bytes / 2**30:.3g} GiB, and the limit is "
                f"{MAX_CHUNK_BYTES / 2**30:g} GiB; {remedy}"
            )
        tokens = self.sampling.initial == "tokens"
        if tokens and not hasattr(self.system, "token_states"):
            raise ConfigError(
                "sampling.initial = 'tokens' needs a system taken from a model "
                "(system.model = ...), whose forward pass gives the token states"
            )

        # Imported here because the kernels import this module.
        from basins.integrate import select_kernel

        select_kernel(self.system, self.integration)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str = "") -> Config:
        """Build and validate a configuration from nested tables.

        Parameters
        ----------
        data : mapping
            Tables ``system`` (required), ``integration``, ``sampling`` and
            ``classification`` with the keys of the dataclasses of the same names.
        name : str, optional
            A label stored with the atlas, such as the example's name.

        Raises
        ------
        ConfigError
            On an unknown table or key, a missing required key or an invalid value.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"the configuration is {_show(data)}: expected tables "
                f"{', '.join(f'[{name}]' for name in SECTIONS)}"
            )
        for table in data:
            if table not in SECTIONS:
                raise ConfigError(
                    f"unknown table [{_show_key(table)}]: allowed tables are "
                    f"{', '.join(f'[{name}]' for name in SECTIONS)}"
                )
        if "system" not in data:
            raise ConfigError("missing table [system]: it must give n_tokens, dim, beta")
        sections = {}
        for section, section_type in SECTIONS.items():
            table = data.get(section, {})
            if section == "system" and _names_factors(table):
                from basins.transformer.system import system_from_table

                sections[section] = system_from_table(table, data.get("sampling"))
                continue
            allowed = tuple(f.name for f in dataclasses.fields(section_type))
            _check_keys(section, table, allowed)
            required = [
                f.name
                for f in dataclasses.fields(section_type)
                if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ]
            for key in required:
                if key not in table:
                    raise ConfigError(f"missing key {section}.{key}")
            sections[section] = section_type(**table)
        return cls(**sections, name=name)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as nested tables of plain Python types."""
        return {
            "system": self.system.to_dict(),
            "integration": dataclasses.asdict(self.integration),
            "sampling": self._sampling_dict(),
            "classification": dataclasses.asdict(self.classification),
        }

    def _sampling_dict(self) -> dict[str, Any]:
        # Random sampling leaves out the token keys, so its tables stay as they were.
        data = dataclasses.asdict(self.sampling)
        if self.sampling.initial == "random":
            del data["initial"], data["text"]
        else:
            data["text"] = list(self.sampling.text)
        return data

    def with_sampling(self, **changes: Any) -> Config:
        """Return a copy with some sampling settings replaced (and validated)."""
        sampling = dataclasses.replace(self.sampling, **changes)
        return dataclasses.replace(self, sampling=sampling)

    def check_step_size(self, *, stacklevel: int = 2) -> None:
        """Warn with `StepSizeWarning` if ``dt`` exceeds the RK4 stability estimate."""
        rate = self.system.max_rate()
        if rate * self.integration.dt > RK4_STABILITY_LIMIT:
            safe = RK4_STABILITY_LIMIT / rate
            warnings.warn(
                f"integration.dt = {self.integration.dt:g} exceeds the RK4 stability "
                f"estimate for weighting {self.system.weighting!r} (largest rate about "
                f"{rate:.3g}); dt <= {safe:.3g} is safe by the estimate. The estimate "
                f"is an upper bound, so watch the count of nonfinite trajectories.",
                StepSizeWarning,
                stacklevel=stacklevel,
            )


def _names_factors(table: Any) -> bool:
    """Return whether a ``[system]`` table names a model checkpoint or head factors."""
    return isinstance(table, Mapping) and ("model" in table or "query" in table)


def load_config(source: str | Path) -> Config:
    """Read a configuration from a TOML file or a built-in example.

    Parameters
    ----------
    source : str or path
        A TOML file, or ``"example:NAME"`` for one of `basins.examples.EXAMPLES`.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid TOML, or contains an invalid configuration.
    """
    text = str(source)
    if text.startswith("example:"):
        from basins.examples import example_config

        return example_config(text.removeprefix("example:"))
    path = Path(source)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {text!r} not found; give a TOML file or "
            f"example:NAME (see 'basins examples')"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {text!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {text!r} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(
            f"configuration file {text!r} nests arrays or tables too deeply to parse"
        ) from None
    return Config.from_dict(data, name=path.stem)
