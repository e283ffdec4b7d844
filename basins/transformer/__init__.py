"""Attention dynamics of trained transformers: real heads, real tokens, value alignment.

`load_checkpoint` reads a safetensors checkpoint with NumPy (BERT-style or GPT-2-style
names). `checkpoint_system` turns one head, or a whole layer, into a system that
`basins.integrate` and `basins.run` accept. `value_alignment` measures how the
model's own hidden states line up with the leading eigenvectors of the value maps.
Nothing is downloaded: a model is a local file or the model of an installed package.
"""

from __future__ import annotations

from basins.transformer.alignment import (
    leading_eigenvalue,
    random_baseline,
    value_alignment,
)
from basins.transformer.checkpoint import Checkpoint, load_checkpoint
from basins.transformer.system import (
    CheckpointSystem,
    MultiHeadSystem,
    checkpoint_system,
)

__all__ = [
    "Checkpoint",
    "CheckpointSystem",
    "MultiHeadSystem",
    "checkpoint_system",
    "leading_eigenvalue",
    "load_checkpoint",
    "random_baseline",
    "value_alignment",
]
