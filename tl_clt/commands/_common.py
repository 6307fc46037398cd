"""Arguments and loading shared by the subcommands that work on a model + transcoder."""

from __future__ import annotations

import argparse

from tl_clt.errors import InputError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="local Hugging Face checkpoint directory or TransformerLens model name "
        "(default: the shipped model)",
    )
    parser.add_argument(
        "--clt", default=None, help="transcoder directory (default: the shipped transcoder)"
    )
    parser.add_argument("--device", default=None, help="torch device (default: the model's)")


def load_replacement(args: argparse.Namespace):
    """The `ReplacementModel` the arguments name."""
    from tl_clt import CrossLayerTranscoder, ReplacementModel
    from tl_clt.lens import load_model

    if args.model is None and args.clt is None:
        try:
            from tl_clt import toy
        except ImportError as exc:
            raise InputError("the shipped model is not installed; pass --model and --clt") from exc
        lens, clt = toy.load_model(), toy.load_clt()
    elif args.model is None or args.clt is None:
        raise InputError("pass both --model and --clt, or neither (for the shipped model)")
    else:
        lens = load_model(args.model, device=args.device)
        clt = CrossLayerTranscoder.from_pretrained(args.clt)
    return ReplacementModel(lens, clt)
