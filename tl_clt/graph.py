"""`AttributionGraph`: the direct-effect graph of one prompt in its local replacement model.

Nodes are listed explicitly in a node table (`graph.nodes`, one `Node` per row: kind, layer,
position, feature id, token, activation), never by an implied order; `graph.adjacency[i, j]` is
the direct effect of source node j on target node i (rows of embeddings and errors are zero,
they have no inputs). Pruning and scores come from the pure functions in `tl_clt.prune`; files
are a safetensors file (adjacency, tokens, and the node table in its header) beside a readable
JSON copy of the node table: replacing the one safetensors file replaces the graph whole, so
a reader never sees the tensors of one graph with the nodes of another.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float, Int
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from tl_clt import prune as P
from tl_clt._files import atomic_write, atomic_write_text, clean_temporaries, locked
from tl_clt.errors import CheckpointError, InputError
from tl_clt.tokenization import visible

FORMAT = "tl_clt.graph/1"
TENSORS_FILE = "graph.safetensors"
NODES_FILE = "graph.json"


class NodeKind(str, Enum):
    EMBEDDING = "embedding"
    FEATURE = "feature"
    ERROR = "error"
    LOGIT = "logit"


class Node(NamedTuple):
    """One row of the node table. Fields that do not apply to a kind are None.

    layer: the transcoder layer of a feature (where it reads) or an error node.
    feature: a feature's index within its layer's dictionary.
    token_id: the input token of an embedding node; the output token of a logit node (the
        positive token of a logit difference).
    negative_id: a logit difference's negative token (None for every other node), so a logit
        node's direction is `token_id` (minus `negative_id`) without parsing its label.
    token: the decoded text of the input token at `position` (" Paris", never a vocabulary
        symbol such as "ĠParis"), or of a logit node's output token ("a - b" for a logit
        difference, each side shown with `visible`; a label for people, not to be parsed).
    activation: a feature's activation; an error node's error-vector norm; a logit node's
        target value (its logit minus the mean logit, or the logit difference).
    probability: a logit node's softmax probability (None for a logit difference).
    """

    kind: NodeKind
    position: int
    layer: int | None = None
    feature: int | None = None
    token_id: int | None = None
    token: str = ""
    activation: float | None = None
    probability: float | None = None
    negative_id: int | None = None

    @property
    def is_difference(self) -> bool:
        """A logit difference target (`token_id` minus `negative_id`)."""
        return self.kind is NodeKind.LOGIT and self.negative_id is not None

    @property
    def weight(self) -> float:
        """The node's weight as an output in influence: a logit's probability (1 for a logit
        difference); 0 for every other node."""
        if self.kind is not NodeKind.LOGIT:
            return 0.0
        return 1.0 if self.probability is None else self.probability

    @property
    def shown_token(self) -> str:
        """The token as people are shown it: its text with whitespace made visible (" Paris"
        is "␣Paris"; `tl_clt.tokenization.visible`). A logit difference's name is already
        built from the two shown tokens."""
        return self.token if self.is_difference else visible(self.token)

    def label(self) -> str:
        """A short description for people: kind, place and the shown token."""
        tok = repr(self.shown_token)
        if self.kind is NodeKind.FEATURE:
            return f"L{self.layer}/F{self.feature}@{self.position} {tok}"
        if self.kind is NodeKind.ERROR:
            return f"err L{self.layer}@{self.position} {tok}"
        if self.kind is NodeKind.EMBEDDING:
            return f"emb@{self.position} {tok}"
        return f"logit {tok}"


@dataclass(frozen=True)
class GraphInfo:
    """What a graph was built from and how: model, transcoder, budget, pruning."""

    model: str
    n_layers: int
    transcoder: str  # e.g. "cross_layer/jumprelu, 1024 features"
    n_features: int
    n_active_features: int  # active (layer, position, feature) triples, position 0 left out
    max_feature_nodes: int | None = None
    d_vocab: int | None = None
    prune_spec: P.PruneSpec | None = None  # set on pruned graphs: how they were pruned
    # of a pruned graph: its scores as it stands (its own edges, normalised anew; what
    # circuit-tracer's compute_graph_scores gives on a pruned adjacency)
    replacement_score: float | None = None
    completeness_score: float | None = None
    # of a pruned graph, measured in its parent: what pruning dropped counts as error, so these
    # say how much of the parent's answer the pruned graph accounts for
    replacement_score_strict: float | None = None
    completeness_score_strict: float | None = None
    # what `attribute`'s check measured (tl_clt._check): tolerance, logit_error,
    # linearity_error, sources; None when the graph was not checked (check=False)
    checks: dict[str, Any] | None = None

    @property
    def node_threshold(self) -> float | None:
        return None if self.prune_spec is None else self.prune_spec.node_threshold

    @property
    def edge_threshold(self) -> float | None:
        return None if self.prune_spec is None else self.prune_spec.edge_threshold


class NodeLayout(NamedTuple):
    """Where each kind of node sits in an unpruned graph's node order (and, without the
    logits, in the source columns of attribution): embeddings (one per position), features
    (the active features in table order, or the visited ones), errors (layer-major, positions
    1.. : position 0, the BOS, has none), logits."""

    n_pos: int
    n_features: int
    n_layers: int
    n_logits: int = 0

    @property
    def embeddings(self) -> slice:
        return slice(0, self.n_pos)

    @property
    def features(self) -> slice:
        return slice(self.n_pos, self.n_pos + self.n_features)

    @property
    def errors(self) -> slice:
        return slice(self.features.stop, self.features.stop + self.n_layers * (self.n_pos - 1))

    @property
    def logits(self) -> slice:
        return slice(self.n_sources, self.n_sources + self.n_logits)

    @property
    def n_sources(self) -> int:
        """Nodes that are sources of edges: embeddings, features and errors."""
        return self.errors.stop

    @property
    def n_nodes(self) -> int:
        return self.logits.stop

    def error_slice(self, layer: int) -> slice:
        """The error nodes of `layer` (positions 1..n_pos-1)."""
        start = self.errors.start + layer * (self.n_pos - 1)
        return slice(start, start + self.n_pos - 1)

    def error_nodes(self) -> list[tuple[int, int]]:
        """(layer, position) of each error node, in node order."""
        return [(layer, q) for layer in range(self.n_layers) for q in range(1, self.n_pos)]

    def with_features(self, n_features: int, n_logits: int | None = None) -> NodeLayout:
        return self._replace(
            n_features=n_features, n_logits=self.n_logits if n_logits is None else n_logits
        )


@dataclass(eq=False)
class AttributionGraph:
    """Nodes, the dense adjacency [target, source] and where the graph came from.

    `original_index[i]` is node i's index in the unpruned graph (None for an unpruned graph).
    """

    prompt: str
    tokens: Int[Tensor, " pos"]
    nodes: list[Node]
    adjacency: Float[Tensor, "n_nodes n_nodes"]
    info: GraphInfo
    original_index: Int[Tensor, " n_nodes"] | None = None
    _kinds: Tensor | None = field(default=None, repr=False, compare=False)
    # the graph this one was pruned from (in memory only: None for a graph read from files)
    parent: AttributionGraph | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.nodes)
        if tuple(self.adjacency.shape) != (n, n):
            raise InputError(f"adjacency {tuple(self.adjacency.shape)} does not fit {n} nodes")

    # ------------------------------------------------------------------ node table
    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    def mask(self, *kinds: NodeKind) -> Tensor:
        """Boolean mask of the nodes of the given kinds."""
        if self._kinds is None:
            order = list(NodeKind)
            self._kinds = torch.tensor([order.index(n.kind) for n in self.nodes], dtype=torch.long)
        wanted = torch.tensor([list(NodeKind).index(k) for k in kinds], dtype=torch.long)
        return torch.isin(self._kinds, wanted)

    @property
    def layout(self) -> NodeLayout:
        """Where each kind of node sits in this graph (an unpruned one, whose node table
        follows the layout; a pruned graph keeps some nodes of each kind and has none)."""
        if self.original_index is not None:
            raise InputError("a pruned graph has no node layout; map its nodes with original_index")
        count = {k: int(self.mask(k).sum()) for k in NodeKind}
        n_pos = count[NodeKind.EMBEDDING]
        n_layers = count[NodeKind.ERROR] // max(n_pos - 1, 1)
        layout = NodeLayout(n_pos, count[NodeKind.FEATURE], n_layers, count[NodeKind.LOGIT])
        kinds = [NodeKind.EMBEDDING, NodeKind.FEATURE, NodeKind.ERROR, NodeKind.LOGIT]
        spans = [layout.embeddings, layout.features, layout.errors, layout.logits]
        if any(n.kind is not k for k, sl in zip(kinds, spans) for n in self.nodes[sl]):
            raise InputError("this graph's node table does not follow the node layout")
        return layout

    def indices(self, kind: NodeKind) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.kind is kind]

    @property
    def logit_weights(self) -> Float[Tensor, " n_nodes"]:
        return torch.tensor([n.weight for n in self.nodes], dtype=self.adjacency.dtype)

    def find(self, kind: NodeKind, **fields: Any) -> int:
        """Index of the one node of `kind` whose fields equal `fields` (e.g. layer=, position=)."""
        hits = [
            i for i, n in enumerate(self.nodes)
            if n.kind is kind and all(getattr(n, k) == v for k, v in fields.items())
        ]  # fmt: skip
        if len(hits) != 1:
            raise InputError(f"{len(hits)} {kind.value} nodes match {fields}")
        return hits[0]

    def __repr__(self) -> str:
        counts = ", ".join(f"{int(self.mask(k).sum())} {k.value}" for k in NodeKind)
        return f"AttributionGraph({self.prompt!r}: {counts}; {self.info.transcoder})"

    # ------------------------------------------------------------------ analysis
    def influence(self) -> P.Influence:
        """Each node's influence on the logit targets (`tl_clt.prune.node_influence`)."""
        return P.node_influence(self.adjacency, self.logit_weights)

    def scores(self, features: Iterable[int] | None = None) -> P.Scores:
        """Replacement and completeness scores of this graph as it stands; with `features`
        (indices of some of its feature nodes, e.g. a circuit or its supernodes' members), the
        scores of those features alone: every other feature's share of its targets' input counts
        as error (tokens, errors and logits stay), so they say how much of the answer the chosen
        features account for."""
        is_error, is_token = self.mask(NodeKind.ERROR), self.mask(NodeKind.EMBEDDING)
        if features is None:
            return P.scores(self.adjacency, self.logit_weights, is_error, is_token)
        chosen = [int(i) for i in features]
        is_feature = self.mask(NodeKind.FEATURE)
        wrong = [i for i in chosen if not 0 <= i < self.n_nodes or not is_feature[i]]
        if wrong:
            raise InputError(
                f"scores(features=...) takes indices of this graph's feature nodes; {wrong[:5]} "
                f"are not (use graph.indices(NodeKind.FEATURE), or map a pruned graph's nodes "
                f"with its original_index)"
            )
        keep = ~is_feature
        keep[chosen] = True
        return P.scores(self.adjacency, self.logit_weights, is_error, is_token, keep)

    def prune(
        self,
        node_threshold: float | P.PruneSpec = 0.8,
        edge_threshold: float | None = None,
        rank_always_kept: bool | None = None,
    ) -> AttributionGraph:
        """The graph pruned by node then edge influence (`tl_clt.prune.prune`), given a
        `PruneSpec` or its fields (default 0.8, 0.98, True; with `rank_always_kept=False` the
        node threshold is measured against the features' and errors' influence only). The
        pruned graph records its original node indices, its `parent` (this graph, in memory)
        and, in `info`, its `prune_spec` and two pairs of scores: `replacement_score` /
        `completeness_score` of the pruned graph as it stands, and `*_strict`, where what
        pruning dropped counts as error. Pages and exports show a pruned graph as it is."""
        spec = prune_spec(node_threshold, edge_threshold, rank_always_kept)
        if spec.rank_always_kept is None:
            raise InputError(
                "this PruneSpec does not say whether the node threshold ranks the always-kept "
                "nodes (a pruned graph saved before that was recorded); set rank_always_kept"
            )
        w = self.logit_weights
        is_error, is_token = self.mask(NodeKind.ERROR), self.mask(NodeKind.EMBEDDING)
        result = P.prune(
            self.adjacency,
            w,
            always_keep=self.mask(NodeKind.EMBEDDING, NodeKind.LOGIT),
            needs_input=self.mask(NodeKind.FEATURE),
            node_threshold=spec.node_threshold,
            edge_threshold=spec.edge_threshold,
            rank_always_kept=spec.rank_always_kept,
        )
        strict = P.scores(self.adjacency, w, is_error, is_token, result.node_mask, result.edge_mask)
        sub = P.subgraph(self.adjacency, result.node_mask, result.edge_mask)
        own = P.scores(sub.adjacency, w[sub.index], is_error[sub.index], is_token[sub.index])
        index = sub.index if self.original_index is None else self.original_index[sub.index]
        info = dataclasses.replace(
            self.info,
            prune_spec=spec,
            replacement_score=own.replacement,
            completeness_score=own.completeness,
            replacement_score_strict=strict.replacement,
            completeness_score_strict=strict.completeness,
        )
        nodes = [self.nodes[i] for i in sub.index.tolist()]
        return AttributionGraph(
            self.prompt, self.tokens, nodes, sub.adjacency, info, index, parent=self
        )

    def positions_in(self, other: AttributionGraph) -> Int[Tensor, " n_nodes"]:
        """Each of this graph's nodes' index in `other`, a graph it was pruned from (directly
        or not)."""
        if self.original_index is None:
            if other.original_index is None and other.n_nodes == self.n_nodes:
                return torch.arange(self.n_nodes)
            raise InputError("that graph is not a graph this one was pruned from")
        theirs = (
            torch.arange(other.n_nodes) if other.original_index is None else other.original_index
        ).tolist()
        where = {orig: i for i, orig in enumerate(theirs)}
        try:
            return torch.tensor([where[o] for o in self.original_index.tolist()], dtype=torch.long)
        except KeyError:
            raise InputError("that graph is not a graph this one was pruned from") from None

    def kept_influence(self, pruned: AttributionGraph) -> P.KeptInfluence:
        """How much of this graph's feature influence `pruned` (one of its prunings) keeps,
        and the tokens' share of all influence (`tl_clt.prune.kept_influence`)."""
        if pruned.original_index is None:
            raise InputError("kept_influence needs a pruned graph (from graph.prune())")
        kept = torch.zeros(self.n_nodes, dtype=torch.bool)
        try:
            kept[pruned.positions_in(self)] = True
        except InputError:
            raise InputError("that graph is not a pruning of this one") from None
        return P.kept_influence(
            self.influence().influence,
            self.logit_weights,
            kept,
            is_feature=self.mask(NodeKind.FEATURE),
            is_token=self.mask(NodeKind.EMBEDDING),
        )

    def top_paths(self, k: int = 5, target: int | None = None) -> list[P.Path]:
        """The k strongest paths from an input node (embedding or error) to `target` (default:
        the most likely logit), each scored by the product of its normalised edge weights."""
        if target is None:
            logits = self.indices(NodeKind.LOGIT)
            if not logits:
                raise InputError("the graph has no logit node")
            target = max(logits, key=lambda i: self.nodes[i].weight)
        return P.top_paths(self.adjacency, target, k)

    # ------------------------------------------------------------------ files
    def save(self, directory: str | os.PathLike) -> Path:
        """Write `graph.safetensors` (adjacency, tokens, and the node table, prompt and info in
        its header), then `graph.json` (a readable copy of the node table) into `directory`. A
        failed or interrupted save leaves the previous graph or the new one; saves into one
        directory take turns."""
        directory = Path(directory)
        tensors = {"adjacency": self.adjacency.detach().float().cpu().contiguous(),
                   "tokens": self.tokens.detach().long().cpu().contiguous()}  # fmt: skip
        if self.original_index is not None:
            tensors["original_index"] = self.original_index.long().cpu().contiguous()
        record = {
            "format": FORMAT,
            "prompt": self.prompt,
            "info": dataclasses.asdict(self.info),
            "nodes": [_node_to_json(n) for n in self.nodes],
        }
        meta = {"graph": json.dumps(record)}
        with locked(directory / TENSORS_FILE):
            for name in (TENSORS_FILE, NODES_FILE):  # what writers killed before us left
                clean_temporaries(directory, name)
            atomic_write(
                directory / TENSORS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata=meta)
            )
            atomic_write_text(directory / NODES_FILE, json.dumps(record, indent=1))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> AttributionGraph:
        """Read a graph written by `save`, checking that the files agree."""
        directory = Path(directory)
        try:
            with safe_open(str(directory / TENSORS_FILE), framework="pt") as handle:
                stored = (handle.metadata() or {}).get("graph")
                tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
            if stored is None:  # saved before the node table travelled with the tensors
                stored = (directory / NODES_FILE).read_text(encoding="utf-8")
            record = json.loads(stored)
        except (OSError, ValueError, SafetensorError) as exc:
            raise CheckpointError(
                f"cannot read a graph from {directory}: {exc}; is it a directory written by "
                "graph.save (tl-clt trace)?"
            ) from exc
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise CheckpointError(f"{directory / NODES_FILE} is not a {FORMAT} graph file")
        try:
            nodes = [_node_from_json(n) for n in record["nodes"]]
            fields = _info_fields(record["info"])
            older = fields["prune_spec"] is not None and "replacement_score_strict" not in fields
            if older:  # a pruned graph saved when its one pair of scores was the strict pair
                fields["replacement_score_strict"] = fields.pop("replacement_score", None)
                fields["completeness_score_strict"] = fields.pop("completeness_score", None)
            graph = cls(
                record["prompt"], tensors["tokens"], nodes, tensors["adjacency"],
                GraphInfo(**fields), tensors.get("original_index"),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise CheckpointError(f"the graph in {directory} is malformed: {exc}") from exc
        if not bool(torch.isfinite(graph.adjacency).all()):
            raise CheckpointError(
                f"the graph in {directory} has NaN or infinite edge weights; it was built from a "
                "broken transcoder or the file is corrupt. Build it again"
            )
        if older:  # its own scores, from the edges it holds
            own = graph.scores()
            graph.info = dataclasses.replace(
                graph.info,
                replacement_score=own.replacement,
                completeness_score=own.completeness,
            )
        return graph


def prune_spec(
    node_threshold: float | P.PruneSpec = 0.8,
    edge_threshold: float | None = None,
    rank_always_kept: bool | None = None,
) -> P.PruneSpec:
    """A `PruneSpec` from one, or from its fields (those not given take their defaults)."""
    if isinstance(node_threshold, P.PruneSpec):
        if edge_threshold is not None or rank_always_kept is not None:
            raise InputError(
                "give a PruneSpec or thresholds, not both (e.g. prune(PruneSpec(0.8, 0.98, "
                "rank_always_kept=False)))"
            )
        return node_threshold
    return P.PruneSpec(
        node_threshold,
        0.98 if edge_threshold is None else edge_threshold,
        True if rank_always_kept is None else rank_always_kept,
    )


def _info_fields(data: dict[str, Any]) -> dict[str, Any]:
    """`GraphInfo` fields from a graph file's `info`. Pruned graphs saved before the spec was
    recorded hold `node_threshold` and `edge_threshold` only: they get a `PruneSpec` with those
    and `rank_always_kept=None` (not recorded)."""
    fields = dict(data)
    spec = fields.pop("prune_spec", None)
    nt, et = fields.pop("node_threshold", None), fields.pop("edge_threshold", None)
    if spec is not None:
        fields["prune_spec"] = P.PruneSpec(**spec)
    elif nt is not None:
        fields["prune_spec"] = P.PruneSpec(nt, 0.98 if et is None else et, None)
    else:
        fields["prune_spec"] = None
    return fields


def _node_to_json(node: Node) -> dict[str, Any]:
    out = node._asdict()
    out["kind"] = node.kind.value
    return out


def _node_from_json(data: dict[str, Any]) -> Node:
    data = dict(data)
    data["kind"] = NodeKind(data["kind"])
    return Node(**data)
