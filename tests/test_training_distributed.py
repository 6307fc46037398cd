"""Data-parallel training: two gloo processes (set up through the environment variables
`torchrun` sets) end with the same weights as one process at the same global batch."""

from __future__ import annotations

import multiprocessing
import os
import socket

import pytest
import torch
from _training_helpers import small_clt, unchecked
from safetensors.torch import load_file, save_file

from tl_clt.errors import ConfigError
from tl_clt.training import DistEnv, TrainConfig, Trainer, TrainingMetrics, init_from_env
from tl_clt.training.distributed import shutdown
from tl_clt.training.synthetic import PlantedBatches, planted_dictionary

ACTIVATIONS = ("relu", "jumprelu", "topk")  # BatchTopK selects per process: not equivalent
CONFIG = TrainConfig(
    steps=12, batch_size=64, lr=1e-2, log_every=4, firing_decay=0.8, dead_threshold=0.05
)
DATA = PlantedBatches(planted_dictionary("cross_layer", 2, 8, 12, 2, seed=0))


def _train(activation: str, dist: DistEnv) -> Trainer:
    clt = small_clt(activation, n_layers=2, d_model=8, n_features=12, k=2)
    trainer = Trainer(clt, CONFIG, [TrainingMetrics(CONFIG.log_every)], dist=dist)
    with unchecked():
        return trainer.fit(DATA)


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    dist = init_from_env("gloo")
    assert (dist.rank, dist.world_size) == (rank, 2)
    for activation in ACTIVATIONS:
        trainer = _train(activation, dist)
        state = {k: v.contiguous() for k, v in trainer.clt.state_dict().items()}
        save_file(state, os.path.join(out_dir, f"{activation}_rank{rank}.safetensors"))
        if dist.is_main:
            dead = trainer.firing_ema
            save_file({"firing_ema": dead}, os.path.join(out_dir, f"{activation}_ema.safetensors"))
    shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    ctx = multiprocessing.get_context("fork")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    for activation in ACTIVATIONS:
        single = _train(activation, DistEnv())
        ranks = [load_file(str(tmp_path / f"{activation}_rank{r}.safetensors")) for r in range(2)]
        for name, value in single.clt.state_dict().items():
            assert torch.equal(ranks[0][name], ranks[1][name]), (activation, name)  # in step
            torch.testing.assert_close(
                ranks[0][name], value, rtol=1e-4, atol=1e-5, msg=f"{activation} {name}"
            )
        ema = load_file(str(tmp_path / f"{activation}_ema.safetensors"))["firing_ema"]
        torch.testing.assert_close(ema, single.firing_ema)


def test_a_global_batch_must_split_evenly():
    env = DistEnv(rank=1, world_size=2)
    torch.testing.assert_close(env.shard(torch.arange(6)), torch.tensor([3, 4, 5]))
    with pytest.raises(ConfigError, match="multiple of the number of processes"):
        env.shard(torch.arange(5))
    assert init_from_env() == DistEnv()  # WORLD_SIZE unset: one process
