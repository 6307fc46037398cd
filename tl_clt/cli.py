"""`tl-clt`: the command line. Each subcommand lives in `tl_clt/commands/<name>.py` and defines
`HELP`, `add_arguments(parser)` and `run(args) -> int`.

A failure prints one line to stderr (`tl-clt COMMAND: error: ...`) and exits non-zero: 2 for a
usage error or a tl_clt error (bad input, a missing or damaged file), 1 for a file system error
or an unexpected failure, 130 when interrupted. `tl-clt --debug COMMAND ...` shows the
traceback instead."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable

COMMANDS = ("demo", "train", "trace", "intervene", "label", "feature")


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (with where to find the usage), not the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tl-clt",
        description="Cross-layer transcoders, attribution graphs and interventions for "
        "TransformerLens models (the shipped model by default).",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of a failure, not one line"
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
    with warnings.catch_warnings():
        warnings.showwarning = _plain_warnings(args.command, warnings.showwarning)
        try:
            return int(args._run(args) or 0)
        except BaseException as exc:
            if args.debug or isinstance(exc, SystemExit):
                raise
            code, text = describe_failure(exc)
            print(f"tl-clt {args.command}: error: {text}", file=sys.stderr)
            return code


def describe_failure(exc: BaseException) -> tuple[int, str]:
    """The exit status and the one line a failure is reported with."""
    from tl_clt.errors import TLCLTError

    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(exc, TLCLTError):
        code, text = 2, str(exc)
    elif isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        code, text = 1, f"{where}{exc.strerror or exc}"
    else:
        code = 1
        text = (
            f"unexpected {type(exc).__name__}: {exc} (a bug in tl-clt or an unchecked input; "
            "run with --debug for the traceback)"
        )
    return code, " ".join(text.split())  # one line


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
