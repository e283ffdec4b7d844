"""Hostile and random configurations: one clear error, exit status 2, nothing written.

Every generated configuration is invalid by construction, or valid but far too large
for the disk. Each must stop ``basins run`` with exactly one line on standard error
and status 2 before anything is written, even with ``--overwrite`` pointing at an
existing atlas.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import math
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import command, file_snapshot, multistable_toml, synchronous_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from basins import AtlasError, Config, ConfigError, Execution, run
from basins.cli import main
from basins.config import MAX_DIM, MAX_INITIAL_CONDITIONS, MAX_UNNORMALIZED_EXPONENT
from basins.errors import StepSizeWarning
from basins.kernels import STATUS_NONFINITE
from basins.verify import verify_atlas

INT_KEYS = {
    "system": ("n_tokens", "dim"),
    "integration": ("max_steps", "checks"),
    "sampling": ("n_initial", "seed", "chunk_size"),
}
REAL_KEYS = {
    "system": ("beta",),
    "integration": ("dt", "tol"),
    "classification": ("cluster_tol", "shape_tol"),
}
MATRICES = ("Q", "K", "V")
ALLOWED = {
    "system": ("n_tokens", "dim", "beta", "weighting", "Q", "K", "V"),
    "integration": ("dt", "max_steps", "tol", "checks"),
    "sampling": ("n_initial", "seed", "chunk_size"),
    "classification": ("cluster_tol", "shape_tol"),
}

# The valid starting point: 3 tokens in R^3, 8 initial conditions.
BASE = {
    "system": {
        "n_tokens": 3,
        "dim": 3,
        "beta": 1.0,
        "weighting": "softmax",
        "Q": "identity",
        "K": {"diagonal": [1.0, 0.5, -3.0]},
        "V": {"diagonal": [1.0, 0.5, -3.0]},
    },
    "integration": {"dt": 0.05, "max_steps": 200, "tol": 1e-7, "checks": 3},
    "sampling": {"n_initial": 8, "seed": 0, "chunk_size": 4},
    "classification": {"cluster_tol": 1e-3, "shape_tol": 1e-2},
}

# Text without surrogates, so that every string can be written as TOML.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
DATES = st.dates(min_value=datetime.date(1, 1, 1))
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
HUGE_INTS = st.integers(min_value=-(10**40), max_value=10**40)
NOT_NUMBERS = st.one_of(
    TEXT,
    st.booleans(),
    DATES,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(TEXT, st.integers(), max_size=2),
)
NOT_INTEGERS = st.one_of(NOT_NUMBERS, FLOATS)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
# Anything but 3 numbers (the base configuration has dim = 3).
DIAGONALS_OF_WRONG_TYPE = st.one_of(
    TEXT,
    st.booleans(),
    DATES,
    st.lists(st.integers(), max_size=2),
    st.lists(TEXT, min_size=3, max_size=3),
    st.dictionaries(TEXT, st.integers(), max_size=2),
)


def toml_value(value) -> str:
    """Write a value as TOML (strings through JSON escapes, keys always quoted)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(items) + " }"
    raise TypeError(f"no TOML for {value!r}")


def toml_document(tables: dict) -> str:
    lines = []
    for section, table in tables.items():
        lines.append(f"[{json.dumps(section)}]")
        lines.extend(
            f"{json.dumps(key)} = {toml_value(value)}" for key, value in table.items()
        )
    return "\n".join(lines) + "\n"


# Each mutation returns a list of (section, key, value) assignments that make the
# configuration invalid whatever else it holds.


@st.composite
def wrong_type(draw):
    kind = draw(st.sampled_from(["int", "real", "weighting", "matrix"]))
    if kind == "int":
        section = draw(st.sampled_from(sorted(INT_KEYS)))
        return [(section, draw(st.sampled_from(INT_KEYS[section])), draw(NOT_INTEGERS))]
    if kind == "real":
        section = draw(st.sampled_from(sorted(REAL_KEYS)))
        return [(section, draw(st.sampled_from(REAL_KEYS[section])), draw(NOT_NUMBERS))]
    if kind == "weighting":
        value = draw(
            st.one_of(
                TEXT.filter(lambda t: t not in {"softmax", "unnormalized", "oja"}),
                HUGE_INTS,
                FLOATS,
            )
        )
        return [("system", "weighting", value)]
    matrix = draw(st.sampled_from(MATRICES))
    value = draw(
        st.one_of(
            HUGE_INTS,
            FLOATS,
            st.booleans(),
            DATES,
            TEXT.filter(lambda t: t != "identity"),
            st.lists(
                st.lists(st.one_of(TEXT, st.booleans()), min_size=3, max_size=3),
                min_size=3,
                max_size=3,
            ),
            st.lists(st.floats(-5, 5), min_size=9, max_size=9),
            st.fixed_dictionaries({"diagonal": DIAGONALS_OF_WRONG_TYPE}),
            st.fixed_dictionaries(
                {"identity": st.one_of(st.just(False), HUGE_INTS, TEXT)}
            ),
            st.fixed_dictionaries(
                {"random_symmetric": st.one_of(FLOATS, TEXT, st.integers(max_value=-1))}
            ),
            st.just({}),
        )
    )
    return [("system", matrix, value)]


@st.composite
def non_finite(draw):
    bad = draw(NON_FINITE)
    kind = draw(st.sampled_from(["matrix", "diagonal", "scale", "real"]))
    if kind == "matrix":
        rows = [[float(i == j) for j in range(3)] for i in range(3)]
        rows[draw(st.integers(0, 2))][draw(st.integers(0, 2))] = bad
        return [("system", draw(st.sampled_from(MATRICES)), rows)]
    if kind == "diagonal":
        spectrum = [1.0, 0.5, -3.0]
        spectrum[draw(st.integers(0, 2))] = bad
        return [("system", draw(st.sampled_from(MATRICES)), {"diagonal": spectrum})]
    if kind == "scale":
        return [
            (
                "system",
                draw(st.sampled_from(MATRICES)),
                {"identity": True, "scale": bad},
            )
        ]
    section = draw(st.sampled_from(sorted(REAL_KEYS)))
    return [(section, draw(st.sampled_from(REAL_KEYS[section])), bad)]


@st.composite
def huge_beta(draw):
    """beta above the overflow limit of exp for the unnormalized weighting.

    With Q = I and K = diag(1, 0.5, -3), ||Q^T K||_2 = 3.
    """
    limit = MAX_UNNORMALIZED_EXPONENT / 3.0
    beta = draw(
        st.one_of(
            st.floats(min_value=limit * 1.001, max_value=1e308),
            st.integers(min_value=int(limit) + 1, max_value=10**400),
        )
    )
    return [
        ("system", "weighting", "unnormalized"),
        ("system", "K", {"diagonal": [1.0, 0.5, -3.0]}),
        ("system", "Q", "identity"),
        ("system", "beta", beta),
    ]


@st.composite
def bad_size(draw):
    choices = {
        ("system", "n_tokens"): st.integers(max_value=0) | st.integers(min_value=65537),
        ("system", "dim"): st.integers(max_value=1)
        | st.integers(min_value=MAX_DIM + 1),
        ("integration", "max_steps"): st.integers(max_value=0),
        ("integration", "checks"): st.integers(max_value=0),
        ("sampling", "n_initial"): st.integers(max_value=0)
        | st.integers(min_value=MAX_INITIAL_CONDITIONS + 1),
        ("sampling", "chunk_size"): st.integers(max_value=0),
        ("sampling", "seed"): st.integers(max_value=-1),
        ("integration", "dt"): st.floats(max_value=0.0),
        ("integration", "tol"): st.floats(max_value=-1e-300),
        ("system", "beta"): st.floats(max_value=-1e-300),
        ("classification", "cluster_tol"): st.floats(max_value=0.0)
        | st.floats(min_value=1.0),
        ("classification", "shape_tol"): st.floats(max_value=0.0)
        | st.floats(min_value=1.0),
    }
    section, key = draw(st.sampled_from(sorted(choices)))
    return [(section, key, draw(choices[(section, key)]))]


@st.composite
def absurd_n_initial(draw):
    """Valid as a configuration, but petabytes of atlas: the disk check rejects it."""
    return [
        ("sampling", "n_initial", draw(st.integers(10**15, MAX_INITIAL_CONDITIONS))),
        ("sampling", "chunk_size", draw(st.integers(1, 10**6))),
    ]


@st.composite
def unknown_key(draw):
    section = draw(st.sampled_from([*sorted(ALLOWED), "solver", "Sampling", ""]))
    allowed = ALLOWED.get(section, ())
    key = draw(TEXT.filter(lambda k: k not in allowed))
    value = draw(st.one_of(st.integers(), TEXT, st.booleans()))
    if section not in ALLOWED:
        key = key or "x"
    return [(section, key, value)]


MUTATIONS = st.one_of(
    wrong_type(),
    non_finite(),
    huge_beta(),
    bad_size(),
    absurd_n_initial(),
    unknown_key(),
)


@st.composite
def bad_documents(draw) -> bytes:
    tables = json.loads(json.dumps(BASE))
    for mutation in draw(st.lists(MUTATIONS, min_size=1, max_size=3)):
        for section, key, value in mutation:
            tables.setdefault(section, {})[key] = value
    if draw(st.booleans()):  # a required key or table gone, besides the mutation
        tables["system"].pop(draw(st.sampled_from(["n_tokens", "dim", "beta"])), None)
    return toml_document(tables).encode("utf-8")


@st.composite
def malformed_documents(draw) -> bytes:
    valid = toml_document(BASE)
    kind = draw(
        st.sampled_from(
            ["garbage line", "unterminated", "bytes", "nesting", "duplicate"]
        )
    )
    if kind == "garbage line":
        lines = valid.splitlines()
        position = draw(st.integers(0, len(lines)))
        junk = draw(
            st.sampled_from(
                [
                    "= =",
                    "[system",
                    "beta = ",
                    "x = [1, 2",
                    "]]",
                    "n_tokens = 3 4",
                    "key value",
                ]
            )
        )
        return "\n".join([*lines[:position], junk, *lines[position:]]).encode()
    if kind == "unterminated":
        return (valid + 'weighting2 = "softmax\n').encode()
    if kind == "bytes":
        return b"\xff\xfe" + draw(st.binary(max_size=40))
    if kind == "nesting":
        depth = draw(st.integers(2000, 20000))
        return (valid + "deep = " + "[" * depth + "]" * depth + "\n").encode()
    return (
        (valid + '"n_tokens" = 3\n')
        .encode()
        .replace(b'["integration"]', b'["system"]', 1)
    )


@pytest.fixture(scope="module")
def existing_atlas(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad-input")
    config = folder / "good.toml"
    config.write_text(multistable_toml(n_initial=40, chunk_size=20))
    path = folder / "existing.zarr"
    assert main(synchronous_run(config, path)) == 0
    return path


def run_cli(arguments: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(arguments)
    return status, err.getvalue()


def assert_one_clear_error(status: int, err: str) -> None:
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("basins: error: ")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document=st.one_of(bad_documents(), malformed_documents()), new_path=st.booleans()
)
def test_bad_configuration_is_rejected(existing_atlas, document, new_path):
    folder = existing_atlas.parent
    config = folder / "bad.toml"
    config.write_bytes(document)
    target = folder / "new.zarr" if new_path else existing_atlas
    before = file_snapshot(existing_atlas)

    status, err = run_cli(
        [
            "run",
            str(config),
            "--out",
            str(target),
            "--overwrite",
            "--cluster",
            "synchronous",
            "--no-progress",
        ]
    )
    assert_one_clear_error(status, err)
    assert file_snapshot(existing_atlas) == before
    assert not (folder / "new.zarr").exists()


scalars = st.one_of(st.none(), st.booleans(), HUGE_INTS, FLOATS, TEXT, DATES)
nested = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "diagonal",
                    "identity",
                    "scale",
                    "spectral_norm",
                    "random_symmetric",
                    "rows",
                ]
            ),
            children,
            max_size=3,
        )
    ),
    max_leaves=10,
)


@st.composite
def configuration_data(draw):
    """Base tables with a few keys (allowed ones, mostly) set to arbitrary data."""
    data = json.loads(json.dumps(BASE))
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(sorted(ALLOWED)))
        key = draw(st.sampled_from([*ALLOWED[section], "extra"]))
        data[section][key] = draw(nested)
    return data


@settings(max_examples=500, deadline=None)
@given(data=configuration_data())
def test_python_api_raises_only_config_error(data):
    """Config.from_dict either returns a configuration or raises ConfigError."""
    try:
        config = Config.from_dict(data)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert len(str(exc)) < 400
    else:
        assert config.system.n_tokens >= 1


SUBPROCESS_CASES = {
    "malformed TOML": (b"[system\nn_tokens = 4\n", "is not valid TOML"),
    "NaN matrix entry": (
        b"[system]\nn_tokens = 2\ndim = 2\nbeta = 1.0\nV = [[1.0, nan], [0.0, 1.0]]\n",
        "system.V[0][1] = nan is invalid: every entry must be finite",
    ),
    "string matrix entry": (
        b'[system]\nn_tokens = 2\ndim = 2\nbeta = 1.0\nQ = [[1, "0"], [0, 1]]\n',
        "system.Q[0][1] = '0' is invalid: expected a number",
    ),
    "huge unnormalized beta": (
        b'[system]\nn_tokens = 2\ndim = 2\nbeta = 800.0\nweighting = "unnormalized"\n',
        "so exp overflows",
    ),
    "absurd n_initial": (
        b"[system]\nn_tokens = 2\ndim = 2\nbeta = 1.0\n"
        b"[sampling]\nn_initial = 1000000000000000000\n",
        "needs about",
    ),
    "not UTF-8": (b"\xff\xfe\x00[system]", "cannot read configuration file"),
}


@pytest.mark.parametrize("case", sorted(SUBPROCESS_CASES))
def test_bad_configuration_in_a_real_process(case, tmp_path):
    document, message = SUBPROCESS_CASES[case]
    config = tmp_path / "bad.toml"
    config.write_bytes(document)
    out = tmp_path / "atlas.zarr"
    result = subprocess.run(
        command("run", str(config), "--out", str(out)), capture_output=True, text=True
    )
    assert_one_clear_error(result.returncode, result.stderr)
    assert message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]


def test_atlas_larger_than_the_disk_is_refused(tmp_path, small_config):
    free = shutil.disk_usage(tmp_path).free
    per_ic = 14 + 8 * small_config.system.n_tokens * small_config.system.dim
    config = small_config.with_sampling(n_initial=free // per_ic + 1, chunk_size=10**6)
    with pytest.raises(AtlasError, match="needs about .* but only .* is free"):
        run(config, tmp_path / "atlas.zarr", execution=Execution(cluster="synchronous"))
    assert not (tmp_path / "atlas.zarr").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a procfs at /proc")
def test_atlas_on_a_virtual_file_system(capsys):
    status = main(["run", "example:oja", "--out", "/proc/atlas.zarr"])
    err = capsys.readouterr().err
    assert_one_clear_error(status, err)
    assert "'/proc' is on a virtual file system with no storage" in err
    assert not Path("/proc/atlas.zarr").exists()


@pytest.mark.parametrize("address", ["foo", "tcp://host-without-port", "tcp://h:port"])
def test_bad_scheduler_address(address, tmp_path, capsys):
    out = tmp_path / "atlas.zarr"
    status = main(["run", "example:oja", "--out", str(out), "--scheduler", address])
    assert_one_clear_error(status, capsys.readouterr().err)
    assert not (tmp_path / "atlas.zarr").exists()


def test_output_path_below_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "atlas.zarr"
    status = main(["run", "example:oja", "--out", str(out), "--cluster", "synchronous"])
    assert_one_clear_error(status, capsys.readouterr().err)


def test_nonfinite_trajectories_are_counted_and_reported(tmp_path, capsys):
    """The unnormalized multistable system is stiff: at dt = 0.05 most runs blow up."""
    config = tmp_path / "stiff.toml"
    config.write_text(
        multistable_toml(n_initial=200, chunk_size=50).replace(
            "beta = 2.0", 'beta = 2.0\nweighting = "unnormalized"'
        )
    )
    path = tmp_path / "stiff.zarr"
    with warnings.catch_warnings():
        # The command line prints the warning instead of raising it.
        warnings.simplefilter("default", StepSizeWarning)
        status = main(synchronous_run(config, path))
    assert status == 0
    captured = capsys.readouterr()

    import zarr

    group = zarr.open_group(str(path), mode="r")
    nonfinite = int(np.sum(group["status"][:] == STATUS_NONFINITE))
    assert 0 < nonfinite < 200
    assert group.attrs["totals"]["nonfinite"] == nonfinite
    row = next(line for line in captured.out.splitlines() if "nonfinite" in line)
    assert row.split()[1] == str(nonfinite)
    assert f"{nonfinite} of 200 initial conditions became nonfinite" in captured.err
    assert "exceeds the RK4 stability estimate" in captured.err
    assert "is safe by the RK4 stability estimate" in captured.err
    assert verify_atlas(path).valid


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-o", "{tmp}/plot.xyz"], "has format 'xyz': expected a file ending in one of"),
        (["-o", "{tmp}/plot"], "has format '(no suffix)'"),
        (["-o", "{tmp}/plot.png", "--dpi", "0"], "--dpi 0 is invalid: expected 1 to"),
        (["-o", "{tmp}/plot.png", "--dpi", "100000"], "--dpi 100000 is invalid"),
    ],
)
def test_bad_plot_output(existing_atlas, tmp_path, capsys, options, message):
    arguments = [option.format(tmp=tmp_path) for option in options]
    status = main(["plot", str(existing_atlas), "--kind", "bars", *arguments])
    err = capsys.readouterr().err
    assert_one_clear_error(status, err)
    assert message in err
    assert list(tmp_path.iterdir()) == []


def test_equilibria_save_into_missing_folder(tmp_path, capsys):
    status = main(["equilibria", "example:oja", "--save", str(tmp_path / "no" / "eq")])
    err = capsys.readouterr().err
    assert_one_clear_error(status, err)
    assert f"folder '{tmp_path / 'no'}' does not exist" in err


def test_report_into_a_directory(existing_atlas, tmp_path, capsys):
    status = main(["report", str(existing_atlas), "--format", "markdown", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert_one_clear_error(status, err)
    assert "is a directory: give the document's file" in err
