"""Shared helpers for the activation and training tests: one torch thread, tiny models, small
text corpora and planted-dictionary trainers."""

from __future__ import annotations

import contextlib
import os
import random

import torch

torch.set_num_threads(int(os.environ.get("TL_CLT_TEST_THREADS", "1")))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tl_clt import CLTConfig, CrossLayerTranscoder  # noqa: E402
from tl_clt.lens import tiny_model  # noqa: E402


def texts(n: int = 60, vocab: int = 60, seed: int = 0, lo: int = 3, hi: int = 20) -> list[str]:
    """Random word-level texts over the tiny models' vocabulary ("w0", "w1", ...)."""
    rng = random.Random(seed)
    return [
        " ".join(f"w{rng.randrange(vocab)}" for _ in range(rng.randrange(lo, hi))) for _ in range(n)
    ]


def lens(family: str = "gpt2", **shape):
    shape = {"n_layers": 2, "d_model": 32, "d_mlp": 64, "n_ctx": 32, **shape}
    return tiny_model(family, **shape)


def small_clt(
    activation: str = "relu", architecture: str = "cross_layer", n_layers: int = 2,
    d_model: int = 8, n_features: int = 12, seed: int = 0, k: int | None = None,
    skip: bool = False,
) -> CrossLayerTranscoder:  # fmt: skip
    k = (k or 3) if activation in ("topk", "batchtopk") else None
    cfg = CLTConfig(
        n_layers, d_model, n_features, architecture=architecture, activation=activation, k=k,
        skip=skip,
    )  # fmt: skip
    clt = CrossLayerTranscoder(cfg)
    clt.reset_parameters(torch.Generator().manual_seed(seed))
    return clt


@contextlib.contextmanager
def unchecked():
    """Run without jaxtyping's run-time shape checks (long training loops in tests: the same
    code paths are shape-checked by the short tests)."""
    import jaxtyping

    before = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", before)
