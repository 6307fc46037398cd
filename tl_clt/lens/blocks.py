"""What a model's blocks compute around their MLPs, per TransformerLens major: where the MLP
reads its input and writes its output, what its output weights are, and how a normalisation's
scale is held.

The hooks are chosen from the blocks' structure, never from a name that means one thing in one
family and another elsewhere:

- input: the pre-MLP norm's normalised output (`ln2.hook_normalized`); for parallel blocks
  whose MLP shares `ln1` (GPT-J, Phi under 4.x), `ln1.hook_normalized`; for blocks with no
  pre-MLP norm (OLMo-2, which normalises after attention and after the MLP), the residual
  stream the MLP reads (`hook_resid_mid`). A 4.x norm with no weight (OLMo's LayerNorm) is read
  at its output, which is its normalised value and, unlike `hook_normalized`, can be held.
- output: what the MLP adds to the residual stream, after any post-MLP norm (Gemma-2/3's
  `ln2_post`, OLMo-2's post-MLP norm): `hook_mlp_out` under 3.x, `ln2_post.hook_out` where a
  4.x block has one.

Under 4.x the choice is checked on one forward pass: the hook's value, through the norm's
weight and bias, must equal the MLP's input (`mlp.hook_in`); otherwise tl_clt refuses the
model with `UnsupportedModelError` rather than guess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tl_clt.errors import UnsupportedModelError

Hook = tuple[str, Callable[..., Any]]


@dataclass(frozen=True)
class MLPSites:
    """Per-layer hook sites (relative to `blocks.{l}.`) of the MLP's input and output."""

    normalized: str  # the MLP's normalised input, or the residual stream where it has no norm
    output: str  # what the MLP adds to the residual stream
    input_norm: str | None  # the block's pre-MLP norm (`ln2`, `ln1`), None where it has none


def resolve_mlp_sites(lens: Any) -> MLPSites:
    """The MLP sites of `lens`'s model (see the module docstring)."""
    if lens.is_bridge:
        return _bridge_sites(lens)
    return _hooked_sites(lens)


def _hooked_sites(lens: Any) -> MLPSites:
    """TransformerLens 3.x: `hook_mlp_out` already follows any post-MLP norm; OLMo-2-style
    post-norm blocks call their post-MLP norm `ln2` and have no pre-MLP norm."""
    if _post_norm_only(lens.model.cfg):
        return MLPSites("hook_resid_mid", "hook_mlp_out", None)
    return MLPSites("ln2.hook_normalized", "hook_mlp_out", "ln2")


def _post_norm_only(cfg: Any) -> bool:
    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES
    except ImportError:  # older 3.x releases had no post-norm blocks
        return False
    return getattr(cfg, "original_architecture", None) in POST_NORM_ARCHITECTURES


def _bridge_sites(lens: Any) -> MLPSites:
    block = lens.model.blocks[0]
    output = "ln2_post.hook_out" if _has(block, "ln2_post") else "hook_mlp_out"
    if _has(block, "ln2"):
        sites = MLPSites("ln2.hook_normalized", output, "ln2")
    elif lens.parallel and _has(block, "ln1"):
        sites = MLPSites("ln1.hook_normalized", output, "ln1")
    elif not lens.parallel:
        sites = MLPSites("hook_resid_mid", output, None)
    else:
        raise UnsupportedModelError(
            f"cannot tell where {lens.name}'s MLPs read their input (a parallel block with no "
            "ln1 or ln2); tl_clt supports blocks whose MLP reads a norm's output or the residual"
        )
    if sites.input_norm is not None and _weightless(getattr(block, sites.input_norm)):
        # its output is its normalised value, and only its output can be held (held_hooks)
        sites = MLPSites(f"{sites.input_norm}.hook_out", output, sites.input_norm)
    _check_bridge_input(lens, sites)
    return sites


def _has(block: Any, name: str) -> bool:
    return name in dict(block.named_children())


def _check_bridge_input(lens: Any, sites: MLPSites) -> None:
    """One forward pass: the chosen input, through the norm's affine map, is the MLP's input."""
    model = lens.model
    read = f"{sites.input_norm}.hook_out" if sites.input_norm else sites.normalized
    names = {f"blocks.0.{read}": "x", "blocks.0.mlp.hook_in": "mlp"}
    seen: dict[str, Tensor] = {}
    hooks = [(n, lambda x, hook, k=k: seen.__setitem__(k, x.detach()))
             for n, k in names.items() if lens.has_hook(n)]  # fmt: skip
    tokens = torch.arange(min(4, lens.d_vocab), device=lens.device)[None]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        model(tokens)
    if "mlp" not in seen or "x" not in seen:
        return  # the block does not expose the MLP's input; the structure decides alone
    if seen["x"].shape != seen["mlp"].shape or not torch.allclose(
        seen["x"].float(), seen["mlp"].float(), rtol=1e-4, atol=1e-5
    ):
        raise UnsupportedModelError(
            f"{lens.name}: the MLP's input is not the output of "
            f"{sites.input_norm or 'the residual stream'}, so tl_clt cannot tell which hook the "
            "transcoder should read; this block structure is not supported"
        )


def mlp_writers(lens: Any, layer: int) -> list[Tensor]:
    """The matrices through which layer `layer`'s MLP writes to the residual stream, in
    TransformerLens orientation [.., d_model]: `W_out`, or each expert's for a mixture of
    experts (treated as one MLP); empty where the block exposes none."""
    mlp = lens.model.blocks[layer].mlp
    w = _param(mlp, "W_out")
    if w is not None:
        return [w]
    experts = getattr(mlp, "experts", None)
    if isinstance(experts, torch.nn.ModuleList):
        found = [_param(e, "W_out") for e in experts]
        return [w for w in found if w is not None]
    return []


def _param(module: Any, name: str) -> Tensor | None:
    try:
        value = getattr(module, name)
    except (AttributeError, KeyError):
        return None
    return value if isinstance(value, Tensor) else None


# ---------------------------------------------------------------------- held activations
def held_hooks(lens: Any, values: dict[str, Tensor]) -> list[Hook]:
    """Hooks that hold each named activation at a recorded value. A norm scale is held on its
    `hook_scale`, except for a 4.x norm with no weight (OLMo's LayerNorm), which cannot
    recompute its output from an edited scale: there the norm's output is replaced by its
    input, centred (LayerNorm), divided by the held scale."""
    hooks: list[Hook] = []
    for name, value in values.items():
        norm = _weightless_bridge_norm(lens, name)
        if norm is None:
            hooks.append((name, _held(value)))
        else:
            hooks += _held_weightless(lens.canonical(name).removesuffix(".hook_scale"), norm, value)
    return hooks


def _held(value: Tensor) -> Callable[..., Tensor]:
    """Holds `value` over a batch of runs: broadcast over the batch, or repeated where the hook
    flattens batch and positions into its first dimension (3.x's query/key norm scales)."""

    def hook(x: Tensor, hook: Any) -> Tensor:
        if value.shape == x.shape:
            return value
        if value.shape[1:] == x.shape[1:] and x.shape[0] % value.shape[0] == 0:
            return value.repeat(x.shape[0] // value.shape[0], *[1] * (value.dim() - 1))
        return value.expand_as(x)

    return hook


def _weightless_bridge_norm(lens: Any, name: str) -> Any:
    if not lens.is_bridge or not name.endswith("hook_scale"):
        return None
    path = lens.canonical(name).removesuffix(".hook_scale")
    try:
        norm = lens.model.get_submodule(path)
    except AttributeError:
        return None
    return norm if _weightless(norm) else None


def _weightless(norm: Any) -> bool:
    """A 4.x norm bridge around a norm with no weight (which it would apply itself)."""
    component = getattr(norm, "original_component", None)
    if component is None or getattr(component, "weight", None) is not None:
        return False
    return not _overrides_affine(norm)


def _overrides_affine(norm: Any) -> bool:
    """Param-free norm bridges (LNPre, RMSPre) apply no weight themselves."""
    from transformer_lens.model_bridge.generalized_components.normalization import (
        NormalizationBridge,
    )

    return type(norm)._apply_weight_and_bias is not NormalizationBridge._apply_weight_and_bias


def _held_weightless(path: str, norm: Any, scale: Tensor) -> list[Hook]:
    inputs: list[Tensor] = []
    rms = bool(getattr(norm, "uses_rms_norm", False))

    def record(x: Tensor, hook: Any) -> None:
        inputs[:] = [x]

    def replace(out: Tensor, hook: Any) -> Tensor:
        x = inputs[0]
        x = x if rms else x - x.mean(-1, keepdim=True)
        s = scale.expand(*x.shape[:-1], 1) if scale.shape[:-1] != x.shape[:-1] else scale
        return (x / s.to(x.dtype)).to(out.dtype)

    return [(f"{path}.hook_in", record), (f"{path}.hook_out", replace)]
