"""Tiny random GPT-Neo, GPT-J and Gemma-2 models (float64) for the attribution checks, as a
`Lens` on either TransformerLens major (`from_hf`: a `TransformerBridge` under 4.x, a
`HookedTransformer` under 3.x)."""

from __future__ import annotations

import tempfile
from typing import Any

import torch
import transformers as tf

from tl_clt.lens import Lens, from_hf
from tl_clt.lens.build import random_hf_model
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
    return random_hf_model(cls, config, seed, dtype=torch.float64)


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
        _LENSES[key] = from_hf(hf, tokenizer(), name=f"tiny-{family}")
    return _LENSES[key]
