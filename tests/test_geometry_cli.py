from __future__ import annotations

import numpy as np
import pytest
from geometry_systems import build_atlas, consensus_ids, copy_atlas, one_token_config
from matplotlib.image import imread

from basins.cli import main

QUIET = ["--cluster", "synchronous", "--no-progress"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    config = one_token_config(3)
    return build_atlas(tmp_path_factory.mktemp("cli") / "atlas.zarr", config), config


@pytest.fixture
def atlas_copy(template, tmp_path):
    path, config = template
    return copy_atlas(path, tmp_path / "atlas.zarr"), config


def assert_figure(path):
    image = imread(path)
    assert image.shape[0] > 200
    assert image.shape[1] > 400
    assert np.ptp(image[..., :3]) > 0.5, "the figure is blank"


def test_boundary_command_prints_pairs_and_draws(atlas_copy, tmp_path, capsys):
    path, config = atlas_copy
    plus, minus = consensus_ids(path, config)
    figure = tmp_path / "boundary.png"
    status = main(
        ["-q", "boundary", str(path), "--points", "6", "--plot", str(figure), *QUIET]
    )
    printed = capsys.readouterr().out
    assert status == 0
    assert "6 boundary points (all)" in printed
    assert "consensus 1@+v1" in printed
    assert "consensus 1@-v1" in printed
    assert f"{min(plus, minus)}: consensus" in printed
    assert_figure(figure)


def test_entropy_command_prints_measures_and_draws(atlas_copy, tmp_path, capsys):
    path, _ = atlas_copy
    figure = tmp_path / "slice.png"
    status = main(
        [
            "-q",
            "entropy",
            str(path),
            "--slice",
            "0",
            "--grid",
            "10",
            "--samples",
            "200",
            "--epsilons",
            "0.05",
            "0.4",
            "4",
            "--box",
            "2",
            "--plot",
            str(figure),
            *QUIET,
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0
    assert "slice token0-ic0-grid10" in printed
    assert "basin entropy S_b = " in printed
    assert "over 50 boxes of 2 x 2 points, 2 outcomes" in printed
    assert "uncertainty exponent alpha = " in printed
    assert "0.4000" in printed
    assert_figure(figure)


def test_escape_command_prints_targets_and_draws(atlas_copy, tmp_path, capsys):
    path, config = atlas_copy
    plus, minus = consensus_ids(path, config)
    figure = tmp_path / "escape.png"
    status = main(
        [
            "-q",
            "escape",
            str(path),
            "--attractor",
            "all",
            "--directions",
            "3",
            "--scan-points",
            "4",
            "--plot",
            str(figure),
            *QUIET,
        ]
    )
    printed = capsys.readouterr().out
    assert status == 0
    assert (
        f"attractor {plus} (consensus 1@+v1): 3 directions, smallest escape 1.57"
        in (printed)
    )
    assert f"{minus}: consensus 1@-v1" in printed
    assert_figure(figure)


def test_interrupted_command_says_how_to_continue(atlas_copy, capsys):
    path, _ = atlas_copy
    arguments = [
        "-q",
        "boundary",
        str(path),
        "--points",
        "4",
        "--chunk-size",
        "2",
        *QUIET,
    ]
    assert main([*arguments, "--max-chunks", "1"]) == 0
    assert "2 points pending: repeat the command to compute them" in (
        capsys.readouterr().out
    )
    assert main(arguments) == 0
    assert "pending" not in capsys.readouterr().out


BAD_REQUESTS = {
    "unknown attractor": (
        ["escape", "{atlas}", "--attractor", "9"],
        "attractor = 9 is invalid: expected 0 <= attractor < 2",
    ),
    "attractor name": (
        ["escape", "{atlas}", "--attractor", "first"],
        "--attractor 'first' is invalid",
    ),
    "token out of range": (
        ["entropy", "{atlas}", "--slice", "1"],
        "token = 1 is invalid: expected 0 <= token < 1",
    ),
    "bad sizes": (
        ["entropy", "{atlas}", "--slice", "0", "--epsilons", "0.1", "x", "3"],
        "--epsilons 0.1 x 3 is invalid",
    ),
    "negative tolerance": (
        ["boundary", "{atlas}", "--tol", "-1"],
        "tol = -1.0 is invalid: expected a finite number > 0",
    ),
    "missing atlas": (["boundary", "{missing}"], "not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_request_exits_2(case, atlas_copy, tmp_path, capsys):
    path, _ = atlas_copy
    arguments, message = BAD_REQUESTS[case]
    arguments = [
        a.format(atlas=path, missing=tmp_path / "missing.zarr") for a in arguments
    ]
    status = main(["-q", *arguments, *QUIET])
    captured = capsys.readouterr()
    assert status == 2
    assert message in captured.err
    assert "Traceback" not in captured.err
