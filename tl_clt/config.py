"""Frozen, validated configurations: the transcoder's shape and the identity of its model.

`CLTConfig` is the one source of truth for a transcoder's shape; it is saved as `config.json`
beside the weights and checked again on load and before splicing.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, no_type_check

from tl_clt.errors import ConfigError

Architecture = Literal["cross_layer", "per_layer", "shared"]
Activation = Literal["relu", "jumprelu", "topk", "batchtopk"]
DType = Literal["float32", "float64", "bfloat16", "float16"]

#: Where a transcoder may read its inputs (per layer, TransformerLens 3.x-style names; the
#: model interface maps them to the right hook under each TransformerLens major).
INPUT_HOOKS = ("ln2.hook_normalized", "hook_resid_mid")
#: Where a transcoder's reconstruction replaces the model's activations.
OUTPUT_HOOKS = ("hook_mlp_out",)


@dataclass(frozen=True)
class WeightProcessing:
    """TransformerLens weight processing that changes activations; a transcoder is valid only
    for the processing it was trained with."""

    fold_ln: bool = False
    center_writing_weights: bool = False
    center_unembed: bool = False

    def as_dict(self) -> dict[str, bool]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ModelIdentity:
    """What a transcoder was made for: the model's name, shape, weight processing and, for
    transcoders trained since it was recorded, a fingerprint of its weights and vocabulary
    (`tl_clt.lens.fingerprint`). With fingerprints on both sides the content decides and a
    different name is only a note; without one, the name is all there is to check."""

    name: str
    n_layers: int
    d_model: int
    d_vocab: int
    weight_processing: WeightProcessing = field(default_factory=WeightProcessing)
    fingerprint: dict[str, Any] | None = None

    def mismatches(self, other: ModelIdentity) -> list[str]:
        """Every way in which the model `other` describes is not the one this identity
        describes, for a person (a name alone counts only when a fingerprint is missing)."""
        return self.compare(other)[0]

    def compare(self, other: ModelIdentity) -> tuple[list[str], list[str]]:
        """(mismatches, notes): what makes `other` another model, and what differs without
        meaning that (a name, when the fingerprints agree)."""
        out, notes = [], []
        by_content = self.fingerprint is not None and other.fingerprint is not None
        if self.name != other.name:
            text = f"name: transcoder has {self.name!r}, model has {other.name!r}"
            if by_content:
                notes.append(text + " (the weights' fingerprints agree)")
            else:
                out.append(
                    text + " (the transcoder records no weight fingerprint: name check only)"
                )
        for name in ("n_layers", "d_model", "d_vocab"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                out.append(f"{name}: transcoder has {mine!r}, model has {theirs!r}")
        for flag, mine in self.weight_processing.as_dict().items():
            theirs = getattr(other.weight_processing, flag)
            if mine != theirs:
                out.append(f"weight processing {flag}: transcoder has {mine}, model has {theirs}")
        if by_content and not out:
            out += fingerprint_differences(self.fingerprint, other.fingerprint)
        return out, notes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelIdentity:
        data = dict(data)
        data["weight_processing"] = WeightProcessing(**data.get("weight_processing", {}))
        return _construct(cls, data, "model identity")


def fingerprint_differences(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """How the model behind `theirs` differs from the one behind `mine`, for a person."""
    out = []
    if mine.get("vocab") and theirs.get("vocab") and mine["vocab"] != theirs["vocab"]:
        out.append("the tokenizer's vocabulary differs")
    tol = 8 * max(_eps(mine.get("dtype")), _eps(theirs.get("dtype")))
    a, b = mine.get("weights") or {}, theirs.get("weights") or {}
    for name in sorted(set(a) | set(b), key=_order):
        if name not in a or name not in b:
            out.append(f"{name}: only the {'transcoder' if name in a else 'model'} records it")
            continue
        if len(a[name]) != len(b[name]) or not all(
            math.isclose(x, y, rel_tol=tol, abs_tol=tol * abs(a[name][0]) / 64)
            for x, y in zip(a[name], b[name])
        ):
            out.append(
                f"{name} differs (norm {a[name][0]:.6g} when the transcoder was trained, "
                f"{b[name][0]:.6g} now)"
            )
    return out


def _eps(dtype: str | None) -> float:
    import torch

    try:
        return torch.finfo(getattr(torch, dtype or "float32")).eps
    except (AttributeError, TypeError):
        return torch.finfo(torch.float32).eps


def _order(name: str) -> tuple[int, str]:
    parts = name.split(".")
    return (int(parts[1]) + 1 if len(parts) > 1 and parts[1].isdigit() else 0, name)


@no_type_check  # validated in __post_init__ with messages a user can act on
@dataclass(frozen=True)
class CLTConfig:
    """The shape and kind of a cross-layer transcoder.

    Attributes:
        n_layers: number of transformer layers (MLPs) the transcoder replaces.
        d_model: width of the residual stream.
        n_features: features per layer (per source layer for "cross_layer" and "per_layer";
            the size of the one dictionary for "shared").
        architecture: "cross_layer" (the paper's CLT: each layer's features decode to that
            layer and every later one), "per_layer" (one transcoder per MLP, a PLT) or "shared"
            (one encoder/decoder pair used at every layer).
        activation: "relu" (with an L1 penalty in training), "jumprelu" (per-feature
            threshold, the paper's), "topk" (k per token and layer) or "batchtopk" (k per
            token and layer on average over a batch; a per-layer threshold at inference).
        k: active features per token and layer for "topk" and "batchtopk"; None otherwise.
        threshold_init: initial JumpReLU / BatchTopK threshold.
        input_hook: what the encoders read at each layer ("ln2.hook_normalized": the MLP's
            normalised input; "hook_resid_mid": the residual stream before the pre-MLP norm);
            `Lens.mlp_in` picks the hook that carries it in each family.
        output_hook: what the decoders reconstruct ("hook_mlp_out": what the MLP adds to the
            residual stream, after any post-MLP norm; `Lens.mlp_out`).
        skip: a linear skip connection per layer (`W_skip`, from the layer's MLP input to its
            MLP output, added to the reconstruction), as skip transcoders have; it is part of
            the linear pathway between features, so attribution's edges stay direct effects.
        dtype: parameter dtype.
        model: identity of the model this transcoder was made for, or None if unknown.
    """

    n_layers: int
    d_model: int
    n_features: int
    architecture: Architecture = "cross_layer"
    activation: Activation = "relu"
    k: int | None = None
    threshold_init: float = 0.0
    input_hook: str = "ln2.hook_normalized"
    output_hook: str = "hook_mlp_out"
    skip: bool = False
    dtype: DType = "float32"
    model: ModelIdentity | None = None

    def __post_init__(self) -> None:
        for name in ("n_layers", "d_model", "n_features"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"CLTConfig.{name} must be a positive integer, got {value!r}")
        _check_choice("architecture", self.architecture, Architecture)
        _check_choice("activation", self.activation, Activation)
        _check_choice("dtype", self.dtype, DType)
        _check_choice("input_hook", self.input_hook, INPUT_HOOKS)
        _check_choice("output_hook", self.output_hook, OUTPUT_HOOKS)
        if self.activation in ("topk", "batchtopk"):
            if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k <= 0:
                raise ConfigError(
                    f"activation={self.activation!r} needs k, a positive integer (active "
                    f"features per token and layer); got k={self.k!r}"
                )
            if self.k > self.n_features:
                raise ConfigError(
                    f"k={self.k} exceeds n_features={self.n_features}: a token cannot have more "
                    "active features than the layer has; lower k or widen the transcoder"
                )
        elif self.k is not None:
            raise ConfigError(
                f"k={self.k} only applies to activation 'topk' or 'batchtopk', not "
                f"{self.activation!r}; drop k or change the activation"
            )
        if not isinstance(self.skip, bool):
            raise ConfigError(f"CLTConfig.skip must be true or false, got {self.skip!r}")
        if not isinstance(self.threshold_init, (int, float)) or self.threshold_init < 0:
            raise ConfigError(f"threshold_init must be >= 0, got {self.threshold_init!r}")
        if self.model is not None:
            if not isinstance(self.model, ModelIdentity):
                raise ConfigError(f"model must be a ModelIdentity or None, got {self.model!r}")
            if (self.model.n_layers, self.model.d_model) != (self.n_layers, self.d_model):
                raise ConfigError(
                    f"model identity has n_layers={self.model.n_layers}, d_model="
                    f"{self.model.d_model} but the config says n_layers={self.n_layers}, "
                    f"d_model={self.d_model}"
                )

    @property
    def shared(self) -> bool:
        """One encoder/decoder pair used at every layer."""
        return self.architecture == "shared"

    @property
    def cross_layer(self) -> bool:
        """Each layer's features decode to that layer and every later one."""
        return self.architecture == "cross_layer"

    @property
    def n_encoders(self) -> int:
        """Encoders (and decoders) the transcoder holds: 1 for "shared", else n_layers."""
        return 1 if self.shared else self.n_layers

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    def replace(self, **changes: Any) -> CLTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model"] = None if self.model is None else self.model.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CLTConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"a CLT config must be a JSON object, got {type(data).__name__}")
        data = dict(data)
        if data.get("model") is not None:
            data["model"] = ModelIdentity.from_dict(data["model"])
        return _construct(cls, data, "CLT config")


def field_docs(cls: type) -> dict[str, str]:
    """Each field's description, from the "Attributes:" section of a config class's docstring
    (`name: text`, continued on more-indented lines), whitespace collapsed."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    if "Attributes:" not in doc:
        return {}
    docs: dict[str, str] = {}
    name = None
    for line in doc.split("Attributes:", 1)[1].splitlines():
        match = re.match(r"^    (\w+): (.*)$", line)
        if match:
            name, text = match.groups()
            docs[name] = text.strip()
        elif name is not None and line.startswith("        "):
            docs[name] += " " + line.strip()
        elif line.strip():
            break
    return docs


def _check_choice(name: str, value: Any, choices: Any) -> None:
    allowed = get_args(choices) or tuple(choices)
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")


def _construct(cls: type, data: dict[str, Any], what: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{what} has unknown field(s) {unknown}; known fields: {sorted(fields)}")
    required = [
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [n for n in required if n not in data]
    if missing:
        raise ConfigError(f"{what} is missing required field(s) {missing}")
    try:
        return cls(**data)
    except TypeError as exc:  # a wrongly typed nested value
        raise ConfigError(f"{what} is malformed: {exc}") from exc
