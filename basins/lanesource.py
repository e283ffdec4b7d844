"""Python source of the lane kernels: one RK4 step as straight-line arithmetic.

`generate_source` writes a module for one `basins.lanes.LanePlan`. The plan's sizes,
weighting and zero patterns are constants in the text, so one evaluation of the
field is a fixed sequence of operations on named scalars (``x3_1`` is component 1 of
token 3). The module holds, in this order:

- ``exp``: the exponential as a polynomial with bit arithmetic, so that it vectorises;
- ``field(x, A, V)``: the derivative of every token and two speeds, from the state
  and the nonzero entries of ``beta A`` and ``V`` as flat tuples;
- ``stage`` and ``combine``: the RK4 stage states and the final combination with
  the projection back onto the sphere;
- ``step(W, P)``: the loop over the `LANES` lanes of a workspace, with one RK4 step
  and the convergence test per lane. LLVM vectorises this loop;
- the driver: ``run_block`` refills lanes as trajectories stop, and ``integrate``
  runs blocks of initial conditions in parallel.

The helpers are inlined into ``step`` by LLVM (`basins.intrinsics.inline_always`),
so Numba compiles each of them once, not once per use.
"""

from __future__ import annotations

import hashlib
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from basins import intrinsics

if TYPE_CHECKING:
    from basins.lanes import LanePlan

# Trajectories advanced together by one call of ``step``: two 512-bit vectors of
# float64 or one of float32. A multiple of every vector width, so that no lane goes
# through a scalar remainder loop (whose fused multiply-adds could round otherwise).
LANES = 16

# Status code of a lane without a trajectory.
LANE_IDLE = 3

# Bump when the generated code changes in a way that its text does not show.
GENERATOR_VERSION = 1

# Numba's cache does not notice changes in the functions that cached code calls, so
# the generated text carries a digest of the intrinsics it inlines: a changed
# intrinsic changes the text, hence the file name, and forces a new compilation.
INTRINSICS_DIGEST = hashlib.sha256(Path(intrinsics.__file__).read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class ExpConstants:
    """Constants of the vectorisable exponential for one floating-point type.

    ``exp(x) = 2^k exp(r)`` with ``k = round(x / ln 2)`` and ``r = x - k ln 2``,
    reduced in two steps (Cody and Waite): ``ln2_high`` has trailing zero bits, so
    that ``k * ln2_high`` is exact, and ``ln2_low`` corrects it. On
    ``|r| <= ln(2) / 2``, ``exp(r) = 1 + r + r^2 q(r)``, with ``q`` the Chebyshev
    interpolant of ``(exp(r) - 1 - r) / r^2`` computed with mpmath at 50 digits
    (``mpmath.chebyfit``), highest degree first. ``2^k`` is applied by adding ``k``
    to the exponent field of ``exp(r)``. Arguments are clamped to ``[minimum,
    maximum]``: the minimum keeps the result normal, and at the maximum, where exp
    overflows anyway, the exponent field overflows into infinity or NaN.
    """

    log2_e: float
    ln2_high: float
    ln2_low: float
    shifter: float
    minimum: float
    maximum: float
    q: tuple[float, ...]


EXP_CONSTANTS = {
    "float64": ExpConstants(
        log2_e=1.4426950408889634,
        ln2_high=0.693145751953125,
        ln2_low=1.4286068203094173e-06,
        shifter=1.5 * 2.0**52,
        minimum=-708.0,
        maximum=710.0,
        q=(
            2.5100375832561234e-08,
            2.7620075879983367e-07,
            2.7557268480310024e-06,
            2.4801521322368692e-05,
            0.00019841269863040545,
            0.0013888888917196719,
            0.008333333333330065,
            0.041666666666624164,
            0.16666666666666669,
            0.5000000000000001,
        ),
    ),
    "float32": ExpConstants(
        log2_e=1.4426950408889634,
        ln2_high=0.693359375,
        ln2_low=-2.12194440e-4,
        shifter=1.5 * 2.0**23,
        minimum=-86.0,
        maximum=89.0,
        q=(
            0.0013926175888627768,
            0.008363173343241215,
            0.041666556149721146,
            0.16666577756404877,
            0.5,
        ),
    ),
}

# Decorator of every arithmetic function. It allows fused multiply-adds but no
# fast-math assumption that values are finite, so NaN and infinity reach the status
# test. The NumPy error model turns 1/0 into infinity instead of an exception,
# because the branch to the exception would stop the vectorisation.
JIT = '@njit(fastmath=FLAGS, error_model="numpy", cache=True)'


class _Source:
    """Lines of generated Python with an indentation level."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.indent = 0

    def line(self, text: str = "") -> None:
        self.lines.append("    " * self.indent + text if text else "")

    def block(self, text: str) -> None:
        for line in textwrap.dedent(text).strip("\n").splitlines():
            self.line(line)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _sum(terms: list[str]) -> str:
    return " + ".join(terms) if terms else "ZERO"


def _tuple(names: list[str]) -> str:
    return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"


def _entries(pattern: tuple[tuple[bool, ...], ...], letter: str) -> list[str]:
    """Return the names of a matrix's nonzero entries, ``A0_1`` for row 0, column 1."""
    size = len(pattern)
    return [f"{letter}{a}_{b}" for a in range(size) for b in range(size) if pattern[a][b]]


def entry_offsets(pattern: tuple[tuple[bool, ...], ...], first: int) -> list[int]:
    """Return the positions of a matrix's nonzero entries in a row-major layout."""
    size = len(pattern)
    return [first + a * size + b for a in range(size) for b in range(size) if pattern[a][b]]


def _emit_header(src: _Source, plan: LanePlan) -> None:
    exp_constants = EXP_CONSTANTS[plan.precision]
    float_type = f"np.{plan.precision}"
    src.line(f'"""Lane kernel generated by basins.lanesource for {plan!r}."""')
    src.line()
    src.block(
        """
        import math

        import numpy as np
        from numba import njit, prange

        from basins.intrinsics import add_to_exponent, inline_always, prefer_wide_vectors
        """
    )
    src.line()
    src.line(f"GENERATOR_VERSION = {GENERATOR_VERSION}")
    src.line(f"INTRINSICS_DIGEST = {INTRINSICS_DIGEST!r}")
    src.line(f"LANES = {LANES}")
    src.line(f"N_TOKENS = {plan.n_tokens}")
    src.line(f"DIM = {plan.dim}")
    src.line(f"DTYPE = {float_type}")
    src.line("# Workspace rows after the state: status code, consecutive checks below")
    src.line("# tol, and whether the step cap is reached.")
    src.line("ROW_CODE = N_TOKENS * DIM")
    src.line("ROW_BELOW = ROW_CODE + 1")
    src.line("ROW_LAST = ROW_CODE + 2")
    src.line("ROWS = ROW_CODE + 3")
    src.line("FLAGS = {'contract'}")
    src.line("# Constants in the kernel's type: a bare literal is float64 and would")
    src.line("# promote float32 arithmetic.")
    constants = {
        "ZERO": 0.0,
        "ONE": 1.0,
        "TWO": 2.0,
        "HALF": 0.5,
        "SIXTH": 1.0 / 6.0,
        "INVERSE_N": 1.0 / plan.n_tokens,
        "RUNNING": -1.0,
        "CONVERGED": 0.0,
        "MAX_STEPS": 1.0,
        "NONFINITE": 2.0,
        "IDLE": float(LANE_IDLE),
        "FINITE_MAX": float(np.finfo(plan.precision).max),
        "LOG2_E": exp_constants.log2_e,
        "LN2_HIGH": exp_constants.ln2_high,
        "LN2_LOW": exp_constants.ln2_low,
        "SHIFTER": exp_constants.shifter,
        "EXP_MIN": exp_constants.minimum,
        "EXP_MAX": exp_constants.maximum,
    }
    for k, coefficient in enumerate(exp_constants.q):
        constants[f"Q{k}"] = coefficient
    for name, value in constants.items():
        src.line(f"{name} = {float_type}({value!r})")
    src.line()
    src.line()

    horner = "Q0"
    for k in range(1, len(exp_constants.q)):
        horner = f"({horner}) * r + Q{k}"
    src.line(JIT)
    src.block(
        f'''
        def exp(x):
            """exp(x) in plain arithmetic, so that it vectorises; NaN stays NaN."""
            inline_always()
            x = EXP_MIN if x < EXP_MIN else x
            x = EXP_MAX if x > EXP_MAX else x
            shifted = x * LOG2_E + SHIFTER
            k = shifted - SHIFTER
            r = (x - k * LN2_HIGH) - k * LN2_LOW
            q = {horner}
            return add_to_exponent(ONE + r * (ONE + r * q), shifted)
        '''
    )
    src.line()
    src.line()


def _emit_field(src: _Source, plan: LanePlan) -> None:
    """Emit ``field(x, A, V)``: the derivative of every token, then two speeds.

    The result is a flat tuple: the derivative, then the sum and the maximum over
    tokens of ``||dx_i/dt||^2``. The sum is NaN or infinite whenever a component is.
    """
    n, d = plan.n_tokens, plan.dim
    state = [[f"x{i}_{a}" for a in range(d)] for i in range(n)]
    src.line(JIT)
    src.line("def field(x, A, V):")
    src.indent += 1
    src.line("inline_always()")
    src.line(f"{_tuple([name for row in state for name in row])} = x")
    if plan.weighting != "oja":
        src.line(f"{_tuple(_entries(plan.logit_pattern, 'A'))} = A")
    src.line(f"{_tuple(_entries(plan.value_pattern, 'V'))} = V")

    src.line("# V x_j for every token, shared by every row i.")
    value = _emit_products(src, "v", "V", plan.value_pattern, state)

    if plan.weighting == "oja":
        src.line("# Constant weights 1/n: y_i is the mean of V x_j for every token.")
        for a in range(d):
            src.line(f"y_{a} = INVERSE_N * ({_sum([value[j][a] for j in range(n)])})")
        drift = [[f"y_{a}" for a in range(d)] for _ in range(n)]
    else:
        drift = _emit_weighted_values(src, plan, state, value)

    src.line("# Projection onto the tangent space at each token.")
    derivative = [[f"k{i}_{a}" for a in range(d)] for i in range(n)]
    for i in range(n):
        src.line(f"r{i} = {_sum([f'{state[i][a]} * {drift[i][a]}' for a in range(d)])}")
        for a in range(d):
            src.line(f"{derivative[i][a]} = {drift[i][a]} - r{i} * {state[i][a]}")
        src.line(f"q{i} = {_sum([f'{k} * {k}' for k in derivative[i]])}")
    src.line(f"total = {_sum([f'q{i}' for i in range(n)])}")
    src.line("largest = q0")
    for i in range(1, n):
        src.line(f"largest = q{i} if q{i} > largest else largest")
    result = [name for row in derivative for name in row] + ["total", "largest"]
    src.line(f"return {_tuple(result)}")
    src.indent -= 1
    src.line()
    src.line()


def _emit_products(
    src: _Source,
    prefix: str,
    matrix: str,
    pattern: tuple[tuple[bool, ...], ...],
    state: list[list[str]],
) -> list[list[str]]:
    """Emit ``M x_j`` for every token, leaving out the zero entries of ``M``.

    Returns the names ``{prefix}{j}_{a}`` of the products; the entries of ``M`` are
    named ``{matrix}{a}_{b}``.
    """
    d = len(pattern)
    products = []
    for j, token in enumerate(state):
        row = []
        for a in range(d):
            terms = [f"{matrix}{a}_{b} * {token[b]}" for b in range(d) if pattern[a][b]]
            row.append(f"{prefix}{j}_{a}")
            src.line(f"{row[-1]} = {_sum(terms)}")
        products.append(row)
    return products


def _emit_weighted_values(
    src: _Source, plan: LanePlan, state: list[list[str]], value: list[list[str]]
) -> list[list[str]]:
    """Emit ``y_i = sum_j w_ij V x_j`` for softmax or unnormalized weights."""
    n, d = plan.n_tokens, plan.dim
    src.line("# beta A x_j for every token.")
    logit_form = _emit_products(src, "a", "A", plan.logit_pattern, state)

    def logit(i: int, j: int) -> str:
        return _sum([f"{state[i][a]} * {logit_form[j][a]}" for a in range(d)])

    weight = {}
    if plan.symmetric:
        src.line("# exp(s_ij) = exp(s_ji) for s_ij = x_i . (beta A x_j), A symmetric.")
        for i in range(n):
            for j in range(i, n):
                src.line(f"e{i}_{j} = exp({logit(i, j)})")
                weight[i, j] = weight[j, i] = f"e{i}_{j}"
    elif plan.shift:
        src.line("# exp(s_ij - m_i), m_i the row maximum of s_ij = x_i . (beta A x_j).")
        for i in range(n):
            for j in range(n):
                src.line(f"s{i}_{j} = {logit(i, j)}")
            src.line(f"m{i} = s{i}_0")
            for j in range(1, n):
                src.line(f"m{i} = s{i}_{j} if s{i}_{j} > m{i} else m{i}")
            for j in range(n):
                src.line(f"e{i}_{j} = exp(s{i}_{j} - m{i})")
                weight[i, j] = f"e{i}_{j}"
    else:
        src.line("# exp(s_ij) for s_ij = x_i . (beta A x_j).")
        for i in range(n):
            for j in range(n):
                src.line(f"e{i}_{j} = exp({logit(i, j)})")
                weight[i, j] = f"e{i}_{j}"

    src.line("# y_i = sum_j w_ij V x_j, w_ij = e_ij / sum_j e_ij (softmax) or e_ij / n.")
    drift = [[f"y{i}_{a}" for a in range(d)] for i in range(n)]
    for i in range(n):
        if plan.weighting == "softmax":
            src.line(f"w{i} = ONE / ({_sum([weight[i, j] for j in range(n)])})")
        scale = f"w{i}" if plan.weighting == "softmax" else "INVERSE_N"
        for a in range(d):
            terms = _sum([f"{weight[i, j]} * {value[j][a]}" for j in range(n)])
            src.line(f"{drift[i][a]} = {scale} * ({terms})")
    return drift


def _emit_stages(src: _Source, plan: LanePlan) -> None:
    """Emit ``stage(x, h, k) = x + h k`` and ``combine``, the end of an RK4 step."""
    size = plan.n_tokens * plan.dim
    src.line(JIT)
    src.line("def stage(x, h, k):")
    src.line("    inline_always()")
    src.line(f"    return {_tuple([f'x[{c}] + h * k[{c}]' for c in range(size)])}")
    src.line()
    src.line()

    src.line(JIT)
    src.line("def combine(x, sixth, k1, k2, k3, k4):")
    src.indent += 1
    src.line('"""Return x + dt/6 (k1 + 2 k2 + 2 k3 + k4), every token renormalised."""')
    src.line("inline_always()")
    names = []

    for i in range(plan.n_tokens):
        row = [f"z{i * plan.dim + a}" for a in range(plan.dim)]
        for a, z in enumerate(row):
            c = i * plan.dim + a
            src.line(
                f"{z} = x[{c}] + sixth * (k1[{c}] + TWO * k2[{c}] + TWO * k3[{c}]"
                f" + k4[{c}])"
            )
        src.line(f"inverse_norm = ONE / math.sqrt({_sum([f'{z} * {z}' for z in row])})")
        for z in row:
            src.line(f"{z} = {z} * inverse_norm")
        names += row
    src.line(f"return {_tuple(names)}")
    src.indent -= 1
    src.line()
    src.line()


def _emit_step(src: _Source, plan: LanePlan) -> None:
    """Emit ``step(W, P)``, the vectorised loop over the lanes of a workspace."""
    d = plan.dim
    size = plan.n_tokens * d
    src.line(JIT)
    src.line("def step(W, P):")
    src.indent += 1
    src.block(
        '''
        """Advance every running lane of the workspace ``W`` by one RK4 step.

        The field at the current state is both the first stage and the convergence
        test. A lane that stops keeps its state and gets its status code. Row ``r``
        of lane ``l`` is ``W[r * LANES + l]``: with constant offsets, LLVM can tell
        that rows never overlap, so it vectorises without run-time checks.
        """
        prefer_wide_vectors()
        '''
    )
    if plan.weighting == "oja":
        src.line("A = ()")
    else:
        src.line(f"A = {_tuple([f'P[{k}]' for k in entry_offsets(plan.logit_pattern, 0)])}")
    value_offsets = entry_offsets(plan.value_pattern, d * d)
    src.line(f"V = {_tuple([f'P[{k}]' for k in value_offsets])}")
    src.line(f"dt = P[{2 * d * d}]")
    src.line(f"tol = P[{2 * d * d + 1}]")
    src.line(f"checks = P[{2 * d * d + 2}]")
    src.line("half = HALF * dt")
    src.line("sixth = SIXTH * dt")
    src.line("for lane in range(LANES):")
    src.indent += 1
    src.line(f"x = {_tuple([f'W[{c * LANES} + lane]' for c in range(size)])}")
    src.block(
        f"""
        code = W[ROW_CODE * LANES + lane]
        below = W[ROW_BELOW * LANES + lane]
        last = W[ROW_LAST * LANES + lane]
        k1 = field(x, A, V)

        # Status from the first stage, in the order of the scalar kernel: nonfinite,
        # converged, then the step cap.
        speed = math.sqrt(k1[{size + 1}])
        below = below + ONE if speed < tol else ZERO
        update = CONVERGED if below >= checks else RUNNING
        update = MAX_STEPS if update == RUNNING and last > ZERO else update
        update = update if k1[{size}] <= FINITE_MAX else NONFINITE
        code = update if code == RUNNING else code

        k2 = field(stage(x, half, k1), A, V)
        k3 = field(stage(x, half, k2), A, V)
        k4 = field(stage(x, dt, k3), A, V)
        z = combine(x, sixth, k1, k2, k3, k4)
        z = z if code == RUNNING else x
        """
    )
    for c in range(size):
        src.line(f"W[{c * LANES} + lane] = z[{c}]")
    src.line("W[ROW_CODE * LANES + lane] = code")
    src.line("W[ROW_BELOW * LANES + lane] = below")
    src.indent -= 2
    src.line()
    src.line()


DRIVER = '''
@njit(cache=True)
def load_lane(W, lane, source):
    """Copy one initial condition (N_TOKENS, DIM) into a lane and mark it running."""
    for i in range(N_TOKENS):
        for a in range(DIM):
            W[(i * DIM + a) * LANES + lane] = source[i, a]
    W[ROW_CODE * LANES + lane] = RUNNING
    W[ROW_BELOW * LANES + lane] = ZERO
    W[ROW_LAST * LANES + lane] = ZERO


@njit(cache=True)
def idle_lane(W, lane):
    """Park a lane on a fixed finite state (every token on the first axis)."""
    for i in range(N_TOKENS):
        for a in range(DIM):
            W[(i * DIM + a) * LANES + lane] = ONE if a == 0 else ZERO
    W[ROW_CODE * LANES + lane] = IDLE
    W[ROW_BELOW * LANES + lane] = ZERO
    W[ROW_LAST * LANES + lane] = ZERO


@njit(cache=True)
def store_lane(W, lane, target):
    """Copy the state of one lane into ``target`` (N_TOKENS, DIM)."""
    for i in range(N_TOKENS):
        for a in range(DIM):
            target[i, a] = W[(i * DIM + a) * LANES + lane]


@njit(cache=True)
def run_block(initial, start, stop, P, max_steps, final, status, steps, W, owner, count):
    """Integrate initial conditions ``start .. stop - 1`` through the lanes of ``W``.

    A lane whose trajectory stops is stored and refilled with the next initial
    condition. Once none is left, the lane idles until the block's last trajectory
    stops.
    """
    following = start
    active = 0
    for lane in range(LANES):
        if following < stop:
            load_lane(W, lane, initial[following])
            owner[lane] = following
            count[lane] = 0
            following += 1
            active += 1
        else:
            idle_lane(W, lane)
            owner[lane] = -1
    while active > 0:
        for lane in range(LANES):
            if owner[lane] >= 0 and count[lane] >= max_steps:
                W[ROW_LAST * LANES + lane] = ONE
        step(W, P)
        for lane in range(LANES):
            ic = owner[lane]
            if ic < 0:
                continue
            code = W[ROW_CODE * LANES + lane]
            if code == RUNNING:
                count[lane] += 1
                continue
            store_lane(W, lane, final[ic])
            status[ic] = int(code)
            steps[ic] = count[lane]
            if following < stop:
                load_lane(W, lane, initial[following])
                owner[lane] = following
                count[lane] = 0
                following += 1
            else:
                idle_lane(W, lane)
                owner[lane] = -1
                active -= 1


def _integrate(initial, P, max_steps, block_size, final, status, steps):
    """Integrate every initial condition of ``initial`` (m, N_TOKENS, DIM).

    Writes final states, status codes and step counts into ``final``, ``status``
    and ``steps``. Blocks of ``block_size`` initial conditions run in parallel, each
    with its own workspace.
    """
    m = initial.shape[0]
    n_blocks = (m + block_size - 1) // block_size
    for block in prange(n_blocks):
        W = np.empty(ROWS * LANES, dtype=DTYPE)
        owner = np.empty(LANES, dtype=np.int64)
        count = np.empty(LANES, dtype=np.int64)
        start = block * block_size
        stop = min(start + block_size, m)
        run_block(
            initial, start, stop, P, max_steps, final, status, steps, W, owner, count
        )


integrate = njit(parallel=True, cache=True)(_integrate)
# A cached serial twin would share the parallel kernel's cache entry (Numba names
# entries after the Python function), so it is compiled in each process.
integrate_serial = njit(cache=False)(_integrate)
'''


def generate_source(plan: LanePlan) -> str:
    """Return the Python source of the lane kernel of ``plan``."""
    src = _Source()
    _emit_header(src, plan)
    _emit_field(src, plan)
    _emit_stages(src, plan)
    _emit_step(src, plan)
    src.lines.extend(DRIVER.strip("\n").splitlines())
    return src.text()
