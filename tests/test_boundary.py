from __future__ import annotations

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

from basins import AtlasError, ConfigError, Execution
from basins.boundary import (
    BoundarySettings,
    boundary_table,
    read_boundary,
    sample_boundary,
    select_pairs,
)

STORED = (
    "first_ic",
    "second_ic",
    "state",
    "first_attractor",
    "second_attractor",
    "position",
    "width",
    "steps",
    "status",
)


@pytest.fixture(scope="module", params=[3, 5], ids=["dim3", "dim5"])
def template(request, tmp_path_factory):
    config = one_token_config(request.param)
    path = build_atlas(tmp_path_factory.mktemp("boundary") / "atlas.zarr", config)
    return path, config


@pytest.fixture
def atlas_copy(template, tmp_path):
    path, config = template
    return copy_atlas(path, tmp_path / "atlas.zarr"), config


def stored_arrays(path, name="all") -> dict[str, bytes]:
    group = zarr.open_group(str(path), mode="r")[f"boundary/{name}"]
    return {key: group[key][:].tobytes() for key in STORED}


def test_boundary_is_great_sphere_orthogonal_to_v1(atlas_copy):
    path, config = atlas_copy
    tol = 1e-6
    points = sample_boundary(
        path,
        BoundarySettings(n_points=12, tol=tol, chunk_size=6),
        execution=SYNCHRONOUS,
    )
    assert len(points.width) == 12
    assert points.pending == 0
    assert np.all(points.width <= tol)

    # The geodesic distance from a point to the great sphere orthogonal to v1 is
    # |arcsin(x . v1)|; bisection leaves the boundary within half a bracket.
    v1 = top_eigenvector(config)
    gap = np.abs(np.arcsin(points.state[:, 0, :] @ v1))
    assert np.all(gap <= points.width / 2 + 1e-12), gap.max()

    plus, minus = consensus_ids(path, config)
    sides = {
        frozenset(pair) for pair in zip(points.first_attractor, points.second_attractor)
    }
    assert sides == {frozenset((plus, minus))}
    rows = boundary_table(points)
    assert [(row.first, row.second, row.count) for row in rows] == [
        (min(plus, minus), max(plus, minus), 12)
    ]


def test_boundary_points_lie_on_their_segments(atlas_copy):
    path, config = atlas_copy
    from basins.geometry import atlas_initial_conditions, distance

    points = sample_boundary(
        path, BoundarySettings(n_points=6, tol=1e-6), execution=SYNCHRONOUS
    )
    first = atlas_initial_conditions(config, points.first_ic)
    second = atlas_initial_conditions(config, points.second_ic)
    np.testing.assert_allclose(
        distance(first, points.state), points.position, atol=1e-12
    )
    np.testing.assert_allclose(
        distance(first, points.state) + distance(points.state, second),
        distance(first, second),
        atol=1e-12,
    )


def test_select_pairs_rules():
    attractor = np.array([0, 1, 2, 2, -1, 0, 1, 0, 0, 2])
    first, second = select_pairs(attractor, 10)
    assert first.tolist() == [0, 6, 8]
    assert second.tolist() == [1, 7, 9]
    first, second = select_pairs(attractor, 2)
    assert first.tolist() == [0, 6]

    first, second = select_pairs(attractor, 10, (0, 2))
    assert first.tolist() == [0, 5, 7]
    assert second.tolist() == [2, 3, 9]


def test_interrupted_boundary_matches_uninterrupted(template, tmp_path):
    path, _ = template
    whole = copy_atlas(path, tmp_path / "whole.zarr")
    parts = copy_atlas(path, tmp_path / "parts.zarr")
    sample_boundary(
        whole, BoundarySettings(n_points=10, chunk_size=10), execution=SYNCHRONOUS
    )

    settings = BoundarySettings(n_points=10, chunk_size=3)
    first = sample_boundary(parts, settings, execution=SYNCHRONOUS, max_chunks=2)
    assert first.pending == 4
    assert len(first.width) == 6
    sample_boundary(parts, settings, execution=SYNCHRONOUS)
    assert stored_arrays(whole) == stored_arrays(parts)


def test_more_points_extend_the_stored_ones(atlas_copy):
    path, _ = atlas_copy
    sample_boundary(
        path, BoundarySettings(n_points=5, chunk_size=4), execution=SYNCHRONOUS
    )
    before = read_boundary(path)
    after = sample_boundary(
        path, BoundarySettings(n_points=9, chunk_size=4), execution=SYNCHRONOUS
    )
    assert len(after.width) == 9
    assert after.pending == 0
    assert np.array_equal(after.state[:5], before.state)
    assert np.array_equal(after.first_ic[:5], before.first_ic)


def test_other_tolerance_needs_overwrite(atlas_copy):
    path, _ = atlas_copy
    sample_boundary(path, BoundarySettings(n_points=3), execution=SYNCHRONOUS)
    with pytest.raises(AtlasError, match="tol = 1e-06 stored, 0.001 requested"):
        sample_boundary(
            path, BoundarySettings(n_points=3, tol=1e-3), execution=SYNCHRONOUS
        )
    points = sample_boundary(
        path,
        BoundarySettings(n_points=3, tol=1e-3),
        execution=SYNCHRONOUS,
        overwrite=True,
    )
    assert np.all(points.width <= 1e-3)
    assert np.any(points.width > 1e-6)


def test_between_selects_one_pair_of_basins(atlas_copy):
    path, config = atlas_copy
    plus, minus = consensus_ids(path, config)
    points = sample_boundary(
        path, BoundarySettings(n_points=4, between=(minus, plus)), execution=SYNCHRONOUS
    )
    assert np.all(points.first_attractor == min(plus, minus))
    with pytest.raises(ConfigError, match="attractor 7 is not in the catalog"):
        sample_boundary(
            path, BoundarySettings(n_points=4, between=(0, 7)), execution=SYNCHRONOUS
        )


def test_invalid_settings_are_rejected():
    with pytest.raises(ConfigError, match="n_points = 0 is invalid"):
        BoundarySettings(n_points=0)
    with pytest.raises(ConfigError, match="tol = -1.0 is invalid"):
        BoundarySettings(tol=-1.0)
    with pytest.raises(ConfigError, match="two different attractor ids"):
        BoundarySettings(between=(1, 1))


def test_unfinished_atlas_is_rejected(tmp_path):
    from basins import run

    path = tmp_path / "partial.zarr"
    run(one_token_config(3), path, execution=SYNCHRONOUS, max_chunks=1)
    with pytest.raises(AtlasError, match="has pending chunks; complete it with"):
        sample_boundary(path, BoundarySettings(n_points=2), execution=SYNCHRONOUS)


def test_atlas_without_pairs_is_rejected(tmp_path):
    config = one_token_config(3, n_initial=1)
    path = build_atlas(tmp_path / "single.zarr", config)
    with pytest.raises(AtlasError, match="no pair of initial conditions"):
        sample_boundary(path, BoundarySettings(n_points=2), execution=SYNCHRONOUS)


@pytest.mark.slow
def test_local_cluster_gives_the_synchronous_result(tmp_path):
    config = one_token_config(3)
    path = build_atlas(tmp_path / "template.zarr", config)
    local = copy_atlas(path, tmp_path / "local.zarr")
    here = copy_atlas(path, tmp_path / "here.zarr")
    settings = BoundarySettings(n_points=8, chunk_size=2)
    sample_boundary(here, settings, execution=SYNCHRONOUS)
    sample_boundary(
        local,
        settings,
        execution=Execution(
            cluster="local", n_workers=2, numba_threads=1, progress=False
        ),
    )
    assert stored_arrays(local) == stored_arrays(here)


def test_boundary_holds_the_writer_lock(atlas_copy, monkeypatch):
    """Locating boundary points writes into the atlas, so it takes the writer lock:
    refused while a run holds it, and holding it against runs while it computes."""
    from basins import mapping
    from basins.errors import AtlasInUseError
    from basins.lock import acquire, read_lock

    path, _ = atlas_copy
    with acquire(path, "run"):
        with pytest.raises(AtlasInUseError, match="basins run"):
            sample_boundary(path, BoundarySettings(n_points=3), execution=SYNCHRONOUS)

    holders = []
    real_run_tasks = mapping.run_tasks

    def recording_run_tasks(*args, **kwargs):
        holders.append(read_lock(path).command)
        return real_run_tasks(*args, **kwargs)

    monkeypatch.setattr(mapping, "run_tasks", recording_run_tasks)
    sample_boundary(path, BoundarySettings(n_points=3), execution=SYNCHRONOUS)
    assert holders == ["boundary"]
    assert read_lock(path) is None
