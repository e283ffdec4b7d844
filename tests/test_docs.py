"""The documentation's commands parse, and the figures it shows exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from basins.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def shell_commands(page: Path) -> list[str]:
    """Return the `basins` command lines of the page's ``sh`` code blocks."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            for part in re.split(r"&&|\|", line):
                part = part.strip()
                if part.startswith("basins "):
                    commands.append(part.split(">")[0].strip())
    return commands


def test_pages_are_found():
    names = {page.name for page in PAGES}
    assert {"quickstart.md", "tutorial.md", "cli.md", "atlas.md", "limitations.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_command_parses(page):
    parser = build_parser()
    for command in shell_commands(page):
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit as exit_status:
            pytest.fail(f"{page.name}: {command!r} does not parse ({exit_status})")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_figure_exists(page):
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", page.read_text()):
        assert (page.parent / link).is_file(), f"{page.name}: missing figure {link}"


def test_tutorial_figures_are_made_by_its_commands():
    text = (ROOT / "docs" / "tutorial.md").read_text()
    commands = " ".join(shell_commands(ROOT / "docs" / "tutorial.md"))
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        assert Path(link).name in commands, f"no command of the tutorial writes {link}"
