"""The linearised local replacement model (phases 3 and 4 of `tl_clt.attribution`): one forward
pass with attention patterns and normalisation scales frozen, MLP outputs and embeddings held as
leaves, and batched backward passes that inject target directions and read the gradients at
those leaves. Every path from a leaf to an injection point is linear, so each gradient is the
exact direct effect of the leaf on the target."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tl_clt.errors import UnsupportedModelError
from tl_clt.replacement import ReplacementModel
from tl_clt.splice import CleanRun, Splice


@dataclass
class Tape:
    """The linearised forward pass: outputs to inject into and leaves to read gradients at."""

    mlp_in: list[Tensor]  # [1, pos, d_model] per layer, the transcoder's inputs
    logits: Tensor  # [1, d_vocab] at the last position
    outputs: list[Tensor]  # [1, pos, d_model] per layer: MLP-output leaves
    embeddings: list[Tensor]  # [1, pos, d_model] per embedding hook that fired: leaves


@contextmanager
def grad_free_params(model: torch.nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad (so backward passes compute no weight gradients and the
    forward pass saves no inputs for them); restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def linearise(replacement: ReplacementModel, run: CleanRun) -> Tape:
    """The forward pass of phase 3 (see the module docstring): the splice with `run`'s
    patterns, scales, errors and features frozen and each MLP output a leaf."""
    lens, L, pos = replacement.lens, replacement.n_layers, run.tokens.shape[1]
    embeddings: list[Tensor] = []

    def embedding(x: Tensor, hook: Any) -> Tensor | None:
        if tuple(x.shape) != (1, pos, lens.d_model):  # e.g. a rotary model's unused hook
            return None
        leaf = x.detach().clone().requires_grad_(True)
        embeddings.append(leaf)
        return leaf

    splice = Splice(error=run.errors, hold=run.features, output="leaf", freeze=run)
    with (
        torch.enable_grad(),
        replacement.splice(splice) as spliced,
        lens.hooks([(name, embedding) for name in lens.embeddings()]),
    ):
        logits = lens.model(run.tokens)
    mlp_in, outputs = spliced.mlp_in, spliced.leaves
    if any(x is None for x in mlp_in) or len(outputs) != L or not embeddings:
        raise UnsupportedModelError(
            "the linearised pass did not reach every MLP input, MLP output and embedding hook; "
            "this model's blocks are not supported by attribution"
        )
    return Tape(mlp_in, logits[:, -1], outputs, embeddings)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- phase 4: rows
def backward(
    tape: Tape, injections: list[tuple[Tensor, Tensor]], top: int
) -> tuple[list[Tensor | None], list[Tensor]]:
    """Batched gradients at the MLP-output leaves of layers < `top` and at the embedding leaves
    for each injected cotangent (`injections`: (output, [batch, *output.shape]) pairs)."""
    inputs = tape.outputs[:top] + tape.embeddings
    grads = torch.autograd.grad(
        [o for o, _ in injections],
        inputs,
        [g for _, g in injections],
        retain_graph=True,
        allow_unused=True,
        is_grads_batched=True,
    )
    nb = injections[0][1].shape[0]
    emb = [g if g is not None else torch.zeros(nb, *e.shape, dtype=e.dtype, device=e.device)
           for g, e in zip(grads[top:], tape.embeddings)]  # fmt: skip
    return list(grads[:top]), emb


def feature_injections(
    tape: Tape, clt: Any, layer: Tensor, position: Tensor, feature: Tensor
) -> tuple[list[tuple[Tensor, Tensor]], int]:
    """Cotangents putting each target feature's encoder row at its layer's MLP input and
    position, and the number of MLP-output layers below the targets (`top`)."""
    nb = layer.shape[0]
    injections = []
    for t in layer.unique().tolist():
        sel = (layer == t).nonzero()[:, 0]
        x = tape.mlp_in[t]
        g = torch.zeros(nb, *x.shape, dtype=x.dtype, device=x.device)
        enc = clt.W_enc_at(t).detach()[:, feature[sel].to(clt.device)].T
        g[sel.to(x.device), 0, position[sel].to(x.device)] = enc.to(g.dtype)
        injections.append((x, g))
    return injections, int(layer.max())
