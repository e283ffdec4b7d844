"""Systems from checkpoints: configuration, validation, token states and atlases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import zarr
from test_transformer_checkpoint import N_HEADS, gpt2_tensors, write_checkpoint

from basins import Config, Execution, Integration, Sampling, integrate, resume, run
from basins.atlas import read_config
from basins.errors import ConfigError, StepSizeWarning
from basins.report import basin_fractions
from basins.transformer.system import (
    CALIBRATION_TEXT,
    CheckpointSystem,
    MultiHeadSystem,
    checkpoint_system,
)

SENTENCES = [
    "The river runs past the old mill and under the bridge.",
    "Children watch the boats from the bank of the river.",
]


def test_head_system_has_head_matrices(minilm):
    system = checkpoint_system(
        "all-MiniLM-L6-v2", layer=1, head=4, n_tokens=5, beta=2.0
    )
    weights = minilm.attention(1)
    A = weights.query[4].T @ weights.key[4] / math.sqrt(32)
    V = weights.output[4] @ weights.value[4]
    assert np.allclose(system.A, A, atol=1e-12)
    assert np.allclose(system.V, V, atol=1e-12)
    assert np.linalg.matrix_rank(system.V) == 32
    assert (system.n_heads, system.d_head, system.dim) == (1, 32, 384)


def test_head_norms_match_dense_norms(minilm):
    system = checkpoint_system("all-MiniLM-L6-v2", layer=4, n_tokens=3, beta=1.0)
    norms_a, norms_v = system.head_norms()
    for head in (0, 7):
        A, V = system.head_matrices(head)
        assert norms_a[head] == pytest.approx(np.linalg.norm(A, 2), rel=1e-9)
        assert norms_v[head] == pytest.approx(np.linalg.norm(V, 2), rel=1e-9)


def test_layer_system_sums_heads(minilm):
    system = checkpoint_system("all-MiniLM-L6-v2", layer=0, n_tokens=3, beta=1.0)
    dense = minilm.tensor("encoder.layer.0.attention.output.dense.weight")
    value = minilm.tensor("encoder.layer.0.attention.self.value.weight")
    assert system.n_heads == 12
    assert np.allclose(system.V, dense @ value, atol=1e-12)
    assert system.head is None


def test_default_beta_is_mean_squared_norm(minilm):
    from basins.transformer.encoder import encode

    system = checkpoint_system("all-MiniLM-L6-v2", layer=2, head=0, n_tokens=4)
    states = encode(minilm, CALIBRATION_TEXT).hidden_states[2]
    assert system.beta == pytest.approx(np.mean(np.sum(states**2, axis=1)), rel=1e-12)
    assert 50.0 < system.beta < 400.0


def test_config_round_trip_keeps_reference(minilm):
    config = Config.from_dict(
        {"system": {"model": "all-MiniLM-L6-v2", "layer": 3, "head": 6, "n_tokens": 9}}
    )
    data = config.to_dict()["system"]
    assert data["model"] == "all-MiniLM-L6-v2"
    assert data["sha256"] == minilm.sha256
    assert "V" not in data
    again = Config.from_dict(config.to_dict())
    assert isinstance(again.system, CheckpointSystem)
    assert again.system.beta == config.system.beta
    assert np.array_equal(again.system.V, config.system.V)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"layer": 6, "n_tokens": 4}, r"system\.layer = 6 .* \[0, 5\]"),
        ({"layer": 0, "head": 12, "n_tokens": 4}, r"system\.head = 12 .* \[0, 11\]"),
        ({"layer": 0, "n_tokens": 4, "dim": 10}, r"system\.dim = 10 .* dimension 384"),
        ({"layer": 0}, "missing key system.n_tokens"),
        ({"n_tokens": 4}, "missing key system.layer"),
        ({"layer": 0, "n_tokens": 4, "V": "identity"}, r"unknown key system\.V"),
        ({"layer": 0, "n_tokens": 4, "sha256": "0" * 64}, "weights file changed"),
        ({"layer": "two", "n_tokens": 4}, r"system\.layer = 'two'"),
    ],
)
def test_invalid_checkpoint_system_is_rejected(minilm, table, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict({"system": {"model": "all-MiniLM-L6-v2", **table}})


def test_unknown_model_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"system\.model = .* not found"):
        Config.from_dict(
            {"system": {"model": str(tmp_path / "x.safetensors"), "layer": 0}}
        )


def test_gpt2_system_needs_beta(tmp_path):
    path = write_checkpoint(tmp_path / "gpt2", gpt2_tensors(), {"n_head": N_HEADS})
    with pytest.raises(ConfigError, match="missing key system.beta"):
        Config.from_dict({"system": {"model": str(path), "layer": 1, "n_tokens": 3}})
    config = Config.from_dict(
        {
            "system": {
                "model": str(path),
                "layer": 1,
                "head": 1,
                "n_tokens": 3,
                "beta": 0.5,
            }
        }
    )
    assert config.system.dim == 8
    assert config.system.d_head == 4


def test_tokens_set_n_tokens_and_n_initial(minilm):
    config = Config.from_dict(
        {
            "system": {"model": "all-MiniLM-L6-v2", "layer": 1, "head": 0},
            "sampling": {
                "initial": "tokens",
                "text": ["One two three.", "Four five six."],
            },
        }
    )
    assert config.system.n_tokens == 6  # [CLS] one two three . [SEP]
    assert config.sampling.n_initial == 2


@pytest.mark.parametrize(
    ("system", "sampling", "message"),
    [
        (
            {},
            {"initial": "tokens", "text": ["One two.", "One two three four."]},
            r"different token counts \[5, 7\]",
        ),
        (
            {"n_tokens": 9},
            {"initial": "tokens", "text": ["Short text."]},
            r"sampling\.text\[0\] has 5 tokens",
        ),
        (
            {"n_tokens": 3},
            {"initial": "tokens", "text": []},
            "sampling.text is missing",
        ),
        ({"n_tokens": 3}, {"text": ["Some text."]}, "initial = 'tokens'"),
        (
            {"n_tokens": 3},
            {"initial": "tokens", "text": ["a b c"], "n_initial": 5},
            r"sampling\.n_initial = 5",
        ),
        ({"n_tokens": 3}, {"initial": "file"}, r"sampling\.initial = 'file'"),
        ({"n_tokens": 3}, {"initial": "tokens", "text": "one text"}, "list of strings"),
    ],
)
def test_invalid_token_sampling_is_rejected(minilm, system, sampling, message):
    data = {
        "system": {
            "model": "all-MiniLM-L6-v2",
            "layer": 0,
            "head": 0,
            "beta": 1.0,
            **system,
        },
        "sampling": sampling,
    }
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(data)


def test_tokens_need_a_model():
    with pytest.raises(ConfigError, match="needs a system taken from a model"):
        Config.from_dict(
            {
                "system": {"n_tokens": 2, "dim": 3, "beta": 1.0},
                "sampling": {"initial": "tokens", "text": ["a"]},
            }
        )


def test_token_states_are_unit_layer_inputs(minilm):
    from basins.transformer.encoder import encode

    system = checkpoint_system("all-MiniLM-L6-v2", layer=2, head=1, n_tokens=6)
    states = system.token_states(SENTENCES)
    assert states.shape == (2, 6, 384)
    assert np.abs(np.linalg.norm(states, axis=-1) - 1.0).max() < 1e-12
    hidden = encode(minilm, SENTENCES[1]).hidden_states[2][:6]
    expected = hidden / np.linalg.norm(hidden, axis=1, keepdims=True)
    assert np.allclose(states[1], expected, atol=1e-14)


def test_multihead_factors_from_toml(tmp_path):
    rng = np.random.default_rng(0)
    factors = {
        "query": rng.standard_normal((2, 2, 5)).tolist(),
        "key": rng.standard_normal((2, 2, 5)).tolist(),
        "value": rng.standard_normal((2, 2, 5)).tolist(),
        "output": rng.standard_normal((2, 5, 2)).tolist(),
    }
    config = Config.from_dict(
        {"system": {"n_tokens": 3, "dim": 5, "beta": 1.0, **factors}}
    )
    assert isinstance(config.system, MultiHeadSystem)
    again = Config.from_dict(config.to_dict())
    assert np.array_equal(again.system.query, config.system.query)
    with pytest.raises(ConfigError, match=r"system\.output has shape \(2, 5, 3\)"):
        bad = dict(factors, output=rng.standard_normal((2, 5, 3)).tolist())
        Config.from_dict({"system": {"n_tokens": 3, "dim": 5, "beta": 1.0, **bad}})


def test_multihead_atlas_sums_to_one(tmp_path):
    rng = np.random.default_rng(1)
    d = 4
    value = rng.standard_normal((2, 2, d))
    system = MultiHeadSystem(
        n_tokens=3,
        dim=d,
        beta=1.0,
        query=rng.standard_normal((2, 2, d)) / 2,
        key=rng.standard_normal((2, 2, d)) / 2,
        value=value,
        output=value.transpose(0, 2, 1),
    )
    config = Config(
        system=system,
        integration=Integration(dt=0.05, max_steps=20000),
        sampling=Sampling(n_initial=60, seed=2, chunk_size=25),
    )
    path = tmp_path / "heads.zarr"
    run(config, path, execution=Execution(cluster="synchronous", progress=False))
    rows = basin_fractions(path)
    assert sum(row.count for row in rows) == 60
    assert isinstance(read_config(path).system, MultiHeadSystem)
    assert rows[-1].class_name == "nonfinite"
    assert rows[-1].count == 0


@pytest.mark.slow
def test_token_state_atlas_stores_initial_conditions(minilm, tmp_path):
    config = Config.from_dict(
        {
            "system": {
                "model": "all-MiniLM-L6-v2",
                "layer": 3,
                "head": 6,
                "n_tokens": 8,
            },
            "integration": {"dt": 0.1, "max_steps": 60},
            "sampling": {"initial": "tokens", "text": SENTENCES, "chunk_size": 1},
        }
    )
    path = tmp_path / "tokens.zarr"
    synchronous = Execution(cluster="synchronous", progress=False)
    with pytest.warns(StepSizeWarning):  # the estimate is far above the real rates
        summary = run(config, path, execution=synchronous, max_chunks=1)
    assert summary.chunks_pending == 1
    assert resume(path, execution=synchronous).chunks_pending == 0
    group = zarr.open_group(str(path), mode="r")
    stored = group["initial_state"][:]
    assert stored.shape == (2, 8, 384)
    assert group["initial_state"].metadata.dimension_names == (
        "ic",
        "token",
        "component",
    )
    assert np.array_equal(stored, config.system.token_states(SENTENCES))
    expected = integrate(config.system, config.integration, stored)
    assert group["final_state"][:].tobytes() == expected.final_state.tobytes()
    assert group.attrs["config"]["sampling"]["text"] == SENTENCES
