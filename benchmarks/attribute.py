"""Attribution-graph benchmark: wall time and peak memory of `tl_clt.attribute` at prompt lengths
8, 16, 32 and 64, with and without a feature-node budget, the replacement and completeness
scores after default pruning, and where the time goes.

Model: the shipped toy model and its CLT when `tl_clt.toy` provides them; otherwise a random
GPT-2-style model (4 layers, d_model 128, d_mlp 512, vocab 700) with a random cross-layer CLT of
1,024 features per layer whose encoder biases give ~25 active features per token and layer.

A second part builds a random model of Gemma-2-2B's shape (26 layers, d_model 2304, d_mlp 9216,
vocab 256,000, 8 heads of 256) directly on the GPU in bf16, with a random CLT of 4,096 features
per layer (~64 active per token and layer), and times a 64-token graph with an 8,192-feature-node
budget. It runs when CUDA is available; `--gemma tiny` runs the same code path at a tiny size
(on the CPU here) to check it.

    python benchmarks/attribute.py [--threads 1] [--budget 512] [--gemma auto|tiny|skip]
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import os
import pstats
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from _measure import best_time, peak_mb, track_heap

from tl_clt import CLTConfig, CrossLayerTranscoder, NodeKind, ReplacementModel, attribute
from tl_clt.errors import TLCLTError
from tl_clt.lens import from_hf, tiny_model
from tl_clt.tokenization import SPECIALS, word_level_tokenizer

LENGTHS = (8, 16, 32, 64)
NODE_THRESHOLDS = (0.8, 0.85, 0.9, 0.95)
PHASES = {  # function name in the profile -> phase
    "capture": "1 capture (spliced forward)",
    "linearise": "3 linearised forward",
    "backward": "4 backward passes",
    "edges": "4 edge products (decoders . grads)",
    "partial_influence": "5 influence ranking (budget)",
    "_adjacency": "6 assemble adjacency",
    "_graph": "6 assemble node table",
    "check_graph": "7 check (benchmarks/attribute_check.py)",
}


# ---------------------------------------------------------------------- measuring
def phase_times(fn: Callable[[], Any], repeat: int = 2) -> dict[str, float]:
    """Cumulative seconds per phase (cProfile), from the fastest of `repeat` runs."""
    best: dict[str, float] = {"total": float("inf")}
    for _ in range(repeat):
        prof = cProfile.Profile()
        prof.runcall(fn)
        stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
        out = {phase: 0.0 for phase in PHASES.values()}
        out["total"] = 0.0
        for (_, _, name), (_, _, _, cum, _) in stats.items():
            if name in PHASES:
                out[PHASES[name]] += cum
            if name == "attribute":
                out["total"] = max(out["total"], cum)
        if out["total"] < best["total"]:
            best = out
    return best


# ---------------------------------------------------------------------- models
def calibrate_encoder(rm: ReplacementModel, tokens: torch.Tensor, active: int) -> None:
    """Set each layer's encoder bias so that on `tokens` about `active` features per token
    are positive (the bias is minus the mean of each token's active-th largest pre-activation)."""
    lens, clt = rm.lens, rm.clt
    names = [lens.mlp_in(layer, clt.cfg.input_hook) for layer in range(rm.n_layers)]
    with torch.no_grad():
        _, cache = lens.cache(tokens, names)
        for layer, name in enumerate(names):
            h = cache[name][0, 1:].to(clt.dtype) @ clt.W_enc_at(layer)
            kth = h.float().topk(active, dim=-1).values[:, -1]
            clt.b_enc[layer] = -kth.mean().to(clt.dtype)


def random_clt(lens: Any, n_features: int, dtype: str = "float32") -> CrossLayerTranscoder:
    cfg = CLTConfig(n_layers=lens.n_layers, d_model=lens.d_model, n_features=n_features,
                    dtype=dtype, model=lens.identity())  # fmt: skip
    clt = CrossLayerTranscoder(cfg, device=lens.device)
    with torch.no_grad():
        clt.W_enc.normal_(0.0, lens.d_model**-0.5)
    return clt.eval()


def toy_prompts(toy: Any, lens: Any) -> list[torch.Tensor]:
    """The toy tasks' prompts run together, cut at each benchmark length the context allows."""
    ids = lens.to_tokens(" ".join(item.prompt for item in toy.load_items()))[0]
    return [ids[:n] for n in LENGTHS if n <= lens.n_ctx]


def benchmark_pair(toy_dir: str | None = None) -> tuple[str, ReplacementModel, list[torch.Tensor]]:
    """(description, replacement model, prompts of each length); `toy_dir` names a variant
    trained by `python -m tl_clt.toy.train --out DIR` instead of the shipped model and CLT."""
    if toy_dir:  # asked for: fail loudly rather than fall back to a random model
        toy = importlib.import_module("tl_clt.toy")
        lens = toy.load_lens(directory=os.path.join(toy_dir, "model"))
        clt = CrossLayerTranscoder.from_pretrained(os.path.join(toy_dir, "clt"))
        what = f"toy model variant in {toy_dir} ({lens.n_layers} layers) + its CLT"
        return what, ReplacementModel(lens, clt), toy_prompts(toy, lens)
    try:
        toy = importlib.import_module("tl_clt.toy")
        lens, clt = toy.load_lens(), toy.load_clt()
        return "shipped toy model + CLT", ReplacementModel(lens, clt), toy_prompts(toy, lens)
    except (ImportError, AttributeError, TLCLTError) as exc:
        print(f"# no shipped model ({type(exc).__name__}: {exc}); using a random one")
    lens = tiny_model("gpt2", n_layers=4, d_model=128, d_mlp=512, d_vocab=700, n_ctx=64)
    rm = ReplacementModel(lens, random_clt(lens, 1024))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(len(SPECIALS), 700, (max(LENGTHS),), generator=gen)
    ids[0] = lens.tokenizer.bos_token_id
    calibrate_encoder(rm, ids[None], active=25)
    return (
        "random 4-layer d128 model + random CLT (1024 features/layer)",
        rm,
        [ids[:n] for n in LENGTHS],
    )


def gemma_shape(
    tiny: bool, device: torch.device
) -> tuple[str, ReplacementModel, torch.Tensor, int]:
    """A random Llama-family model of Gemma-2-2B's shape (tied embeddings), built on `device` in
    bf16 (no host copy), a random bf16 CLT, a 64-token prompt; with `tiny`, the same at toy size.
    Returns (description, replacement model, prompt, feature-node budget)."""
    import transformers as tf

    shape = dict(n_layers=26, d_model=2304, d_mlp=9216, vocab=256_000, heads=8, d_head=256,
                 features=4096, active=64, pos=64, budget=8192)  # fmt: skip
    if tiny:
        shape = dict(n_layers=3, d_model=72, d_mlp=288, vocab=2000, heads=2, d_head=48,
                     features=256, active=8, pos=16, budget=96)  # fmt: skip
    config = tf.LlamaConfig(
        num_hidden_layers=shape["n_layers"], hidden_size=shape["d_model"],
        intermediate_size=shape["d_mlp"], vocab_size=shape["vocab"],
        num_attention_heads=shape["heads"], num_key_value_heads=shape["heads"],
        head_dim=shape["d_head"], max_position_embeddings=128, tie_word_embeddings=True,
        architectures=["LlamaForCausalLM"],
    )  # fmt: skip
    with torch.device(device):
        hf = tf.AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16).eval()
    words = [f"w{i}" for i in range(shape["vocab"] - len(SPECIALS))]
    tok = word_level_tokenizer(words, tempfile.mkdtemp(prefix="tl_clt_gemma_tok_"))
    with torch.device(device):
        lens = from_hf(hf, tok, name="random-gemma-2-2b-shape")
    rm = ReplacementModel(lens, random_clt(lens, shape["features"], dtype="bfloat16"))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(len(SPECIALS), shape["vocab"], (1, shape["pos"]), generator=gen)
    ids[0, 0] = tok.bos_token_id
    ids = ids.to(lens.device)
    calibrate_encoder(rm, ids, shape["active"])
    what = "tiny stand-in" if tiny else "Gemma-2-2B shape"
    return f"{what}: {shape}", rm, ids, shape["budget"]


# ---------------------------------------------------------------------- reports
def run_lengths(rm: ReplacementModel, prompts: list[torch.Tensor], budget: int) -> None:
    """Time every (length, budget) case (best of 2), then measure their peak memory."""
    device = rm.lens.device
    attribute(rm, prompts[0][None], progress=False)  # warm up
    cases = [(ids, b) for ids in prompts for b in (None, budget)]
    rows = []
    for ids, b in cases:
        graph, seconds = best_time(
            lambda ids=ids, b=b: attribute(rm, ids[None], max_feature_nodes=b, progress=False),
            device,
        )
        rows.append((graph, seconds))
    if device.type == "cpu":
        track_heap()
    peaks = [peak_mb(lambda ids=ids, b=b: attribute(rm, ids[None], max_feature_nodes=b, progress=False), device)
             for ids, b in cases]  # fmt: skip
    print("(scores after default pruning: the pruned graph as it stands, then strict, with what "
          "pruning dropped counted as error)")  # fmt: skip
    print(f"{'tokens':>6} {'budget':>7} {'active':>7} {'nodes':>6} {'seconds':>8} {'peak MB':>8} "
          f"{'replacement':>11} {'completeness':>12} {'strict':>7} {'strict':>7}")  # fmt: skip
    for (ids, b), (graph, seconds), peak in zip(cases, rows, peaks):
        info = graph.prune().info
        score = (f"{info.replacement_score:>11.3f} {info.completeness_score:>12.3f} "
                 f"{info.replacement_score_strict:>7.3f} {info.completeness_score_strict:>7.3f}")  # fmt: skip
        print(f"{len(ids):>6} {b or 'all':>7} {graph.info.n_active_features:>7} "
              f"{graph.n_nodes:>6} {seconds:>8.3f} {peak:>8.1f} {score}")  # fmt: skip


def run_case_studies(rm: ReplacementModel) -> None:
    """Scores after default pruning on the shipped model's case-study prompts (when shipped)."""
    try:
        toy = importlib.import_module("tl_clt.toy")
        prompts = getattr(toy, "case_study_prompts", None)
        prompts = (
            prompts()
            if prompts
            else [item.prompt for family in toy.FAMILIES for item in toy.load_items(family)[:2]]
        )
    except (ImportError, AttributeError, TLCLTError):
        return
    print("replacement / completeness of the whole graph; after default pruning, of the pruned "
          "graph as it stands; strict: the pruned graph measured in the whole one, with what "
          "pruning dropped counted as error; strict, ranking only features and errors "
          "(rank_always_kept=False)")  # fmt: skip
    print("(tokens: the tokens' share of all node influence; depth: all node influence over the "
          "logits' weight; cut: the influence of the features default pruning drops over the "
          "logits' weight, about (1 - 0.8) x depth, which the strict replacement score loses)")  # fmt: skip
    print(f"{'whole':>13} {'pruned':>13} {'strict':>13} {'strict, rank':>13} {'tokens':>7} "
          f"{'depth':>6} {'cut':>5}  prompt")  # fmt: skip
    graphs = []
    for prompt in prompts:
        graph = attribute(rm, prompt, progress=False)
        graphs.append(graph)
        whole, pruned = graph.scores(), graph.prune()
        info, alt = pruned.info, graph.prune(rank_always_kept=False).info
        kept = graph.kept_influence(pruned)
        depth = float(graph.influence().influence.sum() / graph.logit_weights.sum())
        print(f"{whole.replacement:>6.3f} {whole.completeness:>6.3f} "
              f"{info.replacement_score:>6.3f} {info.completeness_score:>6.3f} "
              f"{info.replacement_score_strict:>6.3f} {info.completeness_score_strict:>6.3f} "
              f"{alt.replacement_score_strict:>6.3f} {alt.completeness_score_strict:>6.3f} "
              f"{kept.token_share:>7.2f} {depth:>6.2f} {kept.dropped:>5.2f}  {prompt!r}")  # fmt: skip
    print("other node thresholds (edge threshold 0.98), range over these prompts:")
    for threshold in NODE_THRESHOLDS:
        pruned_graphs = [graph.prune(threshold) for graph in graphs]
        infos = [p.info for p in pruned_graphs]
        n_kept = [int(p.mask(NodeKind.FEATURE).sum()) for p in pruned_graphs]
        ranges = {
            name: f"{min(getattr(i, key) for i in infos):.2f}-{max(getattr(i, key) for i in infos):.2f}"
            for name, key in [("replacement", "replacement_score"),
                              ("completeness", "completeness_score"),
                              ("strict replacement", "replacement_score_strict"),
                              ("strict completeness", "completeness_score_strict")]
        }  # fmt: skip
        print(f"  {threshold:.2f}: " + ", ".join(f"{k} {v}" for k, v in ranges.items())
              + f", features kept {min(n_kept)}-{max(n_kept)}")  # fmt: skip


def run_phases(rm: ReplacementModel, ids: torch.Tensor, **kw: Any) -> None:
    times = phase_times(
        lambda: attribute(rm, ids[None] if ids.dim() == 1 else ids, progress=False, **kw)
    )
    note = "; CUDA is asynchronous: phases are approximate" if rm.lens.device.type == "cuda" else ""
    print(f"where the time goes ({ids.shape[-1]} tokens, {kw or 'all features'}; cProfile{note}):")
    for phase, seconds in times.items():
        print(f"  {phase:<40} {seconds:>7.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--toy-dir", default=None,
                        help="a toy-model variant trained by `python -m tl_clt.toy.train --out "
                             "DIR` (DIR/model, DIR/clt) instead of the shipped one")  # fmt: skip
    parser.add_argument("--budget", type=int, default=512, help="feature-node budget to compare")
    parser.add_argument("--gemma", choices=["auto", "tiny", "skip", "only"], default="auto",
                        help="the Gemma-2-2B-shape case: when CUDA is there (auto), at toy size on "
                             "CPU (tiny), never (skip), or alone on CUDA (only)")  # fmt: skip
    parser.add_argument("--gemma-batch", type=int, default=128,
                        help="targets per backward pass in the Gemma-shape case (memory)")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.gemma != "only":
        what, rm, prompts = benchmark_pair(args.toy_dir)
        device = rm.lens.device
        print(
            f"# {what}; {type(rm.lens.model).__name__}; device {device}; {args.threads} thread(s)"
        )
        run_lengths(rm, prompts, args.budget)
        run_case_studies(rm)
        run_phases(rm, prompts[min(2, len(prompts) - 1)])
        run_phases(rm, prompts[min(2, len(prompts) - 1)], max_feature_nodes=args.budget)
    if args.gemma == "skip" or (args.gemma in ("auto", "only") and not torch.cuda.is_available()):
        print("# Gemma-2-2B-shape case skipped (no CUDA; --gemma tiny checks its code path)")
        return
    gpu = (
        torch.device("cuda")
        if torch.cuda.is_available() and args.gemma in ("auto", "only")
        else torch.device("cpu")
    )
    what, rm, ids, budget = gemma_shape(args.gemma == "tiny", gpu)
    print(f"# {what}; {type(rm.lens.model).__name__}; device {gpu}")
    kw = {"max_feature_nodes": budget, "batch_size": args.gemma_batch, "progress": False}
    attribute(rm, ids[:, :8], **{**kw, "max_feature_nodes": 64})  # warm up
    run = lambda: attribute(rm, ids, **kw)  # noqa: E731
    graph, seconds = best_time(run, gpu)
    peak = peak_mb(run, gpu)
    pruned = graph.prune()
    print(
        f"{ids.shape[1]} tokens, budget {budget}, batch {args.gemma_batch}: "
        f"{graph.info.n_active_features} active features, "
        f"{graph.n_nodes} nodes, {seconds:.3f} s, peak {peak:.0f} MB; after default pruning: "
        f"replacement {pruned.info.replacement_score:.3f}, completeness "
        f"{pruned.info.completeness_score:.3f} (strict {pruned.info.replacement_score_strict:.3f}, "
        f"{pruned.info.completeness_score_strict:.3f})"
    )
    run_phases(rm, ids, max_feature_nodes=budget, batch_size=args.gemma_batch)
    if gpu.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            run()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=16,
                                        max_name_column_width=48))  # fmt: skip


if __name__ == "__main__":
    main()
