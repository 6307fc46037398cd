"""Shared fixtures: tiny random models of each family (for whichever TransformerLens major is
installed) and random transcoders with active features at every layer."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import warnings  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("TL_CLT_TEST_THREADS", "1")))
warnings.filterwarnings("ignore", message=".*deprecated.*")

from tl_clt import CLTConfig, CrossLayerTranscoder  # noqa: E402
from tl_clt.lens import tiny_model  # noqa: E402

FAMILIES = ("gpt2", "llama", "neox")
ARCHITECTURES = ("cross_layer", "per_layer", "shared")
ACTIVATIONS = ("relu", "jumprelu", "topk", "batchtopk")

_MODELS: dict = {}


def get_model(family: str = "gpt2", **shape):
    """A tiny random model, cached per (family, shape); tests must not modify it."""
    key = (family, tuple(sorted(shape.items())))
    if key not in _MODELS:
        _MODELS[key] = tiny_model(family, **shape)
    return _MODELS[key]


@pytest.fixture(params=FAMILIES)
def lens(request):
    return get_model(request.param)


def random_clt(
    n_layers: int,
    d_model: int,
    n_features: int = 24,
    architecture: str = "cross_layer",
    activation: str = "relu",
    seed: int = 0,
    model=None,
    scales: bool = False,
    **kw,
) -> CrossLayerTranscoder:
    """A transcoder with random weights, biases and thresholds (so features are active at a
    moderate density); with `scales`, non-unit input/output scales too; with `skip=True`, a
    random skip connection."""
    if activation in ("topk", "batchtopk") and "k" not in kw:
        kw["k"] = 3
    cfg = CLTConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_features=n_features,
        architecture=architecture,
        activation=activation,
        model=model,
        **kw,
    )
    gen = torch.Generator().manual_seed(seed)
    clt = CrossLayerTranscoder(cfg)
    clt.reset_parameters(gen)
    with torch.no_grad():
        clt.W_enc.mul_(4.0)
        clt.b_enc.copy_(0.1 * torch.randn(clt.b_enc.shape, generator=gen))
        clt.b_dec.copy_(0.1 * torch.randn(clt.b_dec.shape, generator=gen))
        if clt.threshold is not None:
            clt.threshold.copy_(0.1 * torch.rand(clt.threshold.shape, generator=gen))
        if clt.W_skip is not None:  # a skip connection of about a third of the input's size
            clt.W_skip.copy_(0.3 * torch.randn(clt.W_skip.shape, generator=gen) / d_model**0.5)
        if scales:
            clt.input_scale.copy_(0.5 + torch.rand(n_layers, generator=gen))
            clt.output_scale.copy_(0.5 + torch.rand(n_layers, generator=gen))
    return clt.eval()


def clt_for(lens, **kw) -> CrossLayerTranscoder:
    return random_clt(lens.n_layers, lens.d_model, model=lens.identity(), **kw)
