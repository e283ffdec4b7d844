"""Every figure is drawn through the command line and read back as an image."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from matplotlib.image import imread

from basins import Execution, run
from basins.cli import main
from basins.plots import colour

TAB_BLUE = np.array(colour(0)[:3])
TAB_ORANGE = np.array(colour(1)[:3])


@pytest.fixture(scope="module")
def atlas_path(tmp_path_factory):
    from basins.examples import example_config

    config = example_config("multistable").with_sampling(n_initial=1000, chunk_size=500)
    path = tmp_path_factory.mktemp("plots") / "multistable.zarr"
    run(config, path, execution=Execution(cluster="synchronous", progress=False))
    return path


def read_image(path) -> np.ndarray:
    image = imread(path)
    assert image.ndim == 3
    return image[..., :3].astype(float)


def colour_share(image: np.ndarray, rgb: np.ndarray, tolerance: float = 0.02) -> float:
    """Fraction of pixels within ``tolerance`` of ``rgb`` in every channel."""
    return float(np.mean(np.all(np.abs(image - rgb) <= tolerance, axis=-1)))


def assert_non_trivial(image: np.ndarray) -> None:
    assert image.shape[0] > 200
    assert image.shape[1] > 300
    assert image.std() > 0.05, "the image is nearly uniform"
    distinct = len(np.unique((image * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert distinct > 20, f"only {distinct} colours"


def draw(tmp_path, capsys, *arguments) -> np.ndarray:
    output = tmp_path / "figure.png"
    status = main(["-q", "plot", *map(str, arguments), "-o", str(output), "--no-progress"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert output.stat().st_size > 10_000
    return read_image(output)


def test_bars(tmp_path, capsys, atlas_path):
    image = draw(tmp_path, capsys, atlas_path, "--kind", "bars")
    assert_non_trivial(image)
    assert colour_share(image, TAB_BLUE) > 0.01  # the largest basin's bar


def test_bars_by_class(tmp_path, capsys, atlas_path):
    image = draw(tmp_path, capsys, atlas_path, "--kind", "bars", "--by", "class")
    assert_non_trivial(image)


def test_steps(tmp_path, capsys, atlas_path):
    image = draw(tmp_path, capsys, atlas_path, "--kind", "steps")
    assert_non_trivial(image)
    assert colour_share(image, TAB_BLUE, 0.05) > 0.0005  # the first histogram line


def test_sweep_lines_and_log_axis(tmp_path, capsys, small_sweep):
    image = draw(tmp_path, capsys, small_sweep, "--kind", "sweep")
    assert_non_trivial(image)
    assert colour_share(image, TAB_BLUE, 0.05) > 0.0005
    logarithmic = draw(tmp_path, capsys, small_sweep, "--kind", "sweep", "--log")
    assert_non_trivial(logarithmic)
    assert colour_share(logarithmic, TAB_BLUE, 0.05) > 0.0005


def test_sweep_stacked_by_class(tmp_path, capsys, small_sweep):
    stacked = draw(tmp_path, capsys, small_sweep, "--kind", "sweep", "--by", "class",
                   "--stacked")
    assert_non_trivial(stacked)
    # Class 0 (consensus) fills the left of the stack, class 1 (bipartite) the rest.
    assert colour_share(stacked, TAB_BLUE, 0.1) > 0.02
    assert colour_share(stacked, TAB_ORANGE, 0.1) > 0.2


def test_slice_of_a_sweep_value(tmp_path, capsys, small_sweep):
    image = draw(tmp_path, capsys, small_sweep, "--kind", "slice", "--value", "2",
                 "--resolution", "16")
    assert_non_trivial(image)
    regions = sum(colour_share(image, np.array(colour(k)[:3])) > 0.01 for k in range(20))
    assert regions >= 2, "the slice shows fewer than two basins"


def test_slice_of_an_atlas(tmp_path, capsys, atlas_path):
    image = draw(tmp_path, capsys, atlas_path, "--kind", "slice", "--resolution", "12",
                 "--ic", "3", "--token", "2")
    assert_non_trivial(image)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--kind", "sweep"], "--kind sweep needs a sweep"),
        (["--kind", "slice", "--token", "9"], "token = 9 is invalid"),
    ],
)
def test_plot_rejects_bad_requests(tmp_path, capsys, atlas_path, arguments, message):
    status = main(["plot", str(atlas_path), *arguments, "-o", str(tmp_path / "x.png")])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_sweep_value_is_required_and_checked(tmp_path, capsys, small_sweep):
    assert main(["plot", str(small_sweep), "--kind", "bars", "-o", str(tmp_path / "x.png")]) == 2
    assert "give --value, one of 0, 0.5, 1, 2" in capsys.readouterr().err
    assert main(["plot", str(small_sweep), "--kind", "bars", "--value", "0.7",
                 "-o", str(tmp_path / "x.png")]) == 2
    assert "value = 0.7 is not a value of the sweep" in capsys.readouterr().err


def test_markdown_report_with_figures(tmp_path, capsys, small_sweep):
    output = tmp_path / "sweep.md"
    assert main(["-q", "report", str(small_sweep), "--format", "markdown", "-o", str(output)]) == 0
    text = output.read_text()
    assert text.startswith("# Parameter sweep small-sweep")
    assert "## Births and deaths" in text
    assert "| bipartite 2@+v3 2@-v3 |" in text or "bipartite 2@+v3 2@-v3 |" in text
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert links == ["sweep_figures/sweep-attractors.png", "sweep_figures/sweep-classes.png"]
    for link in links:
        assert_non_trivial(read_image(tmp_path / link))


def test_html_report_embeds_figures(tmp_path, capsys, atlas_path):
    output = tmp_path / "atlas.html"
    assert main(["-q", "report", str(atlas_path), "--format", "html", "-o", str(output)]) == 0
    text = output.read_text()
    assert "<h2>Basin fractions by attractor</h2>" in text
    assert "bipartite 2@+v3 2@-v3" in text
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 2
    for number, encoded in enumerate(images):
        path = tmp_path / f"embedded-{number}.png"
        path.write_bytes(base64.b64decode(encoded))
        assert_non_trivial(read_image(path))


def test_document_formats_need_an_output(capsys, atlas_path):
    assert main(["report", str(atlas_path), "--format", "html"]) == 2
    assert "give its file with --output" in capsys.readouterr().err
