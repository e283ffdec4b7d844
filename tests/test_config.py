from __future__ import annotations

import math
import textwrap

import numpy as np
import pytest

from basins import Config, ConfigError, Integration, Sampling, System, load_config
from basins.config import resolve_matrix
from basins.errors import StepSizeWarning
from basins.examples import example_config, list_examples

VALID = {
    "system": {
        "n_tokens": 4,
        "dim": 3,
        "beta": 2.0,
        "Q": "identity",
        "K": {"diagonal": [1.0, 0.5, -3.0]},
        "V": [[1.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, -3.0]],
    },
    "integration": {"dt": 0.05, "max_steps": 100, "tol": 1e-7},
    "sampling": {"n_initial": 10, "seed": 1, "chunk_size": 4},
}


def with_value(section: str, key: str, value) -> dict:
    data = {name: dict(table) for name, table in VALID.items()}
    data[section][key] = value
    return data


def test_valid_configuration_resolves_matrices():
    config = Config.from_dict(VALID)
    assert config.system.V.shape == (3, 3)
    assert np.array_equal(config.system.K, np.diag([1.0, 0.5, -3.0]))
    assert np.array_equal(config.system.A, np.diag([1.0, 0.5, -3.0]))
    assert config.sampling.n_chunks == 3


def test_round_trip_through_dict_is_exact():
    config = Config.from_dict(with_value("system", "V", {"random_symmetric": 5}))
    again = Config.from_dict(config.to_dict())
    assert again.system.V.tobytes() == config.system.V.tobytes()
    assert again.to_dict() == config.to_dict()


BAD_VALUES = [
    ("system", "V", [[1.0, 0.0], [0.0, 1.0]], "system.V has shape (2, 2)"),
    ("system", "Q", [[1.0, 0.0, 0.0], [0.0, math.nan, 0.0], [0, 0, 1]], "system.Q[1][1]"),
    ("system", "K", {"diagonal": [1.0, math.inf, 0.0]}, "system.K.diagonal"),
    ("system", "beta", -1.0, "system.beta = -1.0"),
    ("system", "beta", math.nan, "system.beta"),
    ("system", "n_tokens", 0, "system.n_tokens = 0"),
    ("system", "n_tokens", 2.5, "system.n_tokens = 2.5"),
    ("system", "dim", 1, "system.dim = 1"),
    ("system", "weighting", "linear", "system.weighting = 'linear'"),
    ("system", "V", "zeros", "system.V = 'zeros'"),
    ("system", "V", {"diagonal": [1, 2, 3], "random_symmetric": 1}, "exactly one of"),
    ("system", "V", {"identity": True, "colour": 1}, "unknown key system.V.colour"),
    ("integration", "dt", 0.0, "integration.dt = 0.0"),
    ("integration", "dt", -0.1, "integration.dt = -0.1"),
    ("integration", "max_steps", 0, "integration.max_steps = 0"),
    ("integration", "tol", -1e-7, "integration.tol"),
    ("integration", "stepsize", 0.1, "unknown key integration.stepsize"),
    ("sampling", "n_initial", 0, "sampling.n_initial = 0"),
    ("sampling", "chunk_size", True, "sampling.chunk_size = True"),
    ("sampling", "seed", -3, "sampling.seed = -3"),
]


@pytest.mark.parametrize(("section", "key", "value", "message"), BAD_VALUES)
def test_bad_value_is_rejected_with_its_key(section, key, value, message):
    with pytest.raises(ConfigError) as error:
        Config.from_dict(with_value(section, key, value))
    assert message in str(error.value)


def test_error_states_what_is_allowed():
    with pytest.raises(ConfigError) as error:
        Config.from_dict(with_value("system", "weighting", "linear"))
    assert "softmax, unnormalized, oja" in str(error.value)


def test_unknown_section_is_rejected():
    data = dict(VALID, solver={"method": "rk4"})
    with pytest.raises(ConfigError, match=r"unknown table \[solver\]: allowed tables are"):
        Config.from_dict(data)


def test_missing_required_key_is_rejected():
    data = with_value("system", "n_tokens", 4)
    del data["system"]["beta"]
    with pytest.raises(ConfigError, match="missing key system.beta"):
        Config.from_dict(data)


def test_unnormalized_overflow_is_rejected():
    with pytest.raises(ConfigError, match="exp overflows"):
        System(n_tokens=2, dim=2, beta=800.0, weighting="unnormalized")


def test_unnormalized_below_overflow_is_accepted():
    system = System(n_tokens=2, dim=2, beta=600.0, weighting="unnormalized")
    assert system.beta == 600.0


def test_large_step_warns_with_safe_step():
    config = Config(
        system=System(n_tokens=3, dim=3, beta=10.0, V={"identity": True, "scale": 5.0}),
        integration=Integration(dt=0.5),
    )
    with pytest.warns(StepSizeWarning, match=r"dt <= 0\.0491"):
        config.check_step_size()


def test_matrix_constructors():
    assert np.array_equal(resolve_matrix("V", "identity", 3), np.eye(3))
    assert np.array_equal(resolve_matrix("V", {"identity": True, "scale": -1}, 2), -np.eye(2))
    symmetric = resolve_matrix("V", {"random_symmetric": 0, "spectral_norm": 1.0}, 5)
    assert np.allclose(symmetric, symmetric.T)
    assert np.isclose(np.linalg.norm(symmetric, 2), 1.0)
    again = resolve_matrix("V", {"random_symmetric": 0, "spectral_norm": 1.0}, 5)
    assert again.tobytes() == symmetric.tobytes()


def test_load_config_from_toml(tmp_path):
    path = tmp_path / "system.toml"
    path.write_text(
        textwrap.dedent(
            """
            [system]
            n_tokens = 3
            dim = 2
            beta = 0.5
            V = { diagonal = [2.0, 1.0] }

            [sampling]
            n_initial = 7
            """
        )
    )
    config = load_config(path)
    assert config.name == "system"
    assert config.system.n_tokens == 3
    assert config.sampling.n_initial == 7
    assert config.integration == Integration()


def test_invalid_toml_is_rejected(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[system\nn_tokens = 3\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(path)


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_examples_are_valid():
    names = list_examples()
    assert {"multistable", "identity", "oja"} <= set(names)
    for name in names:
        config = example_config(name)
        assert config.name == name
    multistable = load_config("example:multistable")
    assert multistable.system.n_tokens == 4
    assert np.array_equal(multistable.system.V, np.diag([1.0, 0.5, -3.0]))
    assert multistable.sampling.n_initial >= 100_000


def test_unknown_example_lists_the_available_ones():
    with pytest.raises(ConfigError, match="available examples are .*multistable"):
        load_config("example:nope")


def test_sampling_override_is_validated(small_config):
    assert small_config.with_sampling(n_initial=50).sampling.n_initial == 50
    with pytest.raises(ConfigError, match="sampling.chunk_size = 0"):
        small_config.with_sampling(chunk_size=0)


def test_sampling_defaults():
    assert Sampling().n_chunks == -(-Sampling().n_initial // Sampling().chunk_size)
