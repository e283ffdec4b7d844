"""Attention dynamics of the heads of a trained model: multi-head, low-rank systems.

Head ``h`` with query, key, value and output maps ``W_Q,h``, ``W_K,h``, ``W_V,h``
(``d_head x dim``) and ``W_O,h`` (``dim x d_head``) acts in the model dimension with

    A_h = W_Q,h^T W_K,h / sqrt(d_head),      V_h = W_O,h W_V,h,

both of rank at most ``d_head``. A system made of several heads (a whole layer) gives
each head its own softmax and adds their outputs:

    dx_i/dt = P_{x_i} sum_h sum_j w^h_ij V_h x_j,
    w^h_ij = softmax_j(beta x_i^T A_h x_j).

With one head this is the single-head field of `basins.System` with ``A = A_h`` and
``V = V_h``. Biases of the checkpoint are left out of the dynamics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from basins.config import (
    MAX_UNNORMALIZED_EXPONENT,
    WEIGHTINGS,
    System,
    _check_int,
    _check_keys,
    _check_real,
)
from basins.errors import BasinsError, ConfigError
from basins.transformer.checkpoint import load_checkpoint

logger = logging.getLogger(__name__)

# Largest dimension for which rotational symmetries are searched for; the search
# builds dim (dim - 1) / 2 candidate generators of size dim x dim.
SYMMETRY_SEARCH_MAX_DIM = 32

# A paragraph of plain English used to set beta when the configuration gives no text.
CALIBRATION_TEXT = (
    "The river runs past the old mill and under the stone bridge before it reaches "
    "the town. In spring the water rises quickly, and the farmers move their animals "
    "to higher fields. Children watch the boats from the bank while their parents "
    "buy bread and fish at the market."
)

FACTOR_NAMES = ("query", "key", "value", "output")


def _factor(name: str, value: Any) -> np.ndarray:
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"system.{name} is invalid: expected an array of numbers ({exc})"
        )
    if array.ndim != 3:
        raise ConfigError(
            f"system.{name} has shape {array.shape}: expected 3 axes "
            f"(n_heads, d_head, dim) for query, key, value or (n_heads, dim, d_head) "
            f"for output"
        )
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"system.{name} has non-finite entries")
    return np.ascontiguousarray(array)


def _factored_norm(left: np.ndarray, right: np.ndarray) -> float:
    """Return ``||left^T right||_2`` for ``left``, ``right`` of shape ``(k, dim)``."""
    product = (left @ left.T) @ (right @ right.T)
    return math.sqrt(max(0.0, float(np.max(np.linalg.eigvals(product).real))))


@dataclass(frozen=True, eq=False)
class MultiHeadSystem(System):
    """Attention dynamics of one or several heads given by low-rank factors.

    Parameters
    ----------
    n_tokens, dim, beta, weighting
        As for `basins.System`.
    query, key, value : array_like, shape (n_heads, d_head, dim)
        ``W_Q,h``, ``W_K,h`` and ``W_V,h`` of every head.
    output : array_like, shape (n_heads, dim, d_head)
        ``W_O,h`` of every head.

    Notes
    -----
    Each head has ``A_h = W_Q,h^T W_K,h / sqrt(d_head)`` and ``V_h = W_O,h W_V,h``.
    The attributes ``V`` (``sum_h V_h``) and ``A`` (``sum_h A_h``, through ``Q`` and
    ``K``) are dense ``dim x dim`` matrices for the classifier and the step-size
    estimate. ``A`` describes the field only for a single head, because every head
    has its own softmax. Requires ``n_heads * d_head <= dim``.
    """

    query: Any = None
    key: Any = None
    value: Any = None
    output: Any = None

    def __post_init__(self) -> None:
        n_tokens = _check_int("system.n_tokens", self.n_tokens, 1)
        dim = _check_int("system.dim", self.dim, 2)
        beta = _check_real("system.beta", self.beta, minimum=0.0, strict=False)
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(
                f"system.weighting = {self.weighting!r} is invalid: expected one of "
                f"{', '.join(WEIGHTINGS)}"
            )
        factors = {name: _factor(name, getattr(self, name)) for name in FACTOR_NAMES}
        n_heads, d_head, _ = factors["query"].shape
        expected = {
            "query": (n_heads, d_head, dim),
            "key": (n_heads, d_head, dim),
            "value": (n_heads, d_head, dim),
            "output": (n_heads, dim, d_head),
        }
        for name, shape in expected.items():
            if factors[name].shape != shape:
                raise ConfigError(
                    f"system.{name} has shape {factors[name].shape}: expected {shape} "
                    f"for {n_heads} heads of size {d_head} in dimension {dim}"
                )
        if n_heads * d_head > dim:
            raise ConfigError(
                f"{n_heads} heads of size {d_head} exceed system.dim = {dim}: expected "
                f"n_heads * d_head <= dim"
            )
        for name, value in (("n_tokens", n_tokens), ("dim", dim), ("beta", beta)):
            object.__setattr__(self, name, value)
        for name, array in factors.items():
            array.setflags(write=False)
            object.__setattr__(self, name, array)

        # Q and K stack the heads' rows (scaled by d_head^(-1/4) each), so that
        # Q^T K = sum_h A_h; unused rows are zero.
        scale = d_head**-0.25
        Q = np.zeros((dim, dim))
        K = np.zeros((dim, dim))
        Q[: n_heads * d_head] = factors["query"].reshape(-1, dim) * scale
        K[: n_heads * d_head] = factors["key"].reshape(-1, dim) * scale
        V = np.einsum("hac,hcb->ab", factors["output"], factors["value"])
        for name, matrix in (("Q", Q), ("K", K), ("V", V)):
            matrix.setflags(write=False)
            object.__setattr__(self, name, matrix)

        if self.weighting != "unnormalized":
            return
        exponent = beta * max(self.head_norms()[0])
        if exponent > MAX_UNNORMALIZED_EXPONENT:
            raise ConfigError(
                f"system.beta = {beta!r} is invalid for weighting 'unnormalized': "
                f"beta * max_h ||A_h||_2 = {exponent:.4g} exceeds "
                f"{MAX_UNNORMALIZED_EXPONENT}, so exp overflows; lower beta or use "
                f"weighting 'softmax'"
            )

    @property
    def n_heads(self) -> int:
        """Number of heads."""
        return self.query.shape[0]

    @property
    def d_head(self) -> int:
        """Dimension of each head."""
        return self.query.shape[1]

    def head_matrices(self, head: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(A_h, V_h)`` of one head, each ``(dim, dim)``."""
        A = self.query[head].T @ self.key[head] / math.sqrt(self.d_head)
        V = self.output[head] @ self.value[head]
        return A, V

    def head_norms(self) -> tuple[list[float], list[float]]:
        """Return the spectral norms ``||A_h||_2`` and ``||V_h||_2`` of every head.

        Computed from ``d_head x d_head`` matrices: ``||L^T R||_2^2`` is the largest
        eigenvalue of ``(L L^T)(R R^T)``.
        """
        norms_a, norms_v = [], []
        for head in range(self.n_heads):
            query, key = self.query[head], self.key[head]
            output_t, value = self.output[head].T, self.value[head]
            norm_a = _factored_norm(query, key) / math.sqrt(self.d_head)
            norms_a.append(norm_a)
            norms_v.append(_factored_norm(output_t, value))
        return norms_a, norms_v

    def max_rate(self) -> float:
        """Return an upper estimate of the largest rate of the linearised field.

        The sum over heads of the single-head estimate: ``(1 + beta ||A_h||_2)
        ||V_h||_2`` for softmax, ``exp(beta ||A_h||_2) ||V_h||_2`` for unnormalized;
        ``||sum_h V_h||_2`` for oja, whose heads share the weights ``1 / n``.
        """
        if self.weighting == "oja":
            return float(np.linalg.norm(self.V, 2))
        norms_a, norms_v = self.head_norms()
        if self.weighting == "softmax":
            return sum((1.0 + self.beta * a) * v for a, v in zip(norms_a, norms_v))
        return sum(math.exp(self.beta * a) * v for a, v in zip(norms_a, norms_v))

    def continuous_symmetries(self) -> np.ndarray:
        """Return generators of the rotations commuting with every ``A_h`` and ``V_h``.

        Shape ``(k, dim, dim)``. Above ``SYMMETRY_SEARCH_MAX_DIM`` no search is made
        and none are returned, so final states are compared directly.
        """
        from basins.classify import commuting_generators

        if self.dim > SYMMETRY_SEARCH_MAX_DIM:
            # NOTE: a head of rank d_head < dim/4 is invariant under every rotation
            # of the complement of its factors' row and column spaces; states that
            # keep components there are compared directly, not modulo rotation.
            return np.zeros((0, self.dim, self.dim))
        matrices = []
        for head in range(self.n_heads):
            A, V = self.head_matrices(head)
            matrices.append(V)
            if self.weighting != "oja" and self.beta > 0:
                matrices.append(A)
        return commuting_generators(matrices, self.dim)

    def to_dict(self) -> dict[str, Any]:
        """Return the system as plain Python types, factors as nested lists."""
        return {
            "n_tokens": self.n_tokens,
            "dim": self.dim,
            "beta": self.beta,
            "weighting": self.weighting,
            **{name: getattr(self, name).tolist() for name in FACTOR_NAMES},
        }


@dataclass(frozen=True, eq=False)
class CheckpointSystem(MultiHeadSystem):
    """The dynamics of one head, or of a whole layer, of a model checkpoint.

    Build it with `checkpoint_system`, which reads the factors from the checkpoint.

    Parameters
    ----------
    model : str
        Packaged model name or absolute path of the safetensors file.
    layer : int
        Layer index, from 0.
    head : int or None
        Head index, from 0; None for every head of the layer.
    sha256 : str
        SHA-256 of the weights file, so that a changed file is detected.
    """

    model: str = ""
    layer: int = 0
    head: int | None = None
    sha256: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the system as plain data: the checkpoint reference, no factors."""
        data = {
            "model": self.model,
            "layer": self.layer,
            "sha256": self.sha256,
            "n_tokens": self.n_tokens,
            "dim": self.dim,
            "beta": self.beta,
            "weighting": self.weighting,
        }
        if self.head is not None:
            data["head"] = self.head
        return data

    def token_states(self, texts: list[str] | tuple[str, ...]) -> np.ndarray:
        """Return the unit token states entering this layer, one configuration per text.

        Each text is run through the model; the first ``n_tokens`` hidden states
        entering ``layer`` are normalised to unit length.

        Returns
        -------
        numpy.ndarray
            Shape ``(len(texts), n_tokens, dim)``.

        Raises
        ------
        ConfigError
            If a text has fewer than ``n_tokens`` tokens.
        """
        from basins.transformer.encoder import unit_rows

        checkpoint = load_checkpoint(self.model)
        states = _checked_layer_inputs(checkpoint, list(texts), self.layer)
        _check_token_counts([len(s) for s in states], self.n_tokens)
        return np.array([unit_rows(s[: self.n_tokens]) for s in states])


def _checked_layer_inputs(checkpoint, texts: list[str], layer: int) -> list[np.ndarray]:
    from basins.transformer.encoder import layer_inputs

    try:
        return layer_inputs(checkpoint, texts, layer)
    except BasinsError as exc:
        raise ConfigError(
            f"sampling.text cannot be turned into token states: {exc}"
        ) from None


def _token_counts(checkpoint, texts: list[str]) -> list[int]:
    from basins.transformer.encoder import tokenize

    try:
        return [len(tokenize(checkpoint, text)[0]) for text in texts]
    except BasinsError as exc:
        raise ConfigError(f"sampling.text cannot be tokenized: {exc}") from None


def _check_token_counts(counts: list[int], n_tokens: int) -> None:
    short = [k for k, count in enumerate(counts) if count < n_tokens]
    if short:
        raise ConfigError(
            f"sampling.text[{short[0]}] has {counts[short[0]]} tokens, fewer than "
            f"system.n_tokens = {n_tokens}: give a longer text or a smaller n_tokens"
        )


def default_beta(checkpoint, layer: int) -> float:
    """Return the mean squared norm of the hidden states entering ``layer``.

    The states are those of `CALIBRATION_TEXT`. For unit tokens ``x = h / ||h||``
    the logits ``beta x_i^T A x_j`` then have the scale of the model's own logits
    ``h_i^T A h_j``. Raises `ConfigError` for checkpoints without a forward pass.
    """
    from basins.transformer.encoder import layer_inputs, mean_squared_norm

    if checkpoint.architecture != "bert":
        raise ConfigError(
            f"missing key system.beta: {checkpoint.name} is a "
            f"{checkpoint.architecture} checkpoint, whose hidden states basins "
            f"cannot compute, so beta has no default"
        )
    try:
        states = layer_inputs(checkpoint, [CALIBRATION_TEXT], layer)
    except BasinsError as exc:
        raise ConfigError(f"system.beta has no default: {exc}") from None
    beta = mean_squared_norm(states)
    logger.info(
        "system.beta = %.6g: mean squared norm of the %d hidden states entering "
        "layer %d of %s, over the calibration text",
        beta,
        len(states[0]),
        layer,
        checkpoint.name,
    )
    return beta


CHECKPOINT_KEYS = (
    "model",
    "layer",
    "head",
    "sha256",
    "n_tokens",
    "dim",
    "beta",
    "weighting",
)


def checkpoint_system(
    model: str,
    *,
    layer: int,
    head: int | None = None,
    n_tokens: int | None = None,
    beta: float | None = None,
    weighting: str = "softmax",
    texts: list[str] | tuple[str, ...] = (),
    dim: int | None = None,
    sha256: str | None = None,
) -> CheckpointSystem:
    """Build the system of head ``head`` (or all heads) of layer ``layer`` of a model.

    Parameters
    ----------
    model : str
        Packaged model name (such as ``all-MiniLM-L6-v2``), a ``.safetensors`` file or
        a directory holding ``model.safetensors``.
    layer : int
        Layer index, from 0.
    head : int, optional
        Head index, from 0; by default every head of the layer.
    n_tokens : int, optional
        Number of tokens. By default the token count of ``texts``, which must then
        agree.
    beta : float, optional
        Inverse temperature; by default `default_beta`, the scale of the model's own
        logits. It does not depend on ``texts``, so runs from random initial
        conditions and from token states share one system.
    weighting : {'softmax', 'unnormalized', 'oja'}
        As for `basins.System`.
    texts : sequence of str, optional
        Texts whose token states will serve as initial conditions.
    dim : int, optional
        If given, checked against the model dimension.
    sha256 : str, optional
        If given, checked against the SHA-256 of the weights file.

    Raises
    ------
    ConfigError
        If a value is invalid, names a layer or head the model does not have, or
        the checkpoint cannot be read.
    """
    try:
        checkpoint = load_checkpoint(model)
    except BasinsError as exc:
        raise ConfigError(f"system.model = {model!r} is invalid: {exc}") from None
    layer = _check_int("system.layer", layer, 0, checkpoint.n_layers - 1)
    if head is not None:
        head = _check_int("system.head", head, 0, checkpoint.n_heads - 1)
    if dim is not None and dim != checkpoint.dim:
        raise ConfigError(
            f"system.dim = {dim!r} is invalid: {checkpoint.name} has dimension "
            f"{checkpoint.dim}; leave dim out to take it from the model"
        )
    if sha256 is not None and sha256 != checkpoint.sha256:
        raise ConfigError(
            f"system.sha256 = {sha256!r} does not match {checkpoint.path} (SHA-256 "
            f"{checkpoint.sha256}): the weights file changed since this configuration "
            f"was written"
        )

    texts = list(texts)
    if texts:
        counts = _token_counts(checkpoint, texts)
        if n_tokens is None:
            distinct = sorted(set(counts))
            if len(distinct) > 1:
                raise ConfigError(
                    f"system.n_tokens is missing and the texts have different token "
                    f"counts {distinct}: set n_tokens <= {distinct[0]} to use the "
                    f"first n_tokens tokens of each text"
                )
            n_tokens = distinct[0]
        _check_token_counts(counts, _check_int("system.n_tokens", n_tokens, 1))
    if n_tokens is None:
        raise ConfigError(
            "missing key system.n_tokens: give it, or give sampling.text with "
            "sampling.initial = 'tokens' to take it from the texts"
        )

    if beta is None:
        beta = default_beta(checkpoint, layer)

    weights = checkpoint.attention(layer)
    heads = slice(None) if head is None else slice(head, head + 1)
    return CheckpointSystem(
        n_tokens=n_tokens,
        dim=checkpoint.dim,
        beta=beta,
        weighting=weighting,
        query=weights.query[heads],
        key=weights.key[heads],
        value=weights.value[heads],
        output=weights.output[heads],
        model=checkpoint.name,
        layer=layer,
        head=head,
        sha256=checkpoint.sha256,
    )


def system_from_table(
    table: Mapping[str, Any], sampling: Mapping[str, Any] | None = None
) -> MultiHeadSystem:
    """Build the ``[system]`` table of a configuration that names a model or factors.

    A table with ``model`` gives a `CheckpointSystem`, one with ``query``, ``key``,
    ``value`` and ``output`` a `MultiHeadSystem`. When the ``[sampling]`` table sets
    ``initial = "tokens"``, the token count of its ``text`` is the default
    ``n_tokens``.

    Raises
    ------
    ConfigError
        On an unknown or missing key or an invalid value.
    """
    if "model" not in table:
        allowed = ("n_tokens", "dim", "beta", "weighting", *FACTOR_NAMES)
        _check_keys("system", table, allowed)
        for key in ("n_tokens", "dim", "beta", *FACTOR_NAMES):
            if key not in table:
                raise ConfigError(f"missing key system.{key}")
        return MultiHeadSystem(**table)

    _check_keys("system", table, CHECKPOINT_KEYS)
    if not isinstance(sampling, Mapping):
        sampling = {}  # Config.from_dict reports a malformed [sampling] table.
    texts = sampling.get("text", ()) if sampling.get("initial") == "tokens" else ()
    if not isinstance(texts, (list, tuple)):
        texts = ()  # Sampling reports the invalid value with its own message.
    model = table["model"]
    if not isinstance(model, str) or not model:
        raise ConfigError(
            f"system.model = {model!r} is invalid: expected a path to a .safetensors "
            f"file or a packaged model name"
        )
    if "layer" not in table:
        raise ConfigError("missing key system.layer: the layer index, from 0")
    return checkpoint_system(
        model,
        layer=table["layer"],
        head=table.get("head"),
        n_tokens=table.get("n_tokens"),
        beta=table.get("beta"),
        weighting=table.get("weighting", "softmax"),
        texts=[t for t in texts if isinstance(t, str)],
        dim=table.get("dim"),
        sha256=table.get("sha256"),
    )
