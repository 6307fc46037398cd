"""The GPU case of benchmarks/train.py, run at a tiny size on CPU: its code path works, and
its sparse-decoding training matches the dense-decoding baseline it is compared with."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from _training_helpers import unchecked

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "train.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_case_runs_at_a_tiny_size_and_sparse_equals_dense():
    bench = _bench()
    kw = {
        "n_layers": 3,
        "d_model": 16,
        "n_features": 32,
        "k": 4,
        "batch_size": 32,
        "steps": 3,
        "warmup": 1,
    }
    with unchecked():
        sparse = bench.gpu_case("cpu", **kw)
        dense = bench.gpu_case("cpu", dense=True, **kw)
    assert sparse.tokens_per_s > 0 and dense.tokens_per_s > 0
    for name, value in sparse.clt.state_dict().items():  # bf16 autocast: loose tolerance
        torch.testing.assert_close(
            value, dense.clt.state_dict()[name], rtol=2e-2, atol=2e-3, msg=name
        )


def test_decode_kernel_variants_compute_the_dense_result():
    """Every decode variant the kernel benchmark times computes the same output and gradients
    (W and the active values) as the dense matmul, to bf16 tolerance, or says why it cannot
    run here (bf16 CSR products have no CPU kernel)."""
    spec = importlib.util.spec_from_file_location(
        "bench_decode", PATH.with_name("decode_kernels.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = module.compare(tiny=True)
    assert set(results) == set(module.VARIANTS)
    ran = {name: r for name, r in results.items() if isinstance(r, tuple)}
    assert {"embedding_bag, fp32 weights", "sparse CSR @ dense, fp32"} <= set(ran)
    for name, (err, seconds) in ran.items():
        assert err < 1e-2 and seconds > 0, name
