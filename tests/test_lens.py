"""The model interface: building without the hub, hook names, tokens, identity."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import FAMILIES, get_model

from tl_clt import TLCLTWarning
from tl_clt.lens import TL_MAJOR, Lens, tiny_model
from tl_clt.lens.build import tiny_hf_model


@pytest.mark.parametrize("family", FAMILIES)
def test_built_model_computes_the_hf_models_logits(family):
    lens = get_model(family)
    tokens = lens.tokens("w5 w2 w9 w9 w1")
    with torch.no_grad():
        expected = tiny_hf_model(family, seed=0)(tokens).logits
        torch.testing.assert_close(lens.model(tokens), expected, atol=1e-4, rtol=1e-4)
    expected_type = "TransformerBridge" if TL_MAJOR >= 4 else "HookedTransformer"
    assert type(lens.model).__name__ == expected_type


def test_hook_functions_see_the_canonical_name(lens):
    seen = []
    name = lens.mlp_out(1)
    lens.run(lens.tokens("w1 w2"), [(name, lambda x, hook: seen.append(hook.name))])
    assert seen == [lens.canonical(name)]
    if TL_MAJOR >= 4:
        assert lens.canonical(name) == "blocks.1.mlp.hook_out"
    else:
        assert lens.canonical(name) == name


def test_mlp_input_hook_is_the_normalised_residual(lens):
    """ln2.hook_normalized = (resid - mean) / scale (LayerNorm) or resid / rms (RMSNorm), with
    resid the residual stream the MLP reads (resid_mid, or resid_pre for parallel blocks)."""
    resid_name = lens.resid_pre(1) if lens.parallel else lens.hook("blocks.1.hook_resid_mid")
    _, cache = lens.cache(lens.tokens("w1 w7 w3"), [resid_name, lens.mlp_in(1)])
    r = cache[resid_name].double()
    eps = lens.model.cfg.eps
    if lens.model.cfg.normalization_type == "RMS":
        expected = r / (r.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    else:
        r = r - r.mean(-1, keepdim=True)
        expected = r / (r.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    torch.testing.assert_close(cache[lens.mlp_in(1)].double(), expected, atol=1e-5, rtol=1e-5)


def test_norm_scales_and_embeddings(lens):
    scales = lens.norm_scales()
    assert len(scales) == 2 * lens.n_layers + 1
    assert len({lens.canonical(s) for s in scales}) == len(scales)
    family = lens.name.split("-")[1]
    assert lens.embeddings() == (
        ["hook_embed", "hook_pos_embed"] if family == "gpt2" else ["hook_embed"]
    )
    assert lens.parallel == (family == "neox")


def test_tokens_round_trip(lens):
    tokens = lens.tokens("w3 w14 w0")
    assert lens.to_str_tokens(tokens) == ["<bos>", "w3", "w14", "w0"]
    assert tokens.shape == (1, 4)


def test_unknown_words_in_a_prompt_are_named_in_a_warning(lens):
    with pytest.warns(TLCLTWarning, match=r"2 part\(s\) of the prompt \('Zebra', 'w9x'\)"):
        tokens = lens.tokens("w3 Zebra w1 w9x")
    assert lens.to_str_tokens(tokens) == ["<bos>", "w3", "<unk>", "w1", "<unk>"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lens.tokens("w3 w1")  # all known: no warning
        lens.tokens("w3 <unk>")  # the unknown token written out on purpose: no warning
        lens.tokens(torch.tensor([[0, 3]]))  # token ids: nothing to check


def test_an_unknown_token_that_doubles_as_bos_never_warns(lens):
    tok = lens.tokenizer
    unk = tok.unk_token
    tok.unk_token = tok.bos_token  # as GPT-2's byte-level BPE has it
    try:
        assert tok.unk_token_id == tok.bos_token_id
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert lens.tokens("w3 w1")[0, 0] == tok.bos_token_id  # BOS is not unknown
    finally:
        tok.unk_token = unk
    assert tok.unk_token_id != tok.bos_token_id


def test_identity_reads_weight_processing_off_the_weights():
    lens = tiny_model("gpt2", seed=3)
    assert lens.identity().weight_processing.as_dict() == dict(
        fold_ln=False, center_writing_weights=False, center_unembed=False
    )
    kw = dict(fold_ln=True, center_writing_weights=True, center_unembed=True)
    if TL_MAJOR >= 4:
        lens.model.process_weights(**kw)
    else:
        lens.model.process_weights_(**kw)
    wp = Lens(lens.model).identity().weight_processing
    assert (wp.center_writing_weights, wp.center_unembed, wp.fold_ln) == (True, True, True)


def test_lens_refuses_a_non_transformerlens_model():
    with pytest.raises(TypeError, match="HookedTransformer or TransformerBridge"):
        Lens(torch.nn.Linear(2, 2))
