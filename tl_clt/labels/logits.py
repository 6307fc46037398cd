"""Logit effects of features: the output tokens a feature's decoders promote and suppress
through the unembedding on the direct path (the decoder writes carried straight to the final
normalisation and the unembedding, the normalisation's scale held at 1, the mean over the
vocabulary removed). The model's own final block and unembedding compute it, through hooks, so
every architecture's final normalisation is handled the same way."""

from __future__ import annotations

from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_clt.clt import CrossLayerTranscoder
from tl_clt.lens import Lens


class TopEffects(NamedTuple):
    values: Float[Tensor, "n k"]
    indices: Int[Tensor, "n k"]
    z: Float[Tensor, "n k"]


def unembed_direct(lens: Lens, vectors: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_vocab"]:
    """Change in logits when each vector is added to the final residual stream, with the final
    normalisation's scale frozen at 1 (linear in the vector)."""
    n, P = vectors.shape[0], lens.n_ctx
    last = lens.resid_post(lens.n_layers - 1)
    scale = lens.final_norm_scale()
    out = []
    for start in range(0, n, P * 64):
        chunk = vectors[start : start + P * 64]
        rows = -(-chunk.shape[0] // P)
        resid = torch.zeros(rows * P, lens.d_model, device=lens.device, dtype=lens.dtype)
        resid[: chunk.shape[0]] = chunk.to(resid)
        resid = resid.view(rows, P, lens.d_model)
        tokens = torch.zeros(rows, P, dtype=torch.long, device=lens.device)
        logits = []
        for value in (resid, torch.zeros_like(resid)):
            hooks = [(last, lambda x, hook, v=value: v)]
            if scale is not None:
                hooks.append((scale, lambda x, hook: torch.ones_like(x)))
            logits.append(lens.run(tokens, hooks))
        out.append((logits[0] - logits[1]).reshape(rows * P, -1)[: chunk.shape[0]])
    return torch.cat(out) if out else vectors.new_zeros(0, lens.d_vocab)


def direct_vectors(clt: CrossLayerTranscoder, layer: int) -> Float[Tensor, "n_features d_model"]:
    """What each feature read at `layer` writes to the residual stream in total (the sum of
    its decoders to every layer it writes to), in model units."""
    return sum(clt.W_dec_at(layer, t) for t in clt.writes_to(layer))


@torch.no_grad()
def top_logit_effects(
    lens: Lens, clt: CrossLayerTranscoder, layer: int, n: int, chunk: int = 1024
) -> tuple[TopEffects, TopEffects]:
    """The `n` most promoted and most suppressed tokens of every feature at `layer`."""
    vectors = direct_vectors(clt, layer)
    ups, downs = [], []
    for start in range(0, vectors.shape[0], chunk):
        eff = unembed_direct(lens, vectors[start : start + chunk]).float()
        eff = eff - eff.mean(-1, keepdim=True)
        std = eff.std(-1, keepdim=True).clamp_min(1e-12)
        k = min(n, eff.shape[-1])
        for sign, acc in ((1, ups), (-1, downs)):
            vals, idx = (sign * eff).topk(k, dim=-1)
            acc.append(TopEffects(sign * vals, idx, sign * vals / std))
    cat = lambda acc: TopEffects(*(torch.cat(parts) for parts in zip(*acc)))  # noqa: E731
    return cat(ups), cat(downs)
