"""Tokenizer and NumPy forward pass of a BERT-style encoder.

The forward pass follows the post-layer-norm encoder of BERT (Devlin et al., 2019)
as implemented by ``transformers.BertModel`` in inference mode (no dropout), for one
text at a time, so no padding or attention mask is needed:

    h_0 = LayerNorm(word[id] + position[i] + token_type[0])
    a   = LayerNorm(h + MultiHeadAttention(h))
    h'  = LayerNorm(a + W_2 act(W_1 a + b_1) + b_2)

``hidden_states[L]`` is the input of layer ``L`` (``L = 0`` the embeddings) and
``hidden_states[n_layers]`` the output of the last layer. Sentence embeddings follow
the checkpoint's own sentence-transformers modules: the pooling of
``1_Pooling/config.json`` and, when ``modules.json`` lists it, normalisation to unit
length. Texts are tokenized with the checkpoint's ``tokenizer.json``.

Only BERT-style checkpoints have a forward pass here; GPT-2-style ones give systems
and value maps but no token states.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from basins.errors import CheckpointError
from basins.transformer.checkpoint import Checkpoint

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")

_erf = np.frompyfunc(math.erf, 1, 1)


def _activation(name: str, x: np.ndarray) -> np.ndarray:
    if name == "gelu":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return (
            0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
        )
    return np.maximum(x, 0.0)


def layer_norm(
    x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float
) -> np.ndarray:
    """Normalise the last axis to zero mean and unit variance, then scale and shift."""
    mean = x.mean(axis=-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + eps) * weight + bias


def _require_bert(checkpoint: Checkpoint) -> None:
    if checkpoint.architecture != "bert":
        raise CheckpointError(
            f"{checkpoint.name}: token states need a forward pass, which basins has "
            f"for BERT-style encoders only, not {checkpoint.architecture}"
        )


def _read_optional_json(path: Path) -> dict[str, Any] | list[Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None


@functools.lru_cache(maxsize=4)
def _tokenizer(directory: str, max_length: int):
    from tokenizers import Tokenizer

    path = Path(directory) / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(
            f"no tokenizer.json beside the weights in {directory}: token states need "
            f"the checkpoint's own tokenizer"
        )
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 (tokenizers raises plain Exception)
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def max_sequence_length(checkpoint: Checkpoint) -> int:
    """Return the token limit: sentence-transformers' ``max_seq_length`` if set."""
    settings = _read_optional_json(checkpoint.directory / "sentence_bert_config.json")
    positions = int(checkpoint.config.get("max_position_embeddings", 512))
    if isinstance(settings, dict) and "max_seq_length" in settings:
        return min(int(settings["max_seq_length"]), positions)
    return positions


def tokenize(checkpoint: Checkpoint, text: str) -> tuple[list[str], np.ndarray]:
    """Split ``text`` into the checkpoint's tokens, special tokens included.

    Returns the token strings and their ids.
    """
    _require_bert(checkpoint)
    tokenizer = _tokenizer(str(checkpoint.directory), max_sequence_length(checkpoint))
    encoding = tokenizer.encode(text)
    return list(encoding.tokens), np.array(encoding.ids, dtype=np.int64)


@dataclass(frozen=True)
class _LayerWeights:
    attention: Any
    attention_norm: tuple[np.ndarray, np.ndarray]
    intermediate: tuple[np.ndarray, np.ndarray]
    output: tuple[np.ndarray, np.ndarray]
    output_norm: tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class _EncoderWeights:
    word: np.ndarray
    position: np.ndarray
    token_type: np.ndarray
    embedding_norm: tuple[np.ndarray, np.ndarray]
    layers: list[_LayerWeights]


@functools.lru_cache(maxsize=2)
def _encoder_weights(checkpoint: Checkpoint) -> _EncoderWeights:
    d = checkpoint.dim
    prefix = checkpoint.prefix

    def linear(name: str, rows: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
        return (
            checkpoint.tensor(f"{name}.weight", (rows, columns)),
            checkpoint.tensor(f"{name}.bias", (rows,)),
        )

    def norm(name: str) -> tuple[np.ndarray, np.ndarray]:
        return checkpoint.tensor(f"{name}.weight", (d,)), checkpoint.tensor(
            f"{name}.bias", (d,)
        )

    embeddings = f"{prefix}embeddings"
    word = checkpoint.tensor(f"{embeddings}.word_embeddings.weight")
    position = checkpoint.tensor(f"{embeddings}.position_embeddings.weight")
    token_type = checkpoint.tensor(f"{embeddings}.token_type_embeddings.weight")
    for name, table in (
        ("word", word),
        ("position", position),
        ("token_type", token_type),
    ):
        if table.ndim != 2 or table.shape[1] != d:
            raise CheckpointError(
                f"tensor {embeddings}.{name}_embeddings.weight in {checkpoint.path} "
                f"has "
                f"shape {table.shape}: expected (rows, {d})"
            )
    intermediate_size = int(checkpoint.config.get("intermediate_size", 4 * d))
    layers = []
    for L in range(checkpoint.n_layers):
        base = f"{prefix}encoder.layer.{L}"
        layers.append(
            _LayerWeights(
                attention=checkpoint.attention(L),
                attention_norm=norm(f"{base}.attention.output.LayerNorm"),
                intermediate=linear(f"{base}.intermediate.dense", intermediate_size, d),
                output=linear(f"{base}.output.dense", d, intermediate_size),
                output_norm=norm(f"{base}.output.LayerNorm"),
            )
        )
    return _EncoderWeights(
        word, position, token_type, norm(f"{embeddings}.LayerNorm"), layers
    )


@dataclass(frozen=True)
class EncoderOutput:
    """Result of the forward pass of one text.

    Attributes
    ----------
    tokens : list of str
        The tokens, special tokens included.
    hidden_states : numpy.ndarray
        Shape ``(n_layers + 1, n_tokens, dim)``: entry ``L`` is the input of layer
        ``L``, the last entry the output of the last layer.
    attention : numpy.ndarray
        Attention probabilities, shape ``(n_layers, n_heads, n_tokens, n_tokens)``;
        each row sums to one.
    """

    tokens: list[str]
    hidden_states: np.ndarray
    attention: np.ndarray


def _attention_block(h: np.ndarray, weights) -> tuple[np.ndarray, np.ndarray]:
    d_head = weights.d_head
    query = np.einsum("hcd,nd->hnc", weights.query, h) + weights.query_bias[:, None, :]
    key = np.einsum("hcd,nd->hnc", weights.key, h) + weights.key_bias[:, None, :]
    value = np.einsum("hcd,nd->hnc", weights.value, h) + weights.value_bias[:, None, :]
    logits = query @ key.transpose(0, 2, 1) / math.sqrt(d_head)
    probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    context = probabilities @ value
    out = np.einsum("hdc,hnc->nd", weights.output, context) + weights.output_bias
    return out, probabilities


def encode(checkpoint: Checkpoint, text: str) -> EncoderOutput:
    """Tokenize ``text`` and run the encoder on it.

    Raises
    ------
    CheckpointError
        If the checkpoint is not a BERT-style encoder, or its tokenizer or a tensor
        is missing or malformed.
    """
    tokens, ids = tokenize(checkpoint, text)
    weights = _encoder_weights(checkpoint)
    config = checkpoint.config
    eps = float(config.get("layer_norm_eps", 1e-12))
    activation = config.get("hidden_act", "gelu")
    if activation not in ACTIVATIONS:
        raise CheckpointError(
            f"hidden_act = {activation!r} in {checkpoint.directory / 'config.json'} is "
            f"not supported: expected one of {', '.join(ACTIVATIONS)}"
        )
    n = len(ids)
    if n > len(weights.position):
        raise CheckpointError(
            f"text has {n} tokens but {checkpoint.name} has {len(weights.position)} "
            f"positions"
        )

    h = weights.word[ids] + weights.position[:n] + weights.token_type[0]
    h = layer_norm(h, *weights.embedding_norm, eps)
    states = [h]
    probabilities = []
    for layer in weights.layers:
        attended, p = _attention_block(h, layer.attention)
        probabilities.append(p)
        a = layer_norm(h + attended, *layer.attention_norm, eps)
        W_1, b_1 = layer.intermediate
        W_2, b_2 = layer.output
        feed_forward = _activation(activation, a @ W_1.T + b_1) @ W_2.T + b_2
        h = layer_norm(a + feed_forward, *layer.output_norm, eps)
        states.append(h)
    return EncoderOutput(tokens, np.array(states), np.array(probabilities))


def sentence_embeddings(checkpoint: Checkpoint, texts: list[str]) -> np.ndarray:
    """Return the sentence embeddings of ``texts``, shape ``(len(texts), dim)``.

    Uses the pooling of ``1_Pooling/config.json``, which may be ``mean`` over tokens
    (also the default when the file is absent) or ``cls``. Normalises to unit length
    when ``modules.json`` lists a ``Normalize`` module.
    """
    _require_bert(checkpoint)
    pooling = (
        _read_optional_json(checkpoint.directory / "1_Pooling" / "config.json") or {}
    )
    modules = _read_optional_json(checkpoint.directory / "modules.json") or []
    use_cls = bool(pooling.get("pooling_mode_cls_token", False))
    other_modes = [
        key
        for key, value in pooling.items()
        if key.startswith("pooling_mode_")
        and value
        and key not in ("pooling_mode_mean_tokens", "pooling_mode_cls_token")
    ]
    if other_modes:
        raise CheckpointError(
            f"pooling {', '.join(other_modes)} in {checkpoint.directory} is not "
            f"supported: expected pooling_mode_mean_tokens or pooling_mode_cls_token"
        )
    normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
    embeddings = []
    for text in texts:
        last = encode(checkpoint, text).hidden_states[-1]
        vector = last[0] if use_cls else last.mean(axis=0)
        if normalize:
            vector = vector / np.linalg.norm(vector)
        embeddings.append(vector)
    return np.array(embeddings).reshape(len(texts), checkpoint.dim)


def layer_inputs(
    checkpoint: Checkpoint, texts: list[str], layer: int
) -> list[np.ndarray]:
    """Return the hidden states entering ``layer``: an ``(n_i, dim)`` array per text."""
    if not 0 <= layer < checkpoint.n_layers:
        raise CheckpointError(
            f"layer {layer} is out of range: {checkpoint.name} has layers 0 to "
            f"{checkpoint.n_layers - 1}"
        )
    return [encode(checkpoint, text).hidden_states[layer] for text in texts]


def mean_squared_norm(states: list[np.ndarray]) -> float:
    """Return the mean of ``||h||^2`` over every token of every array in ``states``."""
    stacked = np.concatenate(states, axis=0)
    return float(np.mean(np.sum(stacked**2, axis=1)))


def unit_rows(states: np.ndarray) -> np.ndarray:
    """Scale every row (token) of ``states`` to unit length."""
    return states / np.linalg.norm(states, axis=-1, keepdims=True)
