"""`tl-clt intervene "prompt" --feature L:F --scale -2`: top tokens before and after."""

from __future__ import annotations

import argparse

from tl_clt.commands._common import add_model_arguments, resolve_replacement

HELP = "turn features up, down or off on a prompt and print the top tokens before and after"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt")
    parser.add_argument(
        "--feature", action="append", required=True, metavar="L:F[@POS]",
        help="feature to change (repeatable); POS is a prompt position, default all positions",
    )  # fmt: skip
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--scale", type=float, help="multiply the activation (2 up, -1 invert, 0 off)")
    how.add_argument("--value", type=float, help="clamp the activation to this value")
    parser.add_argument(
        "--mode", choices=["constrained", "unconstrained"], default="constrained",
        help="constrained (default, as tl_clt.intervene): attention patterns, normalisation "
        "scales and error terms held at the clean run's; unconstrained: everything responds "
        "(--generate always continues unconstrained)",
    )  # fmt: skip
    parser.add_argument(
        "--pure", action="store_true", help="pure replacement model (no error terms)"
    )
    parser.add_argument(
        "--generate", type=int, default=0, metavar="N", help="also continue N tokens"
    )
    parser.add_argument("--top", type=int, default=5, help="how many top tokens to show")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from tl_clt.generation import generate
    from tl_clt.interventions import Intervention, intervene

    rm = resolve_replacement(args)
    ivs = [Intervention.parse(f, scale=args.scale, value=args.value) for f in args.feature]
    result = intervene(rm, args.prompt, ivs, mode=args.mode, error=not args.pure)
    print(result)
    changes = result.feature_changes()
    print(f"{len(changes)} feature activations changed; largest:")
    for c in changes[:8]:
        print(f"  {c.layer}:{c.feature}@{c.position}  {c.before:8.3f} -> {c.after:8.3f}")
    if args.generate:
        print(generate(rm, args.prompt, ivs, max_new_tokens=args.generate, error=not args.pure))
    return 0
