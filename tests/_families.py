"""Tiny random GPT-Neo, GPT-J and Gemma-2 models (float64) for the attribution checks, as a
`Lens` on either TransformerLens major: under 4.x through `from_hf` (a `TransformerBridge`);
under 3.x as a `HookedTransformer` built here from the Hugging Face weights (`from_hf` there
knows GPT-2, Llama and NeoX only)."""

from __future__ import annotations

import tempfile
from typing import Any

import torch
import transformers as tf

from tl_clt.lens import Lens, from_hf
from tl_clt.lens.adapter import TL_MAJOR
from tl_clt.tokenization import SPECIALS, word_level_tokenizer

D_VOCAB, N_CTX = 64, 32
_LENSES: dict = {}


def hf_model(family: str, seed: int = 0, softcap: float = 0.5) -> Any:
    """A tiny random Hugging Face model in float64; norms and biases perturbed, so that no check
    passes by accident of an identity norm. GPT-Neo alternates global and local (window 4)
    attention; Gemma-2 has a final logit softcap `softcap` and an attention softcap."""
    if family == "neo":
        config = tf.GPTNeoConfig(
            num_layers=3, hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=D_VOCAB,
            max_position_embeddings=N_CTX, attention_types=[[["global", "local"], 1], [["global"], 1]],
            window_size=4, activation_function="gelu_new", architectures=["GPTNeoForCausalLM"],
            bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
        cls = tf.GPTNeoForCausalLM
    elif family == "gptj":
        config = tf.GPTJConfig(
            n_layer=3, n_embd=32, n_head=4, n_inner=128, vocab_size=D_VOCAB, n_positions=N_CTX,
            rotary_dim=4, activation_function="gelu_new", architectures=["GPTJForCausalLM"],
        )  # fmt: skip
        cls = tf.GPTJForCausalLM
    elif family == "gemma2":
        config = tf.Gemma2Config(
            num_hidden_layers=3, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, intermediate_size=64, vocab_size=D_VOCAB, max_position_embeddings=N_CTX,
            final_logit_softcapping=softcap, attn_logit_softcapping=5.0, sliding_window=4,
            query_pre_attn_scalar=8, hidden_activation="gelu_pytorch_tanh",
            architectures=["Gemma2ForCausalLM"],
        )  # fmt: skip
        cls = tf.Gemma2ForCausalLM
    else:
        raise ValueError(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config).double()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name or "ln" in name:
                    p.add_(0.1 * torch.randn_like(p))
                elif name.endswith("bias"):
                    p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def tokenizer() -> Any:
    if "tok" not in _LENSES:
        words = [f"w{i}" for i in range(D_VOCAB - len(SPECIALS))]
        _LENSES["tok"] = word_level_tokenizer(words, tempfile.mkdtemp())
    return _LENSES["tok"]


def family_lens(family: str, softcap: float = 0.5) -> Lens:
    """The model of `hf_model(family)` as a Lens on the installed TransformerLens major."""
    key = (family, softcap)
    if key not in _LENSES:
        hf = hf_model(family, softcap=softcap)
        if TL_MAJOR >= 4:
            _LENSES[key] = from_hf(hf, tokenizer(), name=f"tiny-{family}")
        else:
            _LENSES[key] = Lens(_hooked(family, hf))
    return _LENSES[key]


def _hooked(family: str, hf: Any) -> Any:
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import (
        convert_gemma_weights,
        convert_gptj_weights,
        convert_neo_weights,
    )

    c = hf.config
    common = dict(model_name=f"tiny-{family}", original_architecture=c.architectures[0],
                  dtype=torch.float64, d_vocab=c.vocab_size, normalization_type="LN")  # fmt: skip
    if family == "neo":
        cfg = dict(
            d_model=c.hidden_size, d_head=c.hidden_size // c.num_heads, n_heads=c.num_heads,
            d_mlp=c.intermediate_size, n_layers=c.num_layers, n_ctx=c.max_position_embeddings,
            eps=c.layer_norm_epsilon, attn_types=c.attention_layers, act_fn=c.activation_function,
            use_attn_scale=False, use_local_attn=True, window_size=c.window_size,
        )  # fmt: skip
        convert = convert_neo_weights
    elif family == "gptj":
        cfg = dict(
            d_model=c.n_embd, d_head=c.n_embd // c.n_head, n_heads=c.n_head, d_mlp=c.n_inner,
            n_layers=c.n_layer, n_ctx=c.n_positions, eps=c.layer_norm_epsilon,
            act_fn=c.activation_function, parallel_attn_mlp=True,
            positional_embedding_type="rotary", rotary_dim=c.rotary_dim,
            rotary_adjacent_pairs=True,
        )  # fmt: skip
        convert = convert_gptj_weights
    else:
        cfg = dict(
            d_model=c.hidden_size, d_head=c.head_dim, n_heads=c.num_attention_heads,
            d_mlp=c.intermediate_size, n_layers=c.num_hidden_layers,
            n_ctx=c.max_position_embeddings, eps=c.rms_norm_eps, act_fn=c.hidden_activation,
            normalization_type="RMS", rotary_base=c.rope_parameters["rope_theta"]
            if getattr(c, "rope_parameters", None) else c.rope_theta,
            positional_embedding_type="rotary", use_attn_scale=True,
            attn_scale=c.query_pre_attn_scalar**0.5, n_key_value_heads=c.num_key_value_heads,
            window_size=c.sliding_window, use_local_attn=True,
            attn_types=["local", "global"] * ((c.num_hidden_layers + 1) // 2),
            attn_scores_soft_cap=c.attn_logit_softcapping,
            output_logits_soft_cap=c.final_logit_softcapping, gated_mlp=True, final_rms=True,
            use_normalization_before_and_after=True,
        )  # fmt: skip
        cfg["attn_types"] = cfg["attn_types"][: c.num_hidden_layers]
        common.pop("normalization_type")
        convert = convert_gemma_weights
    tl_cfg = HookedTransformerConfig(**cfg, **common)
    model = HookedTransformer(tl_cfg, tokenizer=tokenizer(), move_to_device=False)
    model.load_and_process_state_dict(
        convert(hf, tl_cfg), fold_ln=False, center_writing_weights=False, center_unembed=False,
        fold_value_biases=False, refactor_factored_attn_matrices=False,
    )  # fmt: skip
    return model
