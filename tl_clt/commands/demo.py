"""`tl-clt demo`: the main job on the shipped model (for now: a random model and transcoder,
spliced with and without the error term)."""

from __future__ import annotations

import argparse

HELP = "run the main demo on the shipped model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", default="w1 w2 w3 w4 w5 w6", help="prompt to run")
    parser.add_argument("--family", default="gpt2", choices=["gpt2", "llama", "neox"])


def run(args: argparse.Namespace) -> int:
    import torch

    from tl_clt import CLTConfig, CrossLayerTranscoder, ReplacementModel
    from tl_clt.lens import tiny_model

    lens = tiny_model(args.family)
    cfg = CLTConfig(
        n_layers=lens.n_layers, d_model=lens.d_model, n_features=64, model=lens.identity()
    )
    rm = ReplacementModel(lens, CrossLayerTranscoder(cfg))
    tokens = lens.tokens(args.prompt)
    with torch.no_grad():
        original = lens.model(tokens)
        with_error = rm(tokens, error=True)
        pure = rm(tokens, error=False)
    print(
        f"model: {lens.name} ({type(lens.model).__name__}), transcoder: random {cfg.architecture}"
    )
    print(f"max |logit difference|, error term kept:    {(with_error - original).abs().max():.2e}")
    print(f"max |logit difference|, pure replacement: {(pure - original).abs().max():.2e}")
    return 0
