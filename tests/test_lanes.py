"""The fast kernels (lanes, rows) against the scalar reference kernel."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import textwrap
import time
import types

import numba
import numpy as np
import pytest

from basins import (
    Classification,
    Config,
    ConfigError,
    Integration,
    Sampling,
    System,
    initial_conditions,
    integrate,
)
from basins import lanes, lanesource
from basins.atlas import create_atlas, read_config
from basins.classify import Matcher
from basins.integrate import select_kernel
from basins.kernels import STATUS_CONVERGED, STATUS_MAX_STEPS, STATUS_NONFINITE

W8_V = [[1.0, 0.3, 0.0], [0.3, 0.5, 0.2], [0.0, 0.2, -0.5]]

# One system per branch of the generated code: symmetric logits without shift,
# asymmetric A, the shift by the row maximum (beta ||A|| > SHIFT_FREE_LIMIT), the
# unnormalized and oja weightings, softmax at beta = 0 (run as oja), one token.
SYSTEMS = {
    "w8": System(n_tokens=8, dim=3, beta=1.0, V=W8_V),
    "asymmetric": System(
        n_tokens=5,
        dim=3,
        beta=1.5,
        Q={"random_symmetric": 1},
        K={"random_symmetric": 2},
        V={"random_symmetric": 3},
    ),
    "shifted": System(n_tokens=4, dim=3, beta=20.0, V={"diagonal": [0.4, 0.2, -0.1]}),
    "unnormalized": System(
        n_tokens=4, dim=4, beta=0.7, V={"random_symmetric": 4}, weighting="unnormalized"
    ),
    "oja": System(n_tokens=3, dim=2, beta=0.0, V=[[1.0, 0.4], [-0.2, 0.3]], weighting="oja"),
    "zero_beta": System(n_tokens=4, dim=3, beta=0.0, V=W8_V),
    "one_token": System(n_tokens=1, dim=3, beta=1.0, V={"diagonal": [3.0, 2.0, 1.0]}),
}
FAST_KERNELS = ("lanes", "rows")


def test_plans_cover_every_branch():
    plans = {name: lanes.plan_for(system) for name, system in SYSTEMS.items()}
    assert plans["w8"].symmetric and not plans["w8"].shift
    assert not plans["asymmetric"].symmetric
    assert plans["shifted"].shift and not plans["shifted"].symmetric
    assert plans["unnormalized"].weighting == "unnormalized"
    assert plans["oja"].weighting == "oja"
    assert plans["zero_beta"].weighting == "oja"


@pytest.mark.parametrize("kernel", FAST_KERNELS)
@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_fixed_steps_agree_with_scalar_kernel(name, kernel):
    system = SYSTEMS[name]
    initial = initial_conditions(1, 0, 40, system.n_tokens, system.dim)
    reference = integrate(system, Integration(tol=0.0, max_steps=300, kernel="scalar"), initial)
    fast = integrate(system, Integration(tol=0.0, max_steps=300, kernel=kernel), initial)
    assert np.all(fast.status == STATUS_MAX_STEPS)
    assert np.array_equal(fast.steps, reference.steps)
    assert np.abs(fast.final_state - reference.final_state).max() <= 1e-12


@pytest.mark.parametrize("kernel", FAST_KERNELS)
@pytest.mark.parametrize("name", ["w8", "asymmetric", "shifted", "unnormalized"])
def test_stopped_trajectories_reach_same_attractor(name, kernel):
    system = SYSTEMS[name]
    initial = initial_conditions(2, 0, 300, system.n_tokens, system.dim)
    reference = integrate(system, Integration(kernel="scalar"), initial)
    fast = integrate(system, Integration(kernel=kernel), initial)
    assert np.array_equal(fast.status, reference.status)
    assert np.all(fast.status == STATUS_CONVERGED)

    m = len(initial)
    matcher = Matcher(system, Classification())
    states = np.concatenate([fast.final_state, reference.final_state])
    features = matcher.features(states, np.ones(2 * m, dtype=bool))
    multiplicity = features.sorted_multiplicity(np.arange(2 * m))
    assert np.array_equal(multiplicity[:m], multiplicity[m:])
    distances = [features.distance(np.array([ic]), m + ic)[0] for ic in range(m)]
    assert max(distances) <= Classification().shape_tol


@pytest.mark.parametrize("kernel", FAST_KERNELS)
def test_nan_and_infinity_give_nonfinite(kernel):
    system = SYSTEMS["w8"]
    initial = initial_conditions(3, 0, 20, 8, 3)
    initial[4, 2, 1] = np.nan
    initial[11, 7, 0] = np.inf
    result = integrate(system, Integration(kernel=kernel), initial)
    assert result.status[4] == STATUS_NONFINITE
    assert result.status[11] == STATUS_NONFINITE
    assert result.steps[4] == 0
    assert result.steps[11] == 0
    healthy = np.delete(np.arange(20), [4, 11])
    assert np.all(result.status[healthy] == STATUS_CONVERGED)
    alone = integrate(system, Integration(kernel=kernel), initial[healthy])
    assert alone.final_state.tobytes() == result.final_state[healthy].tobytes()


@pytest.mark.parametrize("kernel", FAST_KERNELS)
def test_step_cap_and_checks(kernel, multistable_system):
    initial = initial_conditions(14, 0, 3, 4, 3)
    capped = integrate(multistable_system, Integration(max_steps=5, kernel=kernel), initial)
    assert capped.status.tolist() == [STATUS_MAX_STEPS] * 3
    assert capped.steps.tolist() == [5] * 3
    one = integrate(multistable_system, Integration(checks=1, kernel=kernel), initial)
    three = integrate(multistable_system, Integration(checks=3, kernel=kernel), initial)
    assert np.all(three.status == STATUS_CONVERGED)
    assert np.array_equal(three.steps, one.steps + 2)


def test_every_lane_position_gives_same_bytes():
    system = SYSTEMS["w8"]
    integration = Integration(kernel="lanes")
    pool = initial_conditions(4, 0, 80, 8, 3)
    target = pool[0]
    expected = integrate(system, integration, target[None])
    for position in range(lanesource.LANES):
        # Different neighbours for each position, so that the target also goes
        # through other refill patterns and block compositions.
        fillers = pool[1 + position : 1 + position + 2 * lanesource.LANES]
        batch = np.concatenate([fillers[:position], target[None], fillers[position:]])
        result = integrate(system, integration, batch)
        assert result.final_state[position].tobytes() == expected.final_state[0].tobytes()
        assert result.steps[position] == expected.steps[0]


@pytest.mark.parametrize("kernel", FAST_KERNELS)
def test_chunks_threads_and_serial_change_no_bit(kernel):
    system = SYSTEMS["w8"] if kernel == "lanes" else SYSTEMS["asymmetric"]
    integration = Integration(kernel=kernel)
    initial = initial_conditions(5, 0, 700, system.n_tokens, system.dim)
    whole = integrate(system, integration, initial)
    for size in (1, 7, 16, 250):
        parts = [
            integrate(system, integration, initial[start : start + size])
            for start in range(0, 100, size)
        ]
        states = np.concatenate([part.final_state for part in parts])[:100]
        assert states.tobytes() == whole.final_state[:100].tobytes()
    serial = integrate(system, integration, initial, parallel=False)
    assert serial.final_state.tobytes() == whole.final_state.tobytes()
    assert serial.steps.tobytes() == whole.steps.tobytes()

    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one_thread = integrate(system, integration, initial)
    finally:
        numba.set_num_threads(previous)
    assert one_thread.final_state.tobytes() == whole.final_state.tobytes()
    assert one_thread.status.tobytes() == whole.status.tobytes()


def _exp_checker(module: types.ModuleType):
    exp = module.exp

    @numba.njit
    def evaluate(values, out):
        for k in range(values.shape[0]):
            out[k] = exp(values[k])

    return evaluate


@pytest.mark.parametrize(
    ("precision", "limit", "ulps"), [("float64", 700.0, 2.0), ("float32", 80.0, 2.0)]
)
def test_polynomial_exp_is_accurate(precision, limit, ulps):
    plan = lanes.plan_for(SYSTEMS["w8"], precision)
    evaluate = _exp_checker(lanes.load_kernel(plan))
    values = np.concatenate(
        [np.linspace(-limit, limit, 200_001), np.linspace(-1.0, 1.0, 20_001)]
    ).astype(precision)
    out = np.empty_like(values)
    evaluate(values, out)
    exact = np.exp(values.astype(np.float64))
    relative = np.abs(out.astype(np.float64) - exact) / exact
    assert relative.max() <= ulps * np.finfo(precision).eps

    # Past the overflow threshold the result is infinity or NaN: both end a
    # trajectory as nonfinite, where a large finite weight could not.
    special = np.array([np.nan, np.inf, 2000.0, 0.0], dtype=precision)
    evaluate(special, out[:4])
    assert np.isnan(out[0])
    assert not np.isfinite(out[1])
    assert not np.isfinite(out[2])
    assert out[3] == 1.0


def test_float32_reaches_float64_attractors():
    system = SYSTEMS["w8"]
    initial = initial_conditions(6, 0, 300, 8, 3)
    double = integrate(system, Integration(), initial)
    single = integrate(system, Integration(precision="float32", tol=1e-5), initial)
    assert single.final_state.dtype == np.float64
    assert np.all(single.status == STATUS_CONVERGED)
    assert np.abs(single.final_state - double.final_state).max() < 1e-3


def test_kernel_selection():
    w8 = SYSTEMS["w8"]
    large = System(n_tokens=32, dim=16, beta=1.0, V={"random_symmetric": 0})
    assert select_kernel(w8, Integration()) == "lanes"
    assert select_kernel(w8, Integration(kernel="scalar")) == "scalar"
    assert select_kernel(large, Integration()) == "rows"
    assert select_kernel(large, Integration(kernel="rows")) == "rows"
    with pytest.raises(ConfigError, match=r"integration.kernel = 'lanes' is invalid"):
        select_kernel(large, Integration(kernel="lanes"))
    with pytest.raises(ConfigError, match=r"integration.precision = 'float32'"):
        Config(system=large, integration=Integration(precision="float32", tol=1e-5))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kernel": "fast"}, r"integration.kernel = 'fast' is invalid"),
        ({"precision": "float16"}, r"integration.precision = 'float16' is invalid"),
        ({"precision": "float32", "kernel": "scalar", "tol": 1e-5}, r"float64 only"),
        ({"precision": "float32", "kernel": "rows", "tol": 1e-5}, r"float64 only"),
        ({"precision": "float32"}, r"integration.tol = 1e-07 is invalid"),
    ],
)
def test_invalid_kernel_settings(changes, message):
    with pytest.raises(ConfigError, match=message):
        Integration(**changes)


def test_kernel_settings_round_trip_through_config():
    config = Config(
        system=SYSTEMS["w8"],
        integration=Integration(kernel="lanes", precision="float32", tol=1e-5),
        sampling=Sampling(n_initial=10),
    )
    again = Config.from_dict(config.to_dict())
    assert again.integration.kernel == "lanes"
    assert again.integration.precision == "float32"


def test_existing_source_file_is_never_rewritten(tmp_path):
    """An intact file keeps its modification time, which Numba's cache keys on."""
    path = tmp_path / "kernel.py"
    lanes._write_once(path, "first = 1\n")
    stamp = path.stat().st_mtime_ns
    time.sleep(0.01)
    lanes._write_once(path, "first = 1\n")
    assert path.read_text() == "first = 1\n"
    assert path.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["kernel.py"]


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 assembly")
def test_generated_step_is_vectorised():
    plan = lanes.plan_for(System(n_tokens=2, dim=2, beta=1.0))
    # Compiled from the text without Numba's cache: cached code has no assembly.
    source = lanesource.generate_source(plan).replace("cache=True", "cache=False")
    module = types.ModuleType("vectorised_step_under_test")
    exec(compile(source, "<generated>", "exec"), module.__dict__)
    workspace = np.zeros(module.ROWS * module.LANES)
    module.step(workspace, np.zeros(11))
    assembly = module.step.inspect_asm(module.step.signatures[0])
    packed = re.findall(r"\bvfn?m(?:add|sub)\d{3}pd\s", assembly)
    scalar = re.findall(r"\bvfn?m(?:add|sub)\d{3}sd\s", assembly)
    assert len(packed) > 50
    assert len(packed) > 10 * len(scalar)


CONCURRENT_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from basins import Integration, System, initial_conditions, integrate

    system = System(n_tokens=2, dim=2, beta=0.5, V=[[1.0, 0.2], [0.2, -0.3]])
    result = integrate(system, Integration(kernel="lanes"), initial_conditions(0, 0, 50, 2, 2))
    sys.stdout.write(result.final_state.tobytes().hex())
    """
)


@pytest.mark.slow
def test_processes_starting_at_once_share_the_cache(tmp_path):
    environment = dict(os.environ, BASINS_KERNEL_CACHE=str(tmp_path / "kernels"))
    environment.pop("NUMBA_CACHE_DIR", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment["PYTHONPATH"] = root + os.pathsep + environment.get("PYTHONPATH", "")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_SCRIPT],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, error) in zip(processes, outputs):
        assert process.returncode == 0, error
    assert len({out for out, _ in outputs}) == 1
    sources = list((tmp_path / "kernels").glob("basins_lanes_*.py"))
    assert len(sources) == 1
    assert list((tmp_path / "kernels" / "__pycache__").glob("*.nbi"))

    later = subprocess.run(
        [sys.executable, "-c", CONCURRENT_SCRIPT],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert later.returncode == 0, later.stderr
    assert later.stdout == outputs[0][0]


def test_source_changes_with_intrinsics():
    source = lanesource.generate_source(lanes.plan_for(SYSTEMS["w8"]))
    assert f"INTRINSICS_DIGEST = {lanesource.INTRINSICS_DIGEST!r}" in source


def test_atlas_stores_kernel_settings(tmp_path):
    config = Config(
        system=SYSTEMS["w8"],
        integration=Integration(kernel="scalar"),
        sampling=Sampling(n_initial=10, chunk_size=5),
    )
    create_atlas(tmp_path / "atlas.zarr", config)
    stored = read_config(tmp_path / "atlas.zarr")
    assert stored.integration.kernel == "scalar"
    assert stored.integration.precision == "float64"


def test_damaged_generated_kernel_is_replaced(tmp_path, monkeypatch):
    """The generated file's name is a hash of its text; other text is damage."""
    from basins import lanes

    monkeypatch.setenv("BASINS_KERNEL_CACHE", str(tmp_path))
    path = tmp_path / "basins_lanes_example.py"
    path.write_text("")
    lanes._write_once(path, "X = 1\n")
    assert path.read_text() == "X = 1\n"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_kernel_cache_that_is_a_file_is_rejected(tmp_path, monkeypatch):
    from basins import lanes
    from basins.errors import ConfigError

    cache = tmp_path / "cache"
    cache.write_text("not a directory")
    monkeypatch.setenv("BASINS_KERNEL_CACHE", str(cache))
    with pytest.raises(ConfigError, match="BASINS_KERNEL_CACHE = .* is not a directory"):
        lanes.kernel_cache_dir()
