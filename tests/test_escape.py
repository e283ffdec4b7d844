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
)

from basins import AtlasError, ConfigError
from basins.atlas import read_catalog
from basins.escape import (
    NO_ESCAPE,
    EscapeSettings,
    escape_directions,
    find_escapes,
    read_escapes,
)

# Few directions and a coarse scan keep the one-token searches short.
SMALL = EscapeSettings(n_directions=6, scan_points=8, tol=1e-6, chunk_size=4)
STORED = ("direction", "size", "width", "target", "steps", "status")


@pytest.fixture(scope="module", params=[3, 4], ids=["dim3", "dim4"])
def template(request, tmp_path_factory):
    config = one_token_config(request.param)
    path = build_atlas(tmp_path_factory.mktemp("escape") / "atlas.zarr", config)
    return path, config


@pytest.fixture
def atlas_copy(template, tmp_path):
    path, config = template
    return copy_atlas(path, tmp_path / "atlas.zarr"), config


def stored_arrays(path, attractor_id) -> dict[str, bytes]:
    group = zarr.open_group(str(path), mode="r")[f"escape/{attractor_id}"]
    return {key: group[key][:].tobytes() for key in STORED}


def test_escape_from_consensus_is_half_pi(atlas_copy):
    path, config = atlas_copy
    plus, minus = consensus_ids(path, config)
    (summary,) = find_escapes(path, [plus], SMALL, execution=SYNCHRONOUS)

    # Every geodesic from +v1 meets the great sphere orthogonal to v1 after pi/2;
    # the catalog state sits within the integrator's tolerance of +v1.
    assert summary.pending == 0
    assert len(summary.size) == 6
    assert np.all(np.abs(summary.size - math.pi / 2) <= SMALL.tol / 2 + 1e-6)
    assert np.all(summary.target == minus)
    assert summary.smallest == pytest.approx(math.pi / 2, abs=1e-5)
    assert [(row.target, row.directions) for row in summary.rows] == [(minus, 6)]


def test_escape_results_do_not_depend_on_chunks(template, tmp_path):
    path, config = template
    plus, _ = consensus_ids(path, config)
    small = copy_atlas(path, tmp_path / "small.zarr")
    large = copy_atlas(path, tmp_path / "large.zarr")
    find_escapes(small, [plus], SMALL, execution=SYNCHRONOUS)
    whole = EscapeSettings(n_directions=6, scan_points=8, tol=1e-6, chunk_size=6)
    find_escapes(large, [plus], whole, execution=SYNCHRONOUS)
    assert stored_arrays(small, plus) == stored_arrays(large, plus)


def test_interrupted_escape_search_is_completed(atlas_copy):
    path, config = atlas_copy
    plus, minus = consensus_ids(path, config)
    first = find_escapes(
        path, [plus, minus], SMALL, execution=SYNCHRONOUS, max_chunks=3
    )
    # Two chunks per attractor (4 + 2 directions): the last chunk, 2 directions, waits.
    assert [summary.pending for summary in first] == [0, 2]
    second = find_escapes(path, [plus, minus], SMALL, execution=SYNCHRONOUS)
    assert [summary.pending for summary in second] == [0, 0]
    assert np.all(np.abs(second[1].size - math.pi / 2) <= 1e-5)


def test_more_directions_extend_the_stored_ones(atlas_copy):
    path, config = atlas_copy
    plus, _ = consensus_ids(path, config)
    (before,) = find_escapes(path, [plus], SMALL, execution=SYNCHRONOUS)
    more = EscapeSettings(n_directions=9, scan_points=8, tol=1e-6, chunk_size=4)
    (after,) = find_escapes(path, [plus], more, execution=SYNCHRONOUS)
    assert len(after.size) == 9
    assert np.array_equal(after.size[:6], before.size)


def test_no_escape_below_the_boundary(atlas_copy):
    path, config = atlas_copy
    plus, _ = consensus_ids(path, config)
    short = EscapeSettings(n_directions=3, max_size=1.0, scan_points=4)
    (summary,) = find_escapes(path, [plus], short, execution=SYNCHRONOUS)
    assert np.all(np.isnan(summary.size))
    assert np.all(summary.target == NO_ESCAPE)
    assert [(row.target, row.directions) for row in summary.rows] == [(NO_ESCAPE, 3)]
    assert math.isnan(summary.smallest)


def test_directions_are_unit_tangents_fixed_by_seed(template):
    path, _ = template
    state = read_catalog(path)[0].state
    directions = escape_directions(state, 0, 5, 0, 4)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=(1, 2)), 1.0)
    np.testing.assert_allclose(np.sum(directions * state, axis=-1), 0.0, atol=1e-14)
    assert np.array_equal(escape_directions(state, 0, 5, 2, 4), directions[2:])
    assert not np.array_equal(escape_directions(state, 1, 5, 0, 4), directions)


def test_escape_rejects_bad_requests(atlas_copy):
    path, _ = atlas_copy
    with pytest.raises(ConfigError, match="attractor = 5 is invalid"):
        find_escapes(path, [5], SMALL, execution=SYNCHRONOUS)
    with pytest.raises(ConfigError, match="max_size = 0.0 is invalid"):
        EscapeSettings(max_size=0)
    with pytest.raises(AtlasError, match="no escape search for attractor 1"):
        read_escapes(path, 1)
    find_escapes(path, [0], SMALL, execution=SYNCHRONOUS)
    other = EscapeSettings(n_directions=6, scan_points=8, tol=1e-3, chunk_size=4)
    with pytest.raises(AtlasError, match="tol = 1e-06 stored, 0.001 requested"):
        find_escapes(path, [0], other, execution=SYNCHRONOUS)
