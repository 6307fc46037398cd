"""Subcommands of `tl-clt` (see tl_clt/cli.py)."""
