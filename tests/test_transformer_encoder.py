"""The NumPy forward pass of all-MiniLM-L6-v2 against sentence-transformers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from basins.errors import CheckpointError
from basins.transformer.encoder import encode, sentence_embeddings, tokenize

REFERENCE = json.loads(
    (Path(__file__).parent / "data" / "minilm_reference.json").read_text(
        encoding="utf-8"
    )
)


def test_embeddings_match_sentence_transformers(minilm):
    embeddings = sentence_embeddings(minilm, REFERENCE["sentences"])
    reference = np.array(REFERENCE["embeddings"])
    for k, sentence in enumerate(REFERENCE["sentences"]):
        cos = embeddings[k] @ reference[k] / np.linalg.norm(reference[k])
        assert cos > 0.9999, f"{sentence!r}: cos = {cos}"


def test_embeddings_have_unit_norm(minilm):
    embeddings = sentence_embeddings(minilm, REFERENCE["sentences"][:2])
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-12)


def test_paraphrase_is_closer_than_unrelated_sentence(minilm):
    cat, rug, market = sentence_embeddings(minilm, REFERENCE["sentences"][:3])
    assert cat @ rug > 0.5
    assert cat @ rug > cat @ market + 0.3


def test_tokens_include_special_tokens(minilm):
    tokens, ids = tokenize(minilm, "Attention moves tokens.")
    assert tokens == ["[CLS]", "attention", "moves", "token", "##s", ".", "[SEP]"]
    assert len(ids) == len(tokens)


def test_forward_pass_shapes_and_attention_rows(minilm):
    output = encode(minilm, "The cat sits on the mat.")
    n = len(output.tokens)
    assert output.hidden_states.shape == (7, n, 384)
    assert output.attention.shape == (6, 12, n, n)
    assert np.abs(output.attention.sum(axis=-1) - 1.0).max() < 1e-12
    assert output.attention.min() >= 0.0


def test_layer_inputs_are_layer_norm_outputs(minilm):
    # Each hidden state leaves a LayerNorm, whose scale gamma (well below 1 in
    # MiniLM) sets the squared norms: far from 1, and below d = 384.
    states = encode(minilm, "The river runs past the old mill.").hidden_states
    squared = np.sum(states[1:6] ** 2, axis=-1)
    assert np.all(squared > 30.0)
    assert np.all(squared < 400.0)


def test_gpt2_checkpoint_has_no_forward_pass(tmp_path):
    from test_transformer_checkpoint import N_HEADS, gpt2_tensors, write_checkpoint

    from basins.transformer.checkpoint import load_checkpoint

    path = write_checkpoint(tmp_path / "gpt2", gpt2_tensors(), {"n_head": N_HEADS})
    with pytest.raises(CheckpointError, match="BERT-style encoders only"):
        encode(load_checkpoint(path), "hello")
