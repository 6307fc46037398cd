"""The cross-layer transcoder: per-layer encoders, decoders from each layer to itself and (for
the paper's "cross_layer" form) every later layer.

Shapes follow TransformerLens (`x @ W`): W_enc [n_enc, d_model, F], b_enc [n_enc, F], W_dec[s]
[F, n_targets(s), d_model] stored per source layer s, b_dec [n_layers, d_model], and, for a
skip transcoder (`cfg.skip`), W_skip [n_layers, d_model, d_model]: each layer's reconstruction
adds `x @ W_skip[l]`, a linear path from the layer's MLP input to its output. "per_layer"
keeps only the s→s decoder; "shared" has one encoder and one decoder used at every layer
(n_enc = 1). Per-layer `input_scale` / `output_scale` buffers hold the training normalisation;
`fold_scales()` folds them into the weights where the architecture allows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from tl_clt import hooks as clt_hooks
from tl_clt import io, nonlinearity
from tl_clt.config import CLTConfig
from tl_clt.errors import InputError
from tl_clt.lens.adapter import HookedRootModule, HookPoint
from tl_clt.nonlinearity import (  # noqa: F401 (re-exported: their home before nonlinearity)
    DenseFeatures,
    Features,
    RaggedFeatures,
    SparseFeatures,
    to_sparse,
)


class Encoded(NamedTuple):
    """An encoded batch: every layer's pre-activations and the active features."""

    pre: Float[Tensor, "... n_layers n_features"]
    features: Features


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
        n_enc = cfg.n_encoders
        self.W_enc = nn.Parameter(torch.empty(n_enc, d, nf, **kw))
        self.b_enc = nn.Parameter(torch.zeros(n_enc, nf, **kw))
        self.W_dec = nn.ParameterList(
            nn.Parameter(torch.empty(nf, self.n_targets(s), d, **kw)) for s in range(n_enc)
        )
        self.b_dec = nn.Parameter(torch.zeros(L, d, **kw))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(L, d, d, **kw))
        else:
            self.register_parameter("W_skip", None)
        #: The features' activation function (`tl_clt.nonlinearity`), built from the config.
        self.activation = nonlinearity.from_config(cfg)
        theta = torch.full((n_enc, nf), float(cfg.threshold_init), **kw)
        if self.activation.threshold == "parameter":
            self.threshold = nn.Parameter(theta)
        elif self.activation.threshold == "buffer":
            self.register_buffer("threshold", theta)
        else:
            self.threshold = None
        self.register_buffer("input_scale", torch.ones(L, **kw))
        self.register_buffer("output_scale", torch.ones(L, **kw))
        self.blocks = nn.ModuleList(_LayerHooks() for _ in range(L))
        self.reset_parameters()
        self.setup()
        for name, point in self.hook_dict.items():
            # what a hook function sees in `hook.name` (and a cache's key): the name it is
            # added under through a ReplacementModel, `clt.blocks.{l}.hook_*`
            point.name = clt_hooks.PREFIX + name

    # ------------------------------------------------------------------ structure
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Encoders U(±1/√F), decoders U(±1/√(L·d)), biases zero (the paper's initialisation);
        a skip connection starts at zero, as skip transcoders are trained."""
        cfg = self.cfg
        with torch.no_grad():
            bound = 1.0 / math.sqrt(cfg.n_features)
            self.W_enc.uniform_(-bound, bound, generator=generator)
            bound = 1.0 / math.sqrt(cfg.n_layers * cfg.d_model)
            for w in self.W_dec:
                w.uniform_(-bound, bound, generator=generator)
            self.b_enc.zero_()
            self.b_dec.zero_()
            if self.W_skip is not None:
                self.W_skip.zero_()

    def n_targets(self, source: int) -> int:
        """How many layers a source layer's features write to."""
        return self.cfg.n_layers - source if self.cfg.cross_layer else 1

    def writes_to(self, source: int) -> range:
        """Layers whose MLP outputs the features that read at layer `source` write to."""
        return range(source, source + self.n_targets(source))

    def reads_from(self, target: int) -> range:
        """Layers whose features write to layer `target`'s MLP output (its reconstruction reads
        from them)."""
        return range(0, target + 1) if self.cfg.cross_layer else range(target, target + 1)

    def _enc(self, layer: int) -> int:
        return 0 if self.cfg.shared else layer

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
        if self.cfg.shared:
            return
        with torch.no_grad():
            self.W_enc.mul_(self.input_scale[:, None, None])
            for s, w in enumerate(self.W_dec):
                w.div_(self.output_scale[s : s + w.shape[1]][None, :, None])
            if self.W_skip is not None:
                self.W_skip.mul_((self.input_scale / self.output_scale)[:, None, None])
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

    def decoder_rows(
        self, source: int, feature_ids: Tensor, n_targets: int | None = None
    ) -> Float[Tensor, "k n_targets d_model"]:
        """The decoder rows of features `feature_ids` read at `source` to the first
        `n_targets` layers they write to (default: all), in model units: row [i, j] is what one
        unit of feature `feature_ids[i]` adds to the output of layer `source + j` (an
        architecture's storage and the output scales are dealt with here)."""
        self._check_layer(source)
        n = self.n_targets(source) if n_targets is None else n_targets
        if not 1 <= n <= self.n_targets(source):
            raise InputError(
                f"features at layer {source} write to {self.n_targets(source)} layers, not {n}"
            )
        rows = self.W_dec[self._enc(source)][feature_ids, :n]
        scale = self.output_scale[source : source + n]
        if bool((scale == 1).all()):
            return rows
        return rows / scale[None, :, None].to(rows.dtype)

    def W_skip_at(self, layer: int) -> Float[Tensor, "d_model d_model"] | None:
        """The skip connection of `layer` in model units (None without one)."""
        self._check_layer(layer)
        if self.W_skip is None:
            return None
        return self.W_skip[layer] * (self.input_scale[layer] / self.output_scale[layer])

    def skip_layer(self, x: Float[Tensor, "... d_model"], layer: int) -> Tensor | None:
        """What the skip connection adds to `layer`'s output for its input `x` (None without
        one)."""
        w = self.W_skip_at(layer)
        return None if w is None else x @ w

    def _skip_all(self, x: Float[Tensor, "... n_layers d_model"]) -> Tensor:
        """The skip connection's contribution to every layer, in the normalised units the
        decoders write in (before `_finish` divides by the output scales)."""
        return torch.einsum("...ld,lde->...le", x * self.input_scale[:, None], self.W_skip)

    def _need_x(self, x: Tensor | None) -> None:
        if self.W_skip is not None and x is None:
            raise InputError(
                "this transcoder has a skip connection: its reconstruction needs the MLP "
                "inputs too (pass x=)"
            )

    def decoder_norms(self) -> Float[Tensor, "n_enc n_features"]:
        """Norm of each feature's concatenated decoders (to all the layers it writes to)."""
        return torch.stack([w.flatten(1).norm(dim=-1) for w in self.W_dec])

    # ------------------------------------------------------------------ encoding
    def activate(
        self, h: Float[Tensor, "... n_features"], layer: int
    ) -> Float[Tensor, "... n_features"]:
        """The configured nonlinearity for `layer` (BatchTopK uses its threshold in eval mode)."""
        return self.activation.dense(h, self.threshold_at(layer), self.training)

    def encode_layer(
        self, x: Float[Tensor, "... d_model"], layer: int
    ) -> Float[Tensor, "... n_features"]:
        """Feature activations at one layer from that layer's input."""
        return self.encode_layer_with_pre(x, layer)[1]

    def encode_layer_with_pre(
        self,
        x: Float[Tensor, "... d_model"],
        layer: int,
        between: Callable[[Tensor], Tensor] | None = None,
    ) -> tuple[Float[Tensor, "... n_features"], Float[Tensor, "... n_features"]]:
        """(pre-activations, activations) at one layer, through the layer's hook points;
        `between` (e.g. a splice's held or edited features) maps the activations before
        `hook_features` sees them."""
        hooks = self.blocks[layer]
        h = hooks.hook_feature_pre(x @ self.W_enc_at(layer) + self.b_enc_at(layer))
        acts = self.activate(h, layer)
        return h, hooks.hook_features(acts if between is None else between(acts))

    def pre_activations(
        self, x: Float[Tensor, "... n_layers d_model"]
    ) -> Float[Tensor, "... n_layers n_features"]:
        """Encoder pre-activations of every layer at once (no hooks)."""
        x = x * self.input_scale[:, None]
        if self.cfg.shared:
            return x @ self.W_enc[0] + self.b_enc[0]
        return torch.einsum("...ld,ldf->...lf", x, self.W_enc) + self.b_enc

    def encode_features(
        self,
        x: Float[Tensor, "... n_layers d_model"],
        *,
        hooks: bool = True,
        activation: nonlinearity.Nonlinearity | None = None,
    ) -> Encoded:
        """The one encoding path, of inference and training alike: every layer's encoder
        pre-activations (before any hook) and the active features (`.decode(clt)` decodes them).
        With `hooks`, each layer's pre-activations and activations pass through its hook points
        (dense [..., n_features] tensors, as hooks see them) and are compacted for decoding
        (TopK, BatchTopK: tokens flattened); without, the activation's sparse form encodes
        every layer at once, tokens flattened (training: no dense [tokens, layers, features]
        tensor for TopK and BatchTopK). `activation` replaces the configured one (training's
        JumpReLU bandwidth)."""
        act = self.activation if activation is None else activation
        if hooks:
            pre, acts = self._encode_hooked(x, act)
            return Encoded(pre, act.compact(acts))
        pre = self.pre_activations(x.reshape(-1, *x.shape[-2:]))
        return Encoded(pre, act.sparse(pre, self._thresholds(), self.training))

    def encode(
        self, x: Float[Tensor, "... n_layers d_model"], *, hooks: bool = True
    ) -> Float[Tensor, "... n_layers n_features"]:
        """Feature activations of every layer from every layer's input."""
        if hooks:
            return self._encode_hooked(x, self.activation)[1]
        dense = self.encode_features(x, hooks=False).features.dense(self.cfg.n_features)
        return dense.reshape(*x.shape[:-1], self.cfg.n_features)

    def _encode_hooked(
        self, x: Tensor, act: nonlinearity.Nonlinearity
    ) -> tuple[Float[Tensor, "... n_layers n_features"], Float[Tensor, "... n_layers n_features"]]:
        pre = self.pre_activations(x)
        acts = []  # unbind, not one select per layer: its backward writes a single stack
        for hook, h, theta in zip(self.blocks, pre.unbind(-2), self._thresholds()):
            h = hook.hook_feature_pre(h)
            acts.append(hook.hook_features(act.dense(h, theta, self.training)))
        return pre, torch.stack(acts, dim=-2)

    def _thresholds(self) -> list[Tensor | None]:
        return [self.threshold_at(layer) for layer in range(self.cfg.n_layers)]

    # ------------------------------------------------------------------ decoding
    def decode_layer(
        self,
        acts: Sequence[Float[Tensor, "... n_features"] | None],
        layer: int,
        x: Float[Tensor, "... d_model"] | None = None,
    ) -> Float[Tensor, "... d_model"]:
        """Reconstruction of `layer`'s output from the activations of layers 0..layer
        (`acts[s]` for source layer s; only the sources that write to `layer` are read) and,
        for a skip transcoder, the layer's input `x`, through the layer's `hook_recons`."""
        return self.blocks[layer].hook_recons(self.reconstruct_layer(acts, layer, x))

    def reconstruct_layer(
        self,
        acts: Sequence[Float[Tensor, "... n_features"] | None],
        layer: int,
        x: Float[Tensor, "... d_model"] | None = None,
    ) -> Float[Tensor, "... d_model"]:
        """`decode_layer` without the hook point."""
        self._need_x(x)
        out = self.decoded_layer(acts, layer)
        return out if self.W_skip is None else out + self.skip_layer(x, layer)

    def decoded_layer(
        self, acts: Sequence[Float[Tensor, "... n_features"] | None], layer: int
    ) -> Float[Tensor, "... d_model"]:
        """What the features (and the decoder bias) write to `layer`'s output: the
        reconstruction less any skip connection."""
        out = self.b_dec[layer]
        for s in self.reads_from(layer):
            w = self.W_dec[self._enc(s)][:, layer - s]
            out = out + (acts[s] @ w) / self.output_scale[layer]
        return out

    def decode(
        self,
        acts: Float[Tensor, "... n_layers n_features"],
        x: Float[Tensor, "... n_layers d_model"] | None = None,
    ) -> Float[Tensor, "... n_layers d_model"]:
        """Reconstruction of every layer's output from dense activations (and, for a skip
        transcoder, every layer's input `x`)."""
        self._need_x(x)
        out = None
        for s, a in enumerate(acts.unbind(-2)):  # one backward stack, not a select per layer
            w = self.W_dec[self._enc(s)]  # [F, T, d]
            contrib = (a @ w.flatten(1)).unflatten(-1, w.shape[1:])
            out = self._accumulate(out, contrib, s)
        return self._finish(out, x)

    def decode_sparse(
        self,
        features: SparseFeatures | RaggedFeatures,
        batch_shape: Sequence[int] | None = None,
        x: Float[Tensor, "... n_layers d_model"] | None = None,
        *,
        skip: bool = True,
    ) -> Float[Tensor, "... n_layers d_model"]:
        """Reconstruction from active features only: reads just their decoder rows (one
        `embedding_bag` per source layer), never a dense [tokens, layers, features] tensor.
        `RaggedFeatures` give each token its own number of active features (BatchTopK). A skip
        transcoder also needs every layer's input `x` (any leading shape with n_tokens
        elements); `skip=False` decodes the features' writes alone (e.g. AuxK's residual)."""
        if skip:
            self._need_x(x)
        L = self.cfg.n_layers
        out = None
        for s in range(L):
            w = self.W_dec[self._enc(s)]  # [F, T, d]
            idx, val, offsets = features.bag(s)
            contrib = F.embedding_bag(
                idx, w.flatten(1), offsets, per_sample_weights=val.to(w.dtype), mode="sum"
            ).unflatten(-1, w.shape[1:])
            out = self._accumulate(out, contrib, s)
        recon = self._finish(out, x if skip else None, skip=skip)
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

    def _finish(
        self, out: Float[Tensor, "... n_layers d_model"], x: Tensor | None = None, skip: bool = True
    ) -> Tensor:
        if self.W_skip is not None and skip:
            out = out + self._skip_all(x.reshape(out.shape).to(out.dtype))
        recons = [
            self.blocks[t].hook_recons(o / self.output_scale[t] + self.b_dec[t])
            for t, o in enumerate(out.unbind(-2))
        ]
        return torch.stack(recons, dim=-2)

    def forward(
        self, x: Float[Tensor, "... n_layers d_model"]
    ) -> Float[Tensor, "... n_layers d_model"]:
        """Reconstruct every layer's MLP output from every layer's MLP input."""
        return self.encode_features(x).features.decode(self, x).reshape(x.shape)
