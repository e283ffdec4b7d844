"""One-token systems with known basins, and atlases of them, for the geometry tests.

With one token every weighting reduces to Oja's rule ``dx/dt = V x - (x.V x) x``. For
symmetric ``V`` with a simple top eigenvalue the stable equilibria are ``+v_1`` and
``-v_1``, and the sign of ``x.v_1`` never changes along a trajectory, so the boundary
between the two basins is the great sphere orthogonal to ``v_1``.
"""

from __future__ import annotations

import shutil

import numpy as np

from basins import Config, Execution, Integration, Sampling, System, run
from basins.atlas import read_catalog
from basins.classify import eigenspaces

SYNCHRONOUS = Execution(cluster="synchronous", progress=False)

# Eigenvalues of V, decreasing; the gap of 4 between the first two makes trajectories
# leave the boundary and settle quickly, so the tests stay short.
SPECTRUM = (6.0, 2.0, 1.0, 0.5, 0.25)


def rotation(dim: int, seed: int = 7) -> np.ndarray:
    """Return a fixed orthogonal matrix, so that v_1 is no coordinate axis."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def one_token_config(dim: int, *, n_initial: int = 200, rotated: bool = True) -> Config:
    """Return a one-token system with symmetric V = R diag(SPECTRUM) R^T."""
    basis = rotation(dim) if rotated else np.eye(dim)
    V = basis @ np.diag(SPECTRUM[:dim]) @ basis.T
    return Config(
        system=System(n_tokens=1, dim=dim, beta=1.0, V=V.tolist()),
        integration=Integration(dt=0.05, max_steps=5000, tol=1e-7),
        sampling=Sampling(n_initial=n_initial, seed=1, chunk_size=100),
        name=f"one-token-d{dim}",
    )


def top_eigenvector(config: Config) -> np.ndarray:
    """Return v_1 with the sign that the catalog labels use (``+v1`` and ``-v1``)."""
    return eigenspaces(config.system.V)[0].basis[:, 0]


def build_atlas(path, config: Config):
    """Map ``config`` into an atlas at ``path`` in this process and return the path."""
    run(config, path, execution=SYNCHRONOUS)
    return path


def copy_atlas(template, path):
    """Copy an atlas directory, so that a test can write into its own copy."""
    shutil.copytree(template, path)
    return path


def consensus_ids(path, config: Config) -> tuple[int, int]:
    """Return the catalog ids of consensus at +v_1 and at -v_1."""
    v1 = top_eigenvector(config)
    plus = minus = None
    for entry in read_catalog(path):
        cosine = float(entry.state[0] @ v1)
        if cosine > 1 - 1e-6:
            plus = entry.id
        elif cosine < -1 + 1e-6:
            minus = entry.id
    assert plus is not None and minus is not None, "catalog lacks consensus at +-v1"
    return plus, minus
