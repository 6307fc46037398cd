"""Feature-to-feature effects: change a source feature (or a group) and rank the change it
causes in every later active feature's pre-activation and in the target logits.

A relationship between two features is tested by changing the earlier one and measuring the
later one, as the interventions of Lindsey et al. 2025 ("On the Biology of a Large Language
Model") do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from tl_clt.graph import AttributionGraph, NodeKind
from tl_clt.interventions import Intervention, Mode, paired_runs
from tl_clt.replacement import ReplacementModel, check_call
from tl_clt.targets import token_id
from tl_clt.tokenization import visible


class FeatureEffect(NamedTuple):
    layer: int
    position: int
    feature: int
    pre_before: float
    pre_after: float
    act_before: float
    act_after: float

    @property
    def delta_pre(self) -> float:
        return self.pre_after - self.pre_before

    @property
    def delta_act(self) -> float:
        return self.act_after - self.act_before


class LogitEffect(NamedTuple):
    token: str  # the token's decoded text (`Lens.vocabulary`)
    token_id: int
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass
class Effects:
    """Measured effects of `sources` on later features (ranked by |Δ pre-activation|) and on
    the target logits at the last position (ranked by |Δ logit|)."""

    sources: tuple[Intervention, ...]
    mode: Mode
    freeze_features: bool
    features: list[FeatureEffect]
    logits: list[LogitEffect]
    logit_mean: tuple[float, float]  # mean logit at the last position, before and after

    def __str__(self) -> str:
        lines = [
            f"effects ({self.mode}{', other features frozen' if self.freeze_features else ''}):"
        ]
        for e in self.features[:10]:
            lines.append(
                f"  feature {e.layer}:{e.feature}@{e.position}  pre {e.pre_before:+.3f} -> "
                f"{e.pre_after:+.3f} (Δ {e.delta_pre:+.3f})"
            )
        for e in self.logits[:5]:
            lines.append(
                f"  logit {visible(e.token)!r}: {e.before:+.3f} -> {e.after:+.3f} (Δ {e.delta:+.3f})"
            )
        return "\n".join(lines)


def feature_effects(
    rm: ReplacementModel | Any,  # checked in the body: a wrong order is an InputError
    prompt: str | torch.Tensor | Any,
    sources: Intervention | Sequence[Intervention],
    *,
    mode: Mode = "constrained",
    freeze_features: bool = False,
    error: bool = True,
    targets: Sequence[str | int] | None = None,
    n_targets: int = 10,
    min_change: float = 1e-6,
) -> Effects:
    """Change `sources` and measure every later feature that is active (before or after) and
    the target logits (`targets`, or the clean run's `n_targets` most likely tokens)."""
    check_call("feature_effects", rm, prompt)
    if isinstance(sources, Intervention):
        sources = [sources]
    sources = tuple(sources)
    pair = paired_runs(rm, prompt, sources, mode=mode, error=error, freeze_features=freeze_features)
    logits_b, logits_a, before, after = (
        pair.logits_before,
        pair.logits_after,
        pair.before,
        pair.after,
    )
    first = min(s.layer for s in sources)
    touched = {(s.layer, s.feature) for s in sources}
    effects = []
    for layer in range(first, rm.n_layers):
        pb, pa = before.pre[layer][0], after.pre[layer][0]
        ab, aa = before.features[layer][0], after.features[layer][0]
        live = ((ab != 0) | (aa != 0)) & ((pa - pb).abs() > min_change)
        for p, f in zip(*[t.tolist() for t in torch.nonzero(live, as_tuple=True)]):
            if (layer, f) in touched:
                continue
            effects.append(
                FeatureEffect(
                    layer, p, f, float(pb[p, f]), float(pa[p, f]), float(ab[p, f]), float(aa[p, f])
                )
            )
    effects.sort(key=lambda e: -abs(e.delta_pre))
    vocab = rm.lens.vocabulary()
    last_b, last_a = logits_b[0, -1], logits_a[0, -1]
    if targets is None:
        ids = last_b.topk(n_targets).indices.tolist()
    else:
        if isinstance(targets, str | int):  # one token, not a sequence of characters
            targets = [targets]
        ids = [token_id(rm.lens, t, last_b.shape[-1]) for t in targets]
    logit_effects = [LogitEffect(vocab[i], i, float(last_b[i]), float(last_a[i])) for i in ids]
    logit_effects.sort(key=lambda e: -abs(e.delta))
    means = (float(last_b.float().mean()), float(last_a.float().mean()))
    return Effects(sources, mode, freeze_features, effects, logit_effects, means)


class Comparison(NamedTuple):
    """One target node of a graph: its measured change and the graph's predictions."""

    node: int  # index into graph.nodes
    measured_direct: float  # change with every other feature frozen
    measured_total: float  # change with later features responding
    predicted_direct: float  # Σ edge / source activation × source change
    predicted_total: float  # the same through every path of active features (linearised)


def compare_with_graph(
    rm: ReplacementModel, graph: AttributionGraph, sources: Intervention | Sequence[Intervention]
) -> list[Comparison]:
    """Measure the effect of `sources` on every feature and token-logit node of `graph` in the
    constrained (local replacement) model, and set it beside the graph's predictions: direct
    (the edges times the change) and total (propagated through the graph's active features,
    whose activations move one-for-one with their pre-activations while they stay active).
    Logit nodes compare the change of logit minus mean logit, the quantity their edges hold."""
    if isinstance(sources, Intervention):
        sources = [sources]
    tokens = graph.tokens[None].to(rm.lens.device)
    logit_ids = [n.token_id for n in graph.nodes if n.kind is NodeKind.LOGIT and _token_logit(n)]
    measured = {
        frozen: feature_effects(rm, tokens, sources, mode="constrained",
                                freeze_features=frozen, targets=logit_ids, min_change=0.0)
        for frozen in (True, False)
    }  # fmt: skip
    feat_idx = graph.indices(NodeKind.FEATURE)
    act = torch.tensor([graph.nodes[i].activation for i in feat_idx], dtype=torch.float64)
    change = torch.zeros(len(feat_idx), dtype=torch.float64)
    is_source = torch.zeros(len(feat_idx), dtype=torch.bool)
    n_tokens = graph.tokens.shape[-1]
    for k, i in enumerate(feat_idx):
        node = graph.nodes[i]
        for iv in sources:
            if (
                iv.layer == node.layer
                and iv.feature == node.feature
                and node.position in iv.positions(n_tokens, n_tokens)
            ):
                new = (
                    act[k] * iv.scale
                    if iv.scale is not None
                    else torch.tensor(iv.value, dtype=torch.float64)
                )
                change[k], is_source[k] = new - act[k], True
    A = graph.adjacency.double()
    per_unit = A[:, feat_idx] / act.clamp(min=1e-12)  # effect per unit of source activation
    direct = per_unit @ change
    total_change = change.clone()
    for _ in range(graph.info.n_layers + 1):  # edges go from lower to higher layers: nilpotent
        total_change = torch.where(is_source, change, per_unit[feat_idx] @ total_change)
    total = per_unit @ total_change
    return _comparisons(rm, graph, measured, direct, total)


def _comparisons(rm, graph, measured, direct, total) -> list[Comparison]:
    feats, logits = {}, {}
    for frozen, fx in measured.items():
        shift = fx.logit_mean[1] - fx.logit_mean[0]
        for e in fx.features:
            feats[(frozen, e.layer, e.position, e.feature)] = e.delta_pre
        for e in fx.logits:
            logits[(frozen, e.token_id)] = e.delta - shift
    out = []
    for i, node in enumerate(graph.nodes):
        if node.kind is NodeKind.FEATURE:
            key = (node.layer, node.position, node.feature)
        elif node.kind is NodeKind.LOGIT and _token_logit(node):
            key = (node.token_id,)
        else:
            continue
        table = feats if node.kind is NodeKind.FEATURE else logits
        got = [table.get((frozen, *key), 0.0) for frozen in (True, False)]
        out.append(Comparison(i, got[0], got[1], float(direct[i]), float(total[i])))
    return out


def _token_logit(node) -> bool:
    """A logit node of one token (not a logit difference)."""
    return node.token_id is not None and not node.is_difference
