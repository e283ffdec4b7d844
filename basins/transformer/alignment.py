"""Spectra of value maps and the alignment of real token states with them.

For a value map ``V = W_O W_V`` (one head, or a layer's sum over heads) the leading
eigenvalue ``lambda_1`` is the one with the largest real part, and ``v_1`` its
eigenvector. The alignment of a unit token state ``x`` is ``|cos(x, v_1)|``. For a
complex ``lambda_1`` it is the norm of the projection of ``x`` onto the real 2-plane
of its eigenvector pair. A direction drawn uniformly from the sphere ``S^{d-1}`` has
mean ``|cos|`` with a fixed ``k``-dimensional subspace of

    Gamma(d/2) Gamma((k+1)/2) / (Gamma(k/2) Gamma((d+1)/2)),

about ``sqrt(2 / (pi d))`` for ``k = 1`` (0.0407 for ``d = 384``): the random baseline.

The spectrum is computed from the factors: the nonzero eigenvalues of ``W_O W_V``
(``d x d``) are those of ``W_V W_O`` (``r x r``), and ``W_V W_O u = mu u`` gives
``V (W_O u) = mu W_O u``. When ``r < d`` the other ``d - r`` eigenvalues are zero,
and if every nonzero eigenvalue has a negative real part, the largest real part is
that zero: such a value map is reported as null-dominated and gets no alignment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from basins.transformer.checkpoint import AttentionWeights, Checkpoint

# Relative tolerance on eigenvalues: an imaginary part below it counts as real, and a
# modulus within it of the largest counts as the largest.
EIGENVALUE_RTOL = 1e-9


def random_baseline(dim: int, k: int = 1) -> float:
    """Return the mean norm of the projection of a uniform unit vector onto a k-plane.

    Parameters
    ----------
    dim : int
        Dimension ``d`` of the space, ``>= 2``.
    k : int
        Dimension of the subspace, ``1 <= k <= d``.
    """
    log_mean = (
        math.lgamma(dim / 2)
        + math.lgamma((k + 1) / 2)
        - math.lgamma(k / 2)
        - math.lgamma((dim + 1) / 2)
    )
    return math.exp(log_mean)


@dataclass(frozen=True)
class LeadingEigenvalue:
    """The eigenvalue of a value map with the largest real part, and what it means.

    Attributes
    ----------
    eigenvalue : complex
        ``lambda_1`` (for a complex pair, the one with positive imaginary part).
        ``0`` when the map is null-dominated.
    basis : numpy.ndarray
        Orthonormal basis ``(dim, k)`` of ``v_1`` (``k = 1``) or of the real plane
        of a complex pair (``k = 2``); ``(dim, 0)`` when null-dominated.
    is_complex : bool
        ``lambda_1`` has a nonzero imaginary part.
    dominant : bool
        ``|lambda_1|`` is the largest modulus of all eigenvalues.
    null_dominated : bool
        The map has a null space and every nonzero eigenvalue has a negative real
        part, so the largest real part is zero.
    largest_modulus : float
        The largest ``|lambda|``.
    second : complex
        The eigenvalue with the next largest real part (``nan`` if there is none).
    positive : int
        Number of eigenvalues with a positive real part.
    """

    eigenvalue: complex
    basis: np.ndarray
    is_complex: bool
    dominant: bool
    null_dominated: bool
    largest_modulus: float
    second: complex
    positive: int

    @property
    def flags(self) -> str:
        """The caveats of this eigenvalue in words, or an empty string."""
        if self.null_dominated:
            return "null-dominated"
        words = []
        if self.is_complex:
            words.append("complex")
        if not self.dominant:
            words.append(f"not dominant (max |lambda| {self.largest_modulus:.3g})")
        return ", ".join(words)


def leading_eigenvalue(output: np.ndarray, value: np.ndarray) -> LeadingEigenvalue:
    """Return the leading eigenvalue of ``V = output @ value`` from its factors.

    Parameters
    ----------
    output : numpy.ndarray, shape (dim, r)
        ``W_O`` (the columns for the heads concerned).
    value : numpy.ndarray, shape (r, dim)
        ``W_V`` (the rows for the heads concerned).
    """
    dim, rank = output.shape
    values, vectors = np.linalg.eig(value @ output)
    # Decreasing real part; of a conjugate pair, the one with positive imaginary part
    # comes first.
    order = sorted(range(rank), key=lambda k: (-values[k].real, -values[k].imag))
    values = values[order]
    vectors = vectors[:, order]
    has_null_space = rank < dim
    largest_modulus = float(np.abs(values).max())
    scale = max(largest_modulus, np.finfo(float).tiny)
    second = complex(values[1]) if rank > 1 else complex(np.nan)
    positive = int(np.sum(values.real > EIGENVALUE_RTOL * scale))

    top = values[0]
    if has_null_space and top.real < 0:
        return LeadingEigenvalue(
            eigenvalue=0j,
            basis=np.zeros((dim, 0)),
            is_complex=False,
            dominant=False,
            null_dominated=True,
            largest_modulus=largest_modulus,
            second=complex(top),
            positive=positive,
        )
    vector = output @ vectors[:, 0]
    is_complex = abs(top.imag) > EIGENVALUE_RTOL * scale
    columns = [vector.real, vector.imag] if is_complex else [vector.real]
    basis, _ = np.linalg.qr(np.array(columns).T)
    return LeadingEigenvalue(
        eigenvalue=complex(top),
        basis=basis,
        is_complex=bool(is_complex),
        dominant=bool(abs(top) >= (1.0 - EIGENVALUE_RTOL) * largest_modulus),
        null_dominated=False,
        largest_modulus=largest_modulus,
        second=second,
        positive=positive,
    )


def head_leading_eigenvalue(
    weights: AttentionWeights, head: int | None
) -> LeadingEigenvalue:
    """Return the leading eigenvalue of one head's value map, or of the layer's sum."""
    if head is None:
        output = np.concatenate(list(weights.output), axis=1)
        value = weights.value.reshape(-1, weights.value.shape[-1])
        return leading_eigenvalue(output, value)
    return leading_eigenvalue(weights.output[head], weights.value[head])


def mean_alignment(states: np.ndarray, basis: np.ndarray) -> float:
    """Return the mean over rows of ``|cos|`` between unit states and a subspace.

    ``states`` is ``(m, dim)`` with unit rows, ``basis`` an orthonormal ``(dim, k)``.
    NaN when ``k = 0``.
    """
    if basis.shape[1] == 0:
        return math.nan
    return float(np.mean(np.linalg.norm(states @ basis, axis=1)))


@dataclass(frozen=True)
class AlignmentRow:
    """Alignment of the token states of one layer with one value map.

    Attributes
    ----------
    layer : int
        Layer index, from 0.
    head : int or None
        Head index, or None for the layer's summed value map.
    leading : LeadingEigenvalue
        The eigenvalue used.
    entering : float
        Mean ``|cos|`` of the unit hidden states entering the layer (NaN when
        null-dominated).
    leaving : float
        The same for the hidden states leaving the layer.
    baseline : float
        Mean ``|cos|`` of a uniform random direction with the same subspace.
    """

    layer: int
    head: int | None
    leading: LeadingEigenvalue
    entering: float
    leaving: float
    baseline: float


@dataclass(frozen=True)
class AlignmentTable:
    """Value alignment of every head and layer of a model on some texts."""

    model: str
    dim: int
    n_tokens: int
    rows: list[AlignmentRow]


def value_alignment(checkpoint: Checkpoint, texts: list[str]) -> AlignmentTable:
    """Measure how the hidden states of ``texts`` align with every value map.

    For each layer ``L``, the hidden states entering ``L`` and those leaving it (the
    input of ``L + 1``) are normalised to unit length and pooled over the tokens of
    all texts. Both sets are compared with ``v_1`` of every head's value map and of
    the layer's summed map.

    Raises
    ------
    CheckpointError
        If the checkpoint has no forward pass (not BERT-style) or cannot be read.
    """
    from basins.transformer.encoder import encode, unit_rows

    hidden = [encode(checkpoint, text).hidden_states for text in texts]
    rows = []
    for layer in range(checkpoint.n_layers):
        entering = unit_rows(np.concatenate([h[layer] for h in hidden]))
        leaving = unit_rows(np.concatenate([h[layer + 1] for h in hidden]))
        weights = checkpoint.attention(layer)
        for head in [*range(checkpoint.n_heads), None]:
            leading = head_leading_eigenvalue(weights, head)
            k = leading.basis.shape[1]
            rows.append(
                AlignmentRow(
                    layer=layer,
                    head=head,
                    leading=leading,
                    entering=mean_alignment(entering, leading.basis),
                    leaving=mean_alignment(leaving, leading.basis),
                    baseline=random_baseline(checkpoint.dim, max(k, 1)),
                )
            )
    n_tokens = sum(h.shape[1] for h in hidden)
    return AlignmentTable(checkpoint.name, checkpoint.dim, n_tokens, rows)


def format_eigenvalue(value: complex) -> str:
    """Write an eigenvalue as ``1.234`` or ``1.234+0.056i``."""
    if math.isnan(value.real):
        return ""
    if value.imag == 0:
        return f"{value.real:.3f}"
    return f"{value.real:.3f}{value.imag:+.3f}i"


def _cell(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def format_alignment(table: AlignmentTable, *, heads: bool = True) -> str:
    """Render an alignment table as fixed-width text, one row per head and layer."""
    header = ("layer", "head", "lambda_1", "entering", "leaving", "random", "note")
    lines = []
    for row in table.rows:
        if row.head is not None and not heads:
            continue
        lines.append(
            (
                str(row.layer),
                "all" if row.head is None else str(row.head),
                format_eigenvalue(row.leading.eigenvalue)
                if not row.leading.null_dominated
                else "0 (null)",
                _cell(row.entering),
                _cell(row.leaving),
                f"{row.baseline:.3f}",
                row.leading.flags,
            )
        )
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)
    ]
    right_aligned = {0, 1, 2, 3, 4, 5}

    def render(cells) -> str:
        return "  ".join(
            cell.rjust(width) if i in right_aligned else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ).rstrip()

    footer = (
        f"{table.model}: mean |cos(x, v_1)| over {table.n_tokens} tokens, hidden "
        f"states "
        f"entering and leaving each layer, normalised; random: a uniform direction "
        f"in dimension {table.dim} (k = 2 for a complex pair)"
    )
    separator = "  ".join("-" * width for width in widths)
    return "\n".join([render(header), separator, *map(render, lines), footer])


def plot_alignment(table: AlignmentTable, path) -> None:
    """Save a figure of the alignment of every head and layer, one panel per layer.

    Circles are the hidden states entering the layer, triangles those leaving it.
    Hollow markers flag a complex ``lambda_1``, and a grey ``x`` on the axis marks a
    null-dominated head. The dashed and dotted lines are the random baselines
    for a real eigenvector and for the plane of a complex pair.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({row.layer for row in table.rows})
    columns = min(3, len(layers))
    n_rows = -(-len(layers) // columns)
    figure, axes = plt.subplots(
        n_rows,
        columns,
        figsize=(4.2 * columns, 3.2 * n_rows),
        sharey=True,
        squeeze=False,
    )
    top = max(
        [r.entering for r in table.rows if not math.isnan(r.entering)]
        + [r.leaving for r in table.rows if not math.isnan(r.leaving)]
        + [random_baseline(table.dim, 2)]
    )
    for axis, layer in zip(axes.flat, layers):
        rows = [r for r in table.rows if r.layer == layer]
        labels = []
        for x, row in enumerate(rows):
            labels.append("all" if row.head is None else str(row.head))
            if row.leading.null_dominated:
                axis.plot(x, 0.0, "x", color="0.5", clip_on=False)
                continue
            fill = "none" if row.leading.is_complex else None
            colour = "C3" if row.head is None else "C0"
            axis.plot(x, row.entering, "o", color=colour, markerfacecolor=fill)
            axis.plot(
                x, row.leaving, "^", color=colour, markerfacecolor=fill, alpha=0.6
            )
        axis.axhline(
            random_baseline(table.dim, 1), color="0.4", linestyle="--", linewidth=1
        )
        axis.axhline(
            random_baseline(table.dim, 2), color="0.4", linestyle=":", linewidth=1
        )
        axis.set_xticks(range(len(rows)), labels, fontsize=7)
        axis.set_title(f"layer {layer}", fontsize=10)
        axis.set_ylim(0.0, 1.08 * top)
    for axis in axes.flat[len(layers) :]:
        axis.set_visible(False)
    for axis in axes[:, 0]:
        axis.set_ylabel("mean |cos(x, v_1)|")
    for axis in axes[-1]:
        axis.set_xlabel("head")
    figure.suptitle(
        f"{table.model}: value alignment ({table.n_tokens} tokens; o entering, "
        f"^ leaving; hollow: complex; x: null-dominated; dashed, dotted: random)",
        fontsize=9,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
