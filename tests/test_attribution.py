"""Attribution graphs against ground truth: every edge equals the change a real intervention on
its source makes in the frozen local replacement model (features, errors and embeddings each
set to zero, all other features held), and row sums equal the target minus its bias-only value.
The measurement uses only `ReplacementModel.frozen` and hooks, none of the attribution code."""

from __future__ import annotations

import tempfile

import pytest
import torch
from conftest import clt_for, get_model

from tl_clt import LogitDifference, NodeKind, ReplacementModel, attribute
from tl_clt import hooks as H
from tl_clt.lens import from_hf
from tl_clt.lens.build import tiny_hf_model
from tl_clt.targets import logit_targets_for
from tl_clt.tokenization import SPECIALS, word_level_tokenizer

PROMPT = "w3 w1 w4 w1 w5 w9 w2 w6"
_F64: dict = {}


def model64(family: str):
    """A tiny random model in float64, so that edges can be checked to 1e-4 relative."""
    if family not in _F64:
        hf = tiny_hf_model(family, n_layers=3).double()
        words = [f"w{i}" for i in range(hf.config.vocab_size - len(SPECIALS))]
        _F64[family] = from_hf(
            hf, word_level_tokenizer(words, tempfile.mkdtemp()), name=f"f64-{family}"
        )
    return _F64[family]


def measure(rm: ReplacementModel, graph, diff: tuple[int, int] | None = None):
    """Measured adjacency (targets x sources) and row sums, by intervention: batch element 0
    is the clean frozen run, element 1 + j zeroes source j, the last zeroes every source."""
    tokens = graph.tokens[None].to(rm.lens.device)
    run = rm.capture(tokens)
    sources = [i for i, n in enumerate(graph.nodes) if n.kind is not NodeKind.LOGIT]
    B = len(sources) + 2
    ablate: dict[str, list] = {}
    for b, i in enumerate(sources, start=1):
        for batch in (b, B - 1):
            n = graph.nodes[i]
            if n.kind is NodeKind.FEATURE:
                ablate.setdefault(H.features(n.layer), []).append((batch, n.position, n.feature))
            elif n.kind is NodeKind.ERROR:
                ablate.setdefault(H.error(n.layer), []).append((batch, n.position))
            else:
                for name in rm.lens.embeddings():
                    ablate.setdefault(name, []).append((batch, n.position))

    def zero(x, hook, where):
        x = x.clone()
        for idx in where:
            x[idx] = 0
        return x

    pre = {}

    def save(x, hook, layer):
        pre[layer] = x.detach()

    hooks = [(name, lambda x, hook, w=w: zero(x, hook, w)) for name, w in ablate.items()]
    hooks += [(H.feature_pre(i), lambda x, hook, i=i: save(x, hook, i)) for i in range(rm.n_layers)]
    with torch.no_grad(), rm.frozen(run, features=True):
        logits = rm.run_with_hooks(tokens.expand(B, -1), fwd_hooks=hooks, spliced=False)[:, -1]
    targets = [i for i, n in enumerate(graph.nodes) if n.kind in (NodeKind.FEATURE, NodeKind.LOGIT)]
    values = []
    for i in targets:
        n = graph.nodes[i]
        if n.kind is NodeKind.FEATURE:
            values.append(pre[n.layer][:, n.position, n.feature])
        elif diff is not None:
            values.append(logits[:, diff[0]] - logits[:, diff[1]])
        else:
            values.append(logits[:, n.token_id] - logits.mean(-1))
    values = torch.stack(values).double()  # [targets, B]
    M = torch.zeros(len(targets), graph.n_nodes, dtype=torch.float64)
    M[:, sources] = values[:, :1] - values[:, 1:-1]
    return targets, M, values[:, 0] - values[:, -1], values[:, 0]


CASES = [  # every architecture on both families, every activation at least once
    ("gpt2", "cross_layer", "relu", "ln2.hook_normalized"),
    ("gpt2", "per_layer", "jumprelu", "ln2.hook_normalized"),
    ("gpt2", "shared", "topk", "ln2.hook_normalized"),
    ("llama", "cross_layer", "batchtopk", "ln2.hook_normalized"),
    ("llama", "per_layer", "relu", "ln2.hook_normalized"),
    ("llama", "shared", "jumprelu", "ln2.hook_normalized"),
    ("llama", "cross_layer", "relu", "hook_resid_mid"),  # reading the residual stream
    ("neox", "cross_layer", "jumprelu", "ln2.hook_normalized"),  # parallel attention and MLP
]


@pytest.mark.parametrize("family,architecture,activation,input_hook", CASES)
def test_every_edge_equals_a_real_intervention(family, architecture, activation, input_hook):
    lens = model64(family)
    clt = clt_for(lens, architecture=architecture, activation=activation, dtype="float64",
                  scales=True, input_hook=input_hook)  # fmt: skip
    if input_hook == "hook_resid_mid":  # the residual stream is ~sqrt(d) times larger
        with torch.no_grad():
            clt.W_enc.div_(4.0)
    check_every_edge(ReplacementModel(lens, clt))


SKIP_CASES = [  # a skip connection (input to output of each layer) on both block kinds
    ("gpt2", "per_layer", "jumprelu"),
    ("llama", "cross_layer", "topk"),
    ("neox", "cross_layer", "relu"),
    ("gemma2", "cross_layer", "jumprelu"),  # post-MLP norms and a logit softcap
]


@pytest.mark.parametrize("family,architecture,activation", SKIP_CASES)
def test_every_edge_equals_a_real_intervention_with_a_skip_connection(
    family, architecture, activation
):
    """The skip path is linear and live in the frozen model, so edges through it are direct
    effects: measured by the same interventions, which run through the skip connections."""
    lens = model64(family)
    clt = clt_for(lens, architecture=architecture, activation=activation, dtype="float64",
                  scales=True, skip=True)  # fmt: skip
    rm = ReplacementModel(lens, clt)
    without = ReplacementModel(lens, clt_without_skip(clt))
    # Hugging Face's RMSNorm normalises in float32 even for float64 inputs, and the 4.x bridge
    # runs it natively in the clean pass but in float64 where scales are frozen: the two differ
    # by ~5e-8 relative, which a skip connection (reading the normalised input, ~30x the
    # residual's size in these tiny models) carries to the logits at ~2e-5 relative
    graph = check_every_edge(rm, clean_rtol=1e-4)
    # the skip connection matters: the same transcoder without it gives other edges
    other = attribute(without, PROMPT, batch_size=64)
    assert not torch.allclose(graph.adjacency, other.adjacency, rtol=1e-3, atol=1e-6)


def clt_without_skip(clt):
    from tl_clt import CrossLayerTranscoder

    bare = CrossLayerTranscoder(clt.cfg.replace(skip=False)).double()
    state = {k: v for k, v in clt.state_dict().items() if k != "W_skip"}
    bare.load_state_dict(state)
    return bare.eval()


def assert_edges_are_interventions(rm: ReplacementModel, graph):
    """Every edge of `graph` equals the measured intervention and rows sum to the target minus
    its all-sources-zeroed value (biases only); returns the target rows and their clean values."""
    targets, M, row_sums, clean = measure(rm, graph)
    A = graph.adjacency[targets].double()
    assert graph.mask(NodeKind.FEATURE).sum() > 50 and M.abs().max() > 1e-3
    torch.testing.assert_close(A, M, rtol=1e-4, atol=1e-9 * float(M.abs().max()))
    scale = A.abs().sum(1)
    torch.testing.assert_close(A.sum(1), row_sums, rtol=1e-4, atol=1e-6 * float(scale.max()))
    return targets, clean


def check_every_edge(rm: ReplacementModel, clean_rtol: float = 1e-6):
    """Every edge of the prompt's graph equals the measured intervention, rows sum to the
    target minus its all-sources-zeroed value, and the clean values match; returns the graph."""
    graph = attribute(rm, PROMPT, batch_size=64)
    targets, clean = assert_edges_are_interventions(rm, graph)
    # the clean values are the graph's feature pre-activations and logit activations
    acts = [graph.nodes[i].activation for i in targets if graph.nodes[i].kind is NodeKind.LOGIT]
    torch.testing.assert_close(
        clean[-len(acts) :], torch.tensor(acts, dtype=torch.float64), rtol=clean_rtol, atol=1e-6
    )
    # no feature or error node at the BOS; one embedding node per position
    assert all(n.position > 0 for n in graph.nodes if n.kind in (NodeKind.FEATURE, NodeKind.ERROR))
    assert [n.position for n in graph.nodes if n.kind is NodeKind.EMBEDDING] == list(
        range(len(graph.tokens))
    )
    return graph


def test_logit_difference_edges_equal_interventions():
    lens = model64("gpt2")
    rm = ReplacementModel(lens, clt_for(lens, dtype="float64"))
    graph = attribute(rm, PROMPT, targets=LogitDifference("w7", 12))
    a = lens.to_tokens("w7", prepend_bos=False)[0, 0].item()
    targets, M, row_sums, clean = measure(rm, graph, diff=(a, 12))
    torch.testing.assert_close(
        graph.adjacency[targets].double(), M, rtol=1e-4, atol=1e-9 * float(M.abs().max())
    )
    logit = graph.nodes[graph.indices(NodeKind.LOGIT)[0]]
    assert logit.weight == 1.0 and logit.activation == pytest.approx(float(clean[-1]), rel=1e-6)


def test_default_logit_targets_reach_95_percent_or_ten():
    lens = get_model("gpt2", n_layers=3)
    rm = ReplacementModel(lens, clt_for(lens))
    run = rm.capture(lens.tokens(PROMPT))
    probs = torch.softmax(lens.model(lens.tokens(PROMPT))[0, -1].detach().double(), -1)
    for p_target, cap in ((0.95, 10), (0.3, 10), (0.95, 3)):
        nodes = logit_targets_for(rm, run, None, cap, p_target).nodes
        ids = [n.token_id for n in nodes]
        ranked = torch.argsort(probs, descending=True).tolist()
        expected, total = [], 0.0
        for t in ranked:  # by hand: add the next most likely until the total reaches the target
            if total >= p_target or len(expected) == cap:
                break
            expected.append(t)
            total += float(probs[t])
        assert ids == expected
        assert [n.probability for n in nodes] == pytest.approx(
            [float(probs[t]) for t in ids], rel=1e-5
        )
    named = logit_targets_for(rm, run, ["w5", 3]).nodes
    assert [n.token_id for n in named] == [lens.to_tokens("w5", prepend_bos=False)[0, 0].item(), 3]
    with pytest.raises(Exception, match="2 tokens"):
        logit_targets_for(rm, run, ["w5 w6"])


def test_budgeted_graph_is_a_subgraph_visited_by_influence():
    lens = get_model("gpt2", n_layers=3)
    rm = ReplacementModel(lens, clt_for(lens, activation="relu"))
    full = attribute(rm, PROMPT, batch_size=32)
    n_active = full.info.n_active_features
    budget = attribute(rm, PROMPT, max_feature_nodes=n_active // 3, batch_size=8, update_interval=2)
    assert budget.info.max_feature_nodes == n_active // 3 < n_active
    assert int(budget.mask(NodeKind.FEATURE).sum()) == n_active // 3
    index = {_key(n): i for i, n in enumerate(full.nodes)}
    sub = torch.tensor([index[_key(n)] for n in budget.nodes])
    assert (
        full.nodes[0].kind is NodeKind.EMBEDDING
        and [full.nodes[i] for i in sub.tolist()] == budget.nodes
    )
    scale = float(full.adjacency.abs().max())
    torch.testing.assert_close(
        budget.adjacency, full.adjacency[sub][:, sub], rtol=1e-4, atol=1e-5 * scale
    )
    # the first batch of features visited are the ones the logit rows alone rank highest
    first = attribute(rm, PROMPT, max_feature_nodes=5, batch_size=5)
    logits, feats = full.mask(NodeKind.LOGIT), full.mask(NodeKind.FEATURE)
    rows = full.adjacency[logits].abs()
    direct = full.logit_weights[logits] @ (rows / rows.sum(1, keepdim=True))
    top = torch.argsort(direct * feats, descending=True)[:5]
    assert {_key(full.nodes[i]) for i in top.tolist()} == {
        _key(n) for n in first.nodes if n.kind is NodeKind.FEATURE
    }


def _key(n):
    return (n.kind, n.layer, n.position, n.feature, n.token_id)


def test_batch_size_and_dtype_knobs():
    lens = get_model("llama", n_layers=3)
    rm = ReplacementModel(lens, clt_for(lens, architecture="cross_layer"))
    a = attribute(rm, PROMPT, batch_size=256)
    b = attribute(rm, PROMPT, batch_size=5)
    scale = float(a.adjacency.abs().max())  # float32: batches of other shapes round differently
    torch.testing.assert_close(a.adjacency, b.adjacency, rtol=1e-4, atol=1e-5 * scale)
    c = attribute(rm, PROMPT, dtype=torch.bfloat16)
    assert (c.adjacency - a.adjacency).abs().max() < 0.02 * scale
    assert c.adjacency.dtype == torch.float32


def test_linearised_pass_reproduces_the_model():
    from tl_clt._linear import grad_free_params, linearise

    lens = get_model("llama", n_layers=3)
    rm = ReplacementModel(lens, clt_for(lens, architecture="per_layer"))
    tokens = lens.tokens(PROMPT)
    run = rm.capture(tokens)
    with grad_free_params(lens.model):
        tape = linearise(rm, run)
    torch.testing.assert_close(
        tape.logits.detach(), lens.model(tokens)[:, -1].detach(), atol=1e-4, rtol=1e-4
    )
    assert all(p.requires_grad for p in lens.model.parameters())  # restored afterwards
