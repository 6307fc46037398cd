"""`ReplacementModel`: a TransformerLens model with a transcoder spliced in place of every MLP.

`with rm.spliced(error=True):` replaces each MLP output by the transcoder's reconstruction
plus the exact error term, so logits equal the original model's; `error=False` gives the pure
replacement model. The error is a constant (detached): gradients flow through the features,
never through the original MLPs. Hooks are removed on exit, exceptions included.

`rm.capture(tokens)` records one spliced run (attention patterns, normalisation scales, error
terms, feature activations); `with rm.frozen(run):` is then the *local replacement model* of
that prompt: patterns, scales and errors are held at their recorded values, so every path from
one feature to another is linear (the regime attribution graphs describe).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from tl_clt import hooks as clt_hooks
from tl_clt.clt import CrossLayerTranscoder
from tl_clt.errors import ModelMismatchError, UnknownHookError
from tl_clt.lens import Lens

NamesFilter = Sequence[str] | Callable[[str], bool] | None
ErrorMode = bool | Sequence[Tensor]


@dataclass
class CleanRun:
    """One spliced forward pass (error term kept), with everything the local replacement
    model freezes. Per-layer lists are indexed by layer; dict keys are hook names."""

    tokens: Tensor  # [batch, pos]
    logits: Tensor  # [batch, pos, d_vocab]
    patterns: dict[str, Tensor]  # attention patterns
    scales: dict[str, Tensor]  # normalisation scales
    errors: list[Tensor]  # [batch, pos, d_model] MLP output minus reconstruction
    feature_pre: list[Tensor]  # [batch, pos, n_features]
    features: list[Tensor]  # [batch, pos, n_features]
    mlp_in: list[Tensor]  # [batch, pos, d_model] the transcoder's inputs


def _held(value: Tensor) -> Callable:
    def hook(x: Tensor, hook: Any) -> Tensor:
        return value.expand_as(x) if value.shape != x.shape else value

    return hook


class ReplacementModel:
    """A model and a transcoder that fits it (checked on construction)."""

    def __init__(self, model: Any, clt: CrossLayerTranscoder, check_identity: bool = True) -> None:
        self.lens = model if isinstance(model, Lens) else Lens(model)
        self.clt = clt.to(self.lens.device)
        self._check(check_identity)
        self._acts: list[Tensor | None] = [None] * self.n_layers

    @property
    def model(self) -> Any:
        return self.lens.model

    @property
    def n_layers(self) -> int:
        return self.clt.cfg.n_layers

    def _check(self, check_identity: bool) -> None:
        cfg, lens = self.clt.cfg, self.lens
        if (cfg.n_layers, cfg.d_model) != (lens.n_layers, lens.d_model):
            raise ModelMismatchError(
                f"the transcoder has n_layers={cfg.n_layers}, d_model={cfg.d_model} but the "
                f"model has n_layers={lens.n_layers}, d_model={lens.d_model}; use a transcoder "
                "trained on this model"
            )
        try:
            lens.mlp_in(0, cfg.input_hook)
            lens.mlp_out(0, cfg.output_hook)
        except UnknownHookError as exc:
            raise ModelMismatchError(
                f"the transcoder's hooks do not fit this model: {exc}"
            ) from exc
        if check_identity and cfg.model is not None:
            problems = cfg.model.mismatches(lens.identity())
            if problems:
                raise ModelMismatchError(
                    "the transcoder was made for a different model: "
                    + "; ".join(problems)
                    + ". Use the model it was trained on (same weights and weight processing),"
                    " or pass check_identity=False if you are sure they match."
                )

    # ------------------------------------------------------------------ splicing
    def splice_hooks(
        self, error: ErrorMode = True, keep_bos: bool = False
    ) -> list[tuple[str, Callable]]:
        """The TransformerLens hooks that splice the transcoder in (for a user's own
        `run_with_hooks`); `spliced()` is the context-manager form."""
        cfg, lens = self.clt.cfg, self.lens
        out = []
        for layer in range(self.n_layers):
            write = partial(self._write_output, layer=layer, error=error, keep_bos=keep_bos)
            out.append((lens.mlp_in(layer, cfg.input_hook), partial(self._read_input, layer=layer)))
            out.append((lens.mlp_out(layer, cfg.output_hook), write))
        return out

    def _read_input(self, x: Tensor, hook: Any, layer: int) -> None:
        self._acts[layer] = self.clt.encode_layer(x.to(self.clt.dtype), layer)

    def _write_output(
        self, mlp_out: Tensor, hook: Any, layer: int, error: ErrorMode, keep_bos: bool = False
    ) -> Tensor:
        recon = self.clt.decode_layer(self._acts, layer)
        if error is True:
            err = (mlp_out.to(recon.dtype) - recon).detach()
        elif error is False:
            out = recon.to(mlp_out.dtype)
            if keep_bos:  # position 0 sees only BOS: a constant of the model, kept exact
                out = torch.cat([mlp_out[:, :1], out[:, 1:]], dim=1)
            return out
        else:
            err = error[layer]
            err = err.expand_as(recon) if err.shape != recon.shape else err
        return (recon + self.clt.blocks[layer].hook_error(err)).to(mlp_out.dtype)

    @contextmanager
    def spliced(
        self, error: ErrorMode = True, keep_bos: bool = False
    ) -> Iterator[ReplacementModel]:
        """Within the block, every forward pass of `self.model` runs through the transcoder.
        `error`: True keeps the exact error term, False drops it (the pure replacement model),
        and a per-layer list of tensors adds those fixed error terms instead. With `error=False`,
        `keep_bos` keeps the MLP outputs at position 0 exact: there the model sees only BOS, so
        they are a constant of the model that transcoders are not trained on."""
        try:
            with self.lens.hooks(self.splice_hooks(error, keep_bos)):
                yield self
        finally:
            self._acts = [None] * self.n_layers

    # ------------------------------------------------------------------ running
    def __call__(
        self, tokens: Int[Tensor, "batch pos"], error: ErrorMode = True, keep_bos: bool = False
    ) -> Tensor:
        with self.spliced(error, keep_bos):
            return self.model(tokens)

    def run_with_hooks(
        self,
        tokens: Int[Tensor, "batch pos"],
        fwd_hooks: Sequence[tuple[str, Callable]] = (),
        error: ErrorMode = True,
        spliced: bool = True,
    ) -> Tensor:
        """Logits with temporary hooks; names starting with `clt.` address the transcoder's
        hook points (see `tl_clt.hooks`), the rest the model's."""
        model_hooks = [(n, f) for n, f in fwd_hooks if not clt_hooks.is_clt_hook(n)]
        clt_side = [(clt_hooks.strip(n), f) for n, f in fwd_hooks if clt_hooks.is_clt_hook(n)]
        for name, _ in clt_side:
            if name not in self.clt.hook_dict:
                raise UnknownHookError(f"the transcoder has no hook 'clt.{name}'")
        with ExitStack() as stack:
            stack.enter_context(self.clt.hooks(fwd_hooks=clt_side))
            if spliced:
                stack.enter_context(self.spliced(error))
            return self.lens.run(tokens, model_hooks)

    def hook_names(self) -> list[str]:
        """Every hook name `run_with_cache` and `run_with_hooks` accept."""
        return [clt_hooks.PREFIX + n for n in self.clt.hook_dict] + list(self.lens._canonical)

    def run_with_cache(
        self,
        tokens: Int[Tensor, "batch pos"],
        names_filter: NamesFilter = None,
        error: ErrorMode = True,
        spliced: bool = True,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and a {name: activation} cache of the model's and the transcoder's hooks."""
        names = self.hook_names()
        if callable(names_filter):
            names = [n for n in names if names_filter(n)]
        elif names_filter is not None:
            names = list(names_filter)
        cache: dict[str, Tensor] = {}

        def save(x: Tensor, hook: Any, key: str) -> None:
            cache[key] = x.detach()

        fwd = [(n, partial(save, key=n)) for n in names]
        with torch.no_grad():
            logits = self.run_with_hooks(tokens, fwd, error=error, spliced=spliced)
        return logits, cache

    # ------------------------------------------------------------------ local replacement model
    def capture(self, tokens: Int[Tensor, "batch pos"], error: bool = True) -> CleanRun:
        """Run once spliced (error term kept, or dropped for the pure replacement model, whose
        errors are then zero) and record what the local replacement model freezes, plus every
        layer's feature activations."""
        L, lens = self.n_layers, self.lens
        pattern_names = [lens.attn_pattern(layer) for layer in range(L)]
        scale_names = lens.norm_scales()
        clt_names = []
        for layer in range(L):
            clt_names += [
                clt_hooks.feature_pre(layer),
                clt_hooks.features(layer),
                clt_hooks.error(layer),
            ]
        in_names = [lens.mlp_in(layer, self.clt.cfg.input_hook) for layer in range(L)]
        logits, cache = self.run_with_cache(
            tokens, names_filter=pattern_names + scale_names + clt_names + in_names, error=error
        )
        if not error:
            zero = torch.zeros_like(cache[in_names[0]], dtype=self.clt.dtype)
            cache.update({clt_hooks.error(layer): zero for layer in range(L)})
        return CleanRun(
            tokens=tokens,
            logits=logits.detach(),
            patterns={n: cache[n] for n in pattern_names},
            scales={n: cache[n] for n in scale_names},
            errors=[cache[clt_hooks.error(layer)] for layer in range(L)],
            feature_pre=[cache[clt_hooks.feature_pre(layer)] for layer in range(L)],
            features=[cache[clt_hooks.features(layer)] for layer in range(L)],
            mlp_in=[cache[n] for n in in_names],
        )

    def freeze_hooks(self, run: CleanRun, features: bool = False) -> list[tuple[str, Callable]]:
        """Hooks holding attention patterns and normalisation scales (and, with `features`,
        every feature activation) at their values in `run`; errors are held by `spliced`."""
        hooks = [(n, _held(v)) for n, v in {**run.patterns, **run.scales}.items()]
        if features:
            hooks += [
                (clt_hooks.features(layer), _held(run.features[layer]))
                for layer in range(self.n_layers)
            ]
        return hooks

    @contextmanager
    def frozen(self, run: CleanRun, features: bool = False) -> Iterator[ReplacementModel]:
        """The local replacement model of `run`'s prompt: spliced with the recorded error
        terms, attention patterns and normalisation scales frozen (and, with `features=True`,
        every feature held at its recorded activation, so that only hooks added after these,
        e.g. an intervention, change anything). Forward passes with the recorded tokens
        reproduce `run.logits`."""
        held = self.freeze_hooks(run, features)
        model_side = [(n, f) for n, f in held if not clt_hooks.is_clt_hook(n)]
        clt_side = [(clt_hooks.strip(n), f) for n, f in held if clt_hooks.is_clt_hook(n)]
        with ExitStack() as stack:
            stack.enter_context(self.clt.hooks(fwd_hooks=clt_side))
            stack.enter_context(self.lens.hooks(model_side))
            stack.enter_context(self.spliced(error=run.errors))
            yield self
