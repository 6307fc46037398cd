"""`tl-clt`: the command line. Each subcommand lives in `tl_clt/commands/<name>.py` and defines
`HELP`, `add_arguments(parser)` and `run(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable

COMMANDS = ("demo", "train", "trace", "intervene", "label", "feature")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tl-clt",
        description="Cross-layer transcoders, attribution graphs and interventions for "
        "TransformerLens models (the shipped model by default).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module_name = f"tl_clt.commands.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tl_clt.errors import TLCLTError

    with warnings.catch_warnings():
        warnings.showwarning = _plain_warnings(args.command, warnings.showwarning)
        try:
            return int(args._run(args) or 0)
        except TLCLTError as exc:
            print(f"tl-clt {args.command}: error: {exc}", file=sys.stderr)
            return 2


def _plain_warnings(command: str, show: Callable[..., None]) -> Callable[..., None]:
    """Show tl_clt's own warnings as one plain line; leave other libraries' as they are."""
    from tl_clt.errors import TLCLTWarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, TLCLTWarning):
            print(f"tl-clt {command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


if __name__ == "__main__":
    sys.exit(main())
