"""Training transcoders: losses (pure functions), a short `Trainer` loop with callbacks,
metrics, checkpoints, data-parallel training, and `train()` from a model and text to a saved
transcoder."""

from tl_clt.training.callbacks import Callback, StepOutput
from tl_clt.training.checkpoint import (
    Checkpointer,
    attach_checkpoints,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from tl_clt.training.config import DataConfig, TrainConfig
from tl_clt.training.distributed import DistEnv, init_from_env
from tl_clt.training.losses import BatchTopKLoss, JumpReLULoss, ReLULoss, TopKLoss
from tl_clt.training.metrics import SplicedEval, SplicedMetrics, TrainingMetrics, spliced_metrics
from tl_clt.training.reporting import CurvesPlot, JsonlLog, ProgressBar, WandbLog, plot_curves
from tl_clt.training.run import TrainResult, train, transcoder_config
from tl_clt.training.trainer import Trainer

__all__ = [
    "BatchTopKLoss",
    "Callback",
    "Checkpointer",
    "CurvesPlot",
    "DataConfig",
    "DistEnv",
    "JsonlLog",
    "JumpReLULoss",
    "ProgressBar",
    "ReLULoss",
    "SplicedEval",
    "SplicedMetrics",
    "StepOutput",
    "TopKLoss",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingMetrics",
    "WandbLog",
    "attach_checkpoints",
    "init_from_env",
    "latest_checkpoint",
    "load_checkpoint",
    "plot_curves",
    "save_checkpoint",
    "spliced_metrics",
    "train",
    "transcoder_config",
]
