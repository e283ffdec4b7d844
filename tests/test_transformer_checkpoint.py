"""Reading checkpoints: the packaged BERT model and a synthetic GPT-2 file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from safetensors.numpy import save_file

from basins.errors import CheckpointError
from basins.transformer.checkpoint import load_checkpoint

DIM = 8
N_HEADS = 2
D_HEAD = DIM // N_HEADS


def gpt2_tensors(seed=0, n_layers=2, prefix=""):
    """Tensors of a tiny GPT-2 in the Conv1D layout: weights are (in, out)."""
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(n_layers):
        base = f"{prefix}h.{layer}.attn."
        tensors[f"{base}c_attn.weight"] = rng.standard_normal((DIM, 3 * DIM)).astype(
            np.float32
        )
        tensors[f"{base}c_attn.bias"] = rng.standard_normal(3 * DIM).astype(np.float32)
        tensors[f"{base}c_proj.weight"] = rng.standard_normal((DIM, DIM)).astype(
            np.float32
        )
        tensors[f"{base}c_proj.bias"] = rng.standard_normal(DIM).astype(np.float32)
        tensors[f"{prefix}h.{layer}.ln_1.weight"] = np.ones(DIM, dtype=np.float32)
    tensors[f"{prefix}wte.weight"] = rng.standard_normal((50, DIM)).astype(np.float32)
    return tensors


def write_checkpoint(folder, tensors, config=None):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder / "model.safetensors"


@pytest.fixture
def gpt2(tmp_path):
    tensors = gpt2_tensors()
    path = write_checkpoint(tmp_path / "gpt2", tensors, {"n_head": N_HEADS})
    return path, tensors


def test_minilm_layout(minilm):
    assert minilm.architecture == "bert"
    assert (minilm.n_layers, minilm.n_heads, minilm.dim, minilm.d_head) == (
        6,
        12,
        384,
        32,
    )
    assert minilm.name == "all-MiniLM-L6-v2"
    assert minilm.path.name == "model.safetensors"


def test_minilm_head_slices_match_linear_layers(minilm):
    weights = minilm.attention(2)
    query = minilm.tensor("encoder.layer.2.attention.self.query.weight")
    dense = minilm.tensor("encoder.layer.2.attention.output.dense.weight")
    assert np.array_equal(weights.query[5], query[5 * 32 : 6 * 32])
    assert np.array_equal(weights.output[5], dense[:, 5 * 32 : 6 * 32])
    assert np.allclose(
        weights.value_map(None),
        dense @ minilm.tensor("encoder.layer.2.attention.self.value.weight"),
        atol=1e-12,
    )


def test_gpt2_layout(gpt2):
    path, _ = gpt2
    checkpoint = load_checkpoint(path)
    assert checkpoint.architecture == "gpt2"
    assert (checkpoint.n_layers, checkpoint.n_heads, checkpoint.dim) == (
        2,
        N_HEADS,
        DIM,
    )
    assert checkpoint.name == str(path)


def test_gpt2_heads_reproduce_conv1d_attention(gpt2):
    path, tensors = gpt2
    weights = load_checkpoint(path.parent).attention(1)
    fused = tensors["h.1.attn.c_attn.weight"].astype(np.float64)
    projection = tensors["h.1.attn.c_proj.weight"].astype(np.float64)
    x = np.random.default_rng(1).standard_normal((5, DIM))

    # GPT-2 computes q, k, v = split(x @ c_attn) and output = context @ c_proj.
    q, k, v = np.split(x @ fused, 3, axis=1)
    for head in range(N_HEADS):
        columns = slice(head * D_HEAD, (head + 1) * D_HEAD)
        logits = q[:, columns] @ k[:, columns].T / math.sqrt(D_HEAD)
        A = weights.attention_form(head)
        assert np.allclose(x @ A @ x.T, logits, atol=1e-10)
        contribution = v[:, columns] @ projection[columns, :]
        V = weights.value_map(head)
        assert np.allclose(x @ V.T, contribution, atol=1e-10)


def test_gpt2_biases_split_like_weights(gpt2):
    path, tensors = gpt2
    weights = load_checkpoint(path).attention(0)
    bias = tensors["h.0.attn.c_attn.bias"].astype(np.float64)
    assert np.array_equal(weights.key_bias.ravel(), bias[DIM : 2 * DIM])
    assert np.array_equal(weights.output_bias, tensors["h.0.attn.c_proj.bias"])


def test_gpt2_prefix_is_found(tmp_path):
    path = write_checkpoint(
        tmp_path / "prefixed", gpt2_tensors(prefix="transformer."), {"n_head": N_HEADS}
    )
    checkpoint = load_checkpoint(path)
    assert checkpoint.prefix == "transformer."
    assert checkpoint.attention(1).query.shape == (N_HEADS, D_HEAD, DIM)


def test_missing_tensor_is_named(tmp_path):
    tensors = gpt2_tensors()
    del tensors["h.1.attn.c_proj.weight"]
    path = write_checkpoint(tmp_path / "broken", tensors, {"n_head": N_HEADS})
    checkpoint = load_checkpoint(path)
    checkpoint.attention(0)
    with pytest.raises(CheckpointError, match=r"h\.1\.attn\.c_proj\.weight is missing"):
        checkpoint.attention(1)


def test_malformed_tensor_is_named(tmp_path):
    tensors = gpt2_tensors()
    tensors["h.0.attn.c_proj.weight"] = np.zeros((DIM, DIM + 1), dtype=np.float32)
    path = write_checkpoint(tmp_path / "malformed", tensors, {"n_head": N_HEADS})
    with pytest.raises(
        CheckpointError, match=r"h\.0\.attn\.c_proj\.weight .* shape \(8, 9\)"
    ):
        load_checkpoint(path).attention(0)


def test_missing_layer_is_named(tmp_path):
    tensors = gpt2_tensors(n_layers=3)
    for name in [n for n in tensors if n.startswith("h.1.attn.c_attn")]:
        del tensors[name]
    path = write_checkpoint(tmp_path / "gap", tensors, {"n_head": N_HEADS})
    with pytest.raises(CheckpointError, match="no attention weights for layer 1"):
        load_checkpoint(path)


def test_head_count_needs_config(tmp_path):
    path = write_checkpoint(tmp_path / "bare", gpt2_tensors())
    with pytest.raises(CheckpointError, match="n_head"):
        load_checkpoint(path)
    assert load_checkpoint(path, n_heads=4).d_head == 2


def test_head_count_must_divide_dim(tmp_path):
    path = write_checkpoint(tmp_path / "odd", gpt2_tensors(), {"n_head": 3})
    with pytest.raises(CheckpointError, match="divisor"):
        load_checkpoint(path)


def test_unknown_naming_is_rejected(tmp_path):
    path = write_checkpoint(
        tmp_path / "other", {"w": np.zeros((2, 2), dtype=np.float32)}
    )
    with pytest.raises(CheckpointError, match="no attention layers found"):
        load_checkpoint(path)


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")


def test_corrupt_file_is_rejected(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(path)


def test_layer_out_of_range(gpt2):
    path, _ = gpt2
    with pytest.raises(CheckpointError, match="layer 2 is out of range"):
        load_checkpoint(path).attention(2)
