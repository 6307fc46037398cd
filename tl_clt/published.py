"""Transcoders trained elsewhere, read into a `CrossLayerTranscoder`.

`load_transcoder(path)` recognises the layout of a local directory and returns a transcoder the
rest of tl_clt uses as its own (graphs, interventions, labels, pages):

| layout | files | becomes |
|---|---|---|
| tl_clt | `config.json` + `model.safetensors` | itself |
| circuit-tracer, cross-layer | `W_enc_{l}.safetensors` / `W_dec_{l}.safetensors` per layer | cross_layer |
| circuit-tracer, per-layer set | `config.yaml` (`model_kind: transcoder_set`) + `layer_{l}.safetensors` (or the files its `transcoders` lists) | per_layer |
| SAELens | one folder per layer, each `cfg.json` + `sae_weights.safetensors` (plain, skip, JumpReLU) | per_layer |
| sparsify | one folder per hook point (`layers.{l}.mlp`), each `cfg.json` + `sae.safetensors` (TopK, with or without skip) | per_layer |

Each per-layer file becomes one layer of a "per_layer" transcoder, with a skip connection where
the files have one. Only safetensors and JSON/YAML are read: nothing is unpickled. A layout whose
hook points tl_clt cannot map onto its own, a missing tensor, or a shape that does not fit is
refused with a `CheckpointError` naming the file and the field.

Hook points. SAELens names TransformerLens hooks (`blocks.{l}.ln2.hook_normalized`,
`blocks.{l}.hook_mlp_out`, ...), which map directly. sparsify and circuit-tracer's own
conventions may read the MLP module's input, which is the normalised residual after the norm's
weight (and bias); tl_clt reads the normalised residual before it (`ln2.hook_normalized`), so
the norm's affine map is folded into the encoder and the skip connection, which needs the model
(`load_transcoder(path, model=...)`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from safetensors import safe_open
from torch import Tensor

from tl_clt.clt import CrossLayerTranscoder
from tl_clt.config import CLTConfig
from tl_clt.errors import CheckpointError

Layout = Literal["tl_clt", "circuit_tracer_clt", "circuit_tracer_plt", "saelens", "sparsify"]
#: Where a published transcoder reads: a tl_clt input hook site, or the MLP module's input
#: (the norm's output after its weight and bias), folded into the encoder on loading.
MLP_MODULE_INPUT = "mlp module input"


@dataclass
class _Layer:
    """One layer's transcoder in tl_clt's orientation (`x @ W`), model units."""

    layer: int
    W_enc: Tensor  # [d_in, F]
    b_enc: Tensor  # [F]
    W_dec: Tensor  # [F, d_out]
    b_dec: Tensor  # [d_out]
    threshold: Tensor | None  # [F], JumpReLU
    W_skip: Tensor | None  # [d_in, d_out]: the skip adds x @ W_skip
    activation: str
    k: int | None
    input_site: str
    output_site: str
    source: Path


def detect_layout(path: str | os.PathLike) -> Layout:
    """The layout of a transcoder directory (see the module docstring)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a directory; give the folder holding the transcoder")
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return "tl_clt"
    if (path / "W_enc_0.safetensors").is_file():
        return "circuit_tracer_clt"
    if (path / "config.yaml").is_file():
        return "circuit_tracer_plt"
    subdirs = [d for d in path.iterdir() if d.is_dir()]
    candidates = [path, *subdirs]
    if any((d / "sae_weights.safetensors").is_file() for d in candidates):
        return "saelens"
    if any((d / "sae.safetensors").is_file() for d in candidates):
        return "sparsify"
    raise CheckpointError(
        f"{path} holds no transcoder layout tl_clt reads (tl_clt's config.json + "
        "model.safetensors, circuit-tracer's W_enc_0.safetensors or config.yaml, SAELens' "
        "cfg.json + sae_weights.safetensors, sparsify's cfg.json + sae.safetensors)"
    )


def load_transcoder(
    path: str | os.PathLike,
    *,
    model: Any = None,
    layout: Layout | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> CrossLayerTranscoder:
    """A transcoder directory of any layout `detect_layout` knows, as a `CrossLayerTranscoder`
    (in eval mode). `model` (a TransformerLens model or `Lens`) is needed where the files read
    the MLP module's input, whose norm weights are then folded into the encoder."""
    path = Path(path)
    layout = layout or detect_layout(path)
    if layout == "tl_clt":
        clt = CrossLayerTranscoder.from_pretrained(path)
    elif layout == "circuit_tracer_clt":
        clt = CrossLayerTranscoder.from_circuit_tracer(path)
    else:
        reader = {"circuit_tracer_plt": _read_plt, "saelens": _read_saelens,
                  "sparsify": _read_sparsify}[layout]  # fmt: skip
        clt = _assemble(reader(path), path, model)
    clt.eval()
    return clt.to(device=device, dtype=dtype) if (device or dtype) else clt


# ---------------------------------------------------------------------- reading files
def _tensors(path: Path, names: dict[str, bool]) -> dict[str, Tensor]:
    """The named tensors of a safetensors file (`names`: name -> required)."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            keys = set(handle.keys())
            missing = [n for n, required in names.items() if required and n not in keys]
            if missing:
                raise CheckpointError(
                    f"{path} lacks the tensor(s) {missing} (it holds {sorted(keys)})"
                )
            return {n: handle.get_tensor(n).float() for n in names if n in keys}
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc


def _json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


_TL_HOOK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_INPUT_SITES = {
    "ln2.hook_normalized": "ln2.hook_normalized",
    "hook_resid_mid": "hook_resid_mid",
    "hook_mlp_in": "hook_resid_mid",  # TransformerLens' MLP input hook is the residual stream
}


def _tl_hook(name: Any, source: Path, field: str, output: bool = False) -> tuple[int, str]:
    """(layer, tl_clt site) of a TransformerLens hook name read from a file's config."""
    match = _TL_HOOK.match(str(name))
    site = None if match is None else match.group(2)
    if output:
        site = "hook_mlp_out" if site in ("hook_mlp_out", "mlp.hook_out") else None
    else:
        site = _INPUT_SITES.get(site) if site is not None else None
        site = site or (MLP_MODULE_INPUT if match and match.group(2) == "mlp.hook_in" else None)
    if match is None or site is None:
        kind = "output" if output else "input"
        raise CheckpointError(
            f"{source}: {field} = {name!r} is not an MLP {kind} hook tl_clt can map (inputs: "
            "blocks.L.ln2.hook_normalized, blocks.L.hook_resid_mid, blocks.L.hook_mlp_in; "
            "output: blocks.L.hook_mlp_out)"
        )
    return int(match.group(1)), site


def _folders(path: Path, weights: str) -> list[Path]:
    """`path` itself if it holds one transcoder (its cfg.json), else its subfolders holding
    `weights`, in name order (one per layer)."""
    if (path / "cfg.json").is_file():
        return [path]
    return sorted(d for d in path.iterdir() if (d / weights).is_file())


def _read_saelens(path: Path) -> list[_Layer]:
    folders = _folders(path, "sae_weights.safetensors")
    out = []
    for folder in folders:
        cfg_path = folder / "cfg.json"
        cfg = _json(cfg_path)
        arch = str(cfg.get("architecture", ""))
        if arch not in ("transcoder", "skip_transcoder", "jumprelu_transcoder",
                        "jumprelu_skip_transcoder"):  # fmt: skip
            raise CheckpointError(
                f"{cfg_path}: architecture = {arch!r} is not a SAELens transcoder (transcoder, "
                "skip_transcoder, jumprelu_transcoder, jumprelu_skip_transcoder)"
            )
        if cfg.get("normalize_activations", "none") not in ("none", None):
            raise CheckpointError(
                f"{cfg_path}: normalize_activations = {cfg['normalize_activations']!r}; only "
                "transcoders that read unnormalised activations ('none') are supported"
            )
        meta = cfg.get("metadata") or {}
        hook_in = meta.get("hook_name", cfg.get("hook_name"))
        hook_out = meta.get("hook_name_out", cfg.get("hook_name_out"))
        layer, site_in = _tl_hook(hook_in, cfg_path, "metadata.hook_name")
        if hook_out is None:
            raise CheckpointError(f"{cfg_path}: metadata.hook_name_out is missing")
        layer_out, site_out = _tl_hook(hook_out, cfg_path, "metadata.hook_name_out", output=True)
        if layer_out != layer:
            raise CheckpointError(
                f"{cfg_path}: reads at layer {layer} but writes to layer {layer_out}; a "
                "per-layer transcoder writes to its own layer's MLP output"
            )
        jump, skip = arch.startswith("jumprelu"), arch.endswith("skip_transcoder")
        file = folder / "sae_weights.safetensors"
        t = _tensors(file, {"W_enc": True, "b_enc": True, "W_dec": True, "b_dec": True,
                            "threshold": jump, "W_skip": skip})  # fmt: skip
        # SAELens' JumpReLU is relu(h) where h > threshold, tl_clt's h where h > threshold:
        # equal once a negative threshold is raised to 0
        theta = t["threshold"].clamp(min=0) if jump else None
        out.append(_Layer(
            layer, t["W_enc"], t["b_enc"], t["W_dec"], t["b_dec"], theta,
            t["W_skip"].T if skip else None, "jumprelu" if jump else "relu", None,
            site_in, site_out, file,
        ))  # fmt: skip
    return out


_MODULE = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.mlp$")


def _read_sparsify(path: Path) -> list[_Layer]:
    folders = _folders(path, "sae.safetensors")
    out = []
    for folder in folders:
        cfg_path = folder / "cfg.json"
        cfg = _json(cfg_path)
        if not cfg.get("transcode", False):
            raise CheckpointError(
                f"{cfg_path}: transcode = false, so this is a sparse autoencoder, not a "
                "transcoder (tl_clt replaces MLPs with transcoders)"
            )
        if cfg.get("activation", "topk") != "topk":
            raise CheckpointError(
                f"{cfg_path}: activation = {cfg['activation']!r}; only TopK is supported"
            )
        match = _MODULE.search(folder.name)
        if match is None:
            raise CheckpointError(
                f"{folder}: the folder names its hook point, and {folder.name!r} is not an MLP "
                "module (layers.L.mlp or h.L.mlp)"
            )
        skip = bool(cfg.get("skip_connection", False))
        file = folder / "sae.safetensors"
        t = _tensors(file, {"encoder.weight": True, "encoder.bias": True, "W_dec": True,
                            "b_dec": True, "W_skip": skip})  # fmt: skip
        k = cfg.get("k")
        if not isinstance(k, int) or k <= 0:
            raise CheckpointError(f"{cfg_path}: k = {k!r} must be a positive integer")
        out.append(_Layer(
            int(match.group(1)), t["encoder.weight"].T, t["encoder.bias"], t["W_dec"],
            t["b_dec"], None, t["W_skip"].T if skip else None, "topk", k,
            MLP_MODULE_INPUT, "hook_mlp_out", file,
        ))  # fmt: skip
    return out


def _read_plt(path: Path) -> list[_Layer]:
    cfg_path = path / "config.yaml"
    try:
        cfg = yaml.safe_load(cfg_path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{cfg_path} is not readable YAML: {exc}") from exc
    if not isinstance(cfg, dict) or cfg.get("model_kind") != "transcoder_set":
        raise CheckpointError(
            f"{cfg_path}: model_kind must be 'transcoder_set' for a per-layer set (a "
            "cross-layer transcoder has W_enc_0.safetensors beside it)"
        )
    sites = {}
    for field, output in (("feature_input_hook", False), ("feature_output_hook", True)):
        name = cfg.get(field)
        _, sites[field] = _tl_hook(f"blocks.0.{name}", cfg_path, field, output)
    files = cfg.get("transcoders")
    if files is None:  # circuit-tracer's local cache: layer_{l}.safetensors beside config.yaml
        found = {int(f.stem.split("_")[1]): f.name for f in path.glob("layer_*.safetensors")
                 if f.stem.split("_")[1].isdigit()}  # fmt: skip
        files = [found[i] for i in sorted(found)]
        if sorted(found) != list(range(len(found))):
            raise CheckpointError(f"{path}: layer files {sorted(found)} are not layers 0..L-1")
    if not isinstance(files, list) or not files:
        raise CheckpointError(
            f"{cfg_path}: transcoders must list one file per layer (or layer_{{l}}.safetensors "
            "files lie beside it)"
        )
    out = []
    for layer, name in enumerate(files):
        if str(name).startswith("hf://"):
            raise CheckpointError(
                f"{cfg_path}: {name} is on the hub; download the files and list local paths"
            )
        file = (path / str(name)).resolve()
        t = _tensors(file, {"W_enc": True, "b_enc": True, "W_dec": True, "b_dec": True,
                            "activation_function.threshold": False, "W_skip": False})  # fmt: skip
        theta = t.get("activation_function.threshold")
        out.append(_Layer(
            layer, t["W_enc"].T, t["b_enc"], t["W_dec"], t["b_dec"], theta,
            t["W_skip"].T if "W_skip" in t else None, "relu" if theta is None else "jumprelu",
            None, sites["feature_input_hook"], sites["feature_output_hook"], file,
        ))  # fmt: skip
    return out


# ---------------------------------------------------------------------- assembling
def _assemble(layers: list[_Layer], path: Path, model: Any) -> CrossLayerTranscoder:
    if not layers:
        raise CheckpointError(f"{path} holds no transcoder files")
    by_layer = {p.layer: p for p in layers}
    if len(by_layer) != len(layers) or set(by_layer) != set(range(len(layers))):
        raise CheckpointError(
            f"{path}: tl_clt replaces every MLP, so it needs one transcoder per layer 0..L-1; "
            f"found layers {sorted(p.layer for p in layers)}"
        )
    first = by_layer[0]
    d, F = first.W_enc.shape
    for p in layers:
        for field in ("activation", "k", "input_site", "output_site"):
            if getattr(p, field) != getattr(first, field):
                raise CheckpointError(
                    f"{p.source}: {field} is {getattr(p, field)!r} but layer 0 has "
                    f"{getattr(first, field)!r}; every layer must be of one kind"
                )
        if (p.W_skip is None) != (first.W_skip is None):
            raise CheckpointError(f"{p.source}: some layers have a skip connection and some not")
        shapes = {"W_enc": (p.W_enc, (d, F)), "b_enc": (p.b_enc, (F,)), "W_dec": (p.W_dec, (F, d)),
                  "b_dec": (p.b_dec, (d,))}  # fmt: skip
        if p.threshold is not None:
            shapes["threshold"] = (p.threshold, (F,))
        if p.W_skip is not None:
            shapes["W_skip"] = (p.W_skip, (d, d))
        for name, (tensor, shape) in shapes.items():
            if tuple(tensor.shape) != shape:
                raise CheckpointError(
                    f"{p.source}: {name} has shape {tuple(tensor.shape)}, expected {shape} "
                    f"(d_model {d}, {F} features, as layer 0)"
                )
    input_site = first.input_site
    if input_site == MLP_MODULE_INPUT:
        _fold_norm_affine(layers, model, path)
        input_site = "ln2.hook_normalized"
    cfg = CLTConfig(
        n_layers=len(layers), d_model=d, n_features=F, architecture="per_layer",
        activation=first.activation, k=first.k, input_hook=input_site,
        output_hook=first.output_site, skip=first.W_skip is not None,
    )  # fmt: skip
    clt = CrossLayerTranscoder(cfg)
    with torch.no_grad():
        for p in layers:
            clt.W_enc[p.layer].copy_(p.W_enc)
            clt.b_enc[p.layer].copy_(p.b_enc)
            clt.W_dec[p.layer][:, 0].copy_(p.W_dec)
            clt.b_dec[p.layer].copy_(p.b_dec)
            if p.threshold is not None:
                clt.threshold[p.layer].copy_(p.threshold)
            if p.W_skip is not None:
                clt.W_skip[p.layer].copy_(p.W_skip)
    return clt


def _fold_norm_affine(layers: list[_Layer], model: Any, path: Path) -> None:
    """Rewrite transcoders that read the MLP module's input (`n * w + b`, with `n` the
    normalised residual) to read `n` itself: W_enc <- w[:, None] W_enc, b_enc <- b_enc + b W_enc,
    and the same for a skip connection (its constant goes into b_dec)."""
    if model is None:
        raise CheckpointError(
            f"{path}: these transcoders read the MLP module's input (after the norm's weight); "
            "pass model= (the TransformerLens model they were trained on) so that the norm's "
            "weight can be folded into the encoder"
        )
    from tl_clt.lens import Lens

    lens = model if isinstance(model, Lens) else Lens(model)
    arch = str(getattr(lens.model.cfg, "original_architecture", "") or "")
    if "Gemma" in arch:
        raise CheckpointError(
            f"{path}: folding the pre-MLP norm into the encoder is not supported for {arch} "
            "(its norm scales by 1 + weight)"
        )
    if len(layers) != lens.n_layers:
        raise CheckpointError(
            f"{path}: {len(layers)} layers of transcoders for a {lens.n_layers}-layer model"
        )
    affine = [_ln2_affine(lens, p.layer, path) for p in layers]
    _check_affine(lens, affine, path)
    for p, (w, b) in zip(layers, affine):
        w, b = w.detach().float().cpu(), b.detach().float().cpu()
        p.b_enc = p.b_enc + b @ p.W_enc
        p.W_enc = w[:, None] * p.W_enc
        if p.W_skip is not None:
            p.b_dec = p.b_dec + b @ p.W_skip
            p.W_skip = w[:, None] * p.W_skip


def _ln2_affine(lens: Any, layer: int, path: Path) -> tuple[Tensor, Tensor]:
    """The weight and bias of the norm whose output the MLP reads at `layer`, refused where
    tl_clt's MLP input there is not that norm's normalised output (parallel blocks sharing
    ln1, blocks without a pre-MLP norm)."""
    read = lens.canonical(lens.mlp_in(layer, "ln2.hook_normalized"))
    name = f"blocks.{layer}.ln2.hook_normalized"
    norm = getattr(lens.model.blocks[layer], "ln2", None)
    w = getattr(norm, "w", None)
    if not lens.has_hook(name) or read != lens.canonical(name) or not isinstance(w, Tensor):
        raise CheckpointError(
            f"{path}: the MLP at layer {layer} of {lens.name} does not read ln2's output with a "
            "weight, so the norm cannot be folded into these transcoders' encoders"
        )
    b = getattr(norm, "b", None)
    return w, torch.zeros_like(w) if not isinstance(b, Tensor) else b


def _check_affine(lens: Any, affine: list[tuple[Tensor, Tensor]], path: Path) -> None:
    """Where the model has a hook on the MLP module's input (TransformerLens 4.x), check on
    one short forward pass that `n * w + b` is that input at every layer."""
    names = [f"blocks.{layer}.mlp.hook_in" for layer in range(len(affine))]
    if not all(lens.has_hook(n) for n in names):
        return
    tokens = (torch.arange(4, device=lens.device) % lens.model.cfg.d_vocab)[None]
    inputs = [lens.mlp_in(layer, "ln2.hook_normalized") for layer in range(len(affine))]
    with torch.no_grad():
        _, cache = lens.cache(tokens, inputs + names)
    for layer, (w, b) in enumerate(affine):
        x, mlp = cache[inputs[layer]], cache[names[layer]]
        if not torch.allclose(x * w + b, mlp, rtol=1e-4, atol=1e-5 * float(mlp.abs().max())):
            raise CheckpointError(
                f"{path}: at layer {layer} of {lens.name} the MLP's input is not ln2's output "
                "times its weight plus its bias, so these transcoders cannot be folded onto "
                "tl_clt's input hook"
            )
