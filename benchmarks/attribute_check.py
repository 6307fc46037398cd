"""What `attribute`'s per-call check costs (`check=True`, `tl_clt._check`) on the shipped toy
model and CLT at 32 tokens (its context), with every feature and with a feature-node budget.
The 32-token graph's check should cost under 5% of the graph.

Each run times one `attribute` call and, inside it, the check (the perturbed forward pass of
the frozen model and the comparisons), so both parts of a ratio are measured under the same
load; the figures are the median and the lowest of the per-run ratios, and the best times.

    python benchmarks/attribute_check.py [--threads 1] [--repeat 9] [--budget 512]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from typing import Any

import torch

from tl_clt import ReplacementModel, _check, attribute


def timed_runs(rm: ReplacementModel, ids: torch.Tensor, repeat: int, **kw: Any):
    """[(seconds of the whole call, seconds of its check)] for `repeat` calls, and the graph."""
    attribution = importlib.import_module("tl_clt.attribution")
    original, inner = _check.check_graph, []

    def check_graph(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = original(*args, **kwargs)
        inner.append(time.perf_counter() - start)
        return out

    attribution.check_graph = check_graph
    runs, graph = [], None
    try:
        for _ in range(repeat):
            start = time.perf_counter()
            graph = attribute(rm, ids, progress=False, **kw)
            runs.append((time.perf_counter() - start, inner[-1]))
    finally:
        attribution.check_graph = original
    return runs, graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeat", type=int, default=9, help="calls per figure")
    parser.add_argument("--budget", type=int, default=512, help="feature-node budget")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    toy = importlib.import_module("tl_clt.toy")
    lens, clt = toy.load_lens(), toy.load_clt()
    rm = ReplacementModel(lens, clt)
    ids = lens.to_tokens(" ".join(item.prompt for item in toy.load_items()))[:, : lens.n_ctx]
    print(f"# shipped toy model + CLT; {type(lens.model).__name__}; {args.threads} thread(s); "
          f"{ids.shape[1]} tokens; {args.repeat} calls each")  # fmt: skip
    for kw in ({}, {"max_feature_nodes": args.budget}):
        attribute(rm, ids, progress=False, **kw)  # warm up
        runs, graph = timed_runs(rm, ids, args.repeat, **kw)
        ratios = [check / (total - check) for total, check in runs]
        graph_s = min(total - check for total, check in runs)
        check_s = min(check for _, check in runs)
        c = graph.info.checks
        print(f"{kw or 'every feature'} ({graph.n_nodes} nodes): graph {graph_s:.3f} s, check "
              f"{check_s * 1000:.1f} ms (best); the check adds {100 * statistics.median(ratios):.1f}% "
              f"(median; lowest {100 * min(ratios):.1f}%); logit error {c['logit_error']:.1e}, "
              f"linearity error {c['linearity_error']:.1e}, tolerance {c['tolerance']:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
