"""`GroupedGraph`: an attribution graph whose feature nodes are gathered into supernodes, with
edges summed over the members of each group.

Conventions (docs/graphs.md):

- A *unit* is a supernode or a node that belongs to none. Units are listed supernodes first
  (in `supernodes` order), then every other node in node-table order; `unit_of[i]` is node
  i's unit.
- Edges: `adjacency[I, J] = Σ_{i∈I} Σ_{j∈J} A[i, j]`, summed over the members on both ends and
  signed. Each edge of the node graph is the direct effect of its source's whole activation on
  its target's pre-activation, and direct effects add, so a grouped edge is the direct effect
  of all of J on the sum of I's pre-activations. Edges between two members of one group are
  not an edge of the grouped graph (it stays free of self-loops); their sum is `internal[I]`.
- A unit's activation is the sum of its members' activations.
- Influence of a unit: the node-influence formula applied to the grouped graph, `w (Ĝ + Ĝ² +
  ...)` with Ĝ = |G| row-normalised: the share of the logits' input that flows through the
  unit as a whole. It is not the sum of the members' influences (`member_influence`), which
  counts twice a path that runs through two members, and keeps the cancellation between
  members' edges of opposite sign that the summed edge removes.
- Linear propagation (`effect`): turning a unit to `scale` × its activation is predicted in the
  linear regime (no feature crosses its threshold, each active feature's activation follows
  its pre-activation one for one) by assuming every member of a unit changes by the same
  fraction r_I of its activation: `r_I a_I = Σ_{J≠I} G[I, J] r_J + internal_I r_I` for every
  free feature unit, r fixed for the changed unit, 0 for embeddings and errors. For singleton
  units this is exact in the linear regime; for supernodes it is what the grouped graph
  claims: that the members move together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_clt import prune as P
from tl_clt.errors import InputError
from tl_clt.graph import AttributionGraph, NodeKind


class Supernode(NamedTuple):
    """A named group of feature nodes (indices into the grouped graph's node table)."""

    name: str
    members: tuple[int, ...]
    auto: bool = True  # made by clustering (False: given by the user)


@dataclass(eq=False)
class GroupedGraph:
    """`graph` with its feature nodes grouped into `supernodes` (see the module docstring)."""

    graph: AttributionGraph
    supernodes: list[Supernode]
    units: list[tuple[int, ...]] = field(init=False)
    unit_of: Int[Tensor, " n_nodes"] = field(init=False)
    adjacency: Float[Tensor, "n_units n_units"] = field(init=False)
    internal: Float[Tensor, " n_units"] = field(init=False)

    def __post_init__(self) -> None:
        n = self.graph.n_nodes
        seen: set[int] = set()
        for s in self.supernodes:
            check_members(self.graph, s)
            if seen & set(s.members):
                raise InputError(f"supernode {s.name!r} shares nodes with another supernode")
            seen |= set(s.members)
        self.units = [s.members for s in self.supernodes] + [
            (i,) for i in range(n) if i not in seen
        ]
        self.unit_of = torch.empty(n, dtype=torch.long)
        for u, members in enumerate(self.units):
            self.unit_of[list(members)] = u
        M = self.membership()
        full = M @ self.graph.adjacency.to(M.dtype) @ M.T
        self.internal = torch.diagonal(full).clone()
        self.adjacency = full - torch.diag(self.internal)

    # ------------------------------------------------------------------ tables
    @property
    def n_units(self) -> int:
        return len(self.units)

    def membership(self) -> Float[Tensor, "n_units n_nodes"]:
        """M[u, i] = 1 when node i belongs to unit u (so G = M A Mᵀ, diagonal aside)."""
        M = torch.zeros(len(self.units), self.graph.n_nodes, dtype=self.graph.adjacency.dtype)
        M[self.unit_of, torch.arange(self.graph.n_nodes)] = 1.0
        return M

    def supernode(self, name: str) -> int:
        """The unit index of the supernode called `name`."""
        for u, s in enumerate(self.supernodes):
            if s.name == name:
                return u
        raise InputError(f"no supernode named {name!r}; have {[s.name for s in self.supernodes]}")

    def unit_name(self, u: int) -> str:
        if u < len(self.supernodes):
            return self.supernodes[u].name
        return self.graph.nodes[self.units[u][0]].label()

    def unit_kind(self, u: int) -> NodeKind:
        return self.graph.nodes[self.units[u][0]].kind

    @property
    def activation(self) -> Float[Tensor, " n_units"]:
        """Summed member activations (0 for nodes without one)."""
        acts = torch.tensor([n.activation or 0.0 for n in self.graph.nodes], dtype=torch.float64)
        return self.membership().double() @ acts

    @property
    def logit_weights(self) -> Float[Tensor, " n_units"]:
        return self.membership() @ self.graph.logit_weights

    # ------------------------------------------------------------------ influence
    def influence(self) -> Float[Tensor, " n_units"]:
        """Each unit's influence on the logits in the grouped graph (module docstring). A
        grouped graph with a cycle (manual groups whose members interleave with another
        group's layers) is solved as (I − Ĝ)ᵀ x = Ĝᵀ w when that system is regular."""
        Ghat, w = P.normalise(self.adjacency.double()), self.logit_weights.double()
        try:
            return P.influence(Ghat, w).to(self.adjacency.dtype)
        except InputError:
            eye = torch.eye(self.n_units, dtype=torch.float64)
            try:
                x = torch.linalg.solve((eye - Ghat).T, Ghat.T @ w)
            except RuntimeError as exc:
                raise InputError(
                    "the grouped graph has a cycle through which influence does not converge; "
                    "regroup so that no supernode's layers interleave with another's"
                ) from exc
            return x.to(self.adjacency.dtype)

    def member_influence(self) -> Float[Tensor, " n_units"]:
        """The sum of each unit's members' influences in the node graph."""
        return self.membership() @ self.graph.influence().influence

    # ------------------------------------------------------------------ linear predictions
    def effect(self, unit: int, target: int, scale: float = 0.0) -> float:
        """Predicted change of unit `target` (a logit, or a feature unit's summed activation)
        when unit `unit` is set to `scale` × its activation (0: ablated), in the linear
        regime, from the grouped graph alone (module docstring)."""
        if unit == target:
            raise InputError("the changed unit and the target must differ")
        G = self.adjacency.double() + torch.diag(self.internal.double())
        free = [u for u in range(self.n_units) if self.unit_kind(u) is NodeKind.FEATURE]
        return linear_effect(G, self.activation, free, unit, target, scale)

    def node_effect(self, unit: int, target: int, scale: float = 0.0) -> float:
        """The same prediction from the node graph (every member moving on its own)."""
        graph = self.graph
        free = graph.indices(NodeKind.FEATURE)
        members = list(self.units[unit])
        acts = torch.tensor([n.activation or 0.0 for n in graph.nodes], dtype=torch.float64)
        t = self.units[target]
        deltas = [
            linear_effect(graph.adjacency.double(), acts, free, members, i, scale) for i in t
        ]  # fmt: skip
        return float(sum(deltas))


def check_members(graph: AttributionGraph, s: Supernode) -> None:
    if not s.members:
        raise InputError(f"supernode {s.name!r} has no members")
    if len(set(s.members)) != len(s.members):
        raise InputError(f"supernode {s.name!r} lists a node twice")
    for i in s.members:
        if not 0 <= i < graph.n_nodes:
            raise InputError(f"supernode {s.name!r}: node {i} is not in the graph")
        if graph.nodes[i].kind is not NodeKind.FEATURE:
            raise InputError(
                f"supernode {s.name!r}: node {i} ({graph.nodes[i].label()}) is not a feature; "
                "supernodes group feature nodes only"
            )


def linear_effect(
    G: Float[Tensor, "n n"],
    activation: Float[Tensor, " n"],
    free: Sequence[int],
    changed: int | Sequence[int],
    target: int,
    scale: float,
) -> float:
    """Change of node `target` when the nodes `changed` go to `scale` × their activation, the
    `free` nodes (features) respond linearly and every other node is held: the fractional
    changes r solve `r_i a_i = Σ_j G[i, j] r_j` over the free nodes, with r = scale − 1 on the
    changed ones and 0 elsewhere; the target changes by `Σ_j G[t, j] r_j` (a logit) or
    `r_t a_t` (a free node)."""
    changed = [changed] if isinstance(changed, int) else list(changed)
    n = G.shape[0]
    r = torch.zeros(n, dtype=torch.float64)
    r[changed] = scale - 1.0
    free = [i for i in free if i not in set(changed)]
    if free:
        idx = torch.tensor(free)
        a = activation.double()[idx]
        system = torch.diag(a) - G[idx][:, idx]
        rhs = G[idx] @ r
        try:
            r[idx] = torch.linalg.solve(system, rhs)
        except RuntimeError:  # a singular system (a grouped graph with a cycle)
            r[idx] = torch.linalg.lstsq(system, rhs[:, None]).solution[:, 0]
    if target in free:
        return float(r[target] * activation[target])
    return float(G[target] @ r)
