"""`tl-clt train`: train a transcoder on a model's MLPs over some text and write the transcoder
directory with its metrics (metrics.jsonl, curves.png, summary.json, checkpoints/).

The config file is JSON with up to three sections, each optional:
`{"clt": {CLTConfig fields}, "train": {TrainConfig fields}, "data": {seq_len, buffer_tokens,
holdout_sequences, text_column, split, streaming}}`. Command-line flags override the file.
Under `torchrun --nproc_per_node P -m tl_clt.cli train ...` it trains data-parallel.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from tl_clt.commands._common import SHIPPED, resolve_model

__all__ = ["add_arguments", "resolve_model", "run"]

HELP = "train a cross-layer transcoder on a model's MLPs"
MODEL_HELP_TRAIN = (
    "a local Hugging Face checkpoint directory or a TransformerLens model name (from the hub); "
    f"omitted or '{SHIPPED}': the shipped model"
)
DATA_KEYS = ("seq_len", "buffer_tokens", "holdout_sequences", "text_column", "split", "streaming")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="MODEL", help=MODEL_HELP_TRAIN)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--text",
        help="a text file (one text per line), or a directory of .txt/.jsonl/.csv/.parquet files",
    )
    src.add_argument("--dataset", help="a Hugging Face dataset name (needs the hub)")
    parser.add_argument("--dataset-config", help="the dataset's configuration name")
    parser.add_argument("--config", help="JSON config file with 'clt', 'train' and 'data' sections")
    parser.add_argument(
        "--out", required=True, help="output directory (the transcoder and its metrics)"
    )
    parser.add_argument("--architecture", choices=["cross_layer", "per_layer", "shared"])
    parser.add_argument("--activation", choices=["relu", "jumprelu", "topk", "batchtopk"])
    parser.add_argument(
        "--k", type=int, help="active features per token and layer (topk, batchtopk)"
    )
    parser.add_argument("--n-features", type=int, help="features per layer")
    parser.add_argument("--steps", type=int, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, help="tokens per step")
    parser.add_argument("--cache", help="directory for the activation cache (reused by later runs)")
    parser.add_argument(
        "--streaming", action="store_true", help="stream the dataset instead of loading it"
    )
    parser.add_argument(
        "--device", help="device for the model and transcoder (default: the model's)"
    )
    parser.add_argument("--wandb", metavar="PROJECT", help="log to this Weights & Biases project")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from tl_clt.training import train

    config = _read_config(args.config)
    clt_cfg, train_cfg, data_cfg = (dict(config.get(k) or {}) for k in ("clt", "train", "data"))
    _override(clt_cfg, architecture=args.architecture, activation=args.activation, k=args.k,
              n_features=args.n_features)  # fmt: skip
    _override(train_cfg, steps=args.steps, batch_size=args.batch_size)
    if args.streaming:
        data_cfg["streaming"] = True
    lens = resolve_model(args.model, args.device)
    data = _load_data(args, data_cfg)
    result = train(
        lens, data, clt_cfg, train_cfg, out_dir=args.out, cache_dir=args.cache,
        seq_len=data_cfg.get("seq_len", 128), buffer_tokens=data_cfg.get("buffer_tokens", 65536),
        holdout_sequences=data_cfg.get("holdout_sequences", 64),
        progress=not args.no_progress, wandb_project=args.wandb,
    )  # fmt: skip
    main_process = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 reports
    if (
        main_process
        and result.directory is not None
        and (result.directory / "summary.json").is_file()
    ):
        _print_summary(
            json.loads((result.directory / "summary.json").read_text()), result.directory
        )
    return 0


def _read_config(path: str | None) -> dict[str, Any]:
    from tl_clt.errors import ConfigError

    if path is None:
        return {}
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
    unknown = sorted(set(config) - {"clt", "train", "data"}) if isinstance(config, dict) else None
    if unknown is None or unknown:
        raise ConfigError(
            f"{path} must be a JSON object with 'clt', 'train' and 'data' sections; found {unknown}"
        )
    bad = sorted(set(config.get("data") or {}) - set(DATA_KEYS))
    if bad:
        raise ConfigError(f"unknown 'data' setting(s) {bad} in {path}; known: {list(DATA_KEYS)}")
    return config


def _override(section: dict[str, Any], **values: Any) -> None:
    section.update({k: v for k, v in values.items() if v is not None})


def _load_data(args: argparse.Namespace, data_cfg: dict[str, Any]):
    from tl_clt.activations import load_text_dataset
    from tl_clt.errors import InputError

    column = data_cfg.get("text_column", "text")
    kw = {
        "split": data_cfg.get("split", "train"),
        "streaming": bool(data_cfg.get("streaming", False)),
    }
    if args.text is not None:
        if not Path(args.text).exists():
            raise InputError(f"the text source {args.text} does not exist")
        ds = load_text_dataset(args.text, **kw)
    else:
        ds = load_text_dataset(args.dataset, name=args.dataset_config, **kw)
    if column != "text":
        ds = ds.rename_column(column, "text")
    return ds


def _print_summary(summary: dict[str, Any], directory: Path) -> None:
    keys = ("step", "tokens", "nmse", "l0", "dead_fraction", "spliced/top1", "spliced/kl",
            "spliced/ce_recovered", "spliced_bos/top1", "spliced_bos/kl", "spliced_bos/ce_recovered")  # fmt: skip
    for key in keys:
        if key in summary:
            value = summary[key]
            print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")
    print(f"transcoder saved in {directory} (metrics.jsonl, curves.png, summary.json)")
