"""Building TransformerLens models without the hub: from a Hugging Face model object of any
architecture the installed TransformerLens supports, from a local checkpoint directory, or as a
tiny random model of one of `tl_clt.lens.families.FAMILIES` for tests."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import torch

from tl_clt.errors import UnsupportedModelError
from tl_clt.lens.adapter import TL_MAJOR, Lens
from tl_clt.lens.families import Family, hf_config, hooked_config

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
    """A `HookedTransformer` (TransformerLens 3.x) with the weights of `hf_model`, for any
    architecture 3.x converts (`tl_clt.lens.families.hooked_config`), unprocessed."""
    if TL_MAJOR >= 4:
        raise UnsupportedModelError(
            "HookedTransformer was removed in transformer-lens 4; use backend='bridge'"
        )
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.loading_from_pretrained import get_pretrained_state_dict

    c = hf_model.config
    arch = (getattr(c, "architectures", None) or [type(hf_model).__name__])[0]
    fields, directory = hooked_config(c, arch)
    fields.update(model_name=name, original_architecture=arch, dtype=hf_model.dtype,
                  tokenizer_name=None, init_weights=False)  # fmt: skip
    tl_cfg = HookedTransformerConfig(**fields)
    try:
        state = get_pretrained_state_dict(directory, tl_cfg, hf_model, dtype=hf_model.dtype)
    except (NotImplementedError, ValueError, KeyError) as exc:
        raise UnsupportedModelError(
            f"TransformerLens 3.x cannot convert the weights of a {arch} ({exc}); use "
            "TransformerLens 4.x (TransformerBridge)"
        ) from exc
    model = HookedTransformer(tl_cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    return model.to(next(hf_model.parameters()).device)


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
    config, cls = hf_config(family, n_layers, d_model, n_heads, d_mlp, d_vocab, n_ctx)
    return random_hf_model(cls, config, seed)


def random_hf_model(cls: Any, config: Any, seed: int = 0, dtype: torch.dtype | None = None):
    """`cls(config)` with seeded random weights, its norm weights and biases perturbed so that
    no test passes by accident of an identity norm or a zero bias (eval mode)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        if dtype is not None:
            model = model.to(dtype)
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
