"""Measuring helpers for the benchmarks: best-of-n wall time and peak memory (GPU memory
allocated on CUDA; the rise of the resident set on CPU)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch


@contextmanager
def peak_memory(device: torch.device):
    """Yields a dict that receives 'peak_mb': peak GPU memory allocated (CUDA) or the peak
    rise of the process's resident set over its size at entry (CPU, sampled every 2 ms; call
    `track_heap()` first so that freed memory leaves the resident set)."""
    out: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        torch.cuda.synchronize(device)
        out["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        return
    _libc_call("malloc_trim", 0)
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    base, peak, stop = rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak_mb"] = (max(peak[0], rss()) - base) / 2**20


def _libc_call(name: str, *args: int) -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: rougher figures
        getattr(ctypes.CDLL("libc.so.6"), name)(*args)


def track_heap() -> None:
    """Make glibc mmap every large block, so freed tensors leave the resident set at once.
    This slows allocation down: time first, measure memory afterwards."""
    _libc_call("mallopt", -3, 64 * 1024)  # M_MMAP_THRESHOLD, fixed instead of adaptive


def best_time(fn: Callable[[], Any], device: torch.device, repeat: int = 2) -> tuple[Any, float]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return result, best


def peak_mb(fn: Callable[[], Any], device: torch.device) -> float:
    with peak_memory(device) as mem:
        fn()
    return mem["peak_mb"]
