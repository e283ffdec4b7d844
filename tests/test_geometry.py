from __future__ import annotations

import math

import numpy as np
import pytest
from geometry_systems import build_atlas, consensus_ids, one_token_config

from basins import Integration, initial_conditions
from basins.atlas import read_catalog
from basins.geometry import (
    NO_ATTRACTOR,
    UNCATALOGUED,
    BasinProbe,
    atlas_initial_conditions,
    distance,
    exp_map,
    log_map,
    pending_blocks,
    random_direction,
    refine_crossings,
)
from basins.kernels import STATUS_PENDING


@pytest.fixture(scope="module")
def axis_atlas(tmp_path_factory):
    """One token in R^3 with V = diag(6, 2, 1): attractors +e_1 and -e_1."""
    config = one_token_config(3, rotated=False)
    path = build_atlas(tmp_path_factory.mktemp("axis") / "atlas.zarr", config)
    return path, config


@pytest.mark.parametrize("n_tokens, dim", [(1, 3), (3, 4), (5, 2)])
def test_exp_inverts_log(n_tokens, dim):
    first = initial_conditions(0, 0, 20, n_tokens, dim)
    second = initial_conditions(0, 20, 20, n_tokens, dim)
    tangent = log_map(first, second)
    np.testing.assert_allclose(np.sum(tangent * first, axis=-1), 0.0, atol=1e-12)
    np.testing.assert_allclose(exp_map(first, tangent), second, atol=1e-12)


def test_distance_is_product_metric():
    first = np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    a, b = 0.3, 1.2
    second = np.array(
        [[[math.cos(a), math.sin(a), 0.0], [0.0, math.sin(b), math.cos(b)]]]
    )
    assert distance(first, second)[0] == pytest.approx(math.hypot(a, b), abs=1e-14)


def test_geodesic_midpoint_is_halfway():
    first = initial_conditions(3, 0, 10, 4, 3)
    second = initial_conditions(3, 10, 10, 4, 3)
    middle = exp_map(first, 0.5 * log_map(first, second))
    whole = distance(first, second)
    np.testing.assert_allclose(distance(first, middle), whole / 2, rtol=1e-10)
    np.testing.assert_allclose(distance(middle, second), whole / 2, rtol=1e-10)


def test_log_map_of_antipodal_token():
    token = np.array([[0.6, 0.8, 0.0]])
    tangent = log_map(token, -token)
    assert np.linalg.norm(tangent) == pytest.approx(math.pi)
    assert abs(float(tangent[0] @ token[0])) < 1e-15
    np.testing.assert_allclose(exp_map(token, tangent), -token, atol=1e-12)


def test_random_direction_is_unit_tangent():
    base = initial_conditions(5, 0, 1, 3, 4)[0]
    rng = np.random.default_rng(0)
    direction = random_direction(base, rng)
    assert np.linalg.norm(direction) == pytest.approx(1.0)
    np.testing.assert_allclose(np.sum(direction * base, axis=-1), 0.0, atol=1e-14)

    moving = np.array([False, True, False])
    partial = random_direction(base, rng, moving)
    assert np.all(partial[~moving] == 0.0)
    assert np.linalg.norm(partial) == pytest.approx(1.0)


def test_atlas_initial_conditions_match_sampler():
    config = one_token_config(3).with_sampling(seed=11)
    indices = np.array([9000, 3, 4, 70000, 5, 3])
    states = atlas_initial_conditions(config, indices)
    for row, index in enumerate(indices):
        expected = initial_conditions(11, int(index), 1, 1, 3)[0]
        assert np.array_equal(states[row], expected), f"index {index}"


def test_pending_blocks_finds_partial_blocks():
    status = np.zeros(10, dtype=np.int8)
    status[[1, 9]] = STATUS_PENDING
    assert pending_blocks(status, 4) == [0, 2]
    grid = np.zeros((6, 3), dtype=np.int8)
    grid[4, 2] = STATUS_PENDING
    assert pending_blocks(grid, 2) == [2]


def test_probe_names_catalog_and_other_outcomes(axis_atlas):
    path, config = axis_atlas
    plus, minus = consensus_ids(path, config)
    references = np.stack([entry.state for entry in read_catalog(path)])
    probe = BasinProbe(config, references)

    near = np.array([[[0.9, 0.3, 0.1]], [[-0.8, 0.1, 0.5]]])
    near /= np.linalg.norm(near, axis=-1, keepdims=True)
    assert probe(near).tolist() == [plus, minus]

    saddle = np.array([[[0.0, 1.0, 0.0]]])
    assert probe(saddle).tolist() == [UNCATALOGUED]

    capped = config.__class__(
        system=config.system,
        integration=Integration(max_steps=2),
        sampling=config.sampling,
    )
    assert BasinProbe(capped, references)(near).tolist() == [NO_ATTRACTOR] * 2
    assert probe.steps > 0


def test_refine_crossings_names_basin_past_a_saddle(axis_atlas):
    path, config = axis_atlas
    plus, minus = consensus_ids(path, config)
    references = np.stack([entry.state for entry in read_catalog(path)])
    probe = BasinProbe(config, references)

    # From +e_1 towards -e_1 through the saddle e_2: the first midpoint is the
    # saddle itself, whose outcome names no basin.
    base = np.array([[[1.0, 0.0, 0.0]]])
    direction = np.array([[[0.0, 1.0, 0.0]]])
    assert probe(exp_map(base, math.pi / 2 * direction)).tolist() == [UNCATALOGUED]
    tol = 1e-6
    crossings = refine_crossings(
        probe,
        base,
        direction,
        np.array([0.0]),
        np.array([math.pi]),
        np.array([plus]),
        np.array([minus]),
        tol=tol,
        limit=math.pi,
    )
    assert crossings.width[0] <= tol
    assert abs(crossings.position[0] - math.pi / 2) <= tol
    assert crossings.outer[0] == minus
    assert crossings.steps[0] > 0
