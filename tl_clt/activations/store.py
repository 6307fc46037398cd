"""`ActivationStore`: collected activations on disk (the `cache_dir` of an
`ActivationSource`): one safetensors shard per shuffle chunk and a JSON manifest, so a second
run reads activations instead of recomputing them. (Not TransformerLens' `ActivationCache`,
which holds one forward pass's hook values in memory.)

The manifest records a fingerprint of everything that determines the activations (model
identity and a weight checksum, hooks, sequence length, chunk size, dtype); each shard records a
hash of the token ids it was computed from, checked again when it is read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from tl_clt._files import atomic_write, atomic_write_text
from tl_clt.errors import CheckpointError, ConfigError

MANIFEST = "manifest.json"
FORMAT = "tl_clt.activations/1"


def tokens_digest(ids: list[Tensor]) -> str:
    """A hash of a chunk's token ids (sequence boundaries included)."""
    h = hashlib.sha256()
    for seq in ids:
        h.update(len(seq).to_bytes(4, "little"))
        h.update(seq.to(torch.int64).numpy().tobytes())
    return h.hexdigest()[:32]


def weights_checksum(model: torch.nn.Module) -> str:
    """A cheap fingerprint of a model's weights (sums and absolute sums, in float64)."""
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda item: item[0]):
            p64 = p.detach().to(torch.float64)
            h.update(
                f"{name}:{tuple(p.shape)}:{p64.sum().item():.12e}:{p64.abs().sum().item():.12e}".encode()
            )
    return h.hexdigest()[:32]


class ActivationStore:
    """Shards `shard_{i:06d}.safetensors` (tensors `x`, `y`: [tokens, layers, d_model]) and
    `manifest.json` in one directory."""

    def __init__(self, directory: str | Path, fingerprint: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.shards: dict[int, dict[str, Any]] = {}
        self.complete_chunks: int | None = None
        self._open()

    def _open(self) -> None:
        path = self.directory / MANIFEST
        if not path.is_file():
            return
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(
                f"{path} is not valid JSON ({exc}); delete the cache directory"
            ) from exc
        if manifest.get("format") != FORMAT or manifest.get("fingerprint") != self.fingerprint:
            diff = _diff(manifest.get("fingerprint") or {}, self.fingerprint)
            raise ConfigError(
                f"the activation cache in {self.directory} was made for other settings ({diff}); "
                "use another cache directory or delete this one"
            )
        self.shards = {int(k): v for k, v in manifest["shards"].items()}
        self.complete_chunks = manifest.get("complete_chunks")

    def _write_manifest(self) -> None:
        manifest = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "complete_chunks": self.complete_chunks,
            "shards": {str(k): v for k, v in sorted(self.shards.items())},
        }
        atomic_write_text(self.directory / MANIFEST, json.dumps(manifest, indent=1) + "\n")

    def has(self, chunk: int) -> bool:
        return chunk in self.shards and (self.directory / self.shards[chunk]["file"]).is_file()

    def read(self, chunk: int, digest: str) -> tuple[Tensor, Tensor]:
        entry = self.shards[chunk]
        if entry["tokens"] != digest:
            raise ConfigError(
                f"shard {chunk} of the activation cache in {self.directory} was computed from other "
                "text; use another cache directory for this data, or delete this one"
            )
        path = self.directory / entry["file"]
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"{path} cannot be read ({exc}); delete the cache directory"
            ) from exc
        return tensors["x"], tensors["y"]

    def write(self, chunk: int, digest: str, x: Tensor, y: Tensor) -> None:
        name = f"shard_{chunk:06d}.safetensors"
        tensors = {"x": x.detach().contiguous().cpu(), "y": y.detach().contiguous().cpu()}
        atomic_write(self.directory / name, lambda tmp: save_file(tensors, str(tmp)))
        self.shards[chunk] = {"file": name, "tokens": digest, "n_tokens": int(x.shape[0])}
        self._write_manifest()

    def mark_complete(self, n_chunks: int) -> None:
        if self.complete_chunks != n_chunks:
            self.complete_chunks = n_chunks
            self._write_manifest()


def _diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} vs {new.get(k)!r}" for k in keys) or "format differs"
