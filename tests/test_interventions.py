"""Interventions: no-ops are bitwise no-ops, ablations match a by-hand computation, the two
modes differ where attention moves, bad inputs are refused, and no hook is left behind."""

from __future__ import annotations

import pytest
import torch
from conftest import clt_for, get_model

from tl_clt import InputError, ReplacementModel
from tl_clt.generation import generate
from tl_clt.interventions import Intervention, intervene, intervention_hooks
from tl_clt.lens.build import tiny_hf_model

PROMPT = "w3 w1 w4 w1 w5 w9 w2"


def n_hooks(rm) -> int:
    model_side = sum(len(hp.fwd_hooks) for hp in set(rm.lens.model.hook_dict.values()))
    return model_side + sum(len(hp.fwd_hooks) for hp in rm.clt.hook_dict.values())


@pytest.fixture(scope="module")
def rm():
    lens = get_model("gpt2", n_layers=3)
    return ReplacementModel(lens, clt_for(lens, activation="jumprelu"))


def active_feature(rm, layer=0, position=3) -> int:
    run = rm.capture(rm.lens.tokens(PROMPT))
    return int(run.features[layer][0, position].argmax())


@pytest.mark.parametrize("mode", ["constrained", "unconstrained"])
@pytest.mark.parametrize("error", [True, False])
def test_scaling_by_one_changes_nothing_bitwise(rm, mode, error):
    f = active_feature(rm)
    result = intervene(rm, PROMPT, [Intervention(0, f, scale=1.0)], mode=mode, error=error)
    assert torch.equal(result.logits_before, result.logits_after)
    assert all(torch.equal(b, a) for b, a in zip(result.features_before, result.features_after))
    assert result.feature_changes() == []
    if mode == "unconstrained" and error:  # the clean run is the original model, exactly
        assert torch.equal(result.logits_before, rm.lens.model(rm.lens.tokens(PROMPT))[0])
    assert n_hooks(rm) == 0


@pytest.mark.filterwarnings("ignore:.*of the scaled features")  # some are inactive: intended
@pytest.mark.parametrize("skip", [False, True])
def test_ablating_a_layer_in_the_pure_replacement_equals_by_hand(skip):
    """Every feature of layer 1 off in the pure replacement model, computed independently on
    the Hugging Face model with PyTorch hooks that decode with layer 1's activations zeroed
    (and, for a skip transcoder, add each layer's input through its skip connection)."""
    lens = get_model("llama", n_layers=3)
    clt = clt_for(lens, activation="relu", scales=True, skip=skip)
    rm = ReplacementModel(lens, clt)
    ablate = [Intervention(1, f, scale=0.0) for f in range(clt.cfg.n_features)]
    result = intervene(rm, PROMPT, ablate, mode="unconstrained", error=False)

    hf = tiny_hf_model("llama", seed=0, n_layers=3)
    acts, handles = {}, []
    for layer, block in enumerate(hf.model.layers):

        def pre(module, args, layer=layer, norm=block.post_attention_layernorm):
            a = clt.encode_layer(args[0] / norm.weight, layer)
            if layer == 1:  # "all" positions means every position but BOS
                a = torch.cat([a[:, :1], torch.zeros_like(a[:, 1:])], dim=1)
            acts[layer] = a

        def post(module, args, out, layer=layer, norm=block.post_attention_layernorm):
            y = clt.b_dec[layer].clone()
            for s in range(layer + 1):
                y = y + acts[s] @ clt.W_dec[s][:, layer - s] / clt.output_scale[layer]
            if skip:
                scale = clt.input_scale[layer] / clt.output_scale[layer]
                y = y + (args[0] / norm.weight) @ clt.W_skip[layer] * scale
            return y

        handles += [block.mlp.register_forward_pre_hook(pre), block.mlp.register_forward_hook(post)]
    with torch.no_grad():
        by_hand = hf(lens.tokens(PROMPT)).logits[0]
    for h in handles:
        h.remove()
    torch.testing.assert_close(result.logits_after, by_hand, atol=1e-4, rtol=1e-4)
    assert (result.logits_after - result.logits_before).abs().max() > 1e-3
    assert (result.features_after[1][1:] == 0).all()


def test_unconstrained_differs_from_constrained_where_attention_moves(rm):
    tokens = rm.lens.tokens(PROMPT)
    f = active_feature(rm, layer=0, position=2)
    ivs = [Intervention(0, f, position=2, scale=-4.0)]
    pattern = rm.lens.attn_pattern(2)
    seen = {}

    def grab(x, hook, key):
        seen[key] = x.detach().clone()

    clean = rm.capture(tokens).patterns[pattern]
    for mode in ("constrained", "unconstrained"):
        hooks = intervention_hooks(rm, tokens, ivs, mode=mode)
        rm.lens.run(tokens, hooks + [(pattern, lambda x, hook, m=mode: grab(x, hook, m))])
    # constrained: attention held at the clean pattern; unconstrained: it moves at later positions
    torch.testing.assert_close(seen["constrained"], clean)
    moved = (seen["unconstrained"] - clean).abs()
    assert moved[..., 2:, :].max() > 1e-3 and moved[..., :2, :].max() < 1e-6
    results = {m: intervene(rm, PROMPT, ivs, mode=m) for m in ("constrained", "unconstrained")}
    diff = (results["constrained"].logits_after - results["unconstrained"].logits_after).abs()
    assert diff[2:].max() > 1e-3  # the two modes disagree downstream of the change
    assert diff[:2].max() < 1e-4  # and agree before it (causal masking)


def test_user_run_with_hooks_matches_intervene(rm):
    tokens = rm.lens.tokens(PROMPT)
    f = active_feature(rm)
    ivs = [Intervention(0, f, position=3, value=5.0)]
    for mode in ("constrained", "unconstrained"):
        hooks = intervention_hooks(rm, tokens, ivs, mode=mode)
        with torch.no_grad():
            mine = rm.lens.model.run_with_hooks(tokens, fwd_hooks=hooks)[0]
        torch.testing.assert_close(mine, intervene(rm, PROMPT, ivs, mode=mode).logits_after)
    assert n_hooks(rm) == 0


BAD = [
    (
        "feature out of range",
        lambda rm: intervene(rm, PROMPT, [Intervention(0, 999, scale=0.0)]),
        "feature 999 is out of range",
    ),
    (
        "layer out of range",
        lambda rm: intervene(rm, PROMPT, [Intervention(7, 0, scale=0.0)]),
        "layer 7 is out of range",
    ),
    (
        "position past the prompt",
        lambda rm: intervene(rm, PROMPT, [Intervention(0, 0, position=30, scale=0.0)]),
        "position 30 is past the prompt",
    ),
    (
        "empty prompt",
        lambda rm: intervene(rm, "  ", [Intervention(0, 0, scale=0.0)]),
        "prompt is empty",
    ),
    (
        "prompt longer than the context",
        lambda rm: intervene(rm, " ".join(["w2"] * 40), [Intervention(0, 0, scale=0.0)]),
        "context is 32",
    ),
    ("neither scale nor value", lambda rm: Intervention(0, 0), "exactly one of scale"),
    ("unparseable feature", lambda rm: Intervention.parse("3-4", scale=0.0), "cannot read feature"),
]


@pytest.mark.parametrize(("name", "call", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_are_refused_and_leave_no_hooks(rm, name, call, message):
    with pytest.raises(InputError, match=message):
        call(rm)
    assert n_hooks(rm) == 0


def test_hooks_are_removed_when_a_hook_raises(rm):
    tokens = rm.lens.tokens(PROMPT)
    hooks = intervention_hooks(rm, tokens, [Intervention(0, 0, scale=2.0)])

    def boom(x, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        rm.lens.run(tokens, hooks + [(rm.lens.mlp_out(1), boom)])
    assert n_hooks(rm) == 0


def test_generation_holds_interventions_on_generated_tokens(rm):
    f = active_feature(rm, layer=1)
    same = generate(rm, PROMPT, [Intervention(1, f, scale=1.0)], max_new_tokens=4)
    assert same.before == same.after and len(same.before) == 4
    pushed = generate(rm, PROMPT, [Intervention(1, f, value=40.0)], max_new_tokens=4)
    assert pushed.before == same.before and pushed.after != pushed.before
    # the first generated token is the intervened model's answer on the prompt
    first = intervene(rm, PROMPT, [Intervention(1, f, value=40.0)], mode="unconstrained")
    assert pushed.after[0] == first.answer_after
    # "all" positions include generated ones: intervening only on prompt positions differs later
    prompt_only = generate(
        rm, PROMPT, [Intervention(1, f, position=slice(1, 8), value=40.0)], max_new_tokens=4
    )
    assert prompt_only.after[0] == pushed.after[0]
    assert n_hooks(rm) == 0


def test_scaling_a_feature_that_never_fires_there_warns():
    from tl_clt.errors import TLCLTWarning

    lens = get_model("gpt2", n_layers=3)
    clt = clt_for(lens, activation="jumprelu")
    silent = 5
    with torch.no_grad():
        clt.b_enc[0, silent] = -1e3  # never fires
    rm = ReplacementModel(lens, clt)
    acts = rm.capture(rm.lens.tokens(PROMPT)).features[0][0]  # [pos, features]
    assert (acts[:, silent] == 0).all()
    with pytest.warns(
        TLCLTWarning, match=rf"1 of the scaled features \(0:{silent}\) is not active"
    ):
        result = intervene(rm, PROMPT, [Intervention(0, silent, scale=5.0)])
    assert torch.equal(result.logits_before, result.logits_after)  # it really changed nothing
    position = int((acts[:, silent] == 0).nonzero()[-1])
    with pytest.warns(TLCLTWarning, match=rf"\(0:{silent}@{position} \('"):
        intervene(rm, PROMPT, [Intervention(0, silent, position=position, scale=0.0)])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an active feature, or a value: no warning
        intervene(rm, PROMPT, [Intervention(0, silent, value=2.0)])
        intervene(rm, PROMPT, [Intervention(0, active_feature(rm), position=3, scale=0.0)])
