"""`ReplacementModel`: a TransformerLens model with a transcoder spliced in place of every MLP.

`with rm.spliced(error=True):` replaces each MLP output by the transcoder's reconstruction
plus the exact error term, so logits equal the original model's; `error=False` gives the pure
replacement model. The error is a constant (detached): gradients flow through the features,
never through the original MLPs. Hooks are removed on exit, exceptions included.

`rm.capture(tokens)` records one spliced run (attention patterns, normalisation scales, error
terms, feature activations); `with rm.frozen(run):` is then the *local replacement model* of
that prompt: patterns, scales and errors are held at their recorded values, so every path from
one feature to another is linear (the regime attribution graphs describe).

Each of these is a configuration of one `tl_clt.splice.Splice`; `rm.splice(...)` takes the
policies directly. The run methods follow TransformerLens: `rm(input)`, `rm.run_with_hooks`,
`rm.run_with_cache` and `rm.hooks` take text or tokens and TransformerLens' hook arguments, and
names starting with `clt.` address the transcoder's hook points (`tl_clt.hooks`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from tl_clt import hooks as clt_hooks
from tl_clt.clt import CrossLayerTranscoder
from tl_clt.errors import InputError, ModelMismatchError, TLCLTWarning, UnknownHookError
from tl_clt.lens import Lens
from tl_clt.lens.adapter import ActivationCache
from tl_clt.splice import CleanRun, Splice, SpliceRun, softcap_scale

__all__ = ["CleanRun", "ReplacementModel", "Splice", "SpliceRun"]

NamesFilter = str | Sequence[str] | Callable[[str], bool] | None
ErrorMode = bool | Sequence[Tensor]
HookSpec = tuple[str | Callable[[str], bool], Callable[..., Any]]


class ReplacementModel:
    """A model and a transcoder that fits it (checked on construction). The transcoder is moved
    to the model's device in place."""

    def __init__(
        self,
        model: Any,
        clt: CrossLayerTranscoder,
        *,
        check_identity: bool = True,
        allow_mismatch: bool = False,
    ) -> None:
        if not isinstance(clt, CrossLayerTranscoder):
            raise InputError(
                f"ReplacementModel(model, clt): expected a CrossLayerTranscoder second, got "
                f"{type(clt).__name__}"
            )
        self.lens = model if isinstance(model, Lens) else Lens(model)
        self.clt = clt.to(self.lens.device)
        self._open_splices = 0  # splice blocks now open (analyses refuse to run inside one)
        self._check(check_identity, allow_mismatch)

    @property
    def model(self) -> Any:
        return self.lens.model

    @property
    def n_layers(self) -> int:
        return self.clt.cfg.n_layers

    def _check(self, check_identity: bool, allow_mismatch: bool) -> None:
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
            problems, notes = cfg.model.compare(lens.identity())
            for note in notes:
                warnings.warn(f"the transcoder and the model differ in {note}", TLCLTWarning, 3)
            if problems:
                text = "the transcoder was made for a different model: " + "; ".join(problems) + "."
                if allow_mismatch:
                    warnings.warn(text + " Going on (allow_mismatch)", TLCLTWarning, 3)
                    return
                raise ModelMismatchError(
                    text + " Use the model it was trained on (same weights and weight "
                    "processing), or pass allow_mismatch=True (--allow-mismatch) if you are sure "
                    "they match"
                )

    # ------------------------------------------------------------------ splicing
    def splice_run(self, splice: Splice | None = None, **policies: Any) -> SpliceRun:
        """The hooks and per-run state of one splice (`Splice(**policies)`), for a caller that
        installs the hooks itself (`run.hooks()`); `splice()` is the context-manager form."""
        return SpliceRun(self.lens, self.clt, splice or Splice(**policies))

    @contextmanager
    def splice(self, splice: Splice | None = None, **policies: Any) -> Iterator[SpliceRun]:
        """Within the block, every forward pass of `self.model` runs with the splice (see
        `tl_clt.splice`); the block's `SpliceRun` holds what the passes computed."""
        run = self.splice_run(splice, **policies)
        softcap = run.softcap_hooks()  # the frozen run's softcap scale, with the cap turned off
        self._open_splices += 1
        try:
            with (
                self.lens.hooks(run.hooks() + softcap),
                self.lens.softcap_off() if softcap else nullcontext(),
            ):
                yield run
        finally:
            self._open_splices -= 1

    def splice_hooks(
        self, error: ErrorMode = True, keep_bos: bool = False
    ) -> list[tuple[str, Callable]]:
        """The TransformerLens hooks that splice the transcoder in (for a user's own
        `run_with_hooks`); `spliced()` is the context-manager form."""
        return self.splice_run(Splice.of(error, keep_bos=keep_bos)).hooks()

    def spliced(self, error: ErrorMode = True, keep_bos: bool = False):
        """Within the block, every forward pass of `self.model` runs through the transcoder.
        `error`: True keeps the exact error term, False drops it (the pure replacement model),
        and a per-layer list of tensors adds those fixed error terms instead. With `error=False`,
        `keep_bos` keeps the MLP outputs at position 0 exact: there the model sees only BOS, so
        they are a constant of the model that transcoders are not trained on. Yields the
        block's `SpliceRun`."""
        return self.splice(Splice.of(error, keep_bos=keep_bos))

    def frozen(self, run: CleanRun, features: bool = False):
        """The local replacement model of `run`'s prompt: spliced with the recorded error
        terms, attention patterns and normalisation scales frozen (and, with `features=True`,
        every feature held at its recorded activation, so that only hooks added after these,
        e.g. an intervention, change anything). Forward passes with the recorded tokens
        reproduce `run.logits`. Yields the block's `SpliceRun`."""
        return self.splice(
            Splice(error=run.errors, hold=run.features if features else None, freeze=run)
        )

    # ------------------------------------------------------------------ running
    def __call__(
        self, input: Any, *model_args: Any, error: ErrorMode = True, keep_bos: bool = False,
        **model_kwargs: Any,
    ) -> Any:  # fmt: skip
        """The model's forward pass (text or tokens, TransformerLens' arguments) spliced."""
        with self.spliced(error, keep_bos):
            return self.model(input, *model_args, **model_kwargs)

    def hook_names(self) -> list[str]:
        """Every hook name `run_with_cache`, `run_with_hooks` and `hooks` accept."""
        return [clt_hooks.PREFIX + n for n in self.clt.hook_dict] + self.lens.hook_names()

    def _route(self, hooks: Sequence[HookSpec]) -> tuple[list, list]:
        """Split hooks into the model's and the transcoder's (names relative to the
        transcoder); a callable name filter goes to both, each seeing full names."""
        model_side, clt_side = [], []
        for name, fn in hooks:
            if callable(name):
                model_side.append((_model_names(name), fn))
                clt_side.append((_clt_names(name), fn))
            elif not isinstance(name, str):
                raise InputError(f"a hook name must be a str or a callable, got {name!r}")
            elif clt_hooks.is_clt_hook(name):
                if clt_hooks.strip(name) not in self.clt.hook_dict:
                    raise UnknownHookError(f"the transcoder has no hook {name!r}")
                clt_side.append((clt_hooks.strip(name), fn))
            else:
                model_side.append((self.lens.hook(name), fn))
        return model_side, clt_side

    @contextmanager
    def hooks(
        self,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
    ) -> Iterator[ReplacementModel]:
        """TransformerLens' `hooks` context manager over the model and the transcoder: every
        run inside the block (spliced, `intervene`, `attribute`, ...) fires these hooks."""
        model_fwd, clt_fwd = self._route(fwd_hooks)
        model_bwd, clt_bwd = self._route(bwd_hooks)
        with (
            self.clt.hooks(clt_fwd, clt_bwd, reset_hooks_end, clear_contexts),
            self.model.hooks(model_fwd, model_bwd, reset_hooks_end, clear_contexts),
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", message=".*edited hook_scale.*")
            yield self

    def reset_hooks(self) -> None:
        """Remove every hook from the model and the transcoder (after a run with
        `reset_hooks_end=False`, e.g. to keep backward hooks for a later `.backward()`)."""
        self.model.reset_hooks()
        self.clt.reset_hooks()

    def run_with_hooks(
        self,
        *model_args: Any,
        fwd_hooks: Sequence[HookSpec] = (),
        bwd_hooks: Sequence[HookSpec] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        error: ErrorMode = True,
        spliced: bool = True,
        **model_kwargs: Any,
    ) -> Any:
        """The forward pass with temporary hooks, as TransformerLens' `run_with_hooks`: names
        (or name filters) starting with `clt.` address the transcoder's hook points (see
        `tl_clt.hooks`), the rest the model's; `spliced=False` runs the model alone."""
        if _looks_like_hooks(model_args):
            raise InputError(
                "run_with_hooks(input, fwd_hooks=[...]): pass the hooks by keyword, as in "
                "TransformerLens"
            )
        with ExitStack() as stack:
            stack.enter_context(self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts))
            if spliced:
                stack.enter_context(self.spliced(error))
            return self.model(*model_args, **model_kwargs)

    def run_with_cache(
        self,
        *model_args: Any,
        names_filter: NamesFilter = None,
        error: ErrorMode = True,
        spliced: bool = True,
        incl_bwd: bool = False,
        device: Any = None,
        remove_batch_dim: bool = False,
        return_cache_object: bool = True,
        **model_kwargs: Any,
    ) -> tuple[Any, ActivationCache | dict[str, Tensor]]:
        """The output and an `ActivationCache` of the model's and the transcoder's hooks, as
        TransformerLens' `run_with_cache` (`names_filter`: None for every hook, a name, a list
        of names, or a function of the name). Gradients flow as usual; wrap the call in
        `torch.no_grad()` if none are wanted."""
        model_filter, clt_filter = self._split_filter(names_filter)
        clt_cache, clt_fwd, clt_bwd = self.clt.get_caching_hooks(
            clt_filter, incl_bwd, device, remove_batch_dim
        )
        with ExitStack() as stack:
            stack.enter_context(self.clt.hooks(clt_fwd, clt_bwd))
            if spliced:
                stack.enter_context(self.spliced(error))
            out, cache = self.model.run_with_cache(
                *model_args, names_filter=model_filter, incl_bwd=incl_bwd, device=device,
                remove_batch_dim=remove_batch_dim, return_cache_object=False, **model_kwargs,
            )  # fmt: skip
        merged = {**dict(cache), **clt_cache}  # the transcoder's hook points carry `clt.` names
        if not return_cache_object:
            return out, merged
        return out, ActivationCache(merged, self.model, has_batch_dim=not remove_batch_dim)

    def _split_filter(self, names_filter: NamesFilter) -> tuple[Any, Any]:
        """TransformerLens' names filter as one for the model and one for the transcoder."""
        if names_filter is None:
            return None, None
        if callable(names_filter):
            return _model_names(names_filter), _clt_names(names_filter)
        names = [names_filter] if isinstance(names_filter, str) else list(names_filter)
        model_side, clt_side = self._route([(n, _noop) for n in names])
        return [n for n, _ in model_side], [n for n, _ in clt_side]

    # ------------------------------------------------------------------ local replacement model
    def capture(self, tokens: Int[Tensor, "batch pos"], error: bool = True) -> CleanRun:
        """Run once spliced (error term kept, or dropped for the pure replacement model, whose
        errors are then zero) and record what the local replacement model freezes, plus every
        layer's feature activations."""
        L, lens = self.n_layers, self.lens
        patterns = [lens.attn_pattern(layer) for layer in range(L)]
        scales, cap = lens.norm_scales(), lens.logit_softcap
        before_cap = [] if cap is None else [lens.logits_before_softcap()]
        with torch.no_grad(), self.spliced(error) as run:
            logits, cache = lens.cache(tokens, patterns + scales + before_cap)
        if error:
            errors = [e.detach() for e in run.errors]
        else:
            errors = [torch.zeros_like(x, dtype=self.clt.dtype) for x in run.mlp_in]
        return CleanRun(
            tokens=tokens,
            logits=logits.detach(),
            patterns={n: cache[n].detach() for n in patterns},
            scales={n: cache[n].detach() for n in scales},
            errors=errors,
            feature_pre=[p.detach() for p in run.pre],
            features=[a.detach() for a in run.features],
            mlp_in=[x.detach() for x in run.mlp_in],
            logit_scale=None if cap is None else softcap_scale(cache[before_cap[0]].detach(), cap),
        )


def _noop(*args: Any) -> None:
    return None


def _model_names(name_filter: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda name: not clt_hooks.is_clt_hook(name) and bool(name_filter(name))


def _clt_names(name_filter: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda name: bool(name_filter(clt_hooks.PREFIX + name))


def _looks_like_hooks(args: Sequence[Any]) -> bool:
    """Hooks passed positionally after the input (a list of (name, function) pairs)."""
    if len(args) < 2 or not isinstance(args[1], (list, tuple)) or not args[1]:
        return False
    return all(isinstance(h, tuple) and len(h) == 2 and callable(h[1]) for h in args[1])


def check_call(function: str, replacement: Any, prompt: Any) -> None:
    """Raise `InputError` unless `function(replacement, prompt, ...)` got a `ReplacementModel`
    first (circuit-tracer's `attribute(prompt, model)` order is the common slip)."""
    if isinstance(replacement, ReplacementModel):
        if replacement._open_splices:
            raise InputError(
                f"{function}() was called inside a splice block (`with replacement.spliced():` "
                "or similar): its own runs would pass through that splice too. Call it outside "
                "the block"
            )
        return
    if isinstance(prompt, ReplacementModel):
        raise InputError(
            f"{function}(replacement, prompt): the ReplacementModel comes first and the prompt "
            f"second (got a {type(replacement).__name__} first; circuit-tracer's order is the "
            "other way round)"
        )
    raise InputError(
        f"{function}(replacement, prompt): got a {type(replacement).__name__} where the "
        "ReplacementModel goes; build one with ReplacementModel(model, transcoder)"
    )
