"""The ``basins transformer`` commands and ``basins run`` on a checkpoint system."""

from __future__ import annotations

import pytest
from test_transformer_checkpoint import N_HEADS, gpt2_tensors, write_checkpoint

from basins.cli import main


@pytest.mark.slow
def test_inspect_lists_heads_and_spectra(minilm, capsys):
    assert (
        main(["-q", "transformer", "inspect", "all-MiniLM-L6-v2", "--layer", "2"]) == 0
    )
    out = capsys.readouterr().out
    assert "bert, 6 layers x 12 heads of 32, dim 384" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("    2 ")]
    assert len(rows) == 13
    assert rows[2][1] == "2"
    assert "null-dominated" in " ".join(rows[2])
    assert "layer 2:" in out


def test_inspect_gpt2_checkpoint(tmp_path, capsys):
    path = write_checkpoint(tmp_path / "gpt2", gpt2_tensors(), {"n_head": N_HEADS})
    assert main(["-q", "transformer", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "gpt2, 2 layers x 2 heads of 4, dim 8" in out
    assert "default beta" not in out


@pytest.mark.slow
def test_align_prints_table_and_writes_plot(minilm, tmp_path, capsys):
    plot = tmp_path / "alignment.png"
    code = main(
        [
            "-q",
            "transformer",
            "align",
            "all-MiniLM-L6-v2",
            "--text",
            "The cat sits on the mat.",
            "--plot",
            str(plot),
            "--layers-only",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[1:2] == ["all"]]
    assert [row[0] for row in rows] == ["0", "1", "2", "3", "4", "5"]
    assert "0.041" in out
    assert plot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_align_reads_paragraphs_from_file(minilm, tmp_path, capsys):
    text_file = tmp_path / "texts.txt"
    text_file.write_text("First paragraph\nstill the first.\n\nSecond one.\n")
    main(
        [
            "-q",
            "transformer",
            "align",
            "all-MiniLM-L6-v2",
            "--text-file",
            str(text_file),
        ]
    )
    # [CLS] first paragraph still the first . [SEP] and [CLS] second one . [SEP]
    assert "over 13 tokens" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["align", "all-MiniLM-L6-v2"], "no text given"),
        (["inspect", "no/such/model"], "model 'no/such/model' not found"),
        (["inspect", "all-MiniLM-L6-v2", "--layer", "9"], "layer 9 is out of range"),
    ],
)
def test_transformer_errors_exit_2(arguments, message, capsys):
    assert main(["-q", "transformer", *arguments]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.filterwarnings("default::basins.errors.StepSizeWarning")
def test_run_maps_a_minilm_head(minilm, tmp_path, capsys):
    config = tmp_path / "head.toml"
    config.write_text(
        '[system]\nmodel = "all-MiniLM-L6-v2"\nlayer = 3\nhead = 6\nn_tokens = 9\n'
        "[integration]\ndt = 0.1\n"
        "[sampling]\nn_initial = 6\nchunk_size = 3\n"
    )
    out_path = tmp_path / "head.zarr"
    code = main(
        ["-q", "run", str(config), "--out", str(out_path), "--cluster", "synchronous"]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "exceeds the RK4 stability estimate" in captured.err
    assert "consensus 9@" in captured.out
    assert "6 initial conditions" in captured.out
