"""`tl-clt feature L:F`: print one feature's summary from a feature index (label, score,
density, top and weaker contexts, logit effects); `--html` writes its circuitsvis card."""

from __future__ import annotations

import argparse

HELP = "print a feature's summary (label, contexts, logit effects) from a feature index"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("feature", help="the feature as LAYER:FEATURE, e.g. 2:137")
    parser.add_argument(
        "--index", default="features.db", help="feature index file (default: %(default)s)"
    )
    parser.add_argument(
        "--explainer", default="offline", help="whose label to show (default: %(default)s)"
    )
    parser.add_argument("-n", type=int, default=8, help="contexts to show")
    parser.add_argument(
        "--html", help="also write the feature's circuitsvis card to this HTML file"
    )


def parse_feature(text: str) -> tuple[int, int]:
    from tl_clt.errors import InputError

    layer, sep, feature = text.partition(":")
    if not sep or not layer.strip().isdigit() or not feature.strip().isdigit():
        raise InputError(f"feature {text!r} should be LAYER:FEATURE, e.g. 2:137")
    return int(layer), int(feature)


def run(args: argparse.Namespace) -> int:
    from tl_clt.labels import FeatureIndex
    from tl_clt.labels.text import describe
    from tl_clt.viz.features import feature_card

    layer, feature = parse_feature(args.feature)
    index = FeatureIndex(args.index)
    print(describe(index, layer, feature, args.explainer, args.n))
    if args.html:
        feature_card(index, layer, feature).save(args.html)
        print(f"card: {args.html}")
    return 0
