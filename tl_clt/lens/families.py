"""The model families tl_clt builds tiny random models of (for tests and examples), and the
TransformerLens 3.x configuration of a Hugging Face model of any family 3.x supports.

`hf_config(family, ...)` is a small Hugging Face config of one family; `hooked_config(hf_config)`
is the `HookedTransformerConfig` fields for a Hugging Face config under 3.x, read from the
config itself. TransformerLens 3.x maps most architectures from a local `config.json`
(`convert_hf_model_config`); for Gemma, Gemma-2, Gemma-3, OLMo and OLMo-2 it maps only hub
names of released checkpoints, so their fields are read here from the config instead.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Literal, get_args

from tl_clt.errors import UnsupportedModelError

Family = Literal[
    "gpt2", "gptneo", "gptj", "neox", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2",
    "gemma3", "phi", "phi3", "olmo", "olmo2", "mixtral", "olmoe",
]  # fmt: skip
FAMILIES: tuple[str, ...] = get_args(Family)


def hf_config(
    family: str, n_layers: int, d_model: int, n_heads: int, d_mlp: int, d_vocab: int, n_ctx: int
) -> tuple[Any, type]:
    """A small Hugging Face config of `family` and its causal-LM class."""
    import transformers as tf

    if family not in FAMILIES:
        raise UnsupportedModelError(f"unknown family {family!r}; choose one of {FAMILIES}")
    d_head = d_model // n_heads
    kv = max(1, n_heads // 2)  # grouped-query attention where the family has it
    std = dict(
        num_hidden_layers=n_layers,
        hidden_size=d_model,
        num_attention_heads=n_heads,
        intermediate_size=d_mlp,
        vocab_size=d_vocab,
        max_position_embeddings=n_ctx,
    )
    gpt = dict(n_layer=n_layers, n_embd=d_model, n_head=n_heads, n_inner=d_mlp,
               vocab_size=d_vocab, n_positions=n_ctx, bos_token_id=0, eos_token_id=0)  # fmt: skip
    windowed = dict(num_key_value_heads=kv, head_dim=d_head, sliding_window=4,
                    query_pre_attn_scalar=d_head)  # fmt: skip
    table: dict[str, tuple[Any, Any]] = {
        "gpt2": (tf.GPT2Config, dict(**gpt, activation_function="gelu_new")),
        "gptneo": (tf.GPTNeoConfig, dict(
            num_layers=n_layers, hidden_size=d_model, num_heads=n_heads, intermediate_size=d_mlp,
            vocab_size=d_vocab, max_position_embeddings=n_ctx, window_size=4,
            attention_types=[[["global", "local"], (n_layers + 1) // 2]],
            bos_token_id=0, eos_token_id=0)),
        "gptj": (tf.GPTJConfig, dict(**gpt, rotary_dim=d_head // 2)),
        "neox": (tf.GPTNeoXConfig, dict(**std, use_parallel_residual=True, rotary_pct=1.0,
                                        hidden_act="gelu")),
        "llama": (tf.LlamaConfig, dict(**std, num_key_value_heads=n_heads, rms_norm_eps=1e-5)),
        "mistral": (tf.MistralConfig, dict(**std, num_key_value_heads=kv, sliding_window=None)),
        "qwen2": (tf.Qwen2Config, dict(**std, num_key_value_heads=kv)),
        "qwen3": (tf.Qwen3Config, dict(**std, num_key_value_heads=kv, head_dim=d_head)),
        "gemma": (tf.GemmaConfig, dict(**std, num_key_value_heads=kv, head_dim=d_head)),
        "gemma2": (tf.Gemma2Config, dict(**std, **windowed)),
        "gemma3": (tf.Gemma3TextConfig, dict(**std, **windowed)),
        "phi": (tf.PhiConfig, dict(**std, partial_rotary_factor=0.5)),
        "phi3": (tf.Phi3Config, dict(**std, num_key_value_heads=n_heads, pad_token_id=0)),
        "olmo": (tf.OlmoConfig, dict(**std)),
        "olmo2": (tf.Olmo2Config, dict(**std)),
        "mixtral": (tf.MixtralConfig, dict(**std, num_key_value_heads=kv, num_local_experts=4,
                                           num_experts_per_tok=2)),
        "olmoe": (tf.OlmoeConfig, dict(**std, num_experts=4, num_experts_per_tok=2)),
    }  # fmt: skip
    config_cls, kwargs = table[family]
    config = config_cls(**kwargs)
    model_cls = getattr(tf, _CAUSAL_LM.get(family, ""), None) or _causal_lm(config_cls)
    config.architectures = [model_cls.__name__]
    return config, model_cls


_CAUSAL_LM = {"gemma3": "Gemma3ForCausalLM", "gpt2": "GPT2LMHeadModel"}


def _causal_lm(config_cls: type) -> type:
    import transformers as tf

    return getattr(tf, config_cls.__name__.removesuffix("Config") + "ForCausalLM")


# ---------------------------------------------------------------------- TransformerLens 3.x
#: Architectures TransformerLens 3.x maps only from the hub names of released checkpoints.
_NAME_KEYED = ("GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "OlmoForCausalLM",
               "Olmo2ForCausalLM")  # fmt: skip


def hooked_config(config: Any, architecture: str) -> tuple[dict[str, Any], str]:
    """The `HookedTransformerConfig` fields of a Hugging Face config under TransformerLens 3.x,
    and a neutral local directory holding the config (3.x loads weights by path)."""
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    directory = _neutral_directory()
    config.save_pretrained(directory)
    if architecture in _NAME_KEYED:
        return _name_keyed_config(config, architecture), directory
    _add_legacy_fields(config, Path(directory) / "config.json")
    try:
        fields = convert_hf_model_config(directory)
    except (NotImplementedError, KeyError, ValueError, AttributeError) as exc:
        raise UnsupportedModelError(
            f"TransformerLens {_tl_version()} cannot map a {architecture} config ({exc}); use "
            "TransformerLens 4.x (TransformerBridge), or build a HookedTransformer yourself and "
            "wrap it in tl_clt.lens.Lens"
        ) from exc
    d_mlp = getattr(config, "n_inner", None) or getattr(config, "intermediate_size", None)
    if d_mlp and not fields.get("num_experts"):  # 3.x assumes 4 * d_model for some families
        fields["d_mlp"] = d_mlp
    return fields, directory


def _add_legacy_fields(config: Any, path: Path) -> None:
    """Fields TransformerLens 3.x reads that recent Hugging Face configs keep elsewhere."""
    data = json.loads(path.read_text())
    if "n_positions" in data:
        data.setdefault("n_ctx", data["n_positions"])
    rope = data.get("rope_parameters") or {}
    if "partial_rotary_factor" in rope:
        data.setdefault("partial_rotary_factor", rope["partial_rotary_factor"])
    path.write_text(json.dumps(data))


def _neutral_directory() -> str:
    """A temporary directory whose path names no model family (TransformerLens 3.x infers some
    architectures from substrings of the path, such as 'llama' or 'gemma')."""
    while True:
        directory = tempfile.mkdtemp(prefix="tl_clt_cfg_")
        if not any(word in directory.lower() for word in ("llama", "gemma", "olmo", "qwen")):
            return directory
        Path(directory).rmdir()


def _name_keyed_config(c: Any, architecture: str) -> dict[str, Any]:
    d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    fields: dict[str, Any] = dict(
        d_model=c.hidden_size, d_head=d_head, n_heads=c.num_attention_heads,
        d_mlp=c.intermediate_size, n_layers=c.num_hidden_layers, n_ctx=c.max_position_embeddings,
        d_vocab=c.vocab_size, positional_embedding_type="rotary", rotary_dim=d_head,
        rotary_adjacent_pairs=False, rotary_base=_rope_theta(c), gated_mlp=True,
        n_key_value_heads=kv if kv != c.num_attention_heads else None,
        original_architecture=architecture,
    )  # fmt: skip
    if architecture.startswith("Gemma"):
        act = getattr(c, "hidden_activation", None) or c.hidden_act
        fields.update(eps=c.rms_norm_eps, act_fn=act, normalization_type="RMS", final_rms=True,
                      use_attn_scale=True)  # fmt: skip
    if architecture in ("Gemma2ForCausalLM", "Gemma3ForCausalLM"):
        types = [("local" if t == "sliding_attention" else "global") for t in _layer_types(c)]
        fields.update(
            use_normalization_before_and_after=True, use_local_attn=True, attn_types=types,
            window_size=c.sliding_window, attn_scale=float(c.query_pre_attn_scalar) ** 0.5,
            attn_scores_soft_cap=getattr(c, "attn_logit_softcapping", None) or -1.0,
            output_logits_soft_cap=getattr(c, "final_logit_softcapping", None) or -1.0,
        )  # fmt: skip
    if architecture == "Gemma3ForCausalLM":
        local = getattr(c, "rope_local_base_freq", None) or _rope_theta(c, "sliding_attention")
        fields.update(use_qk_norm=True, rotary_base_local=float(local))
    if architecture == "OlmoForCausalLM":
        fields.update(eps=1e-5, act_fn=c.hidden_act, normalization_type="LN",
                      clip_qkv=getattr(c, "clip_qkv", None))  # fmt: skip
    if architecture == "Olmo2ForCausalLM":
        fields.update(eps=c.rms_norm_eps, act_fn=c.hidden_act, normalization_type="RMS")
    return fields


def _layer_types(c: Any) -> list[str]:
    types = getattr(c, "layer_types", None)
    if types:
        return list(types)
    return ["sliding_attention" if i % 2 == 0 else "full_attention"
            for i in range(c.num_hidden_layers)]  # fmt: skip


def _rope_theta(c: Any, kind: str | None = None) -> float:
    theta = getattr(c, "rope_theta", None)
    if theta is None:
        params = getattr(c, "rope_parameters", None) or {}
        if kind is not None and isinstance(params.get(kind), dict):
            params = params[kind]
        elif "full_attention" in params:
            params = params["full_attention"]
        theta = params.get("rope_theta", 10000.0)
    return float(theta)


def _tl_version() -> str:
    from importlib.metadata import version

    return version("transformer-lens")
