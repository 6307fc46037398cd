"""The splice and the TransformerLens-faithful surface of `ReplacementModel`: caches as
TransformerLens returns them, text in, backward hooks, the transcoder's hook points firing in
every mode, per-run state, and user edits that propagate (checked against by-hand hooks on the
model alone)."""

from __future__ import annotations

import pytest
import torch
from conftest import clt_for, get_model

from tl_clt import InputError, ReplacementModel
from tl_clt import hooks as H
from tl_clt.interventions import Intervention, intervene
from tl_clt.lens.adapter import ActivationCache
from tl_clt.splice import Splice

PROMPT = "w3 w1 w4 w1 w5 w9 w2"


@pytest.fixture(scope="module")
def rm():
    lens = get_model("gpt2", n_layers=3)
    return ReplacementModel(lens, clt_for(lens, activation="jumprelu", scales=True))


def n_hooks(rm) -> int:
    points = set(rm.lens.model.hook_dict.values()) | set(rm.clt.hook_dict.values())
    return sum(len(hp.fwd_hooks) + len(hp.bwd_hooks) for hp in points)


def test_run_with_cache_without_a_filter_holds_model_and_transcoder_hooks(rm):
    tokens = rm.lens.tokens(PROMPT)
    logits, cache = rm.run_with_cache(tokens)
    assert isinstance(cache, ActivationCache)
    assert logits.requires_grad  # no no_grad unless asked for
    clt_names = [H.PREFIX + n for n in rm.clt.hook_dict]
    assert set(clt_names) <= set(cache.keys())
    # the model's own cache of the same pass (no transcoder) agrees exactly: the error term
    # makes the spliced pass the model's, bit for bit
    _, own = rm.lens.model.run_with_cache(tokens)
    shared = sorted(set(own.keys()) & set(cache.keys()))
    assert "blocks.2.hook_mlp_out" in shared and "blocks.0.hook_resid_post" in shared
    for name in shared:
        assert torch.equal(cache[name], own[name]), name
    # the transcoder's hooks hold what it computes from the cached MLP inputs
    for layer in range(rm.n_layers):
        x = cache[rm.lens.mlp_in(layer)]
        torch.testing.assert_close(cache[H.features(layer)], rm.clt.encode_layer(x, layer))
        torch.testing.assert_close(
            cache[H.recons(layer)] + cache[H.error(layer)], cache[f"blocks.{layer}.hook_mlp_out"],
            atol=1e-5, rtol=0,
        )  # fmt: skip
    assert n_hooks(rm) == 0


def test_run_with_cache_takes_a_name_and_a_function(rm):
    tokens = rm.lens.tokens(PROMPT)
    _, one = rm.run_with_cache(tokens, names_filter=H.features(1))
    assert list(one.keys()) == [H.features(1)]
    _, model_one = rm.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
    model_names = set(model_one.keys())
    assert "blocks.1.hook_resid_pre" in model_names
    assert not any(H.is_clt_hook(n) for n in model_names)
    _, picked = rm.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_features"))
    assert sorted(picked.keys()) == sorted(H.features(layer) for layer in range(rm.n_layers))
    torch.testing.assert_close(picked[H.features(1)], one[H.features(1)])
    _, both = rm.run_with_cache(tokens, names_filter=[H.error(0), "blocks.0.hook_mlp_out"])
    assert {H.error(0), "blocks.0.hook_mlp_out"} <= set(both.keys())
    assert isinstance(both, ActivationCache)
    assert n_hooks(rm) == 0


def test_called_with_text_as_the_model_is(rm):
    text = PROMPT
    tokens = rm.lens.model.to_tokens(text)
    with torch.no_grad():
        assert torch.equal(rm(text), rm.lens.model(text))  # the error term: exactly the model
        torch.testing.assert_close(rm(text, error=False), rm(tokens, error=False))
        assert (rm(text, error=False) - rm(text)).abs().max() > 1e-3
        hooked = rm.run_with_hooks(text, fwd_hooks=[(H.features(0), lambda a, hook: a * 0)])
    assert hooked.shape == rm(tokens).shape
    _, cache = rm.run_with_cache(text, names_filter=H.features(0))
    assert cache[H.features(0)].shape[1] == tokens.shape[1]


def test_backward_hooks_through_run_with_hooks(rm):
    """Gradients read by backward hooks on a transcoder and a model hook point equal the ones
    autograd gives for the same tensors in a plain spliced pass."""
    tokens = rm.lens.tokens(PROMPT)
    target = 5
    grads = {}

    def save(grad, hook):
        grads[hook.name] = grad[0].detach().clone()

    names = [H.features(0), "blocks.1.hook_resid_pre"]
    logits = rm.run_with_hooks(tokens, bwd_hooks=[(n, save) for n in names], reset_hooks_end=False)
    logits[0, -1, target].backward()
    rm.reset_hooks()
    assert n_hooks(rm) == 0

    kept = {}

    def keep(x, hook, key):
        x.retain_grad()
        kept[key] = x

    fwd = [
        (H.features(0), lambda x, hook: keep(x, hook, "features")),
        ("blocks.1.hook_resid_pre", lambda x, hook: keep(x, hook, "resid")),
    ]
    rm.run_with_hooks(tokens, fwd_hooks=fwd)[0, -1, target].backward()
    # a hook sees the name it was added under (the model's canonical name under TL 4.x)
    features, resid = names[0], rm.lens.canonical(names[1])
    assert set(grads) == {features, resid}
    torch.testing.assert_close(grads[features], kept["features"].grad[0])
    torch.testing.assert_close(grads[resid], kept["resid"].grad[0])
    assert kept["features"].grad.abs().max() > 0


def test_hook_error_fires_inside_intervene_in_both_modes(rm):
    f = int(rm.capture(rm.lens.tokens(PROMPT)).features[0][0, 3].argmax())
    clean = rm.capture(rm.lens.tokens(PROMPT))
    for mode in ("constrained", "unconstrained"):
        seen: list[torch.Tensor] = []

        def record(e, hook, seen=seen):
            seen.append(e.detach())

        with rm.hooks(fwd_hooks=[(H.error(1), record)]):
            intervene(rm, PROMPT, Intervention(0, f, scale=0.0), mode=mode)
        # the clean run recorded for constrained mode, then the runs without and with the
        # intervention
        assert len(seen) == (3 if mode == "constrained" else 2), mode
        torch.testing.assert_close(seen[-2], clean.errors[1], atol=1e-6, rtol=0)
        # an edit of the error term through the hook point changes the result
        with rm.hooks(fwd_hooks=[(H.error(2), lambda e, hook: e * 0)]):
            zeroed = intervene(rm, PROMPT, Intervention(0, f, scale=0.0), mode=mode)
        plain = intervene(rm, PROMPT, Intervention(0, f, scale=0.0), mode=mode)
        assert (zeroed.logits_after - plain.logits_after).abs().max() > 1e-4
    assert n_hooks(rm) == 0


def test_nested_spliced_runs_keep_their_own_state(rm):
    a_tokens, b_tokens = rm.lens.tokens(PROMPT), rm.lens.tokens("w8 w8 w2")
    with torch.no_grad(), rm.spliced(error=True) as outer:
        rm.lens.model(a_tokens)
        with rm.spliced(error=False) as inner:
            pass  # no pass: the inner run has seen nothing
        assert inner.features[0] is None
        a_features = [f.clone() for f in outer.features]
        inner_pass = rm.splice_run(Splice(error="none"))
        with rm.lens.hooks(inner_pass.hooks()):
            rm.lens.model(b_tokens)
    assert outer.features[0].shape[1] == b_tokens.shape[1]  # both splices saw the last pass
    assert inner_pass.features[0].shape[1] == b_tokens.shape[1]
    torch.testing.assert_close(a_features[0], rm.capture(a_tokens).features[0])
    assert n_hooks(rm) == 0


def test_a_users_feature_edit_propagates_through_the_live_error(rm):
    """Scaling a feature through `hook_features` in the spliced model (error kept) equals adding
    the change in its decoder writes to the model's MLP outputs by hand."""
    tokens = rm.lens.tokens(PROMPT)
    clean = rm.capture(tokens)
    f, pos = int(clean.features[0][0, 3].argmax()), 3

    def triple(a, hook):
        a = a.clone()
        a[0, pos, f] *= 3
        return a

    with torch.no_grad():
        spliced = rm.run_with_hooks(tokens, fwd_hooks=[(H.features(0), triple)])
        delta = 2 * clean.features[0][0, pos, f]
        by_hand = []
        for t in rm.clt.writes_to(0):
            write = delta * rm.clt.W_dec_at(0, t)[f]

            def add(out, hook, write=write):
                out = out.clone()
                out[0, pos] += write
                return out

            by_hand.append((rm.lens.mlp_out(t), add))
        expected = rm.lens.run(tokens, by_hand)
        via_intervene = intervene(rm, tokens, Intervention(0, f, pos, scale=3.0),
                                  mode="unconstrained").logits_after  # fmt: skip
    torch.testing.assert_close(spliced, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(spliced[0], via_intervene, atol=1e-6, rtol=0)
    assert (spliced - rm.lens.model(tokens)).abs().max() > 1e-4


def test_arguments_in_the_wrong_order_or_positional_hooks_are_refused(rm):
    iv = Intervention(0, 0, scale=0.0)
    with pytest.raises(InputError, match="ReplacementModel comes first"):
        intervene(PROMPT, rm, iv)
    with pytest.raises(InputError, match="keyword"):
        rm.run_with_hooks(rm.lens.tokens(PROMPT), [(H.features(0), lambda a, hook: a)])
    with pytest.raises(TypeError):
        intervene(rm, PROMPT, iv, "unconstrained")  # options are keyword-only
    with pytest.raises(InputError, match="output='leaf' needs"):
        Splice(output="leaf")


@pytest.mark.parametrize("family", ["gpt2", "llama", "neox"])
def test_features_are_encoded_from_the_models_own_mlp_inputs(family):
    """The clean spliced run (error term live) leaves every MLP output bitwise the model's, so
    the transcoder reads exactly the inputs the model computes: a JumpReLU feature placed at
    its threshold is active or not exactly as on the model's own activations."""
    lens = get_model(family, n_layers=3)
    clt = clt_for(lens, activation="jumprelu")
    tokens = lens.tokens("w3 w1 w4 w1 w5 w9 w2")
    names = [lens.mlp_in(layer) for layer in range(3)]
    with torch.no_grad():
        _, cache = lens.cache(tokens, names)
        # put the threshold of the last layer's strongest feature at the last position just
        # below its pre-activation there: the smallest change of input switches it off
        pre = clt.encode_layer_with_pre(cache[names[2]], 2)[0][0, -1]
        f = int(pre.argmax())
        clt.threshold[2, f] = torch.nextafter(pre[f], torch.tensor(float("-inf")))
        run = ReplacementModel(lens, clt).capture(tokens)
    for layer, name in enumerate(names):
        assert torch.equal(run.mlp_in[layer], cache[name])
    expected = clt.encode_layer(cache[names[2]], 2)
    assert torch.equal(run.features[2], expected) and run.features[2][0, -1, f] > 0
