"""Summary documents of an atlas or a sweep: Markdown, HTML or plain text.

A summary is built once as a list of blocks (headings, paragraphs, tables, figures)
and rendered in the requested format. Markdown writes its figures as PNG files in a
folder beside the document. HTML embeds them, so the page is one self-contained file.
Plain text leaves them out.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from basins import analysis, plots, sweep
from basins.errors import ConfigError

logger = logging.getLogger(__name__)

FORMATS = ("text", "markdown", "html")


@dataclass(frozen=True)
class Block:
    """One element of a summary: ``kind`` is heading, paragraph, table or figure."""

    kind: str
    text: str = ""
    headers: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    figure: Figure | None = None
    name: str = ""


def _heading(text: str) -> Block:
    return Block("heading", text)


def _paragraph(text: str) -> Block:
    return Block("paragraph", text)


def _table(frame: pd.DataFrame) -> Block:
    rows = tuple(tuple(str(cell) for cell in row) for row in frame.itertuples(index=False))
    return Block("table", headers=tuple(str(c) for c in frame.columns), rows=rows)


def _figure(name: str, figure: Figure, caption: str) -> Block:
    return Block("figure", caption, figure=figure, name=name)


def _matrix(rows: list[list[float]]) -> str:
    return "[" + "; ".join(" ".join(f"{value:g}" for value in row) for row in rows) + "]"


def _settings(config: dict[str, Any]) -> pd.DataFrame:
    """Return the configuration as a two-column table, matrices written row by row."""
    entries = []
    for section, table in config.items():
        for key, value in table.items():
            shown = _matrix(value) if key in ("Q", "K", "V") else f"{value}"
            entries.append((f"{section}.{key}", shown))
    return pd.DataFrame(entries, columns=["setting", "value"])


def _fraction_table(table: pd.DataFrame, first_column: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["" if pd.isna(i) else str(int(i)) for i in table["id"]],
            first_column: table["label"],
            "count": table["count"],
            "fraction": [f"{f:.4f}" for f in table["fraction"]],
            "95% interval": [f"[{lo:.4f}, {hi:.4f}]" for lo, hi in zip(table["low"], table["high"])],
        }
    )


def atlas_blocks(path: Path, *, figures: bool = True) -> list[Block]:
    """Build the summary of one atlas."""
    dataset = analysis.open_atlas(path)
    attrs = dataset.attrs
    by_attractor = analysis.basin_fractions(dataset, by="attractor")
    by_class = analysis.basin_fractions(dataset, by="class")
    catalog = analysis.open_catalog(path)
    totals = attrs.get("totals", {})

    blocks = [
        _heading(f"Basin atlas {attrs.get('name') or path.name}"),
        _paragraph(
            f"Atlas `{path}`, created {attrs['created']} by basins "
            f"{attrs['versions']['basins']}: {dataset.sizes['ic']} initial conditions "
            f"of {dataset.sizes['token']} tokens in dimension "
            f"{dataset.sizes['component']}; {totals.get('converged', 0)} converged, "
            f"{totals.get('max_steps', 0)} reached max_steps, "
            f"{totals.get('nonfinite', 0)} nonfinite, {totals.get('pending', 0)} pending."
        ),
        _heading("Configuration"),
        _table(_settings(attrs["config"])),
        _heading("Basin fractions by attractor"),
    ]
    fractions = _fraction_table(by_attractor, "attractor")
    mean_steps = dict(zip(catalog["label"], catalog["mean_steps"]))
    fractions["mean steps"] = [
        f"{mean_steps[label]:.0f}" if label in mean_steps else "" for label in by_attractor["label"]
    ]
    blocks.append(_table(fractions))
    blocks.append(_paragraph("Fractions of all initial conditions, with Wilson 95% intervals."))
    blocks += [_heading("Basin fractions by class"), _table(_fraction_table(by_class, "class"))]
    if figures:
        blocks.append(_heading("Figures"))
        blocks.append(_figure("fractions", plots.plot_bars(by_attractor),
                              "Basin fractions with 95% Wilson intervals."))
        blocks.append(_figure("steps", plots.plot_steps(dataset),
                              "RK4 steps to convergence, per attractor."))
    return blocks


def sweep_blocks(path: Path, *, figures: bool = True) -> list[Block]:
    """Build the summary of one sweep."""
    dataset = analysis.open_atlas(path)
    attrs = dataset.attrs
    dimension = attrs["dimension"]
    values = list(attrs["values"])
    by_track = analysis.basin_fractions(dataset, by="attractor")
    by_class = analysis.basin_fractions(dataset, by="class")

    blocks = [
        _heading(f"Parameter sweep {attrs.get('name') or path.name}"),
        _paragraph(
            f"Sweep `{path}`, created {attrs['created']} by basins "
            f"{attrs['versions']['basins']}: {attrs['parameter']} over {len(values)} values "
            f"from {values[0]:g} to {values[-1]:g}, {dataset.sizes['ic']} initial "
            f"conditions per value (the same at every value)."
        ),
        _heading("Base configuration"),
        _table(_settings(attrs["config"])),
        _heading("Attractors along the sweep"),
    ]
    tracks = []
    for number, label in enumerate(attrs["track_labels"]):
        rows = by_track[by_track["id"] == number]
        seen = rows[rows["count"] > 0]
        largest = rows.loc[rows["fraction"].idxmax()]
        tracks.append(
            {
                "track": number,
                "attractor": label,
                "class": attrs["track_classes"][number],
                f"first {dimension}": f"{seen[dimension].iloc[0]:g}",
                f"last {dimension}": f"{seen[dimension].iloc[-1]:g}",
                "largest fraction": f"{largest['fraction']:.4f} at {largest[dimension]:g}",
            }
        )
    blocks.append(_table(pd.DataFrame(tracks)))
    blocks.append(_heading("Births and deaths"))
    events = attrs.get("events", [])
    if events:
        blocks.append(
            _table(
                pd.DataFrame(
                    {
                        "track": [e["track"] for e in events],
                        "attractor": [e["label"] for e in events],
                        "event": [e["event"] for e in events],
                        f"at {dimension}": [f"{e['value']:g}" for e in events],
                        "previous value": [f"{e['previous']:g}" for e in events],
                    }
                )
            )
        )
        blocks.append(
            _paragraph(
                "A birth at a value means the attractor was found there and not at the "
                "previous value; a death, the reverse. The change happens between the "
                "two values, or the basin there is too small for the sampling to find."
            )
        )
    else:
        blocks.append(
            _paragraph("No attractor appears or disappears between two computed values.")
        )

    blocks.append(_heading("Basin fractions by class"))
    wide = by_class.pivot(index=dimension, columns="label", values="fraction")
    wide = wide[[c for c in by_class["label"].unique()]]
    wide = wide.map(lambda f: f"{f:.4f}").reset_index()
    wide[dimension] = [f"{v:g}" for v in wide[dimension]]
    blocks.append(_table(wide))
    if figures:
        blocks.append(_heading("Figures"))
        blocks.append(
            _figure("sweep-attractors",
                    plots.plot_sweep(by_track, dimension, parameter=attrs["parameter"],
                                     log=True),
                    "Basin fraction of each attractor against the parameter, with 95% "
                    "Wilson bands, on a logarithmic axis.")
        )
        blocks.append(
            _figure("sweep-classes",
                    plots.plot_sweep(by_class, dimension, parameter=attrs["parameter"],
                                     stacked=True),
                    "Basin fractions by class, stacked.")
        )
    return blocks


def _text_table(block: Block) -> list[str]:
    widths = [len(h) for h in block.headers]
    for row in block.rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row)]

    def render(cells) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()

    return [render(block.headers), "  ".join("-" * w for w in widths),
            *(render(row) for row in block.rows)]


def render_text(blocks: list[Block]) -> str:
    """Render blocks as plain text; figures are left out."""
    lines: list[str] = []
    for block in blocks:
        if block.kind == "heading":
            lines += ["", block.text, "=" * len(block.text)]
        elif block.kind == "paragraph":
            lines += [block.text]
        elif block.kind == "table":
            lines += _text_table(block)
    return "\n".join(lines).strip() + "\n"


def _escape_markdown(cell: str) -> str:
    return cell.replace("|", "\\|")


def render_markdown(blocks: list[Block], figure_folder: Path, link_prefix: str) -> str:
    """Render blocks as Markdown, writing figures as PNG files into ``figure_folder``."""
    lines: list[str] = []
    level = 1
    for block in blocks:
        if block.kind == "heading":
            lines += ["#" * level + " " + block.text, ""]
            level = 2
        elif block.kind == "paragraph":
            lines += [block.text, ""]
        elif block.kind == "table":
            lines.append("| " + " | ".join(map(_escape_markdown, block.headers)) + " |")
            lines.append("|" + "|".join("---" for _ in block.headers) + "|")
            for row in block.rows:
                lines.append("| " + " | ".join(map(_escape_markdown, row)) + " |")
            lines.append("")
        elif block.kind == "figure":
            figure_folder.mkdir(parents=True, exist_ok=True)
            block.figure.savefig(figure_folder / f"{block.name}.png", dpi=110)
            lines += [f"![{block.text}]({link_prefix}/{block.name}.png)", "", block.text, ""]
    return "\n".join(lines)


def render_html(blocks: list[Block]) -> str:
    """Render blocks as one self-contained HTML page, figures embedded as PNG."""
    title = next((b.text for b in blocks if b.kind == "heading"), "basins summary")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto;}"
        "table{border-collapse:collapse;margin:1em 0;}"
        "td,th{border:1px solid #bbb;padding:0.2em 0.6em;text-align:left;}"
        "img{max-width:100%;}</style>",
        "</head><body>",
    ]
    level = 1
    for block in blocks:
        if block.kind == "heading":
            parts.append(f"<h{level}>{html.escape(block.text)}</h{level}>")
            level = 2
        elif block.kind == "paragraph":
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif block.kind == "table":
            header = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            parts.append(f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>")
        elif block.kind == "figure":
            buffer = io.BytesIO()
            block.figure.savefig(buffer, format="png", dpi=110)
            encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(block.text)}" '
                f'src="data:image/png;base64,{encoded}">'
                f"<figcaption>{html.escape(block.text)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def summary_blocks(path: str | Path, *, figures: bool = True) -> list[Block]:
    """Build the summary of the atlas or sweep at ``path``."""
    path = Path(path)
    if sweep.is_sweep(path):
        return sweep_blocks(path, figures=figures)
    return atlas_blocks(path, figures=figures)


def write_summary(path: str | Path, output: str | Path, *, format: str = "markdown") -> Path:
    """Write the summary of an atlas or a sweep to ``output``.

    Parameters
    ----------
    path : str or path
        The atlas or sweep.
    output : str or path
        The document to write. Markdown puts its figures in the folder
        ``<output stem>_figures`` beside it.
    format : {'markdown', 'html', 'text'}
        Document format.

    Returns
    -------
    pathlib.Path
        The document written.
    """
    if format not in FORMATS:
        raise ConfigError(f"format = {format!r} is invalid: expected one of {', '.join(FORMATS)}")
    output = Path(output)
    blocks = summary_blocks(path, figures=format != "text")
    if format == "markdown":
        folder = output.parent / f"{output.stem}_figures"
        text = render_markdown(blocks, folder, folder.name)
    elif format == "html":
        text = render_html(blocks)
    else:
        text = render_text(blocks)
    output.write_text(text, encoding="utf-8")
    logger.info("wrote the %s summary %s", format, output)
    return output


def sweep_text(path: str | Path) -> str:
    """Return the plain-text summary of a sweep, for the command line."""
    return render_text(sweep_blocks(Path(path), figures=False))

