"""How well a graph's edges predict what happens in the model itself.

An edge is exact in the local replacement model of its prompt: turning its source off with
every other feature held changes its target by minus the edge (`direct`). In the local
replacement model with the other features live, indirect paths add to that (`local`); in the
model itself, attention and normalisation respond too (`model`: the source's decoder writes are
taken out of the model's own MLP outputs, the other features and the error terms live, nothing
frozen). `faithfulness` measures the three for the strongest edges of a graph, so a claim drawn
from an edge can state how far the model agrees (Ameisen et al. 2025, "Circuit Tracing",
section "Evaluating and validating graphs", which reports such ablations against the graph's
prediction).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from tl_clt.errors import InputError
from tl_clt.graph import AttributionGraph, Node, NodeKind
from tl_clt.interventions import Intervention, run_interventions
from tl_clt.replacement import ReplacementModel

Where = Literal["direct", "local", "model"]


@dataclass(frozen=True)
class EdgeEffect:
    """What turning the feature node `source` off does to node `target` (indices into the
    graph's nodes): predicted by the graph (minus the edge) and measured three ways (see the
    module docstring)."""

    source: int
    target: int
    predicted: float
    direct: float
    local: float
    model: float


@dataclass(frozen=True)
class Faithfulness:
    """The measured edges of one graph, with their summaries."""

    prompt: str
    edges: list[EdgeEffect]

    def sign_agreement(self, where: Where = "model") -> float:
        """The fraction of edges whose measured change has the predicted sign."""
        pairs = [(e.predicted, getattr(e, where)) for e in self.edges]
        return sum((p > 0) == (m > 0) for p, m in pairs) / max(len(pairs), 1)

    def median_relative_error(self, where: Where = "model") -> float:
        """The median over edges of |measured - predicted| / |predicted|."""
        errors = [abs(getattr(e, where) - e.predicted) / abs(e.predicted) for e in self.edges]
        return statistics.median(errors) if errors else float("nan")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt": self.prompt, "n_edges": len(self.edges)}
        for where in ("direct", "local", "model"):
            out[f"{where}_sign_agreement"] = self.sign_agreement(where)
            out[f"{where}_median_relative_error"] = self.median_relative_error(where)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "edges": [asdict(e) for e in self.edges]}

    def __str__(self) -> str:
        s = self.summary()
        lines = [f"{s['n_edges']} edges of {self.prompt!r}: turning each source feature off"]
        for where, what in (("direct", "every other feature held (the graph's definition)"),
                            ("local", "local replacement model, other features live"),
                            ("model", "the model itself, nothing frozen")):  # fmt: skip
            lines.append(
                f"  {where:<6} sign agrees {s[f'{where}_sign_agreement']:6.1%}, median relative "
                f"error {s[f'{where}_median_relative_error']:.3f}  ({what})"
            )
        return "\n".join(lines)


def faithfulness(
    replacement: ReplacementModel,
    graph: AttributionGraph,
    *,
    sources: Sequence[int] | None = None,
    targets: Sequence[int] | None = None,
    n_sources: int = 10,
) -> Faithfulness:
    """Turn off each source feature node at its position and measure every target's change
    directly, in the local replacement model and in the model (see the module docstring).
    `targets` default to the graph's logit nodes; `sources` to the `n_sources` feature nodes
    with the largest total |edge| into the targets. Each edge (source, target) with a nonzero
    weight is reported; a target is a logit node (its logit minus the mean logit, or a logit
    difference) or a feature node (its pre-activation)."""
    nodes = graph.nodes
    if targets is None:
        targets = [i for i, n in enumerate(nodes) if n.kind is NodeKind.LOGIT]
    A = graph.adjacency.double()
    for i in targets:
        if nodes[i].kind not in (NodeKind.LOGIT, NodeKind.FEATURE):
            raise InputError(f"target node {i} is a {nodes[i].kind.value} node; give logit or "
                             "feature nodes")  # fmt: skip
    features = [i for i, n in enumerate(nodes) if n.kind is NodeKind.FEATURE]
    if sources is None:
        strength = A[list(targets)][:, features].abs().sum(0)
        order = strength.argsort(descending=True)[:n_sources].tolist()
        sources = [features[j] for j in order if float(strength[j]) > 0]
    for i in sources:
        if nodes[i].kind is not NodeKind.FEATURE:
            raise InputError(f"source node {i} is a {nodes[i].kind.value} node; only features "
                             "are turned off")  # fmt: skip
    tokens = graph.tokens[None].to(replacement.lens.device)
    run = replacement.capture(tokens)
    modes = {"direct": {"mode": "constrained", "freeze_features": True},
             "local": {"mode": "constrained"}, "model": {"mode": "unconstrained"}}  # fmt: skip
    clean = {w: _values(replacement, tokens, (), nodes, targets, run, kw)
             for w, kw in modes.items()}  # fmt: skip
    edges = []
    for s in sources:
        n = nodes[s]
        off = (Intervention(n.layer, n.feature, position=n.position, value=0.0),)
        after = {w: _values(replacement, tokens, off, nodes, targets, run, kw)
                 for w, kw in modes.items()}  # fmt: skip
        for j, t in enumerate(targets):
            weight = float(A[t, s])
            if weight == 0.0:
                continue
            change = {w: after[w][j] - clean[w][j] for w in modes}
            edges.append(EdgeEffect(s, t, -weight, **change))
    return Faithfulness(graph.prompt, edges)


def _values(
    rm: ReplacementModel,
    tokens: torch.Tensor,
    interventions: Sequence[Intervention],
    nodes: list[Node],
    targets: Sequence[int],
    run: Any,
    kw: dict[str, Any],
) -> list[float]:
    """The targets' values (as the graph defines them) in one run with `interventions`."""
    logits, state = run_interventions(rm, tokens, interventions, error=True, run=run, **kw)
    last = logits[0, -1].double()
    out = []
    for t in targets:
        n = nodes[t]
        if n.kind is NodeKind.FEATURE:
            out.append(float(state.pre[n.layer][0, n.position, n.feature]))
        elif n.negative_id is not None:
            out.append(float(last[n.token_id] - last[n.negative_id]))
        else:
            out.append(float(last[n.token_id] - last.mean()))
    return out
