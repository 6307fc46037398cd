"""`tl-clt train`: train a transcoder on a model's MLPs over some text and write the transcoder
directory with its metrics (metrics.jsonl, curves.png, summary.json, checkpoints/).

The config file is JSON with up to three sections, each optional:
`{"clt": {CLTConfig fields}, "train": {TrainConfig fields}, "data": {DataConfig fields}}`.
Command-line flags override the file; they are made from the dataclasses' fields (types,
`Literal` choices and help text included), the loss settings of the transcoder's activation
under `--loss-*` (`--loss-aux-coefficient 0.25`).
Under `torchrun --nproc_per_node P -m tl_clt.cli train ...` it trains data-parallel.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

from tl_clt.commands._common import SHIPPED, check_device, resolve_model
from tl_clt.config import CLTConfig, field_docs
from tl_clt.training.config import DataConfig, TrainConfig
from tl_clt.training.losses import LOSSES

__all__ = ["add_arguments", "resolve_model", "run"]

HELP = "train a cross-layer transcoder on a model's MLPs"
#: The transcoder fields settable from the command line (the rest follow from the model).
CLT_FLAGS = ("architecture", "activation", "k", "n_features", "skip")
#: Prefix of the flags of the activations' loss settings (`--loss-aux-coefficient`).
LOSS_PREFIX = "loss_"
MODEL_HELP_TRAIN = (
    "a local Hugging Face checkpoint directory or a TransformerLens model name (from the hub); "
    f"omitted or '{SHIPPED}': the shipped model"
)


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
    parser.add_argument("--cache", help="directory for the activation cache (reused by later runs)")
    parser.add_argument(
        "--device", help="device for the model and transcoder (default: the model's)"
    )
    parser.add_argument("--wandb", metavar="PROJECT", help="log to this Weights & Biases project")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume the checkpoints in --out although the settings or data differ from theirs",
    )
    add_field_arguments(parser.add_argument_group("transcoder (CLTConfig)"), CLTConfig, CLT_FLAGS)
    add_field_arguments(parser.add_argument_group("training (TrainConfig)"), TrainConfig)
    group = parser.add_argument_group("loss of the transcoder's activation (TrainConfig.loss)")
    seen: set[str] = set()
    for loss in LOSSES.values():
        for name in [f.name for f in dataclasses.fields(loss) if f.name not in seen]:
            seen.add(name)
            owners = [c for c in LOSSES.values() if name in {f.name for f in dataclasses.fields(c)}]
            label = ", ".join(c.__name__ for c in owners) + ": "
            add_field_arguments(group, loss, [name], prefix=LOSS_PREFIX, label=label)
    add_field_arguments(parser.add_argument_group("data (DataConfig)"), DataConfig)


def add_field_arguments(
    parser: Any,
    cls: type,
    names: typing.Iterable[str] | None = None,
    prefix: str = "",
    label: str = "",
) -> list[str]:
    """A `--flag` per scalar field of the dataclass `cls` (all, or those in `names`; `prefix`
    before each name, `label` before each help): its type and choices from the field's
    annotation (`Literal` values become choices), its help from the class docstring, default
    None (unset: the config file's value or the field's default). Booleans get `--flag` /
    `--no-flag`. Returns the destinations added."""
    docs = field_docs(cls)
    hints = _field_types(cls)
    added = []
    for f in dataclasses.fields(cls):
        if names is not None and f.name not in names:
            continue
        kind, choices = _scalar(hints[f.name])
        if kind is None:
            continue  # tuples and nested configs: the config file only
        flag = "--" + (prefix + f.name).replace("_", "-")
        default = "" if f.default is dataclasses.MISSING else f" (default: {f.default})"
        kw: dict[str, Any] = {"dest": prefix + f.name, "default": None}
        kw["help"] = f"{label}{docs.get(f.name, '')}{default}".replace("%", "%%")
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"], kw["choices"] = kind, choices
        parser.add_argument(flag, **kw)
        added.append(prefix + f.name)
    return added


def _field_types(cls: type) -> dict[str, Any]:
    namespace = vars(sys.modules[cls.__module__])
    return {
        f.name: eval(f.type, namespace) if isinstance(f.type, str) else f.type  # noqa: S307
        for f in dataclasses.fields(cls)
    }


def _scalar(hint: Any) -> tuple[type | None, list[Any] | None]:
    """(type, choices) of an int / float / str / bool / Literal annotation, optionally
    `| None`; (None, None) for anything else."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            return None, None
        hint = args[0]
    if typing.get_origin(hint) is Literal:
        choices = list(typing.get_args(hint))
        return type(choices[0]), choices
    if hint in (bool, int, float, str):
        return hint, None
    return None, None


def run(args: argparse.Namespace) -> int:
    from tl_clt.training import train

    clt_cfg, train_cfg, data = configs_from_args(args)
    activation = clt_cfg.get("activation", CLTConfig.activation)
    TrainConfig.from_dict(dict(train_cfg), activation=activation)  # bad values fail before loading
    lens = resolve_model(args.model, check_device(args.device))
    texts = _load_data(args, data)
    result = train(
        lens, texts, clt_cfg, train_cfg, out_dir=args.out, cache_dir=args.cache,
        seq_len=data.seq_len, buffer_tokens=data.buffer_tokens,
        holdout_sequences=data.holdout_sequences,
        progress=not args.no_progress, wandb_project=args.wandb,
        allow_config_change=args.allow_config_change,
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


def configs_from_args(
    args: argparse.Namespace,
) -> tuple[dict[str, Any], dict[str, Any], DataConfig]:
    """The 'clt' and 'train' sections (config file, then flags) and the data settings."""
    config = _read_config(args.config)
    clt_cfg, train_cfg, data_cfg = (dict(config.get(k) or {}) for k in ("clt", "train", "data"))
    _override(clt_cfg, **_flags(args, CLTConfig, CLT_FLAGS))
    _override(train_cfg, **_flags(args, TrainConfig))
    _override(data_cfg, **_flags(args, DataConfig))
    loss_flags = {
        k[len(LOSS_PREFIX) :]: v
        for k, v in vars(args).items()
        if k.startswith(LOSS_PREFIX) and v is not None
    }
    if loss_flags:  # the loss of the transcoder's activation
        activation = clt_cfg.get("activation", CLTConfig.activation)
        loss = dict(train_cfg.get("loss") or {"activation": activation})
        train_cfg["loss"] = {**loss, **loss_flags}
    return clt_cfg, train_cfg, DataConfig.from_dict(data_cfg)


def _flags(
    args: argparse.Namespace, cls: type, names: typing.Iterable[str] | None = None
) -> dict[str, Any]:
    fields = [f.name for f in dataclasses.fields(cls) if names is None or f.name in names]
    return {n: getattr(args, n) for n in fields if getattr(args, n, None) is not None}


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
    known = [f.name for f in dataclasses.fields(DataConfig)]
    bad = sorted(set(config.get("data") or {}) - set(known))
    if bad:
        raise ConfigError(f"unknown 'data' setting(s) {bad} in {path}; known: {known}")
    return config


def _override(section: dict[str, Any], **values: Any) -> None:
    section.update({k: v for k, v in values.items() if v is not None})


def _load_data(args: argparse.Namespace, data: DataConfig):
    from tl_clt.activations import load_text_dataset
    from tl_clt.errors import InputError

    kw = {"split": data.split, "streaming": data.streaming}
    if args.text is not None:
        if not Path(args.text).exists():
            raise InputError(f"the text source {args.text} does not exist")
        ds = load_text_dataset(args.text, **kw)
    else:
        ds = load_text_dataset(args.dataset, name=args.dataset_config, **kw)
    if data.text_column != "text":
        ds = ds.rename_column(data.text_column, "text")
    return ds


def _print_summary(summary: dict[str, Any], directory: Path) -> None:
    keys = ("step", "tokens", "nmse", "l0", "dead_fraction", "spliced/top1", "spliced/kl",
            "spliced/ce_recovered", "spliced_bos/top1", "spliced_bos/kl", "spliced_bos/ce_recovered")  # fmt: skip
    for key in keys:
        if key in summary:
            value = summary[key]
            print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")
    print(f"transcoder saved in {directory} (metrics.jsonl, curves.png, summary.json)")
