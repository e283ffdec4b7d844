from __future__ import annotations

import math

import numpy as np
import pytest
import zarr
from geometry_systems import (
    SYNCHRONOUS,
    build_atlas,
    consensus_ids,
    copy_atlas,
    one_token_config,
    top_eigenvector,
)

from basins import AtlasError, ConfigError
from basins.entropy import (
    MIN_UNCERTAIN,
    SliceSettings,
    basin_entropy,
    compute_slice,
    grid_coordinates,
    read_slice,
    slice_states,
    sphere_points,
    uncertainty_exponent,
)

# A small slice of the one-token system: 16 x 32 grid points, 1000 base points at six
# sizes from 0.03 to 0.3. With seeds 0 to 5 every interval of the exponent contained 1;
# seed 3 leaves the widest margin (0.92 to 1.35) against rounding differences between
# machines.
SMALL = SliceSettings(
    token=0,
    grid=16,
    samples=1000,
    epsilons=tuple(np.geomspace(0.03, 0.3, 6)),
    seed=3,
    chunk_size=1024,
)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    config = one_token_config(3)
    return build_atlas(
        tmp_path_factory.mktemp("entropy") / "atlas.zarr", config
    ), config


@pytest.fixture(scope="module")
def computed(template, tmp_path_factory):
    path, config = template
    path = copy_atlas(path, tmp_path_factory.mktemp("computed") / "atlas.zarr")
    return compute_slice(path, SMALL, execution=SYNCHRONOUS), path, config


def test_entropy_of_one_outcome_is_zero():
    result = basin_entropy(np.full((10, 20), 3), 5)
    assert result.entropy == 0.0
    assert math.isnan(result.boundary_entropy)
    assert result.boxes == 8
    assert result.boundary_boxes == 0
    assert result.outcomes == 1


def test_entropy_of_a_straight_boundary():
    labels = np.zeros((10, 20), dtype=int)
    labels[:, 12:] = 1
    result = basin_entropy(labels, 5)

    # Boxes of columns 10-14 hold 2 columns of one outcome and 3 of the other.
    mixed = -(0.4 * math.log(0.4) + 0.6 * math.log(0.6))
    assert result.boundary_boxes == 2
    assert result.boundary_entropy == pytest.approx(mixed)
    assert result.entropy == pytest.approx(2 * mixed / 8)
    assert not result.fractal_sign


def test_entropy_of_a_checkerboard_is_log_2():
    labels = np.indices((8, 8)).sum(axis=0) % 2
    result = basin_entropy(labels, 2)
    assert result.entropy == pytest.approx(math.log(2))
    assert result.boundary_entropy == pytest.approx(math.log(2))


def test_entropy_leaves_out_partial_boxes():
    labels = np.zeros((7, 11), dtype=int)
    labels[5:, :] = 1
    labels[:, 10] = 2
    result = basin_entropy(labels, 5)
    assert result.box_entropy.shape == (1, 2)
    assert result.entropy == 0.0


def test_entropy_box_larger_than_grid_is_rejected():
    with pytest.raises(ConfigError, match="box = 11 is invalid"):
        basin_entropy(np.zeros((10, 20), dtype=int), 11)


def test_exponent_of_synthetic_power_law():
    rng = np.random.default_rng(4)
    epsilon = np.geomspace(0.01, 0.3, 8)
    alpha, scale, samples = 0.5, 0.8, 5000
    uncertain = rng.random((samples, 1)) < scale * epsilon**alpha
    fit = uncertainty_exponent(epsilon, uncertain, seed=1, resamples=500)
    assert fit.fitted.all()
    assert fit.low < alpha < fit.high
    assert fit.exponent == pytest.approx(alpha, abs=0.05)
    assert fit.prefactor == pytest.approx(scale, rel=0.2)


def test_exponent_leaves_out_rare_counts():
    epsilon = np.array([0.01, 0.1, 0.2, 0.4])
    uncertain = np.zeros((100, 4), dtype=bool)
    uncertain[: MIN_UNCERTAIN - 1, 0] = True
    uncertain[:10, 1] = True
    uncertain[:20, 2] = True
    uncertain[:40, 3] = True
    fit = uncertainty_exponent(epsilon, uncertain)
    assert fit.fitted.tolist() == [False, True, True, True]
    assert fit.exponent == pytest.approx(1.0)


def test_exponent_needs_two_sizes():
    fit = uncertainty_exponent(np.array([0.1, 0.2]), np.zeros((50, 2), dtype=bool))
    assert math.isnan(fit.exponent)
    assert math.isnan(fit.low)
    assert math.isnan(fit.high)


def test_slice_states_move_one_token():
    base = np.arange(12.0).reshape(4, 3)
    positions = sphere_points(*grid_coordinates(3))
    states = slice_states(base, 2, positions)
    assert states.shape == (3, 6, 4, 3)
    assert np.array_equal(states[..., 2, :], positions)
    for token in (0, 1, 3):
        assert np.all(states[..., token, :] == base[token])
    np.testing.assert_allclose(np.linalg.norm(positions, axis=-1), 1.0)


def test_one_token_slice_follows_great_circle(computed):
    result, path, config = computed
    plus, minus = consensus_ids(path, config)
    assert result.pending == 0
    assert result.attractor.shape == (16, 32)

    v1 = top_eigenvector(config)
    cosine = sphere_points(result.latitude, result.longitude) @ v1
    clear = np.abs(cosine) > 1e-6
    expected = np.where(cosine > 0, plus, minus)
    assert np.array_equal(result.attractor[clear], expected[clear])


def test_smooth_boundary_has_exponent_one(computed):
    result, _, _ = computed
    fit = result.uncertainty
    assert fit.samples == 1000
    assert fit.fitted.all()
    assert fit.low <= 1.0 <= fit.high, (fit.exponent, fit.low, fit.high)
    assert fit.high - fit.low < 0.8


def test_smooth_boundary_entropy_stays_below_log_2(computed):
    result, _, _ = computed
    entropy = result.entropy
    assert entropy.outcomes == 2
    assert 0 < entropy.boundary_boxes < entropy.boxes
    assert 0.0 < entropy.entropy < entropy.boundary_entropy < math.log(2)
    assert not entropy.fractal_sign


def test_interrupted_slice_matches_uninterrupted(computed, template, tmp_path):
    _, whole, _ = computed
    path, _ = template
    parts = copy_atlas(path, tmp_path / "parts.zarr")
    first = compute_slice(parts, SMALL, execution=SYNCHRONOUS, max_chunks=3)
    assert first.pending > 0
    assert first.entropy is None or first.uncertainty is None
    compute_slice(parts, SMALL, execution=SYNCHRONOUS)
    points = f"uncertainty/{SMALL.uncertainty_name}"
    for key in (
        "attractor",
        "steps",
        "status",
        f"{points}/base_attractor",
        f"{points}/perturbed_attractor",
        f"{points}/position",
    ):
        left = zarr.open_group(str(whole))[f"slices/{SMALL.name}/{key}"][:]
        right = zarr.open_group(str(parts))[f"slices/{SMALL.name}/{key}"][:]
        assert np.array_equal(left, right), key


def test_other_sizes_reuse_the_grid(computed, tmp_path):
    _, path, _ = computed
    path = copy_atlas(path, tmp_path / "atlas.zarr")
    grid = zarr.open_group(str(path))[f"slices/{SMALL.name}/steps"][:]
    smaller = SliceSettings(token=0, grid=16, samples=100, epsilons=(0.001, 0.01, 0.1))
    result = compute_slice(path, smaller, execution=SYNCHRONOUS, max_chunks=1)
    assert result.pending == 0
    assert np.array_equal(
        zarr.open_group(str(path))[f"slices/{SMALL.name}/steps"][:], grid
    )
    assert result.uncertainty.epsilon.tolist() == [0.001, 0.01, 0.1]
    assert result.settings["samples"] == 100
    with pytest.raises(
        AtlasError,
        match="has 2 groups of base points; choose one with uncertainty = n100-eps",
    ):
        read_slice(path, SMALL.name)


def test_base_points_cover_the_sphere(computed):
    result, _, _ = computed
    positions = result.positions
    np.testing.assert_allclose(np.linalg.norm(positions, axis=1), 1.0)
    # The mean of n uniform unit vectors has components of size about 1/sqrt(3 n).
    assert np.all(np.abs(positions.mean(axis=0)) < 4 / math.sqrt(3 * len(positions)))


def test_stored_slice_can_be_read_with_another_box(computed):
    result, path, _ = computed
    again = read_slice(path, SMALL.name, box=4)
    assert again.entropy.box == 4
    assert again.entropy.boxes == (16 // 4) * (32 // 4)
    assert np.array_equal(again.attractor, result.attractor)


def test_slice_rejects_bad_requests(template, tmp_path):
    path, _ = template
    with pytest.raises(ConfigError, match="token = 1 is invalid"):
        compute_slice(path, SliceSettings(token=1, grid=4), execution=SYNCHRONOUS)
    with pytest.raises(ConfigError, match="base_ic = 200 is invalid"):
        compute_slice(path, SliceSettings(base_ic=200, grid=4), execution=SYNCHRONOUS)
    with pytest.raises(ConfigError, match="epsilons"):
        SliceSettings(epsilons=(0.2, 0.1))
    with pytest.raises(AtlasError, match="no slice"):
        read_slice(path, "token0-ic0-grid7")

    flat = build_atlas(tmp_path / "flat.zarr", one_token_config(4, n_initial=20))
    with pytest.raises(ConfigError, match="slices need system.dim = 3"):
        compute_slice(flat, SliceSettings(grid=4), execution=SYNCHRONOUS)
