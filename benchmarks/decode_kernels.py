"""Decode kernels for TopK training, compared on one source layer: forward + backward of the
reconstruction from k active features per token, through a decoder that writes to T layers.

Each variant computes out[n, T*d] = sum_j val[n, j] * W[idx[n, j]] and the gradients with
respect to W and val; the script checks each against the dense variant, then times it.

    python benchmarks/decode_kernels.py [--tiny]     # the full size needs a GPU
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F


def dense(idx, val, w):
    acts = torch.zeros(idx.shape[0], w.shape[0], dtype=w.dtype, device=w.device)
    return acts.scatter(-1, idx, val.to(w.dtype)) @ w


def bag_param_dtype(idx, val, w):
    return F.embedding_bag(idx, w, per_sample_weights=val.to(w.dtype), mode="sum")


def bag_bf16(idx, val, w):
    wb = w.to(torch.bfloat16)
    return F.embedding_bag(idx, wb, per_sample_weights=val.to(wb.dtype), mode="sum")


def csr(idx, val, w):
    n, k = idx.shape
    warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
    crow = torch.arange(0, n * k + 1, k, device=idx.device)
    idx, order = idx.sort(dim=-1)  # CSR wants each row's columns in order
    val = val.gather(-1, order)
    a = torch.sparse_csr_tensor(crow, idx.reshape(-1), val.reshape(-1).to(w.dtype),
                                size=(n, w.shape[0]), check_invariants=False)  # fmt: skip
    return a @ w


VARIANTS: dict[str, Callable] = {
    "dense bf16 matmul": lambda i, v, w: dense(i, v, w.to(torch.bfloat16)),
    "embedding_bag, fp32 weights": bag_param_dtype,
    "embedding_bag, bf16 weights": bag_bf16,
    "sparse CSR @ dense, fp32": csr,
    "sparse CSR @ dense, bf16": lambda i, v, w: csr(i, v, w.to(torch.bfloat16)),
}


def run(fn, idx, val, w, grad_out):
    w.grad, val.grad = None, None
    out = fn(idx, val, w)
    out.backward(grad_out.to(out.dtype))
    return out.float(), w.grad.float(), val.grad.float()


def timed(fn, idx, val, w, grad_out, device, repeat=10) -> float:
    for _ in range(2):
        run(fn, idx, val, w, grad_out)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeat):
        run(fn, idx, val, w, grad_out)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeat


def compare(tiny: bool) -> dict[str, tuple[float, float] | str]:
    """{variant: (relative error against the dense variant, seconds) or why it is unavailable}."""
    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    n, k, n_feat, t, d = (64, 4, 128, 3, 16) if tiny else (4096, 64, 8192, 12, 768)
    g = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(n_feat, t * d, device=device, generator=g).mul_(0.02).requires_grad_()
    pre = torch.randn(n, n_feat, device=device, generator=g)
    top = pre.topk(k, dim=-1, sorted=False)
    idx, val = top.indices, top.values.relu().requires_grad_()
    grad_out = torch.randn(n, t * d, device=device, generator=g)
    print(f"# {device}: {n} tokens, k {k}, {n_feat} features, decoder to {t} layers of d {d}")
    ref = run(VARIANTS["dense bf16 matmul"], idx, val, w, grad_out)
    results: dict[str, tuple[float, float] | str] = {}
    for name, fn in VARIANTS.items():
        try:
            got = run(fn, idx, val, w, grad_out)
            with torch.no_grad():
                err = max(float((a - b).norm() / b.norm().clamp_min(1e-12)) for a, b in zip(got, ref))  # fmt: skip
            results[name] = (err, timed(fn, idx, val, w, grad_out, device))
        except (RuntimeError, NotImplementedError) as exc:
            results[name] = f"{type(exc).__name__}: {str(exc)[:120]}"
            print(f"  {name:<30} unavailable: {results[name]}")
            continue
        err, seconds = results[name]
        print(f"  {name:<30} {seconds * 1e3:8.3f} ms  ({n / seconds:12,.0f} tokens/s for this "
              f"layer)  rel. err vs dense {err:.1e}")  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a small size that runs on CPU")
    compare(parser.parse_args().tiny)


if __name__ == "__main__":
    main()
