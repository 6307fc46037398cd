"""The user-facing path on a CUDA device, checked against the same calls on the CPU: load the
shipped model and transcoder on the device, trace a graph (its edges must equal the CPU graph's),
intervene (same answers), index features over a few hundred texts, and train a small transcoder
for a few steps, all on the device.

    python scripts/gpu_smoke.py [--device cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import tl_clt
import tl_clt.toy as toy


def boundary(rm, run, n) -> tuple[str, float, float]:
    """Where a feature that is active on one device only can flip: (what, margin, scale).
    With thresholds (JumpReLU, BatchTopK): its activation minus θ. TopK: the gap between the
    k-th and (k+1)-th largest pre-activation at its layer and position (a near-tie), or, for
    a feature chosen with a pre-activation near 0, that pre-activation."""
    pre = run.feature_pre[n.layer][0, n.position].detach().float()
    if rm.clt.threshold is not None:
        theta = float(rm.clt.threshold_at(n.layer)[n.feature].detach())
        return f"threshold {theta:.7f}", n.activation - theta, theta
    k = rm.clt.cfg.k
    top = pre.topk(k + 1).values
    tie = float(top[k - 1] - top[k])
    here = float(pre[n.feature])
    if abs(here) < tie:
        return f"pre-activation {here:.2e} (TopK, ReLU at 0)", abs(here), float(top[0])
    return f"k-th/(k+1)-th gap {tie:.2e} (TopK)", tie, float(top[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    dev = p.parse_args().device
    t0 = time.perf_counter()
    cpu, gpu = toy.load_replacement(device="cpu"), toy.load_replacement(device=dev)
    print(f"loaded on {dev}: {gpu.lens.device}, transcoder {gpu.clt.device}")
    prompt = toy.load_items("two_hop")[0].prompt
    g_cpu = tl_clt.attribute(cpu, prompt, progress=False)
    g_dev = tl_clt.attribute(gpu, prompt, progress=False)
    key = lambda n: (n.kind.value, n.layer, n.position, n.feature, n.token_id)  # noqa: E731
    at_cpu = {key(n): i for i, n in enumerate(g_cpu.nodes)}
    at_dev = {key(n): i for i, n in enumerate(g_dev.nodes)}
    flipped = 0  # features one side has and the other lacks must sit at a boundary
    run = cpu.capture(cpu.lens.tokens(prompt))
    for name, only, g, at in (("cpu", at_cpu.keys() - at_dev.keys(), g_cpu, at_cpu),
                              (dev, at_dev.keys() - at_cpu.keys(), g_dev, at_dev)):  # fmt: skip
        for k in sorted(only, key=str):
            n = g.nodes[at[k]]
            assert n.kind.value == "feature", n
            what, margin, scale = boundary(cpu, run, n)
            print(f"  only on {name}: {n.label()} activation {n.activation:.7f}, {what} "
                  f"(margin {margin:.1e})")  # fmt: skip
            assert 0 <= margin <= 1e-5 * max(1.0, scale), "a non-boundary feature differs"
            flipped += 1
    # Edges between shared nodes other than errors (an error node absorbs what a flipped
    # feature would have written) must agree.
    common = [k for k in at_cpu if k in at_dev and k[0] != "error"]
    i = torch.tensor([at_cpu[k] for k in common])
    j = torch.tensor([at_dev[k] for k in common])
    a_cpu, a_dev = g_cpu.adjacency[i][:, i], g_dev.adjacency.cpu()[j][:, j]
    err = float((a_cpu - a_dev).abs().max())
    scale = float(a_cpu.abs().max())
    print(f"graph of {prompt!r}: {len(g_cpu.nodes)} nodes on cpu, {len(g_dev.nodes)} on {dev}, "
          f"{flipped} features at their threshold on one side only; max |edge difference| "
          f"between shared non-error nodes {err:.2e} (largest edge {scale:.2f}); pruned "
          f"replacement score cpu {g_cpu.prune().info.replacement_score:.3f}, "
          f"{dev} {g_dev.prune().info.replacement_score:.3f}")  # fmt: skip
    assert err <= 1e-3 * scale, "the device graph's edges differ from the CPU graph's"
    node = max((n for n in g_dev.nodes if n.kind.value == "feature"), key=lambda n: n.activation)
    iv = [
        tl_clt.Intervention(
            layer=node.layer, feature=node.feature, position=node.position, scale=-2.0
        )
    ]
    r_cpu, r_dev = tl_clt.intervene(cpu, prompt, iv), tl_clt.intervene(gpu, prompt, iv)
    print(
        f"intervention {iv[0]}: cpu {r_cpu.answer_before} -> {r_cpu.answer_after}, "
        f"{dev} {r_dev.answer_before} -> {r_dev.answer_after}"
    )
    assert (r_cpu.answer_before, r_cpu.answer_after) == (
        r_dev.answer_before,
        r_dev.answer_after,
    )
    texts = toy.load_corpus().train_texts()[:400]
    with tempfile.TemporaryDirectory() as tmp:
        index = tl_clt.build_feature_index(gpu, texts, Path(tmp) / "f.db",
                                           progress=False)  # fmt: skip
        print(f"feature index on {dev}: {index.n_live()} live features over {len(texts)} texts")
        result = tl_clt.train(
            gpu.lens, texts, {"n_features": 256, "activation": "topk", "k": 8},
            {"steps": 30, "batch_size": 256, "log_every": 10, "eval_every": 30},
            out_dir=Path(tmp) / "clt", seq_len=32, holdout_sequences=16, progress=False,
        )  # fmt: skip
        last = {k: v for k, v in result.history[-1].items() if not isinstance(v, list)}
        print(f"trained a 256-feature TopK transcoder on {dev} for 30 steps "
              f"(weights on {result.clt.device}): {last}")  # fmt: skip
    print(f"gpu smoke passed in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
