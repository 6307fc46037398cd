"""Training benchmark: every architecture × activation on a 4-layer d_model 128 model at a fixed
token budget, and (on a GPU) training throughput of a 12-layer d_model 768 CLT.

CPU table, per architecture × activation: training tokens/s, held-out NMSE (mean over layers),
L0 (all layers), dead fraction, and with the transcoder spliced in on held-out text: top-1
agreement and KL (pure replacement at every position, and with the exact MLP output kept at
BOS). Before it: activation-collection tokens/s against a plain forward pass.

GPU case (runs when CUDA is available, or at a tiny size on CPU with --gpu-smoke): a 12-layer
d_model 768 CLT, 8192 features per layer, TopK k=64, bf16 autocast, random activations;
training tokens/s with dense decoding (one bf16 matmul per source layer, the default on CUDA)
and with sparse decoding (embedding_bag over the active features' decoder rows); --profile
prints where the dense step's time goes.

    python benchmarks/train.py [--tokens 200000] [--only cross_layer] [--gpu-smoke] [--profile]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from typing import NamedTuple

import torch

from tl_clt import CLTConfig, CrossLayerTranscoder
from tl_clt.activations import ActivationSource
from tl_clt.lens import tiny_model
from tl_clt.training import TrainConfig, Trainer, TrainingMetrics, spliced_metrics

ARCHS = ("cross_layer", "per_layer", "shared")
ACTS = ("relu", "jumprelu", "topk", "batchtopk")


def random_texts(n: int, vocab: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(f"w{rng.randrange(vocab)}" for _ in range(rng.randrange(24, 96))) for _ in range(n)
    ]


def throughput(lens, source: ActivationSource, repeats: int = 3) -> tuple[float, float]:
    """Tokens/s of a plain forward pass and of collecting every layer's MLP input and output."""
    from tl_clt.activations.text import pad_sequences

    seqs = list(__import__("itertools").islice(source.sequences(), 64))
    batch = pad_sequences(seqs, source.pad)
    n = int(batch.real.sum())
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        with torch.no_grad():
            t0 = time.perf_counter()
            lens.model(batch.tokens)
            t1 = time.perf_counter()
            source.collect(batch)
            t2 = time.perf_counter()
        best = [min(best[0], t1 - t0), min(best[1], t2 - t1)]
    return n / best[0], n / best[1]


def heldout_nmse(
    clt: CrossLayerTranscoder, x: torch.Tensor, y: torch.Tensor
) -> tuple[float, float]:
    with torch.no_grad():
        recon = clt(x)
        err = (recon - y).pow(2).sum(-1).sum(0)
        var = (y - y.mean(0)).pow(2).sum(-1).sum(0)
        l0 = (clt.encode(x) > 0).float().sum(-1).mean(0).sum()
    return float((err / var).mean()), float(l0)


def cpu_table(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    lens = tiny_model("gpt2", n_layers=4, d_model=128, d_mlp=512, n_heads=4, d_vocab=512, n_ctx=128)
    texts = random_texts(args.texts, 509)
    cache = args.cache or tempfile.mkdtemp(prefix="tl_clt_bench_cache_")
    source = ActivationSource(lens, texts, seq_len=128, buffer_tokens=args.buffer,
                              holdout_sequences=64, cache_dir=cache)  # fmt: skip
    fwd_tps, col_tps = throughput(lens, source)
    print(f"model: {lens.name} ({type(lens.model).__name__}), 4 layers, d_model 128, d_mlp 512")
    print(f"plain forward: {fwd_tps:,.0f} tokens/s; collecting MLP in/out: {col_tps:,.0f} tokens/s "
          f"({col_tps / fwd_tps:.2f}x)")  # fmt: skip
    t0 = time.perf_counter()
    steps = args.tokens // args.batch
    for _ in zip(range(steps), source.batches(args.batch)):  # fills the cache
        pass
    print(f"first pass over {steps * args.batch:,} tokens (collect + cache): "
          f"{steps * args.batch / (time.perf_counter() - t0):,.0f} tokens/s")  # fmt: skip
    heldout = source.heldout()
    hx, hy = source.collect(heldout)
    print(f"\nbudget {steps * args.batch:,} tokens ({steps} steps of {args.batch}), "
          f"{args.features} features/layer, k={args.k}; held-out: {hx.shape[0]} tokens")  # fmt: skip
    header = ("architecture", "activation", "train tok/s", "NMSE", "L0", "dead", "top1", "KL",
              "top1 (BOS exact)", "KL (BOS exact)")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for arch in ARCHS:
        for act in ACTS:
            if args.only and args.only not in (arch, act):
                continue
            row = run_one(lens, source, arch, act, steps, args, heldout, hx, hy)
            print("| " + " | ".join(row) + " |", flush=True)


def run_one(lens, source, arch, act, steps, args, heldout, hx, hy) -> list[str]:
    k = args.k if act in ("topk", "batchtopk") else None
    cfg = CLTConfig(
        4, 128, args.features, architecture=arch, activation=act, k=k, model=lens.identity()
    )
    torch.manual_seed(0)
    clt = CrossLayerTranscoder(cfg)
    tcfg = TrainConfig(steps=steps, batch_size=args.batch, lr=args.lr, log_every=steps)
    if args.sparsity is not None:
        tcfg = tcfg.replace(sparsity_coefficient=args.sparsity)
    trainer = Trainer(clt, tcfg, [TrainingMetrics(steps)])
    t0 = time.perf_counter()
    trainer.fit(source)
    tps = steps * args.batch / (time.perf_counter() - t0)
    dead = trainer.history[-1]["dead_fraction"]
    clt.fold_scales()
    clt.eval()
    nmse, l0 = heldout_nmse(clt, hx, hy)
    pure = spliced_metrics(lens, clt, heldout)
    bos = spliced_metrics(lens, clt, heldout, exact_bos=True)
    return [arch, act, f"{tps:,.0f}", f"{nmse:.3f}", f"{l0:.1f}", f"{dead:.3f}",
            f"{pure.top1:.3f}", f"{pure.kl:.4f}", f"{bos.top1:.3f}", f"{bos.kl:.4f}"]  # fmt: skip


class GpuResult(NamedTuple):
    tokens_per_s: float
    clt: CrossLayerTranscoder


def gpu_case(
    device: str, n_layers: int = 12, d_model: int = 768, n_features: int = 8192, k: int = 64,
    batch_size: int = 4096, steps: int = 20, warmup: int = 3, dense: bool = False,
    profile: bool = False,
) -> GpuResult:  # fmt: skip
    """Training tokens/s of a TopK CLT on random activations, bf16 autocast."""
    cfg = CLTConfig(n_layers, d_model, n_features, activation="topk", k=k)
    clt = CrossLayerTranscoder(cfg, device=device)
    clt.reset_parameters(torch.Generator(device=device).manual_seed(0))
    tcfg = TrainConfig(
        steps=warmup + steps, batch_size=batch_size, autocast="bf16", log_every=warmup + steps
    )
    trainer = Trainer(clt, tcfg)
    trainer.dense_decode = dense
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(batch_size, n_layers, d_model, device=device, generator=g)
    y = torch.randn(batch_size, n_layers, d_model, device=device, generator=g)
    trainer.initialise(x, y)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        trainer.train_step(x, y)
    _sync(device)
    result = GpuResult(steps * batch_size / (time.perf_counter() - t0), clt)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        kinds = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
        with torch_profile(activities=kinds) as prof:
            for _ in range(3):
                trainer.train_step(x, y)
            _sync(device)
        key = "cuda_time_total" if device == "cuda" else "cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=14, max_name_column_width=48))
    return result


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=200_000, help="training tokens per run")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--features", type=int, default=512, help="features per layer")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--buffer", type=int, default=32768)
    parser.add_argument("--only", help="an architecture or activation to run alone")
    parser.add_argument("--cache", help="activation cache directory (default: a new temporary one)")
    parser.add_argument("--sparsity", type=float, help="override the sparsity coefficient λ")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument(
        "--gpu-smoke", action="store_true", help="the GPU case at a tiny size on CPU"
    )
    parser.add_argument(
        "--profile", action="store_true", help="print where the GPU case's step time goes"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.skip_cpu:
        cpu_table(args)
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        print(f"\nGPU ({name}): 12 layers, d_model 768, 8192 features/layer, TopK k=64, bf16")
        for dense, batch in ((True, 4096), (True, 16384), (False, 4096)):
            profile = args.profile and dense and batch == 4096
            tps = gpu_case("cuda", dense=dense, batch_size=batch, profile=profile).tokens_per_s
            kind = "dense decode (default on CUDA)" if dense else "sparse decode (embedding_bag)"
            print(f"  {kind}, batch {batch}: {tps:,.0f} tokens/s", flush=True)
    elif args.gpu_smoke:
        tps = gpu_case(
            "cpu", n_layers=3, d_model=32, n_features=64, k=4, batch_size=64, steps=3,
            profile=args.profile,
        ).tokens_per_s  # fmt: skip
        print(f"\nGPU case code path at a tiny size on CPU: {tps:,.0f} tokens/s")
    else:
        print("\nno CUDA device: the 12-layer d_model 768 GPU case was not run")


if __name__ == "__main__":
    main()
