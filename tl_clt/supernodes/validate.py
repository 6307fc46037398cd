"""Checking supernodes by intervention: ablate (or scale) every member of a group at its
position and compare the measured change of a target logit with what the grouped graph
predicts.

Two kinds of check (`how`):

- "total" (default): constrained mode (attention patterns, normalisation scales and error
  terms frozen at the prompt's values; every other feature free to respond). The grouped
  graph's prediction is `GroupedGraph.effect` (members of every unit move together); the node
  graph's `node_effect` (every feature on its own) is reported beside it. Both are linear
  predictions: they hold while no feature crosses its threshold (`linear` says whether the
  measured run stayed in that regime).
- "direct": constrained mode with every other feature held at its clean activation, so only
  direct paths act. The prediction is `(scale − 1) · G[target, group]`, the summed edges;
  it is exact for an unpruned graph whatever the regime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from tl_clt.errors import InputError
from tl_clt.graph import NodeKind
from tl_clt.interventions import Intervention, intervene
from tl_clt.supernodes.grouped import GroupedGraph
from tl_clt.targets import logit_direction

How = Literal["total", "direct"]


class SupernodeCheck(NamedTuple):
    name: str
    n_members: int
    predicted: float  # change of the target predicted by the grouped graph
    node_predicted: float  # ... by the node graph (members moving independently)
    measured: float  # ... measured by intervention
    linear: bool  # no other feature switched on or off in the measured run


@dataclass
class Validation:
    """Predicted vs measured changes of one target, one row per supernode, with summaries:
    Pearson correlation over the supernodes (nan for fewer than two or no spread) and the
    relative error Σ|predicted − measured| / Σ|measured|."""

    prompt: str
    target: str
    scale: float
    how: How
    checks: list[SupernodeCheck]

    @property
    def correlation(self) -> float:
        return _pearson([c.predicted for c in self.checks], [c.measured for c in self.checks])

    @property
    def relative_error(self) -> float:
        return _relative([c.predicted for c in self.checks], [c.measured for c in self.checks])

    @property
    def node_correlation(self) -> float:
        return _pearson([c.node_predicted for c in self.checks], [c.measured for c in self.checks])

    @property
    def node_relative_error(self) -> float:
        return _relative([c.node_predicted for c in self.checks], [c.measured for c in self.checks])

    def table(self) -> str:
        """A Markdown table of the checks and the summaries."""
        rows = [
            "| supernode | members | grouped graph | node graph | measured | linear |",
            "|---|---:|---:|---:|---:|:---:|",
        ]
        for c in self.checks:
            name = c.name.replace("|", "\\|")
            rows.append(f"| {name} | {c.n_members} | {c.predicted:+.4f} | {c.node_predicted:+.4f} "
                        f"| {c.measured:+.4f} | {'yes' if c.linear else 'no'} |")  # fmt: skip
        rows.append(
            f"\ncorrelation {self.correlation:.3f} (node graph {self.node_correlation:.3f}), "
            f"relative error {self.relative_error:.3f} (node graph {self.node_relative_error:.3f})"
        )
        return "\n".join(rows)

    def __str__(self) -> str:
        what = "ablated" if self.scale == 0 else f"scaled ×{self.scale:g}"
        return f"{self.prompt!r}: change of {self.target!r} with each supernode {what} " \
               f"({self.how} effect)\n{self.table()}"  # fmt: skip


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    if len(x) < 2:
        return math.nan
    a, b = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > 0 else math.nan


def _relative(pred: Sequence[float], meas: Sequence[float]) -> float:
    total = sum(abs(m) for m in meas)
    err = sum(abs(p - m) for p, m in zip(pred, meas))
    return err / total if total > 0 else math.nan


def validate_supernodes(
    replacement,
    grouped: GroupedGraph,
    *,
    target: int | None = None,
    scale: float = 0.0,
    how: How = "total",
    supernodes: Sequence[str] | None = None,
) -> Validation:
    """Intervene on each supernode of `grouped` (every member at its position set to `scale` ×
    its activation; 0 ablates) in `replacement` and compare the change of the logit node
    `target` (a node index; default: the most likely logit) with the predictions."""
    if how not in ("total", "direct"):
        raise InputError(f"how must be 'total' or 'direct', got {how!r}")
    graph = grouped.graph
    if target is None:
        logits = graph.indices(NodeKind.LOGIT)
        if not logits:
            raise InputError("the graph has no logit node")
        target = max(logits, key=lambda i: graph.nodes[i].weight)
    if graph.nodes[target].kind is not NodeKind.LOGIT:
        raise InputError(f"target {target} is not a logit node")
    direction = _direction(replacement, graph.nodes[target])
    names = [s.name for s in grouped.supernodes] if supernodes is None else list(supernodes)
    t_unit = int(grouped.unit_of[target])
    checks = []
    for name in names:
        u = grouped.supernode(name)
        members = grouped.units[u]
        ivs = [Intervention(n.layer, n.feature, n.position, scale=scale)
               for n in (graph.nodes[i] for i in members)]  # fmt: skip
        result = intervene(replacement, graph.tokens[None], ivs, mode="constrained",
                           freeze_features=how == "direct")  # fmt: skip
        d = direction.to(result.logits_after.dtype)
        measured = float((result.logits_after[-1] - result.logits_before[-1]) @ d)
        if how == "direct":
            pred = (scale - 1.0) * float(grouped.adjacency[t_unit, u])
            node_pred, linear = pred, True
        else:
            pred, node_pred = (
                grouped.effect(u, t_unit, scale),
                grouped.node_effect(u, t_unit, scale),
            )
            linear = _same_active_set(result, ivs)
        checks.append(SupernodeCheck(name, len(members), pred, node_pred, measured, linear))
    return Validation(graph.prompt, graph.nodes[target].shown_token, scale, how, checks)


def _direction(replacement, node) -> Tensor:
    """The logit node's direction on the last position's logits, from its token ids."""
    return logit_direction(node, replacement.lens.d_vocab, torch.float64)


def _same_active_set(result, interventions: Sequence[Intervention]) -> bool:
    """Whether every feature that was active stayed active and no other switched on, apart
    from the intervened ones."""
    for layer, (b, a) in enumerate(zip(result.features_before, result.features_after)):
        flipped = (b != 0) != (a != 0)
        for iv in interventions:
            if iv.layer == layer:
                flipped[iv.position, iv.feature] = False
        if bool(flipped.any()):
            return False
    return True
