"""The reference integrators and the suite command of ``benchmarks/``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from basins import Integration, System, initial_conditions, integrate

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import baseline  # noqa: E402
import run_all  # noqa: E402

W8 = System(
    n_tokens=8, dim=3, beta=1.0, V=[[1.0, 0.3, 0.0], [0.3, 0.5, 0.2], [0.0, 0.2, -0.5]]
)


@pytest.mark.parametrize(
    "integrator", [baseline.integrate_straightforward, baseline.integrate_numpy]
)
def test_references_follow_the_engine(integrator):
    initial = initial_conditions(9, 0, 30, 8, 3)
    fixed = Integration(tol=0.0, max_steps=200, kernel="scalar")
    expected = integrate(W8, fixed, initial)
    result = integrator(W8, fixed, initial)
    assert np.array_equal(result.status, expected.status)
    assert np.abs(result.final_state - expected.final_state).max() <= 1e-12

    stopping = Integration(kernel="scalar")
    expected = integrate(W8, stopping, initial)
    result = integrator(W8, stopping, initial)
    assert np.array_equal(result.status, expected.status)
    assert np.array_equal(result.steps, expected.steps)


def test_references_reject_other_weightings():
    oja = System(n_tokens=2, dim=2, beta=0.0, weighting="oja")
    with pytest.raises(ValueError, match="weighting 'oja'"):
        baseline.integrate_numpy(oja, Integration(), initial_conditions(0, 0, 1, 2, 2))


def test_model_flops_count_both_products():
    # n^2 d terms dominate at W128 and n d^2 terms enter once per field evaluation.
    assert run_all.model_flops(8, 3) == 4 * (4 * 8 * 9 + 4 * 64 * 3 + 23 * 64 + 7 * 24) + 12 * 24
    doubled_tokens = run_all.model_flops(256, 64) / run_all.model_flops(128, 64)
    assert 3.0 < doubled_tokens < 4.0


@pytest.mark.slow
def test_suite_command_prints_every_contender(tmp_path):
    root = BENCHMARKS.parent
    environment = dict(os.environ)
    environment["PYTHONPATH"] = str(root) + os.pathsep + environment.get("PYTHONPATH", "")
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "run_all.py"),
            "--workloads",
            "W8",
            "--scale",
            "0.005",
            "--repeats",
            "1",
            "--json",
            str(tmp_path / "figures.json"),
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=1200,
    )
    assert completed.returncode == 0, completed.stderr
    table = completed.stdout
    for name in (
        "engine, auto (lanes)",
        "engine, kernel=scalar",
        "engine, float32",
        "straightforward Numba",
        "NumPy RK4 over ICs",
        "SciPy RK45 rtol=1e-10",
    ):
        assert name in table
    assert (tmp_path / "figures.json").exists()
