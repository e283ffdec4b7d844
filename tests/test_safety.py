"""Configurations and atlases are parsed, never executed; output stays where asked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import basins
from basins import Execution, resume, run

PACKAGE = Path(basins.__file__).parent

# Modules that deserialise by running code, by default or on request.
UNSAFE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "cloudpickle",
    "marshal",
    "shelve",
    "joblib",
    "torch",
}

# YAML loaders that can build arbitrary Python objects; yaml.safe_load is allowed.
UNSAFE_YAML_LOADERS = {"load", "load_all", "full_load", "unsafe_load", "unsafe_load_all"}

# Built-in functions that run code given as data.
UNSAFE_BUILTINS = {"eval", "exec", "compile", "__import__"}


def unsafe_uses(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            names = []
        found += [
            f"line {node.lineno}: import {n}" for n in names if n in UNSAFE_MODULES
        ]
        if isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Name) and function.id in UNSAFE_BUILTINS:
                found.append(f"line {node.lineno}: {function.id}()")
            if (
                isinstance(function, ast.Attribute)
                and isinstance(function.value, ast.Name)
                and function.value.id == "yaml"
                and function.attr in UNSAFE_YAML_LOADERS
            ):
                found.append(f"line {node.lineno}: yaml.{function.attr}()")
            if isinstance(function, ast.Attribute) and function.attr in {
                "load",
                "loads",
            }:
                for keyword in node.keywords:
                    if keyword.arg == "allow_pickle" and not (
                        isinstance(keyword.value, ast.Constant)
                        and keyword.value.value is False
                    ):
                        found.append(f"line {node.lineno}: load(allow_pickle=...)")
    return found


@pytest.mark.parametrize(
    "module", sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))
)
def test_module_executes_no_data(module):
    assert unsafe_uses((PACKAGE / module).read_text()) == []


def test_checker_finds_unsafe_code():
    source = (
        "import pickle\nimport yaml\nimport numpy as np\n"
        "eval('1')\nnp.load('x.npy', allow_pickle=True)\nyaml.load(text)\n"
        "yaml.safe_load(text)\n"
    )
    assert len(unsafe_uses(source)) == 4


def test_output_stays_under_the_named_path(tmp_path, small_config):
    path = tmp_path / "nested" / "atlas.zarr"
    synchronous = Execution(cluster="synchronous", progress=False)
    run(small_config, path, execution=synchronous, max_chunks=2)
    resume(path, execution=synchronous)
    run(small_config, path, execution=synchronous, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["nested"]
    assert [p.name for p in (tmp_path / "nested").iterdir()] == ["atlas.zarr"]
    assert not list(path.rglob("*.partial"))
    assert not list(path.glob(".basins-lock*"))


def test_overwrite_keeps_files_basins_did_not_write(tmp_path, small_config):
    """--overwrite replaces an atlas, never a user's file that lies inside it."""
    from basins.errors import AtlasError

    path = tmp_path / "atlas.zarr"
    synchronous = Execution(cluster="synchronous", progress=False)
    run(small_config, path, execution=synchronous)
    (path / "NOTES.txt").write_text("my notes")
    with pytest.raises(AtlasError, match=r"also contains 1 entries .*\(NOTES.txt\)"):
        run(small_config, path, execution=synchronous, overwrite=True)
    assert (path / "NOTES.txt").read_text() == "my notes"
    assert (path / "status").is_dir()

    (path / "NOTES.txt").unlink()
    run(small_config, path, execution=synchronous, overwrite=True)
