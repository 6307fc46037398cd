"""Graphs that are never silently wrong: attention patterns held on models whose attention
ignores edits of its pattern hook (GPT-Neo, GPT-J under TransformerLens 4.x), logit edges that
are direct effects under Gemma-2's final logit softcap, and the check `attribute` runs on every
graph (it raises `AttributionCheckError` when something that should be frozen leaks, and
records its figures in `graph.info.checks`).

Ground truth is measured by intervention, as in tests/test_attribution.py: every edge equals
the change that zeroing its source makes in the frozen model, and rows sum to the change that
zeroing every source at once makes (which holds only if the frozen model is linear, i.e. if
nothing leaked). Logit edges under the softcap are also measured without the library's
softcap code: from the final residual, times tanh(z/c)/(z/c) of the clean logits."""

from __future__ import annotations

import tempfile

import pytest
import torch
from _families import family_lens
from conftest import clt_for, get_model
from test_attribution import PROMPT, assert_edges_are_interventions

from tl_clt import (
    AttributionCheckError,
    AttributionGraph,
    NodeKind,
    ReplacementModel,
    _check,
    attribute,
)
from tl_clt.lens.adapter import TL_MAJOR, Lens
from tl_clt.splice import CleanRun, Splice, SpliceRun


def _rm(family: str) -> ReplacementModel:
    lens = family_lens(family)
    return ReplacementModel(lens, clt_for(lens, dtype="float64", scales=True))


# ---------------------------------------------------------------------- F1: patterns
def test_the_probe_finds_which_models_discard_pattern_edits():
    """Under 4.x GPT-Neo's attention is the Hugging Face module's own: zeroing the pattern at
    hook_pattern leaves the output as it was. The probe says so; under 3.x edits apply."""
    for family in ("neo", "gptj", "gemma2"):
        lens = family_lens(family)
        tokens = lens.tokens("w3 w1 w4 w1 w5")
        clean = lens.model(tokens)
        zero = [(lens.attn_pattern(0), lambda x, hook: torch.zeros_like(x))]
        with pytest.warns(UserWarning) if not _applies(family) else _no_warning():
            edited = lens.run(tokens, zero)
        changed = bool((edited - clean).abs().max() > 1e-6)
        assert changed == _applies(family)
        assert lens.pattern_edits_apply() == [_applies(family)] * lens.n_layers


def _applies(family: str) -> bool:
    return TL_MAJOR < 4 or family == "gemma2"


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("family", ["neo", "gemma2"] + (["gptj"] if TL_MAJOR < 4 else []))
def test_every_edge_equals_a_real_intervention_on_more_families(family):
    """GPT-Neo (global and local attention), Gemma-2 (grouped-query attention, attention
    softcap, pre- and post-norms, logit softcap) and, under 3.x, GPT-J (rotary, parallel
    blocks; under 4.x its MLP input has no hook a transcoder reads yet)."""
    rm = _rm(family)
    graph = attribute(rm, PROMPT, batch_size=64)
    assert_edges_are_interventions(rm, graph)
    checks = graph.info.checks
    assert checks["logit_error"] < 1e-6 and checks["linearity_error"] < 1e-6


def test_gptj_attention_is_linear_with_its_pattern_held():
    """GPT-J under 4.x discards pattern edits too (the probe above); with the clean run's
    pattern and scales held, layer 0's attention output is affine in the token embeddings:
    scaling one token's embedding by 2 and by 3 changes it in the ratio 1 : 2. Without the
    holding (a plain run) it is not."""
    lens = family_lens("gptj")
    clt = clt_for(lens, dtype="float64")
    tokens = lens.tokens(PROMPT)
    names = [lens.attn_pattern(layer) for layer in range(lens.n_layers)] + lens.norm_scales()
    with torch.no_grad():
        logits, cache = lens.cache(tokens, names)
    run = CleanRun(tokens, logits, {n: cache[n] for n in names[: lens.n_layers]},
                   {n: cache[n] for n in names[lens.n_layers :]}, [], [], [], [])  # fmt: skip
    spliced = SpliceRun(lens, clt, Splice(output="observe", layers=(), freeze=run))

    def attn_out(hooks):
        out = {}

        def scale(x, hook):
            x = x.clone()
            x[1, 5] *= 2
            x[2, 5] *= 3
            return x

        def save(x, hook):
            out["a"] = x.detach()

        with torch.no_grad():
            lens.run(tokens.expand(3, -1), hooks + [("hook_embed", scale),
                                                    ("blocks.0.hook_attn_out", save)])  # fmt: skip
        return out["a"]

    held = attn_out(spliced.hooks())
    torch.testing.assert_close(held[2] - held[0], 2 * (held[1] - held[0]), rtol=1e-6, atol=1e-9)
    live = attn_out([])
    assert not torch.allclose(live[2] - live[0], 2 * (live[1] - live[0]), rtol=1e-3, atol=1e-6)


# ---------------------------------------------------------------------- F3: logit softcap
def test_logit_edges_are_direct_effects_under_the_softcap():
    """Gemma-2 with its final softcap c = 0.5 near its logits: the graph's logit rows equal
    the change of z * tanh(z0/c)/(z0/c) (z the logits before the cap, z0 the clean ones,
    computed here from the final residual) when each source is zeroed in the frozen model."""
    rm = _rm("gemma2")
    lens, cap = rm.lens, rm.lens.logit_softcap
    assert cap == 0.5
    graph = attribute(rm, PROMPT, batch_size=64)
    tokens = graph.tokens[None]
    with torch.no_grad():
        z0 = lens.model.unembed(_final_residual(rm, tokens, None))[0, -1].double()
    s = torch.where(z0 == 0, 1.0, torch.tanh(z0 / cap) / (z0 / cap))
    assert float(s.min()) < 0.9  # the cap bends these logits by more than 10%
    # the logit nodes' values are the model's own (capped) logits
    with torch.no_grad():
        logits = lens.model(tokens)[0, -1].double()
    for i in graph.indices(NodeKind.LOGIT):
        node = graph.nodes[i]
        assert node.activation == pytest.approx(float(logits[node.token_id] - logits.mean()))
    sources = [i for i, n in enumerate(graph.nodes) if n.kind is not NodeKind.LOGIT]
    run = rm.capture(tokens)
    resid = _final_residual(rm, tokens, (run, sources, graph))
    z = (resid[:, -1] @ lens.W_U.double() + lens.b_U.double()) * s
    d = torch.stack(
        [_direction(graph.nodes[i], z.shape[-1]) for i in graph.indices(NodeKind.LOGIT)]
    )
    values = z @ d.T  # [1 + sources, logits]
    measured = values[:1] - values[1:]
    A = graph.adjacency[graph.indices(NodeKind.LOGIT)][:, sources].double()
    torch.testing.assert_close(A, measured.T, rtol=1e-4, atol=1e-9 * float(measured.abs().max()))
    assert_edges_are_interventions(rm, graph)


def _direction(node, d_vocab):
    d = torch.full((d_vocab,), -1.0 / d_vocab, dtype=torch.float64)
    d[node.token_id] += 1.0
    return d


def _final_residual(rm, tokens, ablate):
    """The input of the unembedding (after the final norm): of the plain model (ablate None),
    or in the frozen model with features held, batch element 1 + j zeroing source j."""
    out = {}

    def save(x, hook):
        out["x"] = x.detach().double()

    if ablate is None:
        with torch.no_grad():
            rm.lens.run(tokens, [("unembed.hook_in", save)])
        return out["x"]
    run, sources, graph = ablate
    from tl_clt import hooks as H

    hooks = [("unembed.hook_in", save)]
    for b, i in enumerate(sources, start=1):
        n = graph.nodes[i]
        if n.kind is NodeKind.FEATURE:
            where = (b, n.position, n.feature)
            name = H.features(n.layer)
        elif n.kind is NodeKind.ERROR:
            where, name = (b, n.position), H.error(n.layer)
        else:
            where, name = (b, n.position), "hook_embed"
        hooks.append((name, lambda x, hook, w=where: _zero(x, w)))
    with torch.no_grad(), rm.frozen(run, features=True):
        rm.run_with_hooks(tokens.expand(1 + len(sources), -1), fwd_hooks=hooks, spliced=False)
    return out["x"]


def _zero(x, where):
    x = x.clone()
    x[where] = 0
    return x


# ---------------------------------------------------------------------- the check
@pytest.mark.parametrize("family", ["gpt2", "llama", "neox"])
def test_the_check_passes_and_is_recorded(family):
    lens = get_model(family, n_layers=3)
    rm = ReplacementModel(lens, clt_for(lens, architecture="cross_layer"))
    graph = attribute(rm, PROMPT)
    checks = graph.info.checks
    tol = _check.tolerance(torch.float32)
    assert checks["tolerance"] == tol == pytest.approx(1.2e-4, rel=0.01)
    assert 0 <= checks["logit_error"] < tol and 0 < checks["linearity_error"] < tol
    labels = {n.label() for n in graph.nodes}
    assert len(checks["sources"]) == 3 and set(checks["sources"]) <= labels
    with tempfile.TemporaryDirectory() as d:
        assert AttributionGraph.load(graph.save(d)).info.checks == checks
    assert graph.prune().info.checks == checks
    assert attribute(rm, PROMPT, check=False).info.checks is None


def test_the_check_raises_when_patterns_are_not_held(monkeypatch):
    """With the pattern freeze taken away (any model), the frozen model is no longer linear:
    the check names the model and what did not stay frozen; check=False still builds."""
    lens = get_model("gpt2", n_layers=3)
    rm = ReplacementModel(lens, clt_for(lens))
    original = SpliceRun._freeze_hooks

    def without_patterns(self, run):
        return [h for h in original(self, run) if "pattern" not in h[0] and "hook_z" not in h[0]]

    monkeypatch.setattr(SpliceRun, "_freeze_hooks", without_patterns)
    with pytest.raises(AttributionCheckError, match=r"tiny-gpt2-0.*not linear.*attention patterns"):
        attribute(rm, PROMPT)
    assert attribute(rm, PROMPT, check=False).info.checks is None


def test_the_check_catches_gpt_neo_without_holding_through_z(monkeypatch):
    """GPT-Neo with its pattern hook trusted (what attribution did before holding patterns
    through hook_z): under 4.x the hook's edits are discarded, the graph's edges are wrong and
    the check says so; under 3.x the hook is honoured and the graph is right."""
    rm = _rm("neo")
    monkeypatch.setattr(Lens, "pattern_edits_apply", lambda self: [True] * self.n_layers)
    if TL_MAJOR >= 4:
        with pytest.raises(
            AttributionCheckError, match=r"tiny-neo \(GPTNeoForCausalLM\).*not linear"
        ):
            attribute(rm, PROMPT, batch_size=64)
    else:
        assert_edges_are_interventions(rm, attribute(rm, PROMPT, batch_size=64))


def test_the_check_catches_a_softcap_that_is_not_held(monkeypatch):
    """Gemma-2 with its logit softcap left live (logit edges as gradients through the cap)."""
    rm = _rm("gemma2")
    monkeypatch.setattr(Lens, "logit_softcap", property(lambda self: None))
    with pytest.raises(AttributionCheckError, match=r"tiny-gemma2.*not linear.*softcap"):
        attribute(rm, PROMPT, batch_size=64)


def test_the_check_catches_a_linearised_pass_that_misses_the_model(monkeypatch):
    """A linearised pass whose logits are not the model's (here: the top target's logit moved
    by 1% of the magnitudes of its inputs) fails the first check."""
    lens = get_model("gpt2", n_layers=3)
    rm = ReplacementModel(lens, clt_for(lens))
    original = _check.check_graph

    def shifted(replacement, run, tape, graph, dtype):
        top = graph.indices(NodeKind.LOGIT)[0]
        moved = tape.logits.detach().clone()
        moved[0, graph.nodes[top].token_id] += 1e-2 * float(graph.adjacency[top].abs().sum())
        tape.logits = moved
        return original(replacement, run, tape, graph, dtype)

    monkeypatch.setattr("tl_clt.attribution.check_graph", shifted)
    with pytest.raises(AttributionCheckError, match="does not reproduce the model's logits"):
        attribute(rm, PROMPT)


@pytest.mark.parametrize("family", ["neo", "gemma2"])
def test_constrained_interventions_agree_with_the_graph(family):
    """A constrained intervention with the other features held (`intervene`, its own splice)
    that turns off the feature with the largest edge into the top logit changes that logit
    (minus the mean) by minus the edge: patterns and the softcap scale are held there too."""
    from tl_clt.interventions import Intervention, intervene

    rm = _rm(family)
    graph = attribute(rm, PROMPT, batch_size=64)
    logit = graph.indices(NodeKind.LOGIT)[0]
    features = graph.indices(NodeKind.FEATURE)
    j = max(features, key=lambda i: abs(float(graph.adjacency[logit, i])))
    node, token = graph.nodes[j], graph.nodes[logit].token_id
    edge = float(graph.adjacency[logit, j])
    assert abs(edge) > 1e-3
    result = intervene(rm, PROMPT, Intervention(node.layer, node.feature, node.position, scale=0.0),
                       freeze_features=True)  # fmt: skip
    before, after = result.logits_before[-1].double(), result.logits_after[-1].double()
    change = (after[token] - after.mean()) - (before[token] - before.mean())
    assert float(change) == pytest.approx(-edge, rel=1e-4)
