"""Edge arithmetic for attribution (phase 4 of `tl_clt.attribution`): the sources of a prompt's
graph — active features, error terms, embeddings — laid out as columns, and the products of
their decoders / values with the gradients of a batch of targets.

A feature (s, q, f) with activation a writes a·W_dec[s→t][f] into the MLP output of every layer t
it decodes to, at position q; its edge into a target is a·Σ_t W_dec[s→t][f] · g_t[q], with g_t the
target's gradient at layer t's MLP output. Features are grouped per source layer and position
(padded to the layer's largest count), so one `bmm` per source layer computes the edges of a
whole batch of targets, reading only the active features' decoder rows (in model units, from
`CrossLayerTranscoder.decoder_rows`). Where each kind of node sits is the graph's `NodeLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_clt.clt import CrossLayerTranscoder
from tl_clt.graph import NodeLayout
from tl_clt.replacement import CleanRun


class ActiveFeatures(NamedTuple):
    """Active (layer, position, feature) triples of a prompt, position 0 left out, sorted by
    layer, then position, then feature; `activation` holds their values."""

    layer: Int[Tensor, " n"]
    position: Int[Tensor, " n"]
    feature: Int[Tensor, " n"]
    activation: Float[Tensor, " n"]

    @property
    def count(self) -> int:
        return int(self.layer.shape[0])


def active_features(run: CleanRun) -> ActiveFeatures:
    parts = []
    for layer, acts in enumerate(run.features):
        a = acts[0, 1:]
        nz = a.nonzero()
        parts.append(
            (torch.full((nz.shape[0],), layer), nz[:, 0] + 1, nz[:, 1], a[nz[:, 0], nz[:, 1]])
        )
    layer, position, feature, activation = (torch.cat(x) for x in zip(*parts))
    return ActiveFeatures(layer.cpu().long(), position.cpu().long(), feature.cpu().long(),
                          activation.detach().float().cpu())  # fmt: skip


@dataclass
class LayerSlots:
    """One source layer's active features grouped by position: slot (q, r) holds the r-th
    active feature at position q (padding: feature 0, activation 0, the spare column)."""

    feature: Int[Tensor, "pos m"]
    activation: Float[Tensor, "pos m"]
    column: Int[Tensor, " pos_m"]


@dataclass
class EdgeColumns:
    """Every source of a graph as a column of the edge rows, in the graph's node order
    (`layout`: embeddings, active features in table order, error nodes layer-major from
    position 1); one spare column takes the padding's (zero) edges and is dropped."""

    clt: CrossLayerTranscoder
    dtype: torch.dtype
    layout: NodeLayout  # of the sources: every active feature, no logits
    slots: list[LayerSlots]
    errors: Float[Tensor, "n_layers pos d_model"]

    @classmethod
    def build(
        cls, clt: CrossLayerTranscoder, run: CleanRun, feats: ActiveFeatures, dtype: torch.dtype
    ) -> EdgeColumns:
        layout = NodeLayout(run.tokens.shape[1], feats.count, clt.cfg.n_layers)
        pos, dev, spare = layout.n_pos, clt.device, layout.n_sources
        slots = []
        for s in range(layout.n_layers):
            sel = (feats.layer == s).nonzero()[:, 0]
            q = feats.position[sel]
            counts = torch.bincount(q, minlength=pos)
            m = max(int(counts.max()) if sel.numel() else 0, 1)
            rank = torch.arange(sel.numel()) - (torch.cumsum(counts, 0) - counts)[q]
            feature = torch.zeros(pos, m, dtype=torch.long)
            activation = torch.zeros(pos, m)
            column = torch.full((pos, m), spare, dtype=torch.long)
            feature[q, rank], activation[q, rank] = feats.feature[sel], feats.activation[sel]
            column[q, rank] = layout.features.start + sel
            slots.append(LayerSlots(feature.to(dev), activation.to(dev), column.flatten().to(dev)))
        return cls(clt, dtype, layout, slots, torch.cat(run.errors).detach())

    def columns(self, features: Int[Tensor, " k"]) -> Int[Tensor, " n"]:
        """Source columns of the embeddings, the given features (indices into the active
        features) and the errors, in that order."""
        lay = self.layout
        return torch.cat([torch.arange(lay.n_pos), lay.features.start + features.cpu(),
                          torch.arange(lay.errors.start, lay.errors.stop)])  # fmt: skip

    # ------------------------------------------------------------------ edges
    @torch.no_grad()
    def edges(
        self, outs: list[Tensor | None], emb_grads: list[Tensor], emb_values: list[Tensor]
    ) -> Float[Tensor, "batch n_sources"]:
        """Edges from every source into each target of a batch, given the targets' gradients
        at the MLP outputs of layers < len(outs) (`[batch, 1, pos, d]`, None: zero; the list is
        emptied as it is read, to free memory) and at the embedding leaves (whose values are
        `emb_values`, `[1, pos, d]`)."""
        lay = self.layout
        nb = emb_grads[0].shape[0]
        rows = torch.zeros(nb, lay.n_sources + 1, device=emb_grads[0].device)
        top = len(outs)
        if top:
            G = self._stack(outs)  # [pos, batch, top, d]
            self._feature_edges(rows, G)
            for layer in range(top):
                err = self._dot(G[:, :, layer], self.errors[layer])  # [batch, pos]
                rows[:, lay.error_slice(layer)] = err[:, 1:]
        for g, e in zip(emb_grads, emb_values):
            rows[:, lay.embeddings] += self._dot(g[:, 0].transpose(0, 1), e[0])
        return rows[:, :-1]

    def _stack(self, outs: list[Tensor | None]) -> Float[Tensor, "pos batch top d"]:
        """The gradients in one [pos, batch, layer, d] tensor of the compute dtype."""
        first = next(g for g in outs if g is not None)
        nb, _, pos, d = first.shape
        G = torch.zeros(pos, nb, len(outs), d, dtype=self.dtype, device=first.device)
        for layer, g in enumerate(outs):
            if g is not None:
                G[:, :, layer] = g[:, 0].transpose(0, 1)
            outs[layer] = None
        return G

    def _dot(self, g: Tensor, v: Tensor) -> Tensor:
        """[pos, batch, d] · [pos, d] -> [batch, pos], in the compute dtype, as float32."""
        return torch.einsum("qbd,qd->bq", g.to(self.dtype), v.to(self.dtype)).float()

    def _feature_edges(self, rows: Tensor, G: Tensor) -> None:
        clt, (pos, nb, top, d) = self.clt, G.shape
        G = G.view(pos, nb, top * d)
        for s in range(top):
            slot = self.slots[s]
            n_t = min(clt.n_targets(s), top - s)
            D = clt.decoder_rows(s, slot.feature.flatten(), n_t)  # [pos * m, n_t, d]
            D = D.to(self.dtype).reshape(pos, -1, n_t * d)
            out = torch.bmm(G[:, :, s * d : (s + n_t) * d], D.transpose(1, 2))  # [pos, batch, m]
            out = out.float() * slot.activation[:, None, :]
            rows[:, slot.column] = out.transpose(0, 1).reshape(nb, -1)
