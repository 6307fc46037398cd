"""The cross-layer transcoder: per-layer encoders, decoders from each layer to itself and (for
the paper's "cross_layer" form) every later layer.

Shapes follow TransformerLens (`x @ W`): W_enc [n_enc, d_model, F], b_enc [n_enc, F], W_dec[s]
[F, n_targets(s), d_model] stored per source layer s, b_dec [n_layers, d_model]. "per_layer"
keeps only the s→s decoder; "shared" has one encoder and one decoder used at every layer
(n_enc = 1). Per-layer `input_scale` / `output_scale` buffers hold the training normalisation;
`fold_scales()` folds them into the weights where the architecture allows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn

from tl_clt import io, nonlinearity
from tl_clt.config import CLTConfig
from tl_clt.errors import InputError
from tl_clt.lens.adapter import HookedRootModule, HookPoint


class SparseFeatures(NamedTuple):
    """Active features of N tokens, padded to k per token and layer (padding has value 0)."""

    indices: Int[Tensor, "n_tokens n_layers k"]
    values: Float[Tensor, "n_tokens n_layers k"]


class RaggedFeatures(NamedTuple):
    """Active features of N tokens with a variable count per token and layer (BatchTopK): for
    each source layer, the active features' ids and values in token order, and the offset
    where each token's run starts ([n_tokens], non-decreasing; an empty run decodes to 0)."""

    indices: tuple[Int[Tensor, " nnz"], ...]
    values: tuple[Float[Tensor, " nnz"], ...]
    offsets: tuple[Int[Tensor, " n_tokens"], ...]


class _LayerHooks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hook_feature_pre = HookPoint()  # [..., n_features] encoder pre-activations
        self.hook_features = HookPoint()  # [..., n_features] feature activations
        self.hook_recons = HookPoint()  # [..., d_model] reconstruction of the MLP output
        self.hook_error = HookPoint()  # [..., d_model] MLP output minus reconstruction


class CrossLayerTranscoder(HookedRootModule):
    """A cross-layer, per-layer or shared transcoder, with a hook point per layer for
    pre-activations, activations, reconstructions and error terms (`blocks.{l}.hook_*`)."""

    def __init__(self, cfg: CLTConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        L, d, nf = cfg.n_layers, cfg.d_model, cfg.n_features
        kw = {"device": device, "dtype": cfg.torch_dtype}
        n_enc = 1 if cfg.architecture == "shared" else L
        self.W_enc = nn.Parameter(torch.empty(n_enc, d, nf, **kw))
        self.b_enc = nn.Parameter(torch.zeros(n_enc, nf, **kw))
        self.W_dec = nn.ParameterList(
            nn.Parameter(torch.empty(nf, self.n_targets(s), d, **kw)) for s in range(n_enc)
        )
        self.b_dec = nn.Parameter(torch.zeros(L, d, **kw))
        if cfg.activation == "jumprelu":
            self.threshold = nn.Parameter(torch.full((n_enc, nf), float(cfg.threshold_init), **kw))
        elif cfg.activation == "batchtopk":
            self.register_buffer(
                "threshold", torch.full((n_enc, nf), float(cfg.threshold_init), **kw)
            )
        else:
            self.threshold = None
        self.register_buffer("input_scale", torch.ones(L, **kw))
        self.register_buffer("output_scale", torch.ones(L, **kw))
        self.blocks = nn.ModuleList(_LayerHooks() for _ in range(L))
        self.reset_parameters()
        self.setup()

    # ------------------------------------------------------------------ structure
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Encoders U(±1/√F), decoders U(±1/√(L·d)), biases zero (the paper's initialisation)."""
        cfg = self.cfg
        with torch.no_grad():
            bound = 1.0 / math.sqrt(cfg.n_features)
            self.W_enc.uniform_(-bound, bound, generator=generator)
            bound = 1.0 / math.sqrt(cfg.n_layers * cfg.d_model)
            for w in self.W_dec:
                w.uniform_(-bound, bound, generator=generator)
            self.b_enc.zero_()
            self.b_dec.zero_()

    def n_targets(self, source: int) -> int:
        """How many layers a source layer's features write to."""
        return self.cfg.n_layers - source if self.cfg.architecture == "cross_layer" else 1

    def writes_to(self, source: int) -> range:
        """Layers whose MLP outputs the features that read at layer `source` write to."""
        return range(source, source + self.n_targets(source))

    def reads_from(self, target: int) -> range:
        """Layers whose features write to layer `target`'s MLP output (its reconstruction reads
        from them)."""
        return (
            range(0, target + 1)
            if self.cfg.architecture == "cross_layer"
            else range(target, target + 1)
        )

    def _enc(self, layer: int) -> int:
        return 0 if self.cfg.architecture == "shared" else layer

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.cfg.n_layers:
            raise InputError(
                f"layer {layer} is out of range for a {self.cfg.n_layers}-layer transcoder"
            )

    @property
    def device(self) -> torch.device:
        return self.b_dec.device

    @property
    def dtype(self) -> torch.dtype:
        return self.b_dec.dtype

    def fold_scales(self) -> None:
        """Fold `input_scale` / `output_scale` into the weights (not possible for "shared", whose
        one dictionary serves layers of different scales; its scales stay as buffers)."""
        if self.cfg.architecture == "shared":
            return
        with torch.no_grad():
            self.W_enc.mul_(self.input_scale[:, None, None])
            for s, w in enumerate(self.W_dec):
                w.div_(self.output_scale[s : s + w.shape[1]][None, :, None])
            self.input_scale.fill_(1.0)
            self.output_scale.fill_(1.0)

    # ------------------------------------------------------------------ files
    def save_pretrained(self, directory) -> None:
        """Save weights (safetensors) and config.json, atomically per file."""
        io.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(cls, directory, device=None, dtype=None) -> CrossLayerTranscoder:
        """Load a transcoder saved with `save_pretrained`, checking every shape and dtype."""
        return io.from_pretrained(cls, directory, device=device, dtype=dtype)

    @classmethod
    def from_circuit_tracer(cls, directory) -> CrossLayerTranscoder:
        """Load a transcoder saved in circuit-tracer's CLT layout (one W_enc_{l}/W_dec_{l}
        safetensors pair per layer and config.yaml; written by circuit-tracer or by
        `tl_clt.io.export_circuit_tracer`)."""
        return io.import_circuit_tracer(cls, directory)

    # ------------------------------------------------------------------ effective weights
    def W_enc_at(self, layer: int) -> Float[Tensor, "d_model n_features"]:
        """Encoder of `layer` in the model's units (input scale folded in)."""
        self._check_layer(layer)
        return self.W_enc[self._enc(layer)] * self.input_scale[layer]

    def b_enc_at(self, layer: int) -> Float[Tensor, " n_features"]:
        return self.b_enc[self._enc(layer)]

    def threshold_at(self, layer: int) -> Tensor | None:
        return None if self.threshold is None else self.threshold[self._enc(layer)]

    def W_dec_at(self, source: int, target: int) -> Float[Tensor, "n_features d_model"]:
        """Decoder from `source` features to the `target` layer's output, in model units."""
        self._check_layer(source)
        if target not in self.writes_to(source):
            raise InputError(f"features at layer {source} do not write to layer {target}")
        w = self.W_dec[self._enc(source)][:, target - source]
        return w / self.output_scale[target]

    def decoder_norms(self) -> Float[Tensor, "n_enc n_features"]:
        """Norm of each feature's concatenated decoders (to all the layers it writes to)."""
        return torch.stack([w.flatten(1).norm(dim=-1) for w in self.W_dec])

    # ------------------------------------------------------------------ encoding
    def activate(
        self, h: Float[Tensor, "... n_features"], layer: int
    ) -> Float[Tensor, "... n_features"]:
        """The configured nonlinearity for `layer` (BatchTopK uses its threshold in eval mode)."""
        act = self.cfg.activation
        if act == "relu":
            return nonlinearity.relu(h)
        if act == "jumprelu":
            return nonlinearity.jumprelu(h, self.threshold_at(layer))
        if act == "topk":
            return nonlinearity.topk(h, self.cfg.k)
        if self.training:
            return nonlinearity.batchtopk(h, self.cfg.k)
        return h * (h > self.threshold_at(layer)).to(h.dtype)

    def encode_layer(
        self, x: Float[Tensor, "... d_model"], layer: int
    ) -> Float[Tensor, "... n_features"]:
        """Feature activations at one layer from that layer's input."""
        return self.encode_layer_with_pre(x, layer)[1]

    def encode_layer_with_pre(
        self, x: Float[Tensor, "... d_model"], layer: int
    ) -> tuple[Float[Tensor, "... n_features"], Float[Tensor, "... n_features"]]:
        """(pre-activations, activations) at one layer, through the layer's hook points."""
        hooks = self.blocks[layer]
        h = hooks.hook_feature_pre(x @ self.W_enc_at(layer) + self.b_enc_at(layer))
        return h, hooks.hook_features(self.activate(h, layer))

    def pre_activations(
        self, x: Float[Tensor, "... n_layers d_model"]
    ) -> Float[Tensor, "... n_layers n_features"]:
        """Encoder pre-activations of every layer at once (no hooks)."""
        x = x * self.input_scale[:, None]
        if self.cfg.architecture == "shared":
            return x @ self.W_enc[0] + self.b_enc[0]
        return torch.einsum("...ld,ldf->...lf", x, self.W_enc) + self.b_enc

    def encode(
        self, x: Float[Tensor, "... n_layers d_model"]
    ) -> Float[Tensor, "... n_layers n_features"]:
        """Feature activations of every layer from every layer's input."""
        acts = []  # unbind, not one select per layer: its backward writes a single stack
        for layer, (hooks, h) in enumerate(zip(self.blocks, self.pre_activations(x).unbind(-2))):
            h_l = hooks.hook_feature_pre(h)
            acts.append(hooks.hook_features(self.activate(h_l, layer)))
        return torch.stack(acts, dim=-2)

    # ------------------------------------------------------------------ decoding
    def decode_layer(
        self, acts: Sequence[Float[Tensor, "... n_features"] | None], layer: int
    ) -> Float[Tensor, "... d_model"]:
        """Reconstruction of `layer`'s output from the activations of layers 0..layer
        (`acts[s]` for source layer s; only the sources that write to `layer` are read)."""
        out = self.b_dec[layer]
        for s in self.reads_from(layer):
            w = self.W_dec[self._enc(s)][:, layer - s]
            out = out + (acts[s] @ w) / self.output_scale[layer]
        return self.blocks[layer].hook_recons(out)

    def decode(
        self, acts: Float[Tensor, "... n_layers n_features"]
    ) -> Float[Tensor, "... n_layers d_model"]:
        """Reconstruction of every layer's output from dense activations."""
        out = None
        for s, a in enumerate(acts.unbind(-2)):  # one backward stack, not a select per layer
            w = self.W_dec[self._enc(s)]  # [F, T, d]
            contrib = (a @ w.flatten(1)).unflatten(-1, w.shape[1:])
            out = self._accumulate(out, contrib, s)
        return self._finish(out)

    def decode_sparse(
        self, features: SparseFeatures | RaggedFeatures, batch_shape: Sequence[int] | None = None
    ) -> Float[Tensor, "... n_layers d_model"]:
        """Reconstruction from active features only: reads just their decoder rows (one
        `embedding_bag` per source layer), never a dense [tokens, layers, features] tensor.
        `RaggedFeatures` give each token its own number of active features (BatchTopK)."""
        L = self.cfg.n_layers
        out = None
        for s in range(L):
            w = self.W_dec[self._enc(s)]  # [F, T, d]
            if isinstance(features, RaggedFeatures):
                idx, val, offsets = (features.indices[s], features.values[s], features.offsets[s])
            else:
                idx, val, offsets = features.indices[:, s], features.values[:, s], None
            contrib = F.embedding_bag(
                idx, w.flatten(1), offsets, per_sample_weights=val.to(w.dtype), mode="sum"
            ).unflatten(-1, w.shape[1:])
            out = self._accumulate(out, contrib, s)
        recon = self._finish(out)
        return recon if batch_shape is None else recon.reshape(*batch_shape, L, self.cfg.d_model)

    def _accumulate(self, out: Tensor | None, contrib: Tensor, source: int) -> Tensor:
        """Add a source layer's decoder writes [..., T, d] into its target layers' slice of
        `out` [..., n_layers, d] in place (a slice, not one select per target: their backward
        would each allocate a zero tensor of the whole contribution's size)."""
        t = self.writes_to(source)
        if out is None:
            out = contrib.new_zeros(*contrib.shape[:-2], self.cfg.n_layers, contrib.shape[-1])
        out[..., t.start : t.stop, :] += contrib
        return out

    def _finish(self, out: Float[Tensor, "... n_layers d_model"]) -> Tensor:
        recons = [
            self.blocks[t].hook_recons(o / self.output_scale[t] + self.b_dec[t])
            for t, o in enumerate(out.unbind(-2))
        ]
        return torch.stack(recons, dim=-2)

    def forward(
        self, x: Float[Tensor, "... n_layers d_model"]
    ) -> Float[Tensor, "... n_layers d_model"]:
        """Reconstruct every layer's MLP output from every layer's MLP input."""
        acts = self.encode(x)
        if self.cfg.activation == "topk":  # exactly k per token and layer
            return self.decode_sparse(to_sparse(acts, self.cfg.k), acts.shape[:-2])
        if self.cfg.activation == "batchtopk":  # k per token on average
            return self.decode_sparse(to_sparse(acts), acts.shape[:-2])
        return self.decode(acts)


def to_sparse(
    acts: Float[Tensor, "... n_layers n_features"], k: int | None = None
) -> SparseFeatures:
    """Active features per token and layer, padded to the largest count (or to k)."""
    flat = acts.reshape(-1, *acts.shape[-2:])
    if k is None:
        k = max(int((flat != 0).sum(-1).max()), 1) if flat.numel() else 1
    values, indices = flat.abs().topk(min(k, flat.shape[-1]), dim=-1, sorted=False)
    return SparseFeatures(indices, flat.gather(-1, indices))
