"""The splice: the one mechanism that puts a transcoder in place of a model's MLPs.

Every way tl_clt runs a model with its transcoder (the replacement model, the local replacement
model of one prompt, the linearised pass attribution differentiates, interventions, generation,
the training metrics' spliced evaluation, the feature index) is a `Splice`: per-layer policies
turned into the only hooks tl_clt puts on a model's MLP inputs and outputs.

- **features**: encoded from each MLP input; optionally held at recorded values (`hold`), then
  optionally edited (`edit(layer, acts) -> acts`, e.g. an intervention). Hook points fire in
  the same order in every mode: `clt.blocks.L.hook_feature_pre` sees the live pre-activations,
  `clt.blocks.L.hook_features` the (held, edited) activations that are decoded, so a user's hook
  there edits them too.
- **error**: `"live"` (the MLP's output minus the reconstruction from the unedited features,
  detached: edits of the features propagate, gradients reach the features only, and where no
  feature is edited the output is exactly the model's), `"none"`
  (the pure replacement model), or one tensor per layer (frozen, e.g. a clean run's). It passes
  through `clt.blocks.L.hook_error`.
- **output**: `"replace"` (the reconstruction from the features plus the error term, through
  `clt.blocks.L.hook_recons`), `"observe"` (the MLP's output is left alone; the splice only
  encodes, e.g. to index features), or `"leaf"` (the recorded output, the reconstruction from
  `hold` plus the frozen error, as a constant tensor that requires grad: the leaves the
  linearised local replacement model is differentiated at; nothing is encoded).
- **freeze**: a `CleanRun` whose attention patterns and normalisation scales (and, on a model
  with a final logit softcap, the softcap's scale) are held, which together with frozen errors
  makes the local replacement model of that run's prompt (Ameisen et al. 2025, "Circuit
  Tracing"), in which every path between features is linear. Where a model ignores edits of its
  patterns (GPT-Neo and GPT-J under TransformerLens 4.x), the attention's mixed values `hook_z`
  are replaced by the held pattern times the live values `hook_v` instead.

The state of the forward passes run with a splice (each layer's input, pre-activations,
features, errors, leaves) lives on the `SpliceRun` that holds its hooks, never on the long-lived
`ReplacementModel`, so nested or interleaved runs keep their own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from tl_clt.errors import InputError, UnknownHookError, UnsupportedModelError

if TYPE_CHECKING:
    from tl_clt.clt import CrossLayerTranscoder
    from tl_clt.lens import Lens

ErrorPolicy = Literal["live", "none"] | Sequence[Tensor]
OutputPolicy = Literal["replace", "observe", "leaf"]
Edit = Callable[[int, Tensor], Tensor]
Hook = tuple[str, Callable[..., Any]]


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
    # the final logit softcap's scale tanh(z/c) / (z/c) at each logit z, [batch, pos, d_vocab]
    # (None: the model has no softcap); frozen, it makes the logits linear in the residual
    logit_scale: Tensor | None = None


@dataclass(frozen=True)
class Splice:
    """Per-layer policies (see the module docstring). `keep_bos` keeps the MLP outputs at
    position 0 exact: there the model sees only BOS, so they are a constant of the model that
    transcoders are not trained on."""

    error: ErrorPolicy = "live"
    hold: Sequence[Tensor] | None = None
    edit: Edit | None = None
    output: OutputPolicy = "replace"
    freeze: CleanRun | None = None
    keep_bos: bool = False
    layers: Sequence[int] | None = None  # the layers spliced (default: every layer)

    def __post_init__(self) -> None:
        if isinstance(self.error, str) and self.error not in ("live", "none"):
            raise InputError(
                f"error={self.error!r}: use 'live', 'none' or one frozen tensor per layer"
            )
        if self.output not in ("replace", "observe", "leaf"):
            raise InputError(f"output={self.output!r}: use 'replace', 'observe' or 'leaf'")
        if self.output == "leaf" and (self.hold is None or isinstance(self.error, str)):
            raise InputError(
                "output='leaf' needs held features (hold=) and frozen errors (error=[...]): the "
                "leaves are the recorded outputs of the local replacement model"
            )
        if self.output == "observe" and (self.error != "live" or self.keep_bos):
            raise InputError("output='observe' leaves the MLP output alone: no error or keep_bos")
        if self.layers is not None and self.output != "observe":
            raise InputError(
                "only an observing splice (output='observe') may leave layers out: a reconstruction "
                "reads the features of every earlier layer"
            )

    @classmethod
    def of(cls, error: bool | Sequence[Tensor] | str, **kw: Any) -> Splice:
        """A splice whose error policy is given the `ReplacementModel` way: True (live),
        False (none), or one frozen tensor per layer."""
        if error is True:
            error = "live"
        elif error is False:
            error = "none"
        return cls(error=error, **kw)


class SpliceRun:
    """The hooks of one splice and the state of the forward passes run with them (each list is
    indexed by layer and holds the last pass's values)."""

    def __init__(self, lens: Lens, clt: CrossLayerTranscoder, splice: Splice) -> None:
        n = clt.cfg.n_layers
        if not isinstance(splice.error, str) and len(splice.error) != n:
            raise InputError(f"frozen errors: got {len(splice.error)} tensors for {n} layers")
        if splice.hold is not None and len(splice.hold) != n:
            raise InputError(f"held features: got {len(splice.hold)} tensors for {n} layers")
        self.lens, self.clt, self.splice = lens, clt, splice
        self.mlp_in: list[Tensor | None] = [None] * n  # the transcoder's inputs
        self.pre: list[Tensor | None] = [None] * n  # encoder pre-activations
        self.base: list[Tensor | None] = [None] * n  # features before `edit` (after `hold`)
        self.features: list[Tensor | None] = [None] * n  # the features that were decoded
        self.errors: list[Tensor | None] = [None] * n  # error terms added to the outputs
        self.leaves: list[Tensor] = []  # output leaves (output="leaf"), in layer order
        self.values: list[Tensor | None] = [None] * n  # attention values (held patterns)

    @property
    def n_layers(self) -> int:
        return self.clt.cfg.n_layers

    def hooks(self) -> list[Hook]:
        """The TransformerLens hooks that carry out the splice: the frozen patterns and scales
        first, then each layer's MLP input and output."""
        lens, cfg, sp = self.lens, self.clt.cfg, self.splice
        out: list[Hook] = []
        if sp.freeze is not None:
            out += self._freeze_hooks(sp.freeze)
        layers = range(self.n_layers) if sp.layers is None else sp.layers
        for layer in layers:
            out.append((lens.mlp_in(layer, cfg.input_hook), partial(self._read, layer=layer)))
            if sp.output != "observe":
                out.append(
                    (lens.mlp_out(layer, cfg.output_hook), partial(self._write, layer=layer))
                )
        return out

    def _freeze_hooks(self, run: CleanRun) -> list[Hook]:
        """Hooks holding `run`'s normalisation scales, attention patterns and logit softcap
        scale. Where the model discards edits of a pattern (`Lens.pattern_edits_apply`), the
        attention's mixed values are replaced by the held pattern times the live values, which
        is what holding the pattern means. (The logit softcap's scale is held by
        `softcap_hooks`.)"""
        lens = self.lens
        out: list[Hook] = lens.held(run.scales)
        applies = lens.pattern_edits_apply()
        for layer in range(lens.n_layers):
            name = lens.attn_pattern(layer)
            if name not in run.patterns:
                continue
            pattern = run.patterns[name]
            if applies[layer]:
                out += lens.held({name: pattern})
                continue
            try:
                v_name, z_name = lens.attn_values(layer), lens.attn_z(layer)
            except UnknownHookError as exc:
                raise UnsupportedModelError(
                    f"{lens.name}: layer {layer}'s attention discards edits of its pattern and "
                    f"has no value / mixed-value hooks ({exc}), so its pattern cannot be frozen; "
                    "use transformer-lens 3.x (HookedTransformer) for this model"
                ) from exc
            out += [(v_name, partial(self._read_values, layer=layer)),
                    (z_name, partial(self._mix, layer=layer, pattern=pattern))]  # fmt: skip
        return out

    def softcap_hooks(self) -> list[Hook]:
        """The hook holding the frozen run's logit softcap scale (none without a freeze or a
        softcap): it multiplies the logits before the cap, so it must run with the model's own
        cap turned off, as `ReplacementModel.splice` does (`Lens.softcap_off`)."""
        run = self.splice.freeze
        if run is None or run.logit_scale is None:
            return []
        return [(self.lens.logits_before_softcap(), _scaled(run.logit_scale))]

    def _read_values(self, v: Tensor, hook: Any, layer: int) -> None:
        self.values[layer] = v

    def _mix(self, z: Tensor, hook: Any, layer: int, pattern: Tensor) -> Tensor:
        """pattern [batch, head, query, key] @ values [batch, key, kv_head, d_head]."""
        v = self.values[layer]
        if v is None or v.dim() != 4 or z.dim() != 4 or z.shape[2] % v.shape[2]:
            raise UnsupportedModelError(
                f"{self.lens.name}: layer {layer}'s attention discards edits of its pattern and "
                "its value hooks do not have the per-head shape needed to hold it; use "
                "transformer-lens 3.x (HookedTransformer) for this model"
            )
        v = v.repeat_interleave(z.shape[2] // v.shape[2], dim=2)  # grouped-query attention
        p = pattern.to(v.dtype).expand(v.shape[0], -1, -1, -1)
        return torch.einsum("bhqk,bkhd->bqhd", p, v).to(z.dtype)

    # ------------------------------------------------------------------ MLP input
    def _read(self, x: Tensor, hook: Any, layer: int) -> None:
        self.mlp_in[layer] = x
        if self.splice.output == "leaf":
            return
        between = partial(self._hold_and_edit, layer=layer)
        pre, feats = self.clt.encode_layer_with_pre(x.to(self.clt.dtype), layer, between)
        self.pre[layer], self.features[layer] = pre, feats

    def _hold_and_edit(self, acts: Tensor, layer: int) -> Tensor:
        sp = self.splice
        if sp.hold is not None:
            acts = sp.hold[layer].expand_as(acts)
        self.base[layer] = acts
        return acts if sp.edit is None else sp.edit(layer, acts)

    # ------------------------------------------------------------------ MLP output
    def _write(self, mlp_out: Tensor, hook: Any, layer: int) -> Tensor:
        sp, clt = self.splice, self.clt
        x = self._input(layer)
        if sp.output == "leaf":
            # the held features and the error term are the leaf; a skip connection stays live
            # (a linear path from this layer's input, like attention's frozen-pattern path)
            skip = None if x is None else clt.skip_layer(x, layer)
            with torch.no_grad():
                value = self._output(clt.decode_layer(sp.hold, layer, x), mlp_out, layer)
                if skip is not None:
                    value = value - skip
            leaf = value.to(mlp_out.dtype).clone().requires_grad_(True)
            self.leaves.append(leaf)
            return leaf if skip is None else leaf + skip.to(mlp_out.dtype)
        recon = clt.decode_layer(self.features, layer, x)
        out = self._output(recon, mlp_out, layer).to(mlp_out.dtype)
        if sp.keep_bos:
            out = torch.cat([mlp_out[:, :1], out[:, 1:]], dim=1)
        return out

    def _input(self, layer: int) -> Tensor | None:
        """This layer's MLP input in the transcoder's dtype, where a skip connection reads it."""
        x = self.mlp_in[layer]
        return None if x is None or self.clt.W_skip is None else x.to(self.clt.dtype)

    def _output(self, recon: Tensor, mlp_out: Tensor, layer: int) -> Tensor:
        """The reconstruction plus this layer's error term (through `hook_error`)."""
        sp, clt = self.splice, self.clt
        if sp.error == "none":
            self.errors[layer] = None
            return recon
        if sp.error == "live":
            unedited = all(self.features[s] is self.base[s] for s in clt.reads_from(layer))
            base = (
                recon if unedited else clt.reconstruct_layer(self.base, layer, self._input(layer))
            )
            base = base.detach()
            err = (mlp_out.to(recon.dtype) - base).detach()
            hooked = clt.blocks[layer].hook_error(err)
            self.errors[layer] = hooked
            if hooked is err:
                # the same value as recon + err, but exactly the model's output where no feature
                # was edited (recon - base is then exactly zero); gradients reach the features
                return mlp_out.detach().to(recon.dtype) + (recon - base)
            return recon + hooked
        err = sp.error[layer]
        err = err.expand_as(recon) if err.shape != recon.shape else err
        err = clt.blocks[layer].hook_error(err)
        self.errors[layer] = err
        return recon + err


def softcap_scale(z: Tensor, cap: float) -> Tensor:
    """tanh(z/c) / (z/c): the factor by which the softcap c·tanh(z/c) scales each logit z."""
    r = z.double() / cap
    small = r.abs() < 1e-4
    scale = torch.where(small, 1 - r * r / 3, torch.tanh(r) / torch.where(small, 1.0, r))
    return scale.to(z.dtype)


def _scaled(scale: Tensor) -> Callable[..., Tensor]:
    def hook(z: Tensor, hook: Any) -> Tensor:
        return z * scale.to(z.dtype)

    return hook
