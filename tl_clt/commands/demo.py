"""`tl-clt demo`: the main job on the shipped model: its held-out accuracy per task family, the
same through the pure replacement model (transcoder only, no error terms), the transcoder's
NMSE, L0 and dead fraction. (`make demo` then runs a short version of each case-study demo in
demos/.)"""

from __future__ import annotations

import argparse
import time

HELP = "run the main demo on the shipped model and its transcoder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="torch device (default: CPU)")


def run(args: argparse.Namespace) -> int:
    from tl_clt import toy
    from tl_clt.commands._common import check_device
    from tl_clt.toy import transcoder as tc

    t0 = time.perf_counter()
    rm = toy.load_replacement(device=check_device(args.device))
    corpus = toy.load_corpus()
    print(f"shipped model: {rm.lens.name} ({type(rm.model).__name__}), "
          f"{rm.lens.n_layers} layers, d_model {rm.lens.d_model}")  # fmt: skip
    cfg = rm.clt.cfg
    k = f" (k = {cfg.k})" if cfg.k else ""
    print(f"shipped transcoder: {cfg.architecture}, {cfg.activation}{k}, "
          f"{cfg.n_features} features per layer")  # fmt: skip
    quality = tc.measure_clt(rm.lens, rm.clt, corpus)
    rows = tc.compare(*tc.replacement_accuracy(rm, corpus.held_out()))
    print(tc.format_quality(quality, rows))
    print(f"({time.perf_counter() - t0:.0f}s)")
    return 0
