"""Building TransformerLens models without the hub: from a Hugging Face model object (GPT-2,
Llama and GPT-NeoX families, which cover GPT-2-style, Llama-style and parallel blocks), from a
local checkpoint directory, or as a tiny random model for tests."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

from tl_clt.errors import UnsupportedModelError
from tl_clt.lens.adapter import TL_MAJOR, Lens

Family = Literal["gpt2", "llama", "neox"]
Backend = Literal["auto", "hooked", "bridge"]


def from_hf(
    hf_model: Any, tokenizer: Any, name: str | None = None, backend: Backend = "auto"
) -> Lens:
    """A TransformerLens model around a Hugging Face causal LM, no hub calls.

    backend "auto" gives a `TransformerBridge` under TransformerLens 4.x and a
    `HookedTransformer` under 3.x; both compute the Hugging Face model's logits.
    """
    hf_model = hf_model.eval()
    name = name or getattr(hf_model.config, "name_or_path", None) or "local-model"
    if backend == "auto":
        backend = "bridge" if TL_MAJOR >= 4 else "hooked"
    if backend == "bridge":
        from transformer_lens.model_bridge import TransformerBridge

        model = TransformerBridge.boot_transformers(
            name, hf_model=hf_model, tokenizer=tokenizer, dtype=hf_model.dtype
        )
    else:
        model = _hooked_from_hf(hf_model, tokenizer, name)
    return Lens(model)


def _hooked_from_hf(hf_model: Any, tokenizer: Any, name: str):
    if TL_MAJOR >= 4:
        raise UnsupportedModelError(
            "HookedTransformer was removed in transformer-lens 4; use backend='bridge'"
        )
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import (
        convert_gpt2_weights,
        convert_llama_weights,
        convert_neox_weights,
    )

    c = hf_model.config
    arch = (c.architectures or [type(hf_model).__name__])[0]
    common: dict[str, Any] = {
        "model_name": name,
        "original_architecture": arch,
        "dtype": hf_model.dtype,
    }
    if arch == "GPT2LMHeadModel":
        cfg = dict(
            d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
            d_mlp=c.n_inner or 4 * c.n_embd, n_layers=c.n_layer, n_ctx=c.n_positions,
            eps=c.layer_norm_epsilon, d_vocab=c.vocab_size, act_fn=c.activation_function,
            normalization_type="LN",
            scale_attn_by_inverse_layer_idx=c.scale_attn_by_inverse_layer_idx,
        )  # fmt: skip
        convert = convert_gpt2_weights
    elif arch == "LlamaForCausalLM":
        d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv = c.num_key_value_heads
        cfg = dict(
            d_model=c.hidden_size, n_heads=c.num_attention_heads, d_head=d_head,
            d_mlp=c.intermediate_size, n_layers=c.num_hidden_layers,
            n_ctx=c.max_position_embeddings, eps=c.rms_norm_eps, d_vocab=c.vocab_size,
            act_fn=c.hidden_act, normalization_type="RMS", positional_embedding_type="rotary",
            rotary_adjacent_pairs=False, rotary_dim=d_head, rotary_base=_rope_theta(c),
            final_rms=True, gated_mlp=True,
            n_key_value_heads=kv if kv != c.num_attention_heads else None,
        )  # fmt: skip
        convert = convert_llama_weights
    elif arch == "GPTNeoXForCausalLM":
        d_head = c.hidden_size // c.num_attention_heads
        pct = getattr(c, "rotary_pct", None) or (getattr(c, "rope_parameters", None) or {}).get(
            "partial_rotary_factor", 1.0
        )
        cfg = dict(
            d_model=c.hidden_size, n_heads=c.num_attention_heads, d_head=d_head,
            d_mlp=c.intermediate_size, n_layers=c.num_hidden_layers,
            n_ctx=c.max_position_embeddings, eps=c.layer_norm_eps, d_vocab=c.vocab_size,
            act_fn=c.hidden_act, normalization_type="LN", positional_embedding_type="rotary",
            rotary_adjacent_pairs=False, rotary_dim=round(pct * d_head),
            rotary_base=_rope_theta(c), parallel_attn_mlp=c.use_parallel_residual,
        )  # fmt: skip
        convert = convert_neox_weights
    else:
        raise UnsupportedModelError(
            f"building a HookedTransformer from a {arch} needs a config mapping tl_clt does not "
            "have (GPT2LMHeadModel, LlamaForCausalLM, GPTNeoXForCausalLM are supported); load "
            "it with HookedTransformer.from_pretrained and wrap it in tl_clt.lens.Lens"
        )
    tl_cfg = HookedTransformerConfig(**cfg, **common)
    model = HookedTransformer(tl_cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        convert(hf_model, tl_cfg),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return model.to(next(hf_model.parameters()).device)


def _rope_theta(c: Any) -> float:
    theta = getattr(c, "rope_theta", None)
    if theta is None:
        theta = (getattr(c, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return float(theta)


def load_model(
    path_or_name: str | os.PathLike, backend: Backend = "auto", device: str | None = None
) -> Lens:
    """A model from a local checkpoint directory (Hugging Face format, tokenizer included), or,
    only when no such directory exists, from the hub by name through TransformerLens."""
    path = Path(path_or_name)
    if path.is_dir():
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hf = AutoModelForCausalLM.from_pretrained(str(path))
        if device:
            hf = hf.to(device)
        return from_hf(
            hf, AutoTokenizer.from_pretrained(str(path)), name=path.name, backend=backend
        )
    if TL_MAJOR >= 4:
        from transformer_lens.model_bridge import TransformerBridge

        return Lens(TransformerBridge.boot_transformers(str(path_or_name), device=device))
    from transformer_lens import HookedTransformer

    return Lens(HookedTransformer.from_pretrained_no_processing(str(path_or_name), device=device))


def tiny_hf_model(
    family: Family = "gpt2",
    n_layers: int = 2,
    d_model: int = 32,
    n_heads: int = 4,
    d_mlp: int = 64,
    d_vocab: int = 64,
    n_ctx: int = 32,
    seed: int = 0,
):
    """A small random Hugging Face model of a family; norm weights and biases are perturbed so
    that no test passes by accident of an identity norm."""
    import transformers as tf

    if family == "gpt2":
        config = tf.GPT2Config(
            n_layer=n_layers, n_embd=d_model, n_head=n_heads, n_inner=d_mlp, vocab_size=d_vocab,
            n_positions=n_ctx, activation_function="gelu_new", architectures=["GPT2LMHeadModel"],
            bos_token_id=0, eos_token_id=0,
        )  # fmt: skip
        cls = tf.GPT2LMHeadModel
    elif family == "llama":
        config = tf.LlamaConfig(
            num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads,
            num_key_value_heads=n_heads, intermediate_size=d_mlp, vocab_size=d_vocab,
            max_position_embeddings=n_ctx, rms_norm_eps=1e-5, architectures=["LlamaForCausalLM"],
        )  # fmt: skip
        cls = tf.LlamaForCausalLM
    elif family == "neox":
        config = tf.GPTNeoXConfig(
            num_hidden_layers=n_layers, hidden_size=d_model, num_attention_heads=n_heads,
            intermediate_size=d_mlp, vocab_size=d_vocab, max_position_embeddings=n_ctx,
            use_parallel_residual=True, rotary_pct=1.0, hidden_act="gelu",
            architectures=["GPTNeoXForCausalLM"],
        )  # fmt: skip
        cls = tf.GPTNeoXForCausalLM
    else:
        raise UnsupportedModelError(f"unknown family {family!r}; choose gpt2, llama or neox")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name or "ln" in name:
                    p.add_(0.1 * torch.randn_like(p))
                elif name.endswith("bias"):
                    p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def tiny_model(
    family: Family = "gpt2", backend: Backend = "auto", seed: int = 0, **shape: Any
) -> Lens:
    """A tiny random model as a Lens, with a word-level tokenizer "w0 w1 ..." (for tests)."""
    from tl_clt.tokenization import SPECIALS, word_level_tokenizer

    hf = tiny_hf_model(family, seed=seed, **shape)
    n_words = hf.config.vocab_size - len(SPECIALS)
    if n_words not in _TINY_TOKENIZERS:  # TL 3.x re-reads the tokenizer from its directory
        directory = tempfile.mkdtemp(prefix=f"tl_clt_tok{n_words}_")
        _TINY_TOKENIZERS[n_words] = word_level_tokenizer(
            [f"w{i}" for i in range(n_words)], directory
        )
    return from_hf(hf, _TINY_TOKENIZERS[n_words], name=f"tiny-{family}-{seed}", backend=backend)


_TINY_TOKENIZERS: dict[int, Any] = {}
