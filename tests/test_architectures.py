"""The architecture matrix: a tiny random model of each family (built from its Hugging Face config
class, norm weights perturbed) under the installed TransformerLens major, each either wrapped and
checked or refused with a typed error.

Per wrapped family, against computations that use plain hooks on the model and the transcoder's
weights, none of the splice or attribution code: (a) the spliced run with its error term gives
the model's logits; (b) every edge of a graph equals the change that removing its source makes in
the model with attention patterns and norm scales held and every MLP output a constant; (c) a
constrained and an unconstrained intervention equal hand-written hooks; (d) a few training steps
lower the reconstruction error. The MLP's input and output hooks are written out per family here
from what each block computes, and the Lens must choose the same ones.
"""

from __future__ import annotations

import tempfile
from typing import NamedTuple

import pytest
import torch
from conftest import clt_for

from tl_clt import Intervention, NodeKind, ReplacementModel, attribute, intervene
from tl_clt.errors import UnsupportedModelError
from tl_clt.lens import TL_MAJOR, from_hf
from tl_clt.lens.build import tiny_hf_model
from tl_clt.lens.families import FAMILIES
from tl_clt.tokenization import SPECIALS, word_level_tokenizer

PROMPT = "w3 w1 w4 w1 w5 w9"

# (MLP input site, MLP output site) per family where they differ from the pre-MLP norm's
# normalised output and `hook_mlp_out`: GPT-J and Phi run attention and MLP in parallel from one
# shared ln1 (4.x keeps one norm; 3.x a tied copy named ln2); OLMo-2 has no pre-MLP norm and
# normalises after the MLP; Gemma-2/3 normalise after the MLP too (3.x's hook_mlp_out is after it).
SITES = {
    3: {"olmo2": ("hook_resid_mid", "hook_mlp_out")},
    4: {
        "gptj": ("ln1.hook_normalized", "hook_mlp_out"),
        "phi": ("ln1.hook_normalized", "hook_mlp_out"),
        "olmo2": ("hook_resid_mid", "ln2_post.hook_out"),
        "gemma2": ("ln2.hook_normalized", "ln2_post.hook_out"),
        "gemma3": ("ln2.hook_normalized", "ln2_post.hook_out"),
        # OLMo's LayerNorm has no weight: its output is its normalised value
        "olmo": ("ln2.hook_out", "hook_mlp_out"),
    },
}[TL_MAJOR]
# families the installed major refuses, with what the error must say
REFUSED = {3: {"phi": "PhiForCausalLM"}, 4: {}}[TL_MAJOR]
WRAPPED = [f for f in FAMILIES if f not in REFUSED]


def sites(family: str) -> tuple[str, str]:
    return SITES.get(family, ("ln2.hook_normalized", "hook_mlp_out"))


# Hugging Face's mixture-of-experts kernels have no float64: these rows run in float32
FLOAT32 = {"mixtral", "olmoe"}


def build(family: str, dtype: torch.dtype = torch.float64):
    dtype = torch.float32 if family in FLOAT32 else dtype
    hf = tiny_hf_model(family).to(dtype)
    words = [f"w{i}" for i in range(hf.config.vocab_size - len(SPECIALS))]
    return hf, from_hf(hf, word_level_tokenizer(words, tempfile.mkdtemp()), name=f"arch-{family}")


# families whose attention patterns a hook on hook_pattern does not hold under this major (the
# attention is computed inside the Hugging Face module): held here, as the library holds them,
# by replacing the mixed values hook_z with the held pattern times the live values hook_v
PATTERNS_NOT_HELD = {3: set(), 4: {"gptneo", "gptj"}}[TL_MAJOR]
# families whose logits pass through a tanh soft-cap c*tanh(z/c): held here by the clean run's
# scale tanh(z/c)/(z/c), so that the logits are linear in the frozen model
SOFT_CAPPED = {"gemma2"}


def test_every_family_is_wrapped_or_refused_with_a_typed_error():
    assert len(FAMILIES) == 17 and set(WRAPPED) | set(REFUSED) == set(FAMILIES)
    for family, reason in REFUSED.items():
        with pytest.raises(UnsupportedModelError, match=reason) as info:
            build(family)
        assert "TransformerLens 4" in str(info.value)  # says what to do


@pytest.fixture(scope="module", params=WRAPPED)
def row(request):
    family = request.param
    hf, lens = build(family)
    clt = clt_for(lens, dtype="float32" if family in FLOAT32 else "float64")
    return family, hf, lens, ReplacementModel(lens, clt)


def names(lens, family: str) -> tuple[list[str], list[str]]:
    i, o = sites(family)
    return [f"blocks.{ly}.{i}" for ly in range(lens.n_layers)], [
        f"blocks.{ly}.{o}" for ly in range(lens.n_layers)
    ]


def clean(rm, family, tokens):
    """The model's own run: MLP inputs and outputs at the expected hooks, patterns and scales,
    and the transcoder's features and errors computed by hand from them (ReLU transcoder)."""
    lens, clt = rm.lens, rm.clt
    ins, outs = names(lens, family)
    frozen = [lens.attn_pattern(ly) for ly in range(lens.n_layers)] + lens.norm_scales()
    if family in SOFT_CAPPED:
        frozen.append("unembed.hook_out")  # the logits before the cap
    logits, cache = lens.cache(tokens, ins + outs + frozen)
    x = [cache[n].detach() for n in ins]
    y = [cache[n].detach() for n in outs]
    acts = [
        torch.relu(x[ly] @ clt.W_enc_at(ly) + clt.b_enc_at(ly)).detach() for ly in range(len(x))
    ]
    errors = [y[t] - recon(clt, acts, t) for t in range(len(y))]
    return logits.detach(), x, y, acts, errors, {n: cache[n].detach() for n in frozen}


def hold(lens, family, values):
    """Plain hooks holding each recorded pattern and scale over a batch of runs (repeated where
    3.x flattens batch, position and head into one dimension). OLMo's LayerNorm has no weight,
    and 4.x cannot recompute such a norm from an edited scale: its output is set by hand to its
    centred input over the held scale."""

    def held(value):
        def hook(x, hook):
            if value.shape == x.shape:
                return value
            if value.shape[1:] == x.shape[1:]:
                return value.repeat(x.shape[0] // value.shape[0], *[1] * (x.dim() - 1))
            return value.expand_as(x)

        return hook

    hooks, inputs, mixed = [], {}, {}
    for name, value in values.items():
        if name == "unembed.hook_out":  # the soft-capped logits c*tanh(z/c) -> z * held scale
            cap = float(lens.model.cfg.output_logits_soft_cap)
            r = value / cap
            scale = torch.where(r == 0, 1.0, torch.tanh(r) / torch.where(r == 0, 1.0, r))

            def capped(z, hook, scale=scale, cap=cap):
                return cap * torch.atanh(z * scale / cap)  # the model's cap then gives z * scale

            hooks.append((name, capped))
            continue
        if name.endswith("attn.hook_pattern") and family in PATTERNS_NOT_HELD:
            block = name.removesuffix(".hook_pattern")

            def values_(v, hook, block=block):
                mixed[block] = v

            def mix(z, hook, block=block, pattern=value):
                v = mixed[block].repeat_interleave(z.shape[2] // mixed[block].shape[2], dim=2)
                return torch.einsum("bhqk,bkhd->bqhd", pattern.expand(z.shape[0], -1, -1, -1), v)

            hooks += [(f"{block}.hook_v", values_), (f"{block}.hook_z", mix)]
            continue
        if not (TL_MAJOR >= 4 and family == "olmo" and name.endswith("hook_scale")):
            hooks.append((name, held(value)))
            continue
        norm = name.removesuffix(".hook_scale")

        def centred(out, hook, norm=norm, scale=value):
            x = inputs[norm]
            return (x - x.mean(-1, keepdim=True)) / scale

        hooks.append((f"{norm}.hook_in", lambda x, hook, norm=norm: inputs.__setitem__(norm, x)))
        hooks.append((f"{norm}.hook_out", centred))
    return hooks


def recon(clt, acts, t):
    return sum(acts[s] @ clt.W_dec_at(s, t) for s in clt.reads_from(t)) + clt.b_dec[t]


def test_the_lens_chooses_the_mlp_hooks_the_block_computes(row):
    family, _, lens, _ = row
    ins, outs = names(lens, family)
    assert [lens.canonical(lens.mlp_in(ly)) for ly in range(lens.n_layers)] == [
        lens.canonical(n) for n in ins
    ]
    assert [lens.canonical(lens.mlp_out(ly)) for ly in range(lens.n_layers)] == [
        lens.canonical(n) for n in outs
    ]


def test_splice_with_error_is_exact(row):
    family, hf, lens, rm = row
    tokens = lens.tokens(PROMPT)
    with torch.no_grad():
        expected = hf(tokens).logits
        model = lens.model(tokens)
        spliced = rm(tokens)
    # some Hugging Face norms compute in float32 even for float64 inputs
    scale = float(expected.abs().max())
    torch.testing.assert_close(model, expected, rtol=1e-4, atol=1e-5 * scale)
    torch.testing.assert_close(spliced, model, rtol=1e-9, atol=1e-9 * scale)  # the splice: exact


def test_every_edge_equals_removing_its_source(row):
    family, _, lens, rm = row
    graph = attribute(rm, PROMPT, batch_size=64)
    A, M, linear = measured_edges(rm, family, graph)
    assert graph.mask(NodeKind.FEATURE).sum() > 10 and M.abs().max() > 1e-3
    assert linear.features and linear.logits
    torch.testing.assert_close(A, M, rtol=1e-4, atol=1e-6 * float(M.abs().max()))


def measured_edges(rm, family, graph):
    """The graph's feature and logit rows, the same rows measured by removing each source in
    one batched run (element 0 clean, 1 + j without source j), and whether the frozen model
    is linear."""
    lens = rm.lens
    tokens = graph.tokens[None].to(lens.device)
    _, x, y, acts, errors, frozen = clean(rm, family, tokens)
    ins, outs = names(lens, family)
    sources = [i for i, n in enumerate(graph.nodes) if n.kind is not NodeKind.LOGIT]
    delta, embed_off = removals(rm, graph, sources, acts, errors)
    seen = {}

    def zero(e, hook):
        e = e.clone()
        for b, p in embed_off:
            e[b, p] = 0
        return e

    L = lens.n_layers
    hooks = hold(lens, family, frozen)
    hooks += [(outs[ly], lambda o, hook, ly=ly: y[ly] - delta[ly]) for ly in range(L)]
    hooks += [(ins[ly], lambda v, hook, ly=ly: seen.__setitem__(ly, v)) for ly in range(L)]
    hooks += [(name, zero) for name in lens.embeddings()]
    with torch.no_grad():
        logits = lens.run(tokens.expand(len(sources) + 1, -1), hooks)[:, -1]
    rows, values = [], []
    for i, n in enumerate(graph.nodes):
        if n.kind is NodeKind.FEATURE:
            w = rm.clt.W_enc_at(n.layer)[:, n.feature]
            values.append(seen[n.layer][:, n.position] @ w + rm.clt.b_enc_at(n.layer)[n.feature])
        elif n.kind is NodeKind.LOGIT:
            values.append(logits[:, n.token_id] - logits.mean(-1))
        else:
            continue
        rows.append(i)
    V = torch.stack(values).double().detach()
    M = torch.zeros(len(rows), graph.n_nodes, dtype=torch.float64)
    M[:, sources] = V[:, :1] - V[:, 1:]
    linear = frozen_model_is_linear(lens, family, tokens, y, frozen)
    return graph.adjacency[rows].double(), M, linear


def removals(rm, graph, sources, acts, errors):
    """Per layer, what removing each source takes off the MLP outputs (batch element 1 + j
    for source j), and the (batch, position) pairs whose embeddings are removed."""
    y0 = errors[0]
    B = len(sources) + 1
    delta = [torch.zeros(B, *y0.shape[1:], dtype=y0.dtype) for _ in errors]
    embed_off: list[tuple[int, int]] = []
    for b, i in enumerate(sources, start=1):
        n = graph.nodes[i]
        if n.kind is NodeKind.FEATURE:
            a = acts[n.layer][0, n.position, n.feature]
            for t in rm.clt.writes_to(n.layer):
                delta[t][b, n.position] += a * rm.clt.W_dec_at(n.layer, t)[n.feature]
        elif n.kind is NodeKind.ERROR:
            delta[n.layer][b, n.position] = errors[n.layer][0, n.position]
        else:
            embed_off.append((b, n.position))
    return delta, embed_off


class Linear(NamedTuple):
    features: bool  # the last MLP input is affine in the embeddings
    logits: bool  # the logits are


def frozen_model_is_linear(lens, family, tokens, y, frozen) -> Linear:
    """With patterns and scales held and MLP outputs constant, the last MLP's input and the
    logits are affine in the token embeddings: scaling them by 1, 2, 3 gives equal steps."""
    ins, outs = names(lens, family)

    def run(c):
        seen = {}
        hooks = hold(lens, family, frozen) + [
            (o, lambda v, hook, ly=ly: y[ly]) for ly, o in enumerate(outs)
        ]
        hooks += [(ins[-1], lambda v, hook: seen.__setitem__("x", v))]
        with torch.no_grad():
            logits = lens.run(tokens, hooks + [(lens.embeddings()[0], lambda e, hook: c * e)])
        return seen["x"], logits

    (xa, la), (xb, lb), (xc, lc) = run(1.0), run(2.0), run(3.0)

    def affine(a, b, c):
        tol = 1e-6 if a.dtype == torch.float64 else 1e-4
        return bool(((c - b) - (b - a)).abs().max() < tol * (b - a).abs().max())

    return Linear(affine(xa, xb, xc), affine(la, lb, lc))


@pytest.mark.parametrize("mode", ["constrained", "unconstrained"])
def test_interventions_equal_hand_written_hooks(row, mode):
    family, _, lens, rm = row
    result, expected, logits = intervention_by_hand(rm, family, mode)
    # a frozen pass recomputes the norms from held scales, in float64 where some Hugging Face
    # norms compute in float32: equal to float32 rounding
    scale = float(logits.abs().max())
    torch.testing.assert_close(result.logits_before, logits[0], rtol=1e-3, atol=1e-3 * scale)
    tol = 1e-3 if family in FLOAT32 else 1e-6
    torch.testing.assert_close(result.logits_after, expected, rtol=tol, atol=tol * scale)
    assert (result.logits_after - result.logits_before).abs().max() > 1e-4


def intervention_by_hand(rm, family, mode):
    """`intervene`'s result for the top feature of layer 0 at the second-last position turned
    to -2 times itself, the same logits from hand-written hooks, and the clean logits."""
    lens = rm.lens
    clt, L = rm.clt, lens.n_layers
    tokens = lens.tokens(PROMPT)
    logits, x, y, acts, errors, frozen = clean(rm, family, tokens)
    p = tokens.shape[1] - 2
    f = int(acts[0][0, p].argmax())
    assert acts[0][0, p, f] > 0
    result = intervene(rm, PROMPT, Intervention(0, f, position=p, scale=-2.0), mode=mode)
    ins, outs = names(lens, family)
    live: dict[int, torch.Tensor] = {}
    base: dict[int, torch.Tensor] = {}

    def read(v, hook, ly):
        base[ly] = torch.relu(v @ clt.W_enc_at(ly) + clt.b_enc_at(ly))
        edited = base[ly].clone()
        if ly == 0:
            edited[:, p, f] *= -2.0
        live[ly] = edited

    def write(o, hook, ly):
        if mode == "constrained":  # frozen errors of the clean run
            return recon(clt, live, ly) + errors[ly]
        return o + recon(clt, live, ly) - recon(clt, base, ly)  # the live error term

    hooks = hold(lens, family, frozen) if mode == "constrained" else []
    hooks += [(ins[ly], lambda v, hook, ly=ly: read(v, hook, ly)) for ly in range(L)]
    hooks += [(outs[ly], lambda o, hook, ly=ly: write(o, hook, ly)) for ly in range(L)]
    with torch.no_grad():
        expected = lens.run(tokens, hooks)[0]
    return result, expected, logits


@pytest.mark.parametrize("family", WRAPPED)
def test_a_few_training_steps_lower_the_loss(family):
    losses = training_losses(family)
    assert losses[1] < 0.8 * losses[0], losses


def training_losses(family):
    """Reconstruction error (normalised, by hand on a fixed batch) after 1 and 25 steps."""
    from tl_clt.training import train

    _, lens = build(family, torch.float32)
    texts = [" ".join(f"w{(7 * i + 3 * j) % 50}" for j in range(12)) for i in range(64)]
    ins, outs = names(lens, family)
    tokens = lens.to_tokens(texts[:4])
    _, cache = lens.cache(tokens, ins + outs)

    def nmse(clt):
        acts = [torch.relu(cache[ins[ly]] @ clt.W_enc_at(ly) + clt.b_enc_at(ly)) for ly in range(2)]
        err = sum(((recon(clt, acts, t) - cache[outs[t]]) ** 2).sum() for t in range(2))
        return float(err / sum((cache[n] ** 2).sum() for n in outs))

    losses = []
    for steps in (1, 25):
        config = {"steps": steps, "batch_size": 64, "lr": 1e-2, "warmup_steps": 0}
        clt = train(
            lens,
            texts,
            {"n_features": 32},
            config,
            seq_len=13,
            buffer_tokens=256,
            holdout_sequences=0,
            progress=False,
        ).clt
        with torch.no_grad():
            losses.append(nmse(clt))
    return losses


def test_a_block_whose_mlp_input_is_not_the_chosen_hook_is_refused():
    """The Lens does not guess: where the MLP does not read what the rules name, it refuses."""
    _, lens = build("gpt2", torch.float32)
    if TL_MAJOR >= 4:  # checked on a forward pass: here the MLP reads ln2's output plus one
        lens.model.blocks[0].mlp.hook_in.add_hook(lambda x, hook: x + 1.0, is_permanent=True)
        with pytest.raises(UnsupportedModelError, match="MLP's input is not the output of ln2"):
            lens.mlp_in(0)
    else:  # decided from the config: a post-norm architecture has no pre-MLP norm
        lens.model.cfg.original_architecture = "Olmo2ForCausalLM"
        assert lens.mlp_in(0) == "blocks.0.hook_resid_mid"
