"""A model's identity by content: a small fingerprint of its weights and vocabulary, recorded
in a transcoder's config when it is trained and compared when it is spliced into a model.

For the embedding, the unembedding and every layer's MLP matrices it keeps the Frobenius norm
(float64, so a change to any one weight moves it) and a few values at fixed positions; for the
tokenizer, a hash of its vocabulary. Two fingerprints agree when every number agrees to within
the rounding of the dtypes the models were held in, so one model loaded under either
TransformerLens major, on any device, matches itself (`tl_clt.config.ModelIdentity` compares
them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

#: Flat positions sampled from each matrix (taken modulo its size).
_POSITIONS = (0, 7919, 104729, 1299709)


def model_fingerprint(lens: Any) -> dict[str, Any]:
    """The fingerprint of the model a `Lens` wraps (JSON-ready)."""
    matrices = {"W_E": lens.W_E, "W_U": lens.W_U}
    for layer in range(lens.n_layers):
        mlp = lens.model.blocks[layer].mlp
        for name in ("W_in", "W_out"):
            weight = getattr(mlp, name, None)
            if isinstance(weight, torch.Tensor):
                matrices[f"blocks.{layer}.mlp.{name}"] = weight
    weights = {}
    with torch.no_grad():
        for name, w in matrices.items():
            flat = w.detach().reshape(-1)
            idx = torch.tensor([p % flat.numel() for p in _POSITIONS], device=flat.device)
            norm = float(torch.linalg.vector_norm(flat.double()))
            weights[name] = [norm] + [float(v) for v in flat[idx].double().cpu()]
    return {
        "dtype": str(lens.dtype).removeprefix("torch."),
        "vocab": vocab_hash(lens.tokenizer),
        "weights": weights,
    }


def vocab_hash(tokenizer: Any) -> str | None:
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        return None
    items = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]
