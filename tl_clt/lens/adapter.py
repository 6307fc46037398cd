"""`Lens`: a narrow view of a TransformerLens model: shape, hook names, tokens, unembedding.

Hook names are TransformerLens 3.x-style strings (`blocks.{l}.hook_mlp_out`, ...). Under 4.x
they are aliases of canonical names (`blocks.{l}.mlp.hook_out`); `Lens.canonical` maps one to
the other, and a hook function sees the canonical name in `hook.name`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from importlib.metadata import version
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache
from transformer_lens.hook_points import HookPoint

from tl_clt.config import INPUT_HOOKS, OUTPUT_HOOKS, ModelIdentity, WeightProcessing
from tl_clt.errors import InputError, TLCLTWarning, UnknownHookError, UnsupportedModelError
from tl_clt.lens.blocks import MLPSites, held_hooks, mlp_writers, resolve_mlp_sites

TL_MAJOR = int(version("transformer-lens").split(".")[0])

if TL_MAJOR >= 4:
    from transformer_lens import HookedRootModule
else:
    from transformer_lens.hook_points import HookedRootModule

__all__ = ["TL_MAJOR", "ActivationCache", "HookPoint", "HookedRootModule", "Lens"]

Hook = tuple[str, Callable[..., Any]]


#: A text longer than this many characters per context position cannot fit the context (no
#: tokenizer packs that much into a token): refused before it is tokenised.
MAX_CHARS_PER_TOKEN = 1000


def check_text(text: str, n_ctx: int | None = None) -> None:
    """An InputError for text that is empty or not valid Unicode, or (given `n_ctx`) far too
    long for a context of `n_ctx` tokens."""
    if not text.strip():
        raise InputError("the prompt is empty; give at least one token of text")
    if n_ctx is not None and len(text) > n_ctx * MAX_CHARS_PER_TOKEN:
        raise InputError(
            f"the prompt has {len(text)} characters, far more than the model's context of "
            f"{n_ctx} tokens can hold; shorten it"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"the prompt holds {text[exc.start : exc.end]!r} at character {exc.start}, which is not "
            "valid Unicode text (a lone surrogate); remove it"
        ) from None


class Lens:
    """Wraps a `HookedTransformer` or `TransformerBridge`; `lens.model` is the model itself."""

    def __init__(self, model: Any, weight_processing: WeightProcessing | None = None) -> None:
        if isinstance(model, Lens):
            model = model.model
        if not hasattr(model, "hook_dict") or not hasattr(model, "cfg"):
            raise TypeError(
                f"expected a TransformerLens HookedTransformer or TransformerBridge, got "
                f"{type(model).__name__}; build one with tl_clt.lens.from_hf(hf_model, tokenizer)"
            )
        self.model = model
        cfg = model.cfg
        self.n_layers: int = cfg.n_layers
        self.d_model: int = cfg.d_model
        self.d_vocab: int = cfg.d_vocab_out if getattr(cfg, "d_vocab_out", -1) > 0 else cfg.d_vocab
        self.n_ctx: int = cfg.n_ctx
        self.parallel: bool = bool(getattr(cfg, "parallel_attn_mlp", False))
        self.is_bridge: bool = type(model).__name__ == "TransformerBridge"
        self._canonical = {name: hp.name or name for name, hp in model.hook_dict.items()}
        self._weight_processing = weight_processing
        self._sites: MLPSites | None = None

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        return str(getattr(self.model.cfg, "model_name", None) or "unnamed")

    @property
    def device(self) -> torch.device:
        return self.W_U.device

    @property
    def dtype(self) -> torch.dtype:
        return self.W_U.dtype

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def weight_processing(self) -> WeightProcessing:
        """The processing applied to the weights, read off the weights themselves (a centred
        matrix has zero mean over d_model) unless given when the Lens was made."""
        if self._weight_processing is not None:
            return self._weight_processing
        cfg = self.model.cfg
        norm = str(getattr(cfg, "normalization_type", "") or "")
        fold_ln = norm.endswith("Pre") or bool(getattr(cfg, "layer_norm_folding", False))
        if self.is_bridge and getattr(self.model, "_weights_processed", False):
            fold_ln = fold_ln or bool(getattr(self.model.adapter, "_fold_ln_requested", False))
        with torch.no_grad():
            per_layer = [mlp_writers(self, i) for i in range(self.n_layers)]
            writers = [self.W_E] + [w for ws in per_layer for w in ws]
            # a block whose output weights are not exposed (4.x mixture of experts) counts as
            # not centred, so that the identity is the same every time it is read
            centred = all(per_layer) and all(
                bool(w.float().mean(-1).abs().max() < 1e-6) for w in writers
            )
            unembed = bool(self.W_U.float().mean(-1).abs().max() < 1e-6)
        return WeightProcessing(
            fold_ln=fold_ln, center_writing_weights=centred, center_unembed=unembed
        )

    def identity(self) -> ModelIdentity:
        """The model's name, shape, weight processing and content fingerprint."""
        from tl_clt.lens.fingerprint import model_fingerprint

        return ModelIdentity(
            self.name, self.n_layers, self.d_model, self.d_vocab, self.weight_processing(),
            model_fingerprint(self),
        )  # fmt: skip

    # ------------------------------------------------------------------ hook names
    def has_hook(self, name: str) -> bool:
        return name in self._canonical

    def hook_names(self) -> list[str]:
        """Every hook name of the model (TransformerLens 3.x-style names and, under 4.x, the
        canonical ones too)."""
        return list(self._canonical)

    def hook(self, name: str) -> str:
        """`name` itself, after checking the model has it."""
        if name not in self._canonical:
            near = sorted(n for n in self._canonical if n.split(".")[-1] == name.split(".")[-1])[:5]
            raise UnknownHookError(
                f"the model has no hook {name!r}" + (f"; similar hooks: {near}" if near else "")
            )
        return name

    def canonical(self, name: str) -> str:
        """The name a hook function sees in `hook.name` (differs from `name` under TL 4.x)."""
        return self._canonical[self.hook(name)]

    def _layer_hook(self, layer: int, site: str) -> str:
        if not 0 <= layer < self.n_layers:
            raise InputError(f"layer {layer} is out of range for a {self.n_layers}-layer model")
        return self.hook(f"blocks.{layer}.{site}")

    def mlp_in(self, layer: int, site: str = "ln2.hook_normalized") -> str:
        """Hook of the MLP's input at `layer`. `site` (one of config.INPUT_HOOKS) says what is
        read, whatever the family names it: "ln2.hook_normalized" the MLP's normalised input
        (the pre-MLP norm's output before its weight; for a block with no pre-MLP norm, the
        residual stream the MLP reads), "hook_resid_mid" the residual stream before the
        pre-MLP norm (`mlp_sites` says which hook each is)."""
        if site not in INPUT_HOOKS:
            raise UnknownHookError(f"unknown MLP input site {site!r}; choose from {INPUT_HOOKS}")
        if site == "hook_resid_mid" and self.parallel:
            raise UnknownHookError(
                "this model runs attention and MLP in parallel, so it has no hook_resid_mid; "
                "read the MLP input at 'ln2.hook_normalized' instead"
            )
        return self._layer_hook(layer, self.mlp_sites().normalized if site != "hook_resid_mid"
                                else "hook_resid_mid")  # fmt: skip

    def mlp_out(self, layer: int, site: str = "hook_mlp_out") -> str:
        """Hook of what the MLP adds to the residual stream at `layer` (after any post-MLP
        norm)."""
        if site not in OUTPUT_HOOKS:
            raise UnknownHookError(f"unknown MLP output site {site!r}; choose from {OUTPUT_HOOKS}")
        return self._layer_hook(layer, self.mlp_sites().output)

    def mlp_sites(self) -> MLPSites:
        """Where this model's blocks read the MLP's input and write its output, chosen from what
        the blocks compute (`tl_clt.lens.blocks`)."""
        if self._sites is None:
            self._sites = resolve_mlp_sites(self)
        return self._sites

    def attn_pattern(self, layer: int) -> str:
        return self._layer_hook(layer, "attn.hook_pattern")

    def resid_pre(self, layer: int) -> str:
        return self._layer_hook(layer, "hook_resid_pre")

    def resid_post(self, layer: int) -> str:
        return self._layer_hook(layer, "hook_resid_post")

    def final_norm_scale(self) -> str | None:
        """The final normalisation's scale hook, or None if the model has no final norm."""
        return "ln_final.hook_scale" if self.has_hook("ln_final.hook_scale") else None

    def norm_scales(self) -> list[str]:
        """Every normalisation-scale hook (ln1, ln2, final norm, any others), one name each."""
        seen, out = set(), []
        for name, canon in self._canonical.items():
            if canon.endswith("hook_scale") and canon not in seen:
                seen.add(canon)
                out.append(name)
        return out

    def held(self, values: dict[str, Tensor]) -> list[Hook]:
        """Hooks that hold each named activation (attention patterns, norm scales) at the given
        value, broadcast over the batch (see `tl_clt.lens.blocks.held_hooks`)."""
        return held_hooks(self, values)

    def embeddings(self) -> list[str]:
        """Hooks whose outputs sum to what a token contributes to the residual stream."""
        learned_positions = (
            getattr(self.model.cfg, "positional_embedding_type", "standard") == "standard"
        )
        names = ["hook_embed", "hook_pos_embed"] if learned_positions else ["hook_embed"]
        return [n for n in names if n in self._canonical]

    # ------------------------------------------------------------------ weights
    @property
    def W_U(self) -> Float[Tensor, "d_model d_vocab"]:
        return self.model.W_U

    @property
    def b_U(self) -> Float[Tensor, " d_vocab"]:
        b = getattr(self.model, "b_U", None)
        return (
            torch.zeros(self.d_vocab, device=self.W_U.device, dtype=self.W_U.dtype)
            if b is None
            else b
        )

    @property
    def W_E(self) -> Float[Tensor, "d_vocab d_model"]:
        return self.model.W_E

    # ------------------------------------------------------------------ tokens
    def to_tokens(
        self, text: str | Sequence[str], prepend_bos: bool = True
    ) -> Int[Tensor, "batch pos"]:
        if isinstance(text, str):
            check_text(text)
        return self.model.to_tokens(text, prepend_bos=prepend_bos, truncate=False)

    def to_str_tokens(self, tokens: str | Tensor) -> list[str]:
        if isinstance(tokens, Tensor) and tokens.dim() == 2:
            tokens = tokens[0]
        return [str(t) for t in self.model.to_str_tokens(tokens)]

    def vocabulary(self) -> list[str]:
        """The decoded text of every token id (for labelling logits; see `token_texts`)."""
        if getattr(self, "_vocab", None) is None:
            self._vocab = self.token_texts(range(self.d_vocab))
        return self._vocab

    def tokens(self, prompt: str | Tensor) -> Int[Tensor, "1 pos"]:
        """One prompt as a [1, pos] token tensor (text gets a BOS), checked against the context."""
        if isinstance(prompt, str):
            check_text(prompt, self.n_ctx)  # before tokenising: a huge text is refused at once
        toks = self.to_tokens(prompt) if isinstance(prompt, str) else prompt
        if isinstance(prompt, str):
            self._warn_unknown_words(prompt, toks)
        if toks.dim() == 1:
            toks = toks[None]
        if toks.shape[-1] == 0:
            raise InputError("the prompt is empty; give at least one token")
        if toks.shape[-1] > self.n_ctx:
            raise InputError(
                f"the prompt has {toks.shape[-1]} tokens but the model's context is {self.n_ctx}; "
                "shorten it"
            )
        if int(toks.max()) >= self.model.cfg.d_vocab or int(toks.min()) < 0:
            raise InputError(f"token ids must lie in [0, {self.model.cfg.d_vocab})")
        return toks.to(self.device)

    @property
    def unk_token_id(self) -> int | None:
        """The id the tokenizer gives text it does not know, or None: when it has none, or when
        that id doubles as BOS/EOS (GPT-2's byte-level BPE), so that it says nothing."""
        tok = self.tokenizer
        unk = getattr(tok, "unk_token_id", None)
        ends = (getattr(tok, "bos_token_id", None), getattr(tok, "eos_token_id", None))
        return None if unk in ends else unk

    def _warn_unknown_words(self, prompt: str, toks: Tensor) -> None:
        """Warn when the tokenizer turned part of the prompt into its unknown token."""
        unk, tok = self.unk_token_id, self.tokenizer
        if unk is None or tok.unk_token in prompt or not bool((toks == unk).any()):
            return
        try:
            enc = tok(prompt, add_special_tokens=False, return_offsets_mapping=True)
            words = [
                prompt[a:b]
                for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])
                if i == unk
            ]
        except (TypeError, KeyError, NotImplementedError, ValueError):
            words = []
        which = f" ({', '.join(repr(w) for w in words)})" if words else ""
        warnings.warn(
            f"{int((toks == unk).sum())} part(s) of the prompt{which} are not in the tokenizer's "
            f"vocabulary and became {tok.unk_token!r}; check spelling and case",
            TLCLTWarning,
            stacklevel=3,
        )

    # ------------------------------------------------------------------ running
    def run(
        self,
        tokens: Int[Tensor, "batch pos"],
        fwd_hooks: Sequence[Hook] = (),
        stop_at_layer: int | None = None,
    ) -> Tensor:
        """A forward pass with temporary hooks (removed afterwards, exceptions included).
        Returns logits, or the residual stream before `stop_at_layer`."""
        with self.hooks(fwd_hooks):
            return self.model(tokens, stop_at_layer=stop_at_layer)

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[Hook]) -> Iterator[None]:
        for name, _ in fwd_hooks:
            self.hook(name)
        with self.model.hooks(fwd_hooks=list(fwd_hooks)), warnings.catch_warnings():
            # TL 4 warns when a hook edits a norm's scale (it then recomputes the norm from the
            # hooked values); frozen scales are how tl_clt linearises, so that is intended
            warnings.filterwarnings("ignore", message=".*edited hook_scale.*")
            yield

    def cache(
        self, tokens: Tensor, names: Sequence[str], stop_at_layer: int | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits (or residual) and a dict {requested name: activation} of one forward pass
        (activations keep their gradients; see `ReplacementModel.run_with_cache` for
        TransformerLens' form)."""
        cache: dict[str, Tensor] = {}
        canon_to_req = {self.canonical(n): n for n in names}

        def save(x: Tensor, hook) -> None:
            cache[canon_to_req[hook.name]] = x

        out = self.run(tokens, [(n, save) for n in names], stop_at_layer=stop_at_layer)
        return out, cache

    # ------------------------------------------------------------------ freezing attention
    def attn_values(self, layer: int) -> str:
        """Hook of the attention's values, `[batch, pos, n_kv_heads, d_head]`."""
        return self._layer_hook(layer, "attn.hook_v")

    def attn_z(self, layer: int) -> str:
        """Hook of the attention's mixed values (pattern @ values, before the output
        projection), `[batch, pos, n_heads, d_head]`."""
        return self._layer_hook(layer, "attn.hook_z")

    def pattern_edits_apply(self) -> list[bool]:
        """Per layer, whether a hook that edits `attn_pattern(layer)` changes the attention's
        output. TransformerLens 4.x wraps some families' attention (GPT-Neo, GPT-J) around the
        Hugging Face module, which has used its own pattern by the time the hook fires: there
        an edit is discarded. Measured once per Lens on a short input: one batch element's
        patterns are zeroed, every block's input is copied from the other element, and a layer
        whose attention output does not change ignores pattern edits."""
        if getattr(self, "_pattern_edits", None) is None:
            self._pattern_edits = self._probe_pattern_edits()
        return list(self._pattern_edits)

    def _probe_pattern_edits(self) -> list[bool]:
        n = min(4, self.n_ctx)
        tokens = (torch.arange(n, device=self.device) % self.model.cfg.d_vocab)[None].expand(2, -1)
        differs = [False] * self.n_layers

        def zero(x: Tensor, hook: Any) -> Tensor:
            x = x.clone()
            x[1] = 0
            return x

        def same_input(x: Tensor, hook: Any) -> Tensor:
            return x[:1].expand_as(x).clone()

        def compare(x: Tensor, hook: Any, layer: int) -> None:
            differs[layer] = bool((x[0] - x[1]).abs().max() > 0)

        hooks: list[Hook] = []
        for layer in range(self.n_layers):
            hooks += [
                (self.resid_pre(layer), same_input),
                (self.attn_pattern(layer), zero),
                (self._layer_hook(layer, "hook_attn_out"), partial(compare, layer=layer)),
            ]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TL 4 warns that a discarded edit was discarded
            self.run(tokens, hooks)
        return differs

    # ------------------------------------------------------------------ logit softcap
    @property
    def logit_softcap(self) -> float | None:
        """The final logit softcap c of `c * tanh(z / c)` (Gemma-2), or None."""
        cap = getattr(self.model.cfg, "output_logits_soft_cap", None)
        return float(cap) if cap is not None and cap > 0 else None

    def logits_before_softcap(self) -> str:
        """Hook of the logits before the final softcap (the unembedding's output)."""
        return self.hook("unembed.hook_out")

    @contextmanager
    def softcap_off(self) -> Iterator[None]:
        """Within the block the model does not apply its final logit softcap (its logits are
        those of `logits_before_softcap()`); restored afterwards."""
        cap = self.logit_softcap
        if cap is None:
            yield
            return
        cfg = self.model.cfg
        hf_cfg = getattr(self.model.original_model, "config", None) if self.is_bridge else None
        if self.is_bridge and getattr(hf_cfg, "final_logit_softcapping", None) is None:
            raise UnsupportedModelError(
                f"{self.name}: the logit softcap is not applied through the Hugging Face "
                "config's final_logit_softcapping, so tl_clt cannot hold it; use transformer-lens "
                "3.x (HookedTransformer) for this model"
            )
        cfg.output_logits_soft_cap = -1.0
        if hf_cfg is not None:
            hf_cfg.final_logit_softcapping = None
        try:
            yield
        finally:
            cfg.output_logits_soft_cap = cap
            if hf_cfg is not None:
                hf_cfg.final_logit_softcapping = cap

    # ------------------------------------------------------------------ display
    def token_texts(self, tokens: Tensor | Iterable[int]) -> list[str]:
        """The decoded text of each token of a [pos] or [1, pos] tensor or a list of ids:
        " Paris", "\n", never a vocabulary symbol such as "ĠParis" (what people are shown;
        `tl_clt.tokenization.visible` makes its whitespace visible)."""
        from tl_clt.tokenization import token_texts

        if isinstance(tokens, Tensor):
            tokens = (tokens[0] if tokens.dim() == 2 else tokens).tolist()
        return token_texts(self.tokenizer, tokens)

    def token_text(self, token_id: int) -> str:
        """The decoded text of one token id."""
        return self.token_texts([int(token_id)])[0]

    def decode(self, tokens: Tensor | Iterable[int]) -> str:
        """The running text of a token sequence ([pos] or [1, pos] tensor, or ids)."""
        from tl_clt.tokenization import decode

        if isinstance(tokens, Tensor):
            tokens = (tokens[0] if tokens.dim() == 2 else tokens).tolist()
        return decode(self.tokenizer, tokens)
