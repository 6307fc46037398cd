"""The check `attribute` runs on every graph it builds (`check=True`): a graph is only as right
as the local replacement model it differentiates, so two cheap measurements, neither of which
uses autograd, confirm that model on each call.

1. **Logits.** The linearised pass reproduces the model's logit targets at the last position
   (those of the clean spliced run, whose live error term makes it exactly the model), relative
   to the magnitudes of each target's inputs: the frozen quantities and the leaves change
   nothing on the clean prompt.
2. **Linearity.** In one forward pass of the frozen local replacement model (patterns, scales
   and softcap scale held, every MLP output its recorded value) a few sources — the feature and the token with the largest edge into the first logit, and one
   feature drawn at random — are each scaled by `1 + PERTURBATION` in a batch element of their
   own, and the change of every target (logits and feature pre-activations) is compared with
   `PERTURBATION × edge`. If anything the model computes from its inputs were not held (attention
   patterns a model ignores edits of, normalisation scales, the logit softcap), the change would
   not be linear in the source and the comparison fails.

The figures go into `graph.info.checks`; a failure raises `AttributionCheckError`.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_clt._linear import Tape
from tl_clt.errors import AttributionCheckError
from tl_clt.graph import AttributionGraph, NodeKind
from tl_clt.replacement import ReplacementModel
from tl_clt.splice import CleanRun, Splice
from tl_clt.targets import logit_direction

PERTURBATION = 4.0  # each checked source is scaled by 1 + PERTURBATION
N_RANDOM = 1  # features drawn at random, besides the strongest feature and token
# 1000 units of float32 rounding; in 16-bit dtypes, about 2-3 times the largest error measured
# on correct graphs (float16 0.017, bfloat16 0.076, on tiny random models; trained ones less)
TOLERANCES = {torch.float64: 1.2e-4, torch.float32: 1.2e-4, torch.float16: 0.05,
              torch.bfloat16: 0.2}  # fmt: skip


def tolerance(*dtypes: torch.dtype) -> float:
    """Relative tolerance of both checks for the coarsest dtype among `dtypes` (`TOLERANCES`;
    float64 gets float32's, as models in float64 still compute norms and softmaxes in float32).
    """
    return max(TOLERANCES.get(d, TOLERANCES[torch.bfloat16]) for d in dtypes)


def check_graph(
    replacement: ReplacementModel,
    run: CleanRun,
    tape: Tape,
    graph: AttributionGraph,
    compute_dtype: torch.dtype,
) -> dict[str, Any]:
    """The figures of both checks (see the module docstring), or `AttributionCheckError`."""
    lens, A = replacement.lens, graph.adjacency
    tol = tolerance(lens.dtype, replacement.clt.dtype, compute_dtype)
    table = _Table.of(graph)
    # a target's scale: the magnitudes of its inputs, which rounding is relative to
    inputs = A.abs().sum(1).double()
    logits = table.where(NodeKind.LOGIT)
    d = _directions(graph, logits, run.logits.shape[-1])
    model = d @ run.logits[0, -1].double().cpu()  # the splice with its live error is the model
    linear = d @ tape.logits[0].detach().double().cpu()
    logit_error = float(((linear - model).abs() / inputs[logits].clamp(min=1e-30)).max())
    checks: dict[str, Any] = {"tolerance": tol, "logit_error": logit_error}
    if not logit_error <= tol:
        raise AttributionCheckError(
            f"{_family(lens)}: the linearised pass does not reproduce the model's logits at the "
            f"last position (a logit target off by {logit_error:.2e} relative to its inputs, "
            f"tolerance {tol:.1e}): the splice, the frozen attention patterns, normalisation "
            "scales or logit softcap change the model's output on the clean prompt. " + _ADVICE
        )
    sources = _sources(graph, table)
    if not sources:
        checks["linearity_error"], checks["sources"] = None, []
        return checks
    targets = table.where(NodeKind.FEATURE, NodeKind.LOGIT)
    observed = _perturbed_changes(replacement, run, tape, graph, table, sources, targets)
    predicted = PERTURBATION * A[:, sources][targets].double()
    scale = inputs[targets, None] + predicted.abs()  # plus the change the perturbation makes
    errors = ((observed - predicted).abs() / scale.clamp(min=1e-30)).amax(0).tolist()
    worst = max(range(len(sources)), key=lambda j: errors[j])
    checks["linearity_error"] = errors[worst]
    checks["sources"] = [graph.nodes[j].label() for j in sources]
    if not errors[worst] <= tol:
        node = graph.nodes[sources[worst]]
        raise AttributionCheckError(
            f"{_family(lens)}: the local replacement model is not linear: scaling {node.label()} "
            f"by {1 + PERTURBATION:g} moved a target {errors[worst]:.2e} (relative to the target's "
            f"inputs) away from what its edges predict (tolerance {tol:.1e}). "
            "Something the model computes from its inputs did not stay frozen: attention "
            "patterns (a model that ignores edits of its pattern hook), normalisation scales "
            "or the logit softcap, so the graph's edges are not the model's direct effects. "
            + _ADVICE
        )
    return checks


_ADVICE = (
    "Build this model with transformer-lens 3.x (HookedTransformer), which honours these hooks, "
    "or pass attribute(..., check=False) to keep the graph anyway (its edges may be wrong)."
)


def _family(lens: Any) -> str:
    cfg = lens.model.cfg
    arch = getattr(cfg, "original_architecture", None) or getattr(cfg, "architecture", None)
    return f"{lens.name} ({arch})" if arch else lens.name


class _Table(NamedTuple):
    """The node table as tensors (one pass over the nodes): kind, layer and feature (-1 where
    none) and position of every node."""

    kind: Int[Tensor, " n"]  # index into KINDS
    layer: Int[Tensor, " n"]
    position: Int[Tensor, " n"]
    feature: Int[Tensor, " n"]

    @classmethod
    def of(cls, graph: AttributionGraph) -> _Table:
        rows = [(KINDS.index(n.kind), -1 if n.layer is None else n.layer, n.position,
                 -1 if n.feature is None else n.feature) for n in graph.nodes]  # fmt: skip
        return cls(*torch.tensor(rows, dtype=torch.long).T)

    def where(self, *kinds: NodeKind) -> Int[Tensor, " k"]:
        mask = torch.zeros_like(self.kind, dtype=torch.bool)
        for kind in kinds:
            mask |= self.kind == KINDS.index(kind)
        return mask.nonzero()[:, 0]


KINDS = list(NodeKind)


def _sources(graph: AttributionGraph, table: _Table) -> list[int]:
    """The strongest feature and token into the first logit, and N_RANDOM features drawn at
    random (a generator seeded by the graph's size, so a graph is checked the same way twice)."""
    row = graph.adjacency[int(table.where(NodeKind.LOGIT)[0])].abs()
    picked: list[int] = []
    for kind in (NodeKind.FEATURE, NodeKind.EMBEDDING):
        cols = table.where(kind)
        if len(cols):
            best = int(cols[int(torch.argmax(row[cols]))])
            if row[best] > 0:
                picked.append(best)
    features = table.where(NodeKind.FEATURE)
    gen = torch.Generator().manual_seed(graph.n_nodes)
    for j in torch.randperm(len(features), generator=gen)[:N_RANDOM].tolist():
        if int(features[j]) not in picked:
            picked.append(int(features[j]))
    return picked


def _perturbed_changes(
    replacement: ReplacementModel,
    run: CleanRun,
    tape: Tape,
    graph: AttributionGraph,
    table: _Table,
    sources: list[int],
    targets: Tensor,
) -> Float[Tensor, "targets sources"]:
    """The change of each target when source j alone is scaled by 1 + PERTURBATION, measured
    in one forward pass of the frozen model without autograd (batch element j), from the
    clean values of the linearised pass (the same frozen model, the same arithmetic): `run`'s
    patterns, scales and softcap scale held, each MLP output its recorded
    value (the tape's leaves) plus the perturbed features' decoder rows (read from the
    transcoder's decoders, not from the edge code) and any skip connection's live write,
    tokens' embeddings scaled by hooks."""
    lens, clt = replacement.lens, replacement.clt
    n_batch, L = len(sources), replacement.n_layers
    outputs = [o.detach().expand(n_batch, -1, -1).clone() for o in tape.outputs]
    tokens: list[tuple[int, int]] = []
    for b, j in enumerate(sources):
        node = graph.nodes[j]
        if node.kind is NodeKind.EMBEDDING:
            tokens.append((b, node.position))
            continue
        for t in clt.writes_to(node.layer):
            row = clt.W_dec_at(node.layer, t)[node.feature].detach()
            delta = PERTURBATION * node.activation * row
            outputs[t][b, node.position] += delta.to(outputs[t].dtype)
    mlp_in: list[Tensor | None] = [None] * L

    def read(x: Tensor, hook: Any, layer: int) -> None:
        mlp_in[layer] = x

    def write(x: Tensor, hook: Any, layer: int) -> Tensor:
        out = outputs[layer]
        if clt.W_skip is not None:  # the skip connection stays live beside the leaf, as in the tape
            out = out + clt.skip_layer(mlp_in[layer].to(clt.dtype), layer).to(out.dtype)
        return out.to(x.dtype)

    def scale_token(x: Tensor, hook: Any) -> Tensor | None:
        if x.dim() != 3 or x.shape[0] != n_batch:  # e.g. a rotary model's unused hook
            return None
        x = x.clone()
        for b, q in tokens:
            x[b, q] = x[b, q] * (1.0 + PERTURBATION)
        return x

    hooks = [(name, scale_token) for name in lens.embeddings()]
    for layer in range(L):
        hooks.append((lens.mlp_in(layer, clt.cfg.input_hook), partial(read, layer=layer)))
        hooks.append((lens.mlp_out(layer, clt.cfg.output_hook), partial(write, layer=layer)))
    frozen_only = Splice(output="observe", layers=(), freeze=run)
    with torch.no_grad(), replacement.splice(frozen_only), lens.hooks(hooks):
        logits = lens.model(run.tokens.expand(n_batch, -1))[:, -1].double()
    both_in = [
        None if x is None else torch.cat([c.detach(), x]) for c, x in zip(tape.mlp_in, mlp_in)
    ]
    both_logits = torch.cat([tape.logits.detach().double(), logits])
    values = _target_values(clt, graph, table, targets, both_in, both_logits)  # clean first
    return values[:, 1:] - values[:, :1]


def _target_values(
    clt: Any,
    graph: AttributionGraph,
    table: _Table,
    targets: Tensor,
    mlp_in: list[Tensor | None],
    logits: Tensor,
) -> Float[Tensor, "targets batch"]:
    """Each target's value in every batch element: a feature's pre-activation without its bias
    (its encoder row at its layer's input), a logit node's direction applied to the logits."""
    values = torch.zeros(len(targets), logits.shape[0], dtype=torch.float64)
    kind, layer = table.kind[targets], table.layer[targets]
    is_feature = kind == KINDS.index(NodeKind.FEATURE)
    for t in layer[is_feature].unique().tolist():
        rows = (is_feature & (layer == t)).nonzero()[:, 0]
        x = mlp_in[t]
        if x is None:
            raise AttributionCheckError(f"the check's forward pass did not reach layer {t}")
        pos = table.position[targets[rows]].to(x.device)
        W = clt.W_enc_at(t).detach()[:, table.feature[targets[rows]].to(clt.device)]
        pre = torch.einsum("brd,dr->rb", x[:, pos].to(W.dtype), W.to(x.device))
        values[rows] = pre.double().cpu()
    logit_rows = (kind == KINDS.index(NodeKind.LOGIT)).nonzero()[:, 0]
    values[logit_rows] = _directions(graph, targets[logit_rows], logits.shape[-1]) @ logits.cpu().T
    return values


def _directions(graph: AttributionGraph, logits: Tensor, d_vocab: int) -> Tensor:
    """[logit nodes, d_vocab]: each logit node's direction on the logits (float64, CPU)."""
    nodes = [graph.nodes[i] for i in logits.tolist()]
    return torch.stack([logit_direction(n, d_vocab, torch.float64) for n in nodes])
