"""The ``basins transformer`` commands: inspect checkpoints, measure value alignment."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from basins.errors import ConfigError


def add_transformer_parser(commands: argparse._SubParsersAction) -> None:
    """Add the ``transformer`` command and its subcommands to the ``basins`` parser."""
    transformer = commands.add_parser(
        "transformer",
        help="inspect the attention heads of a model checkpoint and their value maps",
        description="Read a safetensors checkpoint (a path, or a packaged model such "
        "as all-MiniLM-L6-v2) with NumPy, without downloading anything.",
    )
    actions = transformer.add_subparsers(dest="action", required=True, metavar="ACTION")

    inspect = actions.add_parser(
        "inspect",
        help="list layers and heads with the spectra of their value maps",
        description="Print the layout of the checkpoint and, for every head and "
        "layer, the leading eigenvalues of the value map W_O W_V, the number of "
        "eigenvalues with a positive real part, the largest modulus and the norms "
        "of A and V; for BERT-style encoders also the default beta of each layer.",
    )
    inspect.add_argument(
        "model", help="safetensors file, directory, or packaged model name"
    )
    inspect.add_argument("--layer", type=int, metavar="L", help="show only layer L")

    align = actions.add_parser(
        "align",
        help="measure the alignment of real token states with the value maps",
        description="Run the texts through the model (BERT-style encoders only) and "
        "print, per layer and head, the mean |cos| between the normalised hidden "
        "states entering and leaving the layer and the eigenvector v_1 of the value "
        "map's eigenvalue with the largest real part, next to the random baseline.",
    )
    align.add_argument(
        "model", help="safetensors file, directory, or packaged model name"
    )
    align.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="TEXT",
        help="a text to run through the model; repeat for several",
    )
    align.add_argument(
        "--text-file",
        type=Path,
        metavar="FILE",
        help="a UTF-8 file of texts, one paragraph per blank-line-separated block",
    )
    align.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="save a figure with one panel per layer",
    )
    align.add_argument(
        "--layers-only",
        action="store_true",
        help="print only the rows of the layers' summed value maps",
    )


def _read_texts(args: argparse.Namespace) -> list[str]:
    texts = list(args.text)
    if args.text_file is not None:
        try:
            content = args.text_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"--text-file {str(args.text_file)!r} cannot be read: {exc}"
            )
        blocks = [" ".join(block.split()) for block in content.split("\n\n")]
        texts.extend(block for block in blocks if block)
    if not texts:
        raise ConfigError(
            "no text given: pass --text TEXT (repeatable) or --text-file FILE"
        )
    return texts


def _norm_cell(value: float) -> str:
    return f"{value:.3f}"


def _command_inspect(args: argparse.Namespace) -> int:
    import numpy as np

    from basins.transformer.alignment import format_eigenvalue, head_leading_eigenvalue
    from basins.transformer.checkpoint import load_checkpoint
    from basins.transformer.system import default_beta

    checkpoint = load_checkpoint(args.model)
    print(
        f"{checkpoint.name}: {checkpoint.architecture}, {checkpoint.n_layers} layers x "
        f"{checkpoint.n_heads} heads of {checkpoint.d_head}, dim {checkpoint.dim}"
    )
    print(f"weights: {checkpoint.path}\nsha256:  {checkpoint.sha256}\n")
    layers = range(checkpoint.n_layers) if args.layer is None else [args.layer]
    header = (
        "layer",
        "head",
        "lambda_1",
        "lambda_2",
        "Re>0",
        "max|lambda|",
        "|A|_2",
        "|V|_2",
        "note",
    )
    lines = []
    betas = {}
    for layer in layers:
        weights = checkpoint.attention(layer)
        if checkpoint.architecture == "bert":
            betas[layer] = default_beta(checkpoint, layer)
        for head in [*range(checkpoint.n_heads), None]:
            leading = head_leading_eigenvalue(weights, head)
            V = weights.value_map(head)
            if head is None:
                norm_a = math.nan
            else:
                norm_a = float(np.linalg.norm(weights.attention_form(head), 2))
            lines.append(
                (
                    str(layer),
                    "all" if head is None else str(head),
                    "0 (null)"
                    if leading.null_dominated
                    else format_eigenvalue(leading.eigenvalue),
                    format_eigenvalue(leading.second),
                    str(leading.positive),
                    f"{leading.largest_modulus:.3f}",
                    "" if math.isnan(norm_a) else _norm_cell(norm_a),
                    _norm_cell(float(np.linalg.norm(V, 2))),
                    leading.flags,
                )
            )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)
    ]

    def render(cells) -> str:
        return "  ".join(
            cell.ljust(width) if i == len(cells) - 1 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    print(render(header))
    print("  ".join("-" * width for width in widths))
    for line in lines:
        print(render(line))
    print(
        "lambda_1, lambda_2: eigenvalues of W_O W_V with the largest real parts (a "
        "head "
        "has rank d_head, so its other eigenvalues are 0); |A|_2 of A_h = W_Q^T W_K / "
        "sqrt(d_head); 'all' rows: the layer's summed value map"
    )
    if betas:
        print(
            "\ndefault beta (mean squared norm of the hidden states entering the "
            "layer):"
        )
        for layer, beta in betas.items():
            print(f"  layer {layer}: {beta:.4g}")
    return 0


def _command_align(args: argparse.Namespace) -> int:
    from basins.transformer.alignment import (
        format_alignment,
        plot_alignment,
        value_alignment,
    )
    from basins.transformer.checkpoint import load_checkpoint

    texts = _read_texts(args)
    checkpoint = load_checkpoint(args.model)
    table = value_alignment(checkpoint, texts)
    print(format_alignment(table, heads=not args.layers_only))
    if args.plot is not None:
        plot_alignment(table, args.plot)
        print(f"figure written to {args.plot}")
    return 0


def command_transformer(args: argparse.Namespace) -> int:
    """Run ``basins transformer ACTION`` and return its exit status."""
    if args.action == "inspect":
        return _command_inspect(args)
    return _command_align(args)
