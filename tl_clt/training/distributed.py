"""Data-parallel training on `torch.distributed`, launched with `torchrun`.

Every process reads the same global batch and trains on its own 1/P slice; gradients are
averaged with all-reduce after each backward pass, and the per-feature firing counts (dead
features, BatchTopK thresholds) are summed, so every process takes the same step and holds the
same weights: the result equals one process at the same global batch, up to the order of float
sums. NCCL on GPUs, gloo on CPUs. Sharding features across devices (for models too large for one
device) is planned in docs/scaling.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tl_clt.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a data-parallel job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, t: Tensor) -> Tensor:
        """This process's slice of a global batch (dim 0)."""
        if not self.enabled:
            return t
        if t.shape[0] % self.world_size:
            raise ConfigError(
                f"a global batch of {t.shape[0]} tokens does not split over {self.world_size} "
                "processes; make batch_size a multiple of the number of processes"
            )
        size = t.shape[0] // self.world_size
        return t[self.rank * size : (self.rank + 1) * size]

    def all_reduce_(self, t: Tensor, op: str = "sum") -> Tensor:
        """Sum (or min, max, mean) `t` over processes, in place."""
        if self.enabled:
            reduce_op = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM,
                         "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op]  # fmt: skip
            dist.all_reduce(t, op=reduce_op)
            if op == "mean":
                t.div_(self.world_size)
        return t

    def average_gradients(self, params: list[nn.Parameter]) -> None:
        """Average gradients over processes (one flat all-reduce)."""
        if not self.enabled:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.all_reduce_(flat, "mean")
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every process hold rank 0's parameters and buffers."""
        if self.enabled:
            with torch.no_grad():
                for t in [*module.parameters(), *module.buffers()]:
                    dist.broadcast(t, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_from_env(backend: str | None = None) -> DistEnv:
    """Join the process group `torchrun` describes in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR, MASTER_PORT); a single process when WORLD_SIZE is unset or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return DistEnv(dist.get_rank(), dist.get_world_size())


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
