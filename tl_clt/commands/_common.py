"""Arguments and loading shared by the subcommands that work on a model and its transcoder.

One rule for every subcommand: `--model` and `--clt` name a model and a transcoder trained on
it, both or neither. Neither (or the word "shipped") means the shipped toy model and its
transcoder (`tl_clt.toy`, when installed). A model is a local Hugging Face checkpoint
directory or, when no such directory exists, a TransformerLens model name (from the hub); a
transcoder is a directory written by `save_pretrained`. (`tl-clt train` takes `--model` only.)
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from tl_clt.errors import InputError

SHIPPED = "shipped"
MODEL_HELP = (
    "a local Hugging Face checkpoint directory or a TransformerLens model name, with the "
    f"transcoder trained on it (--clt); omitted or '{SHIPPED}': the shipped model"
)
CLT_HELP = (
    "a transcoder directory (save_pretrained), with its model (--model); omitted or "
    f"'{SHIPPED}': the shipped transcoder"
)


def add_model_arguments(parser: argparse.ArgumentParser, device: bool = True) -> None:
    parser.add_argument("--model", default=None, metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("--clt", default=None, metavar="DIR", help=CLT_HELP)
    parser.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="go on (with a warning) when the transcoder was trained on another model",
    )
    if device:
        parser.add_argument("--device", default=None, help="torch device (default: the model's)")


def check_device(device: str | None) -> str | None:
    """`device` itself, after checking torch knows it (an InputError naming it if not)."""
    if device is None:
        return None
    import torch

    try:
        torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise InputError(
            f"--device {device!r} is not a torch device; use e.g. cpu, cuda or cuda:1"
        ) from exc
    return device


def read_text(path: str, flag: str) -> str:
    """The UTF-8 text of the file `path` given with `flag`, or an InputError naming both."""
    from pathlib import Path

    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{flag} {path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{flag} {path} is a directory; give a file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{flag} {path} is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise InputError(f"{flag} {path} cannot be read: {exc.strerror or exc}") from None


def read_json(path: str, flag: str) -> Any:
    """The JSON in the file `path` given with `flag`, or an InputError naming both."""
    import json

    try:
        return json.loads(read_text(path, flag))
    except json.JSONDecodeError as exc:
        raise InputError(f"{flag} {path} is not valid JSON: {exc}") from None


def is_shipped(name: str | None) -> bool:
    return name is None or name == SHIPPED


def uses_shipped(args: argparse.Namespace) -> bool:
    """True when the arguments name the shipped model and transcoder."""
    return is_shipped(args.model) and is_shipped(args.clt)


def shipped() -> Any:
    """The `tl_clt.toy` package, or an InputError saying to name a model."""
    try:
        return importlib.import_module("tl_clt.toy")
    except ImportError as exc:
        raise InputError(
            "this installation has no shipped model (tl_clt.toy); name one with --model "
            "(and its transcoder with --clt)"
        ) from exc


def resolve_model(name: str | None, device: str | None = None):
    """The model `name` names, as a `Lens`: the shipped one when `name` is None or 'shipped',
    else a local checkpoint directory or a TransformerLens model name."""
    from tl_clt.lens import Lens, load_model

    if is_shipped(name):
        lens = shipped().load_lens()
        return lens if device is None else Lens(lens.model.to(device))

    try:
        return load_model(name, device=device)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"cannot load model {name!r}: {exc}. Give a local checkpoint directory, or a "
            "TransformerLens model name with network access to the hub"
        ) from exc


def resolve_transcoder(name: str | None, device: str | None = None):
    """The transcoder `name` names: the shipped one when None or 'shipped', else a directory."""
    if is_shipped(name):
        return shipped().load_clt(device)
    from tl_clt.clt import CrossLayerTranscoder

    return CrossLayerTranscoder.from_pretrained(name, device=device)


def resolve_replacement(args: argparse.Namespace):
    """The `ReplacementModel` that `--model`, `--clt` (and `--device`, if the command has one)
    name, by the rule in this module's docstring."""
    from tl_clt.replacement import ReplacementModel

    if (args.model is None) != (args.clt is None):
        given, missing = ("--model", "--clt") if args.clt is None else ("--clt", "--model")
        raise InputError(
            f"{given} was given without {missing}: pass both (a model and the transcoder trained "
            f"on it; '{SHIPPED}' names the shipped one), or neither for the shipped model"
        )
    device = check_device(getattr(args, "device", None))
    return ReplacementModel(
        resolve_model(args.model, device),
        resolve_transcoder(args.clt),
        allow_mismatch=getattr(args, "allow_mismatch", False),
    )
