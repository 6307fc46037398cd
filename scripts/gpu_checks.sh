#!/usr/bin/env bash
# The GPU figures of the benchmarks, on a lent machine with PyTorch but without this project's
# other packages (carried as wheels in .whl/). Writes each benchmark's output to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-checks}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
if compgen -G ".whl/*.whl" > /dev/null; then  # packages carried as wheels (no network there)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -c "from importlib.metadata import version as v; print(*(f\"{p} {v(p)}\" for p in (\"torch\", \"transformers\", \"transformer-lens\")))"
timeout 260 python3 benchmarks/attribute.py --gemma only 2>&1 | tee "$OUT/attribute.txt"
timeout 150 python3 benchmarks/train.py --skip-cpu --profile 2>&1 | tee "$OUT/train.txt"
timeout 60 python3 benchmarks/decode_kernels.py 2>&1 | tee "$OUT/decode.txt"
timeout 120 python3 scripts/gpu_smoke.py 2>&1 | tee "$OUT/smoke.txt"
