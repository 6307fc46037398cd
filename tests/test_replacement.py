"""Splicing: exact with the error term, equal to a by-hand Hugging Face computation without it,
hooks restored afterwards, the local replacement model frozen and linear."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHITECTURES, FAMILIES, clt_for, get_model

from tl_clt import ReplacementModel
from tl_clt import hooks as H
from tl_clt.lens.build import tiny_hf_model

PROMPT = "w3 w1 w4 w1 w5 w9 w2 w6"


def n_hooks(lens) -> int:
    return sum(len(hp.fwd_hooks) for hp in set(lens.model.hook_dict.values()))


@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_error_term_reproduces_the_model(lens, architecture, skip):
    rm = ReplacementModel(lens, clt_for(lens, architecture=architecture, skip=skip))
    tokens = lens.tokens(PROMPT)
    with torch.no_grad():
        original = lens.model(tokens)
        with rm.spliced(error=True):
            spliced = lens.model(tokens)
        pure = rm(tokens, error=False)
    torch.testing.assert_close(spliced, original, atol=1e-5, rtol=0)
    assert (pure - original).abs().max() > 1e-2  # the random transcoder really is in the path
    assert n_hooks(lens) == 0


def _hf_mlps(hf, family):
    if family == "gpt2":
        return [(b.ln_2, b.mlp) for b in hf.transformer.h]
    if family == "llama":
        return [(b.post_attention_layernorm, b.mlp) for b in hf.model.layers]
    return [(b.post_attention_layernorm, b.mlp) for b in hf.gpt_neox.layers]


@pytest.mark.parametrize("family", FAMILIES)
def test_pure_replacement_equals_by_hand_hf_computation(family):
    """error=False, computed independently on the Hugging Face model: PyTorch hooks on each
    MLP module encode its (un-affined) normalised input and return the decoded output."""
    lens = get_model(family)
    clt = clt_for(lens, architecture="cross_layer", activation="jumprelu", scales=True)
    hf = tiny_hf_model(family, seed=0)
    acts, handles = {}, []
    for layer, (norm, mlp) in enumerate(_hf_mlps(hf, family)):

        def pre(module, args, layer=layer, norm=norm):
            x = args[0]
            if getattr(norm, "bias", None) is not None:
                x = x - norm.bias
            x = x / norm.weight  # the normalised input before the norm's affine map
            acts[layer] = clt.encode_layer(x, layer)

        def post(module, args, out, layer=layer):
            y = clt.b_dec[layer].clone()
            for s in range(layer + 1):
                y = y + acts[s] @ clt.W_dec[s][:, layer - s] / clt.output_scale[layer]
            return y

        handles += [mlp.register_forward_pre_hook(pre), mlp.register_forward_hook(post)]
    tokens = lens.tokens(PROMPT)
    with torch.no_grad():
        by_hand = hf(tokens).logits
        ours = ReplacementModel(lens, clt)(tokens, error=False)
    for h in handles:
        h.remove()
    torch.testing.assert_close(ours, by_hand, atol=1e-4, rtol=1e-4)


def test_hooks_are_removed_when_the_block_raises():
    lens = get_model("gpt2")
    rm = ReplacementModel(lens, clt_for(lens))
    with pytest.raises(RuntimeError, match="boom"), rm.spliced():
        assert n_hooks(lens) > 0
        raise RuntimeError("boom")
    assert n_hooks(lens) == 0
    assert sum(len(hp.fwd_hooks) for hp in rm.clt.hook_dict.values()) == 0


def test_features_reachable_through_run_with_cache_and_hooks():
    lens = get_model("llama")
    clt = clt_for(lens)
    rm = ReplacementModel(lens, clt)
    tokens = lens.tokens(PROMPT)
    names = [H.features(1), H.recons(1), "blocks.1.hook_mlp_out", lens.mlp_in(1)]
    logits, cache = rm.run_with_cache(tokens, names_filter=names)
    x = cache[lens.mlp_in(1)]
    torch.testing.assert_close(cache[H.features(1)], clt.encode_layer(x, 1).detach())
    torch.testing.assert_close(
        cache["blocks.1.hook_mlp_out"],
        cache[H.recons(1)] + rm.capture(tokens).errors[1],
        atol=1e-5,
        rtol=0,
    )
    # an intervention through the documented hook name changes the output
    zeroed = rm.run_with_hooks(
        tokens, fwd_hooks=[(H.features(0), lambda a, hook: a * 0)], error=False
    )
    assert (zeroed - rm(tokens, error=False)).abs().max() > 1e-3


def test_frozen_local_model_reproduces_logits_and_is_linear():
    lens = get_model("gpt2", n_layers=3)
    clt = clt_for(lens, activation="relu")
    rm = ReplacementModel(lens, clt)
    tokens = lens.tokens(PROMPT)
    run = rm.capture(tokens)
    torch.testing.assert_close(run.logits, lens.model(tokens), atol=1e-5, rtol=0)
    layer, pos = 0, 3
    feat = int(run.features[layer][0, pos].argmax())

    def target_pre(scale: float) -> torch.Tensor:
        out = {}

        def scale_feature(a, hook):
            a = a.clone()
            a[0, pos, feat] *= scale
            return a

        def save(h, hook):
            out["h"] = h.detach()

        hooks = [(H.features(layer), scale_feature), (H.feature_pre(2), save)]
        with rm.frozen(run, features=True):
            rm.run_with_hooks(tokens, fwd_hooks=hooks, spliced=False)
        return out["h"]

    base, up, down = target_pre(1.0), target_pre(3.0), target_pre(-1.0)
    torch.testing.assert_close(base, run.feature_pre[2], atol=1e-5, rtol=0)
    # with attention, norms, errors and other features frozen, the effect is linear in the source
    torch.testing.assert_close(up - base, -(down - base) * 1.0, atol=1e-5, rtol=1e-4)
    assert (up - base).abs().max() > 1e-4
    assert n_hooks(lens) == 0
