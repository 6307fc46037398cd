"""Names of the transcoder's hook points as seen through a `ReplacementModel` (public API).

Model hooks keep their TransformerLens names (`blocks.{l}.hook_mlp_out`); the transcoder's are
prefixed with `clt.`:

| name                              | shape                  | what                              |
|-----------------------------------|------------------------|-----------------------------------|
| `clt.blocks.{l}.hook_feature_pre` | [batch, pos, features] | encoder pre-activations           |
| `clt.blocks.{l}.hook_features`    | [batch, pos, features] | feature activations               |
| `clt.blocks.{l}.hook_recons`      | [batch, pos, d_model]  | reconstruction of layer l's MLP   |
| `clt.blocks.{l}.hook_error`       | [batch, pos, d_model]  | MLP output minus reconstruction   |
"""

from __future__ import annotations

PREFIX = "clt."


def feature_pre(layer: int) -> str:
    return f"{PREFIX}blocks.{layer}.hook_feature_pre"


def features(layer: int) -> str:
    return f"{PREFIX}blocks.{layer}.hook_features"


def recons(layer: int) -> str:
    return f"{PREFIX}blocks.{layer}.hook_recons"


def error(layer: int) -> str:
    return f"{PREFIX}blocks.{layer}.hook_error"


def is_clt_hook(name: str) -> bool:
    return name.startswith(PREFIX)


def strip(name: str) -> str:
    """The name of the hook point inside the transcoder module."""
    return name[len(PREFIX) :]
