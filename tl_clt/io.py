"""Saving and loading transcoders: our own directory (safetensors + config.json), and
circuit-tracer's CLT layout (one W_enc_{l} / W_dec_{l} safetensors pair per layer +
config.yaml). Writes are atomic per file (temporary file, then rename); loads check every
tensor's presence, shape, dtype and finiteness and name what is wrong.

Our directory is one unit: `model.safetensors` carries the config in its header (`config`
metadata), so replacing that one file replaces the transcoder whole, and `config.json` beside it
is a readable copy. A save interrupted between the two files leaves a directory that loads as
the new transcoder (with a warning about the stale copy), never new weights under an old
config. Writers of one directory take turns (a lock file beside the weights)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from tl_clt._files import atomic_write, atomic_write_text, clean_temporaries, locked
from tl_clt.config import CLTConfig
from tl_clt.errors import CheckpointError, ConfigError, TLCLTWarning

if TYPE_CHECKING:  # the transcoder imports this module; its class is passed in where needed
    from tl_clt.clt import CrossLayerTranscoder

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT = "tl_clt/1"


def _save_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _open(path: Path):
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; is this a transcoder directory?")
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}. "
            "Re-save or re-download it."
        ) from exc


def _read_tensor(handle, path: Path, key: str) -> Tensor:
    try:
        tensor = handle.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"tensor {key!r} in {path} cannot be read (truncated?): {exc}"
        ) from exc
    check_finite(path, key, tensor)
    return tensor


def save_pretrained(clt: CrossLayerTranscoder, directory: str | os.PathLike) -> Path:
    """Write `model.safetensors` (the weights, with the config in its header) and then
    `config.json` (a readable copy) into `directory` (created if needed); other files there are
    left alone. A failed or interrupted save leaves the previous transcoder or the new one, never
    a mix; saves into one directory take turns. The config's dtype is the weights' own (a
    transcoder converted with `.to(torch.bfloat16)` saves as bfloat16)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory} exists and is not a directory; choose a directory")
    tensors = dict(clt.state_dict())
    cfg = clt.cfg
    dtype = str(clt.W_enc.dtype).removeprefix("torch.")
    if dtype != cfg.dtype:
        cfg = cfg.replace(dtype=dtype)
    text = json.dumps(cfg.to_dict(), indent=2) + "\n"
    with locked(directory / WEIGHTS_FILE):
        for name in (WEIGHTS_FILE, CONFIG_FILE):  # what writers killed before us left
            clean_temporaries(directory, name)
        _save_tensors(directory / WEIGHTS_FILE, tensors, {"format": FORMAT, "config": text})
        atomic_write_text(directory / CONFIG_FILE, text)
    return directory


def load_config(directory: str | os.PathLike) -> CLTConfig:
    """The transcoder's config: the one in `model.safetensors`'s header when it has one (then
    `config.json` is only a copy), else `config.json`."""
    directory = Path(directory)
    copy = _read_config_json(directory / CONFIG_FILE)
    weights = directory / WEIGHTS_FILE
    stored = None
    if weights.is_file():
        with _open(weights) as handle:
            stored = (handle.metadata() or {}).get("config")
    if stored is None:
        if copy is None:
            raise CheckpointError(
                f"{directory / CONFIG_FILE} does not exist; is {directory} a transcoder directory?"
            )
        return CLTConfig.from_dict(copy)
    try:
        data = json.loads(stored)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"the config stored in {weights} is not valid JSON: {exc}") from exc
    if copy is not None and copy != data:
        warnings.warn(
            f"{directory / CONFIG_FILE} differs from the config stored in {weights} (an "
            "interrupted save, or an edited copy); the stored one is used. Save the transcoder "
            "again to bring the copy up to date",
            TLCLTWarning,
            stacklevel=3,
        )
    return CLTConfig.from_dict(data)


def _read_config_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path} is not valid JSON: {exc}; save the transcoder again"
        ) from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}") from exc


def from_pretrained(
    cls: type[CrossLayerTranscoder],
    directory: str | os.PathLike,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> CrossLayerTranscoder:
    """Load a transcoder (of class `cls`) saved by `save_pretrained`, checking every tensor
    against the config; `dtype` converts after the check. Returned in eval mode (BatchTopK then
    uses its threshold). Called as `CrossLayerTranscoder.from_pretrained(directory)`."""
    directory = Path(directory)
    cfg = load_config(directory)
    clt = cls(cfg, device="meta")
    expected = clt.state_dict()
    path = directory / WEIGHTS_FILE
    state = {}
    with _open(path) as handle:
        present = set(handle.keys())
        missing = sorted(set(expected) - present)
        unexpected = sorted(present - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{path} does not match its config ({cfg.architecture}, {cfg.activation}): "
                f"missing tensors {missing}, unexpected tensors {unexpected}"
            )
        for key, ref in expected.items():
            tensor = _read_tensor(handle, path, key)
            _check_tensor(path, key, tensor, tuple(ref.shape), cfg.torch_dtype)
            state[key] = tensor
    clt.load_state_dict(state, assign=True)
    clt.eval()
    return clt.to(device=device, dtype=dtype) if (device or dtype) else clt


def _check_tensor(path: Path, key: str, tensor: Tensor, shape: tuple, dtype: torch.dtype) -> None:
    if tuple(tensor.shape) != shape:
        raise CheckpointError(
            f"tensor {key!r} in {path} has shape {tuple(tensor.shape)}, but the config implies "
            f"{shape}; the weights and config.json do not belong together"
        )
    if tensor.dtype != dtype:
        raise CheckpointError(
            f"tensor {key!r} in {path} is {tensor.dtype}, but the config says {dtype}; fix "
            "config.json's dtype or re-save the weights in that dtype"
        )


def check_finite(path: Path, key: str, tensor: Tensor) -> None:
    """A CheckpointError if the loaded `tensor` holds NaN or infinite values."""
    if tensor.is_floating_point():
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise CheckpointError(
                f"tensor {key!r} in {path} holds {bad} NaN or infinite value(s); the file is "
                "corrupt or was saved from a diverged run. Use an earlier checkpoint"
            )


# ---------------------------------------------------------------------- circuit-tracer layout
def export_circuit_tracer(
    clt: CrossLayerTranscoder, directory: str | os.PathLike, model_name: str | None = None
) -> Path:
    """Write circuit-tracer's CLT layout. Weights are written in model units (scales folded);
    a "shared" transcoder is written as the equivalent per-layer layout."""
    cfg = clt.cfg
    activation_function = clt.activation.circuit_tracer_name
    if activation_function is None:
        raise ConfigError(
            f"circuit-tracer's CLT layout supports relu and jumprelu, not {cfg.activation!r}; "
            "convert the activation first (a BatchTopK transcoder's threshold makes it a JumpReLU)"
        )
    if cfg.skip:
        raise ConfigError(
            "circuit-tracer's cross-layer layout has no skip connection, and this transcoder has "
            "one; save it with save_pretrained instead"
        )
    directory = Path(directory)
    L, d, nf = cfg.n_layers, cfg.d_model, cfg.n_features
    with torch.no_grad():
        for layer in range(L):
            enc = {
                f"W_enc_{layer}": clt.W_enc_at(layer).T,
                f"b_enc_{layer}": clt.b_enc_at(layer),
                f"b_dec_{layer}": clt.b_dec[layer],
            }
            if clt.threshold is not None:
                enc[f"threshold_{layer}"] = clt.threshold_at(layer)
            W_dec = torch.zeros(nf, L - layer, d, dtype=clt.dtype, device=clt.device)
            for target in clt.writes_to(layer):
                W_dec[:, target - layer] = clt.W_dec_at(layer, target)
            _save_tensors(directory / f"W_enc_{layer}.safetensors", enc, {"format": "pt"})
            _save_tensors(
                directory / f"W_dec_{layer}.safetensors",
                {f"W_dec_{layer}": W_dec},
                {"format": "pt"},
            )
    arch = "per_layer" if cfg.shared else cfg.architecture
    ours = cfg.replace(architecture=arch).to_dict()
    meta = {
        "model_name": model_name or (cfg.model.name if cfg.model else "unknown"),
        "model_kind": "cross_layer_transcoder",
        "feature_input_hook": cfg.input_hook,
        "feature_output_hook": cfg.output_hook,
        "activation_function": activation_function,
        "tl_clt": ours,
    }
    atomic_write_text(directory / "config.yaml", yaml.safe_dump(meta, sort_keys=False))
    return directory


def import_circuit_tracer(
    cls: type[CrossLayerTranscoder], directory: str | os.PathLike
) -> CrossLayerTranscoder:
    """Read circuit-tracer's CLT layout (written by us or by circuit-tracer) into a transcoder
    of class `cls`. Called as `CrossLayerTranscoder.from_circuit_tracer(directory)`."""
    directory = Path(directory)
    meta_path = directory / "config.yaml"
    if not meta_path.is_file():
        raise CheckpointError(
            f"{meta_path} does not exist; is this a circuit-tracer CLT directory?"
        )
    meta = yaml.safe_load(meta_path.read_text()) or {}
    if meta.get("model_kind", "cross_layer_transcoder") != "cross_layer_transcoder":
        raise ConfigError(
            f"{meta_path} describes a {meta['model_kind']!r}, not a cross_layer_transcoder"
        )
    with _open(directory / "W_enc_0.safetensors") as h:
        nf, d = h.get_slice("W_enc_0").get_shape()
        has_threshold = "threshold_0" in h.keys()  # noqa: SIM118 (safe_open has no __contains__)
    L = len(list(directory.glob("W_enc_*.safetensors")))
    if "tl_clt" in meta:
        cfg = CLTConfig.from_dict(meta["tl_clt"])
    else:
        cfg = CLTConfig(
            n_layers=L, d_model=d, n_features=nf,
            activation="jumprelu" if has_threshold else "relu",
            input_hook=meta.get("feature_input_hook", "hook_resid_mid"),
            output_hook=meta.get("feature_output_hook", "hook_mlp_out"),
        )  # fmt: skip
    if (cfg.n_layers, cfg.n_features, cfg.d_model) != (L, nf, d):
        raise CheckpointError(
            f"{directory}: files hold {L} layers of {nf}x{d}, config says otherwise"
        )
    clt = cls(cfg)
    with torch.no_grad():
        for layer in range(L):
            enc_path = directory / f"W_enc_{layer}.safetensors"
            dec_path = directory / f"W_dec_{layer}.safetensors"
            with _open(enc_path) as h:
                W_enc = _read_tensor(h, enc_path, f"W_enc_{layer}")
                _check_tensor(enc_path, f"W_enc_{layer}", W_enc, (nf, d), W_enc.dtype)
                clt.W_enc[layer].copy_(W_enc.T)
                clt.b_enc[layer].copy_(_read_tensor(h, enc_path, f"b_enc_{layer}"))
                clt.b_dec[layer].copy_(_read_tensor(h, enc_path, f"b_dec_{layer}"))
                if clt.threshold is not None:
                    clt.threshold[layer].copy_(_read_tensor(h, enc_path, f"threshold_{layer}"))
            with _open(dec_path) as h:
                W_dec = _read_tensor(h, dec_path, f"W_dec_{layer}")
                _check_tensor(dec_path, f"W_dec_{layer}", W_dec, (nf, L - layer, d), W_dec.dtype)
                clt.W_dec[layer].copy_(W_dec[:, : clt.n_targets(layer)])
    return clt.eval()
