"""`tl-clt label`: build a feature index (top contexts, samples, density, histograms, logit
effects) for a CLT over a corpus, label every live feature and score the labels."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tl_clt.commands._common import (
    add_model_arguments,
    read_json,
    read_text,
    resolve_replacement,
    shipped,
    uses_shipped,
)

HELP = "index a CLT's features over a corpus, label them and score the labels"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, device=False)
    data = parser.add_mutually_exclusive_group()
    data.add_argument(
        "--texts", help="text file, one text per line (default: the shipped model's corpus)"
    )
    data.add_argument(
        "--tokens", help="safetensors file holding a 'tokens' tensor [n_seq, seq_len]"
    )
    parser.add_argument(
        "--out", default="features.db", help="SQLite file to write (default: %(default)s)"
    )
    parser.add_argument("--k", type=int, default=20, help="top contexts kept per feature")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--features-per-pass",
        type=int,
        help="index features in slices of this size (bounds memory)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an index made with other settings"
    )
    parser.add_argument("--no-labels", action="store_true", help="build the index only")
    parser.add_argument(
        "--explainer", help="also label with this explainer, 'package.module:callable'"
    )
    parser.add_argument(
        "--classes",
        help="JSON file {class name: [tokens]} of token classes for labels (default: the "
        "shipped model's classes when it is the model, else none)",
    )
    parser.add_argument("--html", help="also write the feature browser to this HTML file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _inputs(args):
    import torch

    from tl_clt.errors import InputError

    rm = resolve_replacement(args)
    if args.texts:
        source = [line for line in read_text(args.texts, "--texts").splitlines() if line.strip()]
    elif args.tokens:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not Path(args.tokens).is_file():
            raise InputError(f"--tokens {args.tokens}: no such file")
        try:
            tensors = load_file(args.tokens)
        except (SafetensorError, OSError) as exc:
            raise InputError(f"--tokens {args.tokens} is not a safetensors file: {exc}") from None
        if "tokens" not in tensors:
            raise InputError(f"{args.tokens} holds no 'tokens' tensor (it has {sorted(tensors)})")
        source = tensors["tokens"].to(torch.long)
    else:
        source = shipped().corpus_texts()
    if args.classes:
        classes = read_json(args.classes, "--classes")
        if not isinstance(classes, dict):
            raise InputError(f"--classes {args.classes} must hold a JSON object {{name: [tokens]}}")
    else:
        classes = shipped().token_classes() if uses_shipped(args) else {}
    return rm, source, classes


def run(args: argparse.Namespace) -> int:
    from tl_clt.labels import (
        IndexConfig,
        build_feature_index,
        label_features,
        load_explainer,
        score_labels,
    )
    from tl_clt.labels.scoring import score_summary
    from tl_clt.viz.features import feature_browser

    rm, source, classes = _inputs(args)
    start = time.perf_counter()
    index = build_feature_index(
        rm, source, args.out, IndexConfig(k=args.k), batch_size=args.batch_size,
        features_per_pass=args.features_per_pass, overwrite=args.overwrite, label=not args.no_labels,
        token_classes=classes, progress=not args.quiet,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    size = Path(args.out).stat().st_size
    print(f"index: {args.out} ({size / 1e6:.1f} MB), {index.n_tokens} tokens, "
          f"{index.n_live()} live of {index.n_layers * index.n_features} features, {elapsed:.1f} s")  # fmt: skip
    summaries = []
    if not args.no_labels:
        summaries.append(score_summary(index))
    if args.explainer:
        explainer = load_explainer(args.explainer)
        label_features(index, explainer, token_classes=classes, progress=not args.quiet)
        from tl_clt.labels.explainers import explainer_name

        summaries.append(score_labels(index, explainer_name(explainer), progress=not args.quiet))
    for s in summaries:
        print(f"labels ({s.explainer}): {s.n_labelled} labelled, {s.n_scored} scored, mean detection "
              f"score {s.mean_score:.3f} (chance 0.5), above chance: {s.n_above_chance} = "
              f"{100 * s.fraction_above_chance:.1f}% of live features")  # fmt: skip
    if args.html:
        feature_browser(index).save(args.html)
        print(f"feature browser: {args.html}")
    return 0
