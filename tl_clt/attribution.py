"""Attribution graphs: the direct effects between the nodes of one prompt's local replacement
model (Ameisen et al. 2025, "Circuit Tracing: Revealing Computational Graphs
in Language Models", transformer-circuits.pub/2025/attribution-graphs/methods.html).

Phases of `attribute(replacement, prompt)`:

1. Capture: one spliced run of the prompt (`ReplacementModel.capture`) records every feature
   activation, error term, attention pattern and normalisation scale.
2. Nodes: active features and error nodes (position 0, the BOS, left out), one embedding node per
   position, and the logit targets (the most likely tokens until their cumulative probability
   reaches 0.95, at most 10; or tokens, or a logit difference, the caller names;
   `tl_clt.targets`).
3. Linearise: one forward pass of the local replacement model with attention patterns and
   normalisation scales frozen, every MLP output replaced by a constant leaf holding its
   recorded value (reconstruction + error) and every embedding by a leaf: the pass is linear in
   the leaves, and it reproduces the model's logits (`tl_clt._linear`).
4. Rows: for a batch of targets, one backward pass (batched with `is_grads_batched`) injects each
   target's encoder row at its layer's MLP input and position, or its logit direction (one-hot
   minus uniform on the logits, i.e. the unembedding column minus the mean column read after the
   frozen final norm) at the last position, and reads the gradient at every MLP-output and
   embedding leaf. Edge = activation × decoder · gradient (summed over the layers a feature
   writes to), error vector · gradient, embedding · gradient (`tl_clt._edges`: one `bmm` per
   source layer over the active features' decoder rows, grouped by position).
5. Order: the logit rows first, then the feature rows: all of them, or with `max_feature_nodes`,
   the features in order of their influence on the logits, estimated from the rows computed so
   far and re-ranked every `update_interval` batches.
6. Assemble: the node table and the dense adjacency [target, source] over the visited features,
   the error nodes, the embeddings and the logits (`AttributionGraph`).
7. Check (`check=True`, `tl_clt._check`): the linearised pass reproduces the model's logits,
   and a few sources scaled in the frozen model change every target as their edges predict.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from tl_clt import _edges
from tl_clt._check import check_graph
from tl_clt._linear import Tape, backward, feature_injections, grad_free_params, linearise
from tl_clt.errors import InputError
from tl_clt.graph import AttributionGraph, GraphInfo, Node, NodeKind
from tl_clt.replacement import ReplacementModel, check_call
from tl_clt.splice import CleanRun
from tl_clt.targets import LogitDifference, LogitTargets, Targets, logit_targets_for

__all__ = ["LogitDifference", "attribute", "partial_influence"]


def attribute(
    replacement: ReplacementModel | Any,  # checked in the body: a wrong order is an InputError
    prompt: str | Int[Tensor, "1 pos"] | Any,
    *,
    targets: Targets = None,
    max_feature_nodes: int | None = None,
    batch_size: int = 256,
    dtype: torch.dtype | None = None,
    update_interval: int = 4,
    max_logits: int = 10,
    logit_probability: float = 0.95,
    progress: bool | None = None,
    check: bool = True,
) -> AttributionGraph:
    """The attribution graph of `prompt` in `replacement`'s local replacement model.

    targets: None (the most likely tokens until `logit_probability`, at most `max_logits`),
        a list of tokens (strings or ids), or a `LogitDifference`.
    max_feature_nodes: at most this many feature nodes, visited in order of influence on the
        logits (None: every active feature).
    batch_size: targets per backward pass. dtype: dtype of the gradient-decoder products
        (default: the transcoder's); the adjacency is float32.
    progress: show a progress bar (None: when there are more than 8 batches).
    check: check the graph (`tl_clt._check`): the linearised pass reproduces the model's
        logits, and scaling a few sources in the frozen model changes every target by what
        their edges predict; the figures go into `graph.info.checks`, a failure raises
        `AttributionCheckError`. False skips it (`graph.info.checks` is then None).
    Every option after (replacement, prompt) is keyword-only.
    """
    check_call("attribute", replacement, prompt)
    lens, clt = replacement.lens, replacement.clt
    if batch_size < 1 or update_interval < 1:
        raise InputError("batch_size and update_interval must be positive integers")
    if max_feature_nodes is not None and max_feature_nodes < 0:
        raise InputError(f"max_feature_nodes must be >= 0 or None, got {max_feature_nodes}")
    tokens = lens.tokens(prompt)
    with torch.no_grad():
        run = replacement.capture(tokens)
    feats = _edges.active_features(run)
    logit_targets = logit_targets_for(replacement, run, targets, max_logits, logit_probability)
    sources = _edges.EdgeColumns.build(clt, run, feats, dtype or clt.dtype)
    n_feat_rows = feats.count if max_feature_nodes is None else min(max_feature_nodes, feats.count)
    n_batches = math.ceil(n_feat_rows / batch_size) + 1
    bar = tqdm(total=n_feat_rows + len(logit_targets.nodes), desc="attribution", unit="node",
               disable=not (n_batches > 8 if progress is None else progress))  # fmt: skip
    with grad_free_params(lens.model):
        tape = linearise(replacement, run)
        logit_rows = _logit_rows(tape, sources, logit_targets, batch_size, bar)
        weights = torch.tensor([n.weight for n in logit_targets.nodes])
        full, feat_rows = _row_storage(sources, n_feat_rows, logit_rows)
        visited = _feature_rows(
            tape, sources, feats, logit_rows, weights, feat_rows, batch_size, update_interval, bar
        )
    bar.close()
    A = _adjacency(sources, visited, feat_rows, logit_rows, full)
    text = prompt if isinstance(prompt, str) else None
    graph = _graph(
        replacement, run, feats, sources, logit_targets, visited, A, max_feature_nodes, text
    )
    if check:
        checks = check_graph(replacement, run, tape, graph, sources.dtype)
        graph.info = dataclasses.replace(graph.info, checks=checks)
    return graph


def _logit_rows(
    tape: Tape, sources: _edges.EdgeColumns, targets: LogitTargets, batch_size: int, bar: Any
) -> Float[Tensor, "n_logits n_sources"]:
    rows = []
    L = len(tape.outputs)
    directions = targets.directions.to(tape.logits.dtype)
    for start in range(0, directions.shape[0], batch_size):
        chunk = directions[start : start + batch_size]
        outs, emb = backward(tape, [(tape.logits, chunk[:, None, :])], L)
        rows.append(sources.edges(outs, emb, tape.embeddings))
        bar.update(chunk.shape[0])
    return torch.cat(rows)


# ---------------------------------------------------------------------- phase 5: order
def _row_storage(
    sources: _edges.EdgeColumns, n_rows: int, logit_rows: Tensor
) -> tuple[Tensor | None, Float[Tensor, "n_rows n_sources"]]:
    """Where feature rows go: with every feature visited, straight into the final adjacency
    (whose node order is the source order); with a budget, a [n_rows, n_sources] buffer."""
    lay = sources.layout
    if n_rows < lay.n_features:
        return None, torch.zeros(n_rows, lay.n_sources, device=logit_rows.device)
    n = lay.n_sources + logit_rows.shape[0]
    full = torch.zeros(n, n, device=logit_rows.device)
    return full, full[lay.features, : lay.n_sources]


def _feature_rows(
    tape: Tape,
    sources: _edges.EdgeColumns,
    feats: _edges.ActiveFeatures,
    logit_rows: Tensor,
    weights: Tensor,
    rows: Tensor,
    batch_size: int,
    update_interval: int,
    bar: Any,
) -> Int[Tensor, " n_visited"]:
    """Fill `rows` with the rows of features: all in table order, or with fewer rows than
    active features, the most influential first. Returns the visited features in row order."""
    n_rows = rows.shape[0]
    visited = torch.empty(n_rows, dtype=torch.long)
    budgeted = n_rows < feats.count
    queue = torch.arange(feats.count)
    done, batches = 0, 0
    while done < n_rows:
        if budgeted and batches % update_interval == 0:
            columns = sources.layout.features.start + visited[:done]
            infl = partial_influence(logit_rows, weights, rows[:done], columns)
            features = infl[sources.layout.features].cpu()
            ranked = torch.argsort(features, descending=True, stable=True)
            seen = torch.zeros(feats.count, dtype=torch.bool)
            seen[visited[:done]] = True
            queue = ranked[~seen[ranked]]
        take = min(batch_size, n_rows - done)
        batch, queue = queue[:take], queue[take:]
        outs, emb = backward(tape, *feature_injections(
            tape, sources.clt, feats.layer[batch], feats.position[batch], feats.feature[batch]
        ))  # fmt: skip
        rows[done : done + take] = sources.edges(outs, emb, tape.embeddings)
        visited[done : done + take] = batch
        done, batches = done + take, batches + 1
        bar.update(take)
    return visited


def partial_influence(
    logit_rows: Float[Tensor, "n_logits n_sources"],
    weights: Float[Tensor, " n_logits"],
    feat_rows: Float[Tensor, "k n_sources"],
    feat_columns: Int[Tensor, " k"],
) -> Float[Tensor, " n_sources"]:
    """Influence on the logits of every source, from the rows known so far (logit rows and
    visited features, whose source columns are `feat_columns`)."""
    weights = weights.to(logit_rows.device, torch.float32)
    norm_l = logit_rows.abs().sum(1).clamp(min=1e-30)
    norm_f = feat_rows.abs().sum(1).clamp(min=1e-30)
    cols = feat_columns.to(logit_rows.device)
    # influence flowing through the visited features, by power series on their square block
    into_f = (weights / norm_l) @ logit_rows[:, cols].abs()
    square = feat_rows[:, cols].abs() / norm_f[:, None]
    total_f, current = into_f.clone(), into_f
    for _ in range(feat_rows.shape[0] + 1):
        current = current @ square
        if not bool(current.any()):
            break
        total_f += current
    return (weights / norm_l) @ logit_rows.abs() + _chunked_abs_matvec(total_f / norm_f, feat_rows)


def _chunked_abs_matvec(v: Tensor, M: Tensor, chunk: int = 1024) -> Tensor:
    out = torch.zeros(M.shape[1], dtype=M.dtype, device=M.device)
    for start in range(0, M.shape[0], chunk):
        out += v[start : start + chunk] @ M[start : start + chunk].abs()
    return out


# ---------------------------------------------------------------------- phase 6: assemble
def _adjacency(
    sources: _edges.EdgeColumns,
    visited: Tensor,
    feat_rows: Tensor,
    logit_rows: Tensor,
    full: Tensor | None,
) -> Float[Tensor, "n n"]:
    """The adjacency in node order: embeddings, features (table order), errors, logits."""
    lay = sources.layout.with_features(visited.shape[0], logit_rows.shape[0])
    if full is not None:  # every feature, rows already in place
        full[lay.logits, : lay.n_sources] = logit_rows
        return full.cpu()
    order = torch.argsort(visited)
    columns = sources.columns(visited[order]).to(feat_rows.device)
    A = torch.zeros(lay.n_nodes, lay.n_nodes, device=feat_rows.device)
    rows = feat_rows.index_select(1, columns).index_select(0, order.to(feat_rows.device))
    A[lay.features, : lay.n_sources] = rows
    A[lay.logits, : lay.n_sources] = logit_rows.index_select(1, columns)
    return A.cpu()


def _graph(
    replacement: ReplacementModel,
    run: CleanRun,
    feats: _edges.ActiveFeatures,
    sources: _edges.EdgeColumns,
    targets: LogitTargets,
    visited: Tensor,
    A: Tensor,
    max_feature_nodes: int | None,
    text: str | None,
) -> AttributionGraph:
    """The node table (same order as `_adjacency`) and the graph."""
    lens, cfg = replacement.lens, replacement.clt.cfg
    tokens = run.tokens[0].cpu()
    strs = lens.token_texts(tokens)
    chosen = torch.sort(visited).values
    nodes = [
        Node(NodeKind.EMBEDDING, q, token_id=int(t), token=strs[q])
        for q, t in enumerate(tokens.tolist())
    ]
    lay, pos, fid, act = (x[chosen].tolist() for x in feats)
    nodes += [Node(NodeKind.FEATURE, p, layer=ly, feature=f, token=strs[p], activation=a)
              for ly, p, f, a in zip(lay, pos, fid, act)]  # fmt: skip
    norms = torch.stack([e[0].float().norm(dim=-1) for e in run.errors]).cpu()
    nodes += [Node(NodeKind.ERROR, q, layer=ly, token=strs[q], activation=float(norms[ly, q]))
              for ly, q in sources.layout.error_nodes()]  # fmt: skip
    nodes += targets.nodes
    info = GraphInfo(
        model=lens.name,
        n_layers=replacement.n_layers,
        transcoder=f"{cfg.architecture}/{cfg.activation}, {cfg.n_features} features",
        n_features=cfg.n_features,
        n_active_features=feats.count,
        max_feature_nodes=max_feature_nodes,
        d_vocab=lens.d_vocab,
    )
    if text is None:
        text = lens.decode(tokens)
    return AttributionGraph(text, tokens, nodes, A, info)
