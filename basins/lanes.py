"""Kernels that integrate many initial conditions side by side, one per SIMD lane.

The scalar kernels of `basins.kernels` follow one trajectory at a time through loops
whose trip counts (``n_tokens``, ``dim``) are only known at run time, so the
compiler keeps little in registers and uses no vector instructions. Here the code of
one RK4 step is generated for one system (`basins.lanesource`). The number of
tokens, the dimension, the weighting and the zero patterns of ``beta A`` and ``V``
are constants in it, so one step of one trajectory is straight-line arithmetic on
named scalars. LLVM vectorises the loop over `LANES` trajectories around it, one
trajectory per lane. Besides that, the step

- computes the softmax exponentials with a polynomial that vectorises, where
  ``math.exp`` calls libm once per element;
- skips the shift by the row maximum when ``beta ||A||_2 <= SHIFT_FREE_LIMIT``, so
  that a symmetric ``A`` can share ``exp(s_ij) = exp(s_ji)``, which halves the
  number of exponentials;
- folds ``beta`` into ``A`` and leaves out the zero entries of ``beta A`` and ``V``;
- tests convergence on its first stage, the field at the current state;
- runs in float64 or, optionally, float32 (16 lanes per 512-bit vector).

A lane whose trajectory stops is refilled with the next initial condition of its
block. Every initial condition goes through the same operations whatever its lane,
its block, its neighbours and the number of threads, so results are byte-identical
across thread counts and chunk sizes; partial blocks run the same code with idle
lanes. Results differ from the scalar kernel's in the last bits (another
exponential, fused multiply-adds, no shift).

The generated source is written once to `kernel_cache_dir`, named by a hash of its
text, and compiled with Numba's on-disk cache, so a system is compiled once per
machine (some seconds to a minute) and later processes load the machine code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numba
import numpy as np

from basins.config import Integration, System
from basins.errors import ConfigError
from basins.lanesource import LANES, generate_source

logger = logging.getLogger(__name__)

# Largest number of initial conditions per iteration of the parallel loop. Lanes
# fall idle only when their block has no initial condition left, so large blocks
# keep them busy: idle lanes waste about LANES / (2 * block size) of the work.
MAX_BLOCK_SIZE = 1024

# Without the shift by the row maximum, |s_ij| <= beta ||A||_2 |x_i| |x_j|. With
# beta ||A||_2 at most this, exp cannot overflow (e^709 in float64, e^88 in float32)
# unless a stage state has tokens of norm above 2.3, which only a step far beyond
# the RK4 stability limit produces; such a trajectory ends as nonfinite.
SHIFT_FREE_LIMIT = 16.0

# Largest generated field evaluation, in arithmetic operations (see
# `LanePlan.field_operations`). Compile time grows with it: W8, about 1,800
# operations, took 10 s of CPU time on a 2.6 GHz Xeon. Larger systems use the row
# kernel.
MAX_FIELD_OPERATIONS = 4000


@dataclass(frozen=True)
class LanePlan:
    """Specialisation of the generated kernel for one system.

    Attributes
    ----------
    n_tokens, dim : int
        Size of the system.
    weighting : {'softmax', 'unnormalized', 'oja'}
        Effective weighting: softmax and unnormalized with ``beta A = 0`` are oja.
    shift : bool
        Whether softmax logits are shifted by their row maximum.
    symmetric : bool
        Whether ``exp(s_ij)`` is computed once for both ``(i, j)`` and ``(j, i)``.
    logit_pattern, value_pattern : tuple of tuple of bool
        Nonzero entries of ``beta A`` and of ``V``.
    precision : {'float64', 'float32'}
        Floating-point type of the state and of all arithmetic.
    """

    n_tokens: int
    dim: int
    weighting: str
    shift: bool
    symmetric: bool
    logit_pattern: tuple[tuple[bool, ...], ...]
    value_pattern: tuple[tuple[bool, ...], ...]
    precision: str

    def field_operations(self) -> int:
        """Return the number of arithmetic operations of one field evaluation.

        Counts multiplications, additions, comparisons and divisions, and about 20
        operations per exponential.
        """
        n, d = self.n_tokens, self.dim
        values = 2 * n * sum(map(sum, self.value_pattern))
        projection = 7 * n * d
        if self.weighting == "oja":
            return values + n * d + projection
        exponentials = n * (n + 1) // 2 if self.symmetric else n * n
        logits = 2 * n * sum(map(sum, self.logit_pattern)) + 2 * exponentials * d
        shift = 2 * n * n if self.shift else 0
        weighting = n * n + 2 * n * n * d + n * d
        return values + logits + shift + 20 * exponentials + weighting + projection


def _pattern(matrix: np.ndarray) -> tuple[tuple[bool, ...], ...]:
    return tuple(tuple(bool(value != 0.0) for value in row) for row in matrix)


def plan_for(system: System, precision: str = "float64") -> LanePlan | None:
    """Return the specialisation of the lane kernel for ``system``, or None.

    None means that the lane kernel does not apply because the generated step would
    be too large (`MAX_FIELD_OPERATIONS`).
    """
    logit_matrix = system.beta * system.A
    weighting = system.weighting
    if weighting != "oja" and not np.any(logit_matrix):
        weighting = "oja"
    shift = weighting == "softmax" and (
        system.beta * float(np.linalg.norm(system.A, 2)) > SHIFT_FREE_LIMIT
    )
    symmetric = (
        weighting != "oja"
        and not shift
        and bool(np.array_equal(logit_matrix, logit_matrix.T))
    )
    plan = LanePlan(
        n_tokens=system.n_tokens,
        dim=system.dim,
        weighting=weighting,
        shift=shift,
        symmetric=symmetric,
        logit_pattern=_pattern(logit_matrix),
        value_pattern=_pattern(system.V),
        precision=precision,
    )
    if plan.field_operations() > MAX_FIELD_OPERATIONS:
        return None
    return plan


def parameters(system: System, integration: Integration, precision: str) -> np.ndarray:
    """Return the run-time parameters of a generated kernel, in its precision.

    ``beta A`` and ``V`` row-major, then ``dt``, ``tol`` and ``checks``; the
    generated code reads the entries that its plan needs.
    """
    values = np.concatenate(
        [
            (system.beta * system.A).ravel(),
            np.asarray(system.V, dtype=np.float64).ravel(),
            [integration.dt, integration.tol, float(integration.checks)],
        ]
    )
    return values.astype(precision)


def kernel_cache_dir() -> Path:
    """Return the directory of the generated kernels.

    ``BASINS_KERNEL_CACHE`` if set, else ``basins-kernels`` under
    ``XDG_CACHE_HOME`` (default ``~/.cache``), or under the temporary directory when
    that cannot be written. Numba keeps the compiled code in ``__pycache__`` inside
    it, or under ``NUMBA_CACHE_DIR`` when that is set. Point it at a node-local
    directory on a cluster: Numba's cache breaks on read-only and network file
    systems and its machine code is specific to the processor model.
    """
    configured = os.environ.get("BASINS_KERNEL_CACHE")
    if configured:
        if Path(configured).exists() and not Path(configured).is_dir():
            raise ConfigError(
                f"BASINS_KERNEL_CACHE = {configured!r} is not a directory: set it to a "
                f"directory (created if missing) or unset it"
            )
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    candidate = Path(base) / "basins-kernels"
    try:
        candidate.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if candidate.is_dir() and os.access(candidate, os.W_OK):
        return candidate
    return Path(tempfile.gettempdir()) / f"basins-kernels-{os.getuid()}"


def _write_once(path: Path, text: str) -> None:
    """Create ``path`` holding ``text`` unless it exists, atomically.

    An intact existing file is never rewritten, because Numba's cache keys compiled
    code on the source file's modification time: when many processes start at once,
    all of them use the first file that appeared. A file whose text differs from
    ``text`` is damaged (its name is a hash of the text) and is replaced.
    """
    damaged = path.exists()
    if damaged:
        if path.read_text(encoding="utf-8", errors="replace") == text:
            return
        logger.warning("replacing the damaged generated kernel %s", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        if damaged:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
    finally:
        Path(temporary).unlink(missing_ok=True)


_MODULES: dict[str, ModuleType] = {}
_MODULES_LOCK = threading.Lock()


def load_kernel(plan: LanePlan) -> ModuleType:
    """Return the module of the generated kernel of ``plan``, writing it if needed."""
    source = generate_source(plan)
    name = "basins_lanes_" + hashlib.sha256(source.encode()).hexdigest()[:24]
    with _MODULES_LOCK:
        module = _MODULES.get(name)
        if module is None:
            path = kernel_cache_dir() / f"{name}.py"
            _write_once(path, source)
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            _MODULES[name] = module
            logger.debug("lane kernel %s for %s", path, plan)
    return module


def integrate_lanes(
    plan: LanePlan,
    system: System,
    integration: Integration,
    initial_state: np.ndarray,
    *,
    parallel: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrate ``initial_state`` (m, n_tokens, dim) with the lane kernel of ``plan``.

    ``initial_state`` must be C-contiguous float64. Returns the final states
    (float64 whatever the precision), the status codes (int8) and the step counts
    (int32).
    """
    module = load_kernel(plan)
    m = initial_state.shape[0]
    final = np.empty(initial_state.shape, dtype=np.float64)
    status = np.empty(m, dtype=np.int8)
    steps = np.empty(m, dtype=np.int32)
    threads = numba.get_num_threads() if parallel else 1
    # Enough blocks for every thread; the block size changes no result.
    block_size = max(LANES, min(MAX_BLOCK_SIZE, math.ceil(m / (4 * threads))))
    kernel = module.integrate if parallel else module.integrate_serial
    kernel(
        initial_state,
        parameters(system, integration, plan.precision),
        int(integration.max_steps),
        block_size,
        final,
        status,
        steps,
    )
    return final, status, steps
