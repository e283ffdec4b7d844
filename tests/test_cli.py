from __future__ import annotations

import subprocess
import sys

import pytest
import zarr

from basins.cli import main

GOOD_SYSTEM = (
    "[system]\nn_tokens = 4\ndim = 3\nbeta = 2.0\n"
    "K = { diagonal = [1.0, 0.5, -3.0] }\nV = { diagonal = [1.0, 0.5, -3.0] }\n"
)

BAD_CONFIGS = {
    "wrong shape": ("[system]\nn_tokens = 2\ndim = 3\nbeta = 1.0\nV = [[1.0, 0.0], [0.0, 1.0]]\n",
                    "system.V has shape (2, 2): expected (3, 3)"),
    "non-finite entry": ("[system]\nn_tokens = 2\ndim = 2\nbeta = 1.0\nV = [[1.0, nan], [0.0, 1.0]]\n",
                         "system.V[0][1] = nan is invalid: every entry must be finite"),
    "negative beta": ("[system]\nn_tokens = 2\ndim = 2\nbeta = -0.5\n",
                      "system.beta = -0.5 is invalid: expected a finite number >= 0.0"),
    "no tokens": ("[system]\nn_tokens = 0\ndim = 2\nbeta = 1.0\n",
                  "system.n_tokens = 0 is invalid: expected an integer in [1, 65536]"),
    "dim one": ("[system]\nn_tokens = 2\ndim = 1\nbeta = 1.0\n",
                "system.dim = 1 is invalid: expected an integer in [2, 8192]"),
    "zero step": ("[system]\nn_tokens = 2\ndim = 2\nbeta = 1.0\n[integration]\ndt = 0.0\n",
                  "integration.dt = 0.0 is invalid: expected a finite number > 0.0"),
    "unknown key": ("[system]\nn_tokens = 2\ndim = 2\nbeta = 1.0\ntemperature = 3\n",
                    "unknown key system.temperature: allowed keys in [system] are"),
    "unknown weighting": ("[system]\nn_tokens = 2\ndim = 2\nbeta = 1.0\nweighting = \"relu\"\n",
                          "system.weighting = 'relu' is invalid: expected one of softmax, "
                          "unnormalized, oja"),
    "broken toml": ("[system\n", "is not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configuration_exits_2_with_message(case, tmp_path, capsys):
    text, message = BAD_CONFIGS[case]
    config = tmp_path / "bad.toml"
    config.write_text(text)
    out = tmp_path / "atlas.zarr"
    status = main(["run", str(config), "--out", str(out), "--cluster", "synchronous"])
    captured = capsys.readouterr()
    assert status == 2
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_error_exit_status_from_a_real_process(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[system]\nn_tokens = 2\ndim = 2\nbeta = -1.0\n")
    result = subprocess.run(
        [sys.executable, "-m", "basins.cli", "run", str(config), "--out", str(tmp_path / "a")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "basins: error: system.beta = -1.0 is invalid: expected a finite number >= 0.0"
    )


def test_run_report_and_resume(tmp_path, capsys):
    config = tmp_path / "system.toml"
    config.write_text(GOOD_SYSTEM + "[sampling]\nn_initial = 300\nchunk_size = 100\n")
    out = tmp_path / "atlas.zarr"
    status = main(["-q", "run", str(config), "--out", str(out), "--cluster", "synchronous",
                   "--max-chunks", "1", "--no-progress"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "pending" in printed
    assert f"basins resume {out}" in printed

    assert main(["-q", "resume", str(out), "--cluster", "synchronous", "--no-progress"]) == 0
    resumed = capsys.readouterr().out
    assert "pending" not in resumed
    assert "300 initial conditions" in resumed

    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out == resumed
    assert zarr.open_group(str(out), mode="r").attrs["finalized"] is True


def test_second_run_on_same_atlas_is_refused(tmp_path, capsys):
    config = tmp_path / "system.toml"
    config.write_text(GOOD_SYSTEM + "[sampling]\nn_initial = 50\nchunk_size = 50\n")
    out = tmp_path / "atlas.zarr"
    arguments = ["-q", "run", str(config), "--out", str(out), "--cluster", "synchronous",
                 "--no-progress"]
    assert main(arguments) == 0
    capsys.readouterr()
    assert main(arguments) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*arguments, "--overwrite"]) == 0


def test_overrides_are_validated(tmp_path, capsys):
    status = main(["run", "example:oja", "--out", str(tmp_path / "a.zarr"), "--n-initial", "0"])
    assert status == 2
    assert "sampling.n_initial = 0" in capsys.readouterr().err


def test_report_of_missing_atlas(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing.zarr")]) == 2
    assert "not found" in capsys.readouterr().err


def test_examples_are_listed_and_shown(capsys):
    assert main(["examples"]) == 0
    listing = capsys.readouterr().out
    for name in ("multistable", "identity", "oja"):
        assert name in listing
    assert main(["examples", "--show", "multistable"]) == 0
    assert "diagonal = [1.0, 0.5, -3.0]" in capsys.readouterr().out
    assert main(["examples", "--show", "nope"]) == 2


def test_example_runs_through_the_command_line(tmp_path, capsys):
    out = tmp_path / "multistable.zarr"
    status = main(["-q", "run", "example:multistable", "--out", str(out), "--n-initial",
                   "400", "--chunk-size", "200", "--cluster", "synchronous", "--no-progress"])
    assert status == 0
    table = capsys.readouterr().out
    assert "consensus 4@+v1" in table or "consensus 4@-v1" in table
    assert "bipartite 2@+v3 2@-v3" in table
    assert "400 initial conditions" in table


def test_bad_execution_option(tmp_path, capsys):
    status = main(["run", "example:oja", "--out", str(tmp_path / "a.zarr"), "--workers", "0"])
    assert status == 2
    assert "n_workers = 0 is invalid" in capsys.readouterr().err


def test_equilibria_lists_stable_and_unstable_states(tmp_path, capsys):
    saved = tmp_path / "equilibria.npz"
    status = main(["-q", "equilibria", "example:multistable", "--n-initial", "32",
                   "--random-starts", "0", "--spectra", "--save", str(saved)])
    printed = capsys.readouterr().out
    assert status == 0
    lines = printed.splitlines()
    assert lines[0].split()[:3] == ["id", "class", "equilibrium"]
    rows = {line.split()[0]: line for line in lines[2:] if line[:2].strip().isdigit()}
    consensus_v2 = next(line for line in rows.values() if "consensus 4@+v2" in line)
    assert "unstable" in consensus_v2
    stable_rows = [line for line in rows.values() if " stable " in line]
    assert len(stable_rows) == 8
    assert "rates (parts within the zero tolerance" in printed
    assert saved.is_file()


def test_equilibria_rejects_a_negative_count(capsys):
    status = main(["equilibria", "example:oja", "--random-starts", "-2"])
    assert status == 2
    assert "n_random = -2 is invalid" in capsys.readouterr().err


def test_reproduce_prints_a_row_per_claim(tmp_path, capsys):
    out = tmp_path / "figures"
    status = main(["-q", "reproduce", "--out", str(out), "--only", "rates", "jacobian"])
    printed = capsys.readouterr().out
    assert status == 0
    lines = printed.splitlines()
    header = ["claim", "statement", "system", "figure", "measured", "result"]
    assert lines[0].split() == header
    assert lines[2].startswith("rates")
    assert lines[2].endswith("pass")
    assert lines[3].startswith("jacobian")
    assert lines[3].endswith("pass")
    assert "2 of 2 claims pass" in printed
    assert (out / "consensus_rates.png").is_file()


def test_reproduce_rejects_an_unknown_claim(tmp_path, capsys):
    status = main(["reproduce", "--out", str(tmp_path), "--only", "everything"])
    assert status == 2
    assert "unknown claim 'everything'" in capsys.readouterr().err


def test_interruption_hint_names_the_command():
    from basins.cli import _continuation, build_parser

    parser = build_parser()
    boundary = _continuation(parser.parse_args(["boundary", "a.zarr"]))
    assert "running the same 'basins boundary a.zarr ...' command again" in boundary
    run = _continuation(parser.parse_args(["run", "example:oja", "--out", "b.zarr"]))
    assert run.endswith("continue with 'basins resume b.zarr'")
    assert _continuation(parser.parse_args(["report", "b.zarr"])) == ""
