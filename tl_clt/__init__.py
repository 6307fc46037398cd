"""tl_clt: cross-layer transcoders for TransformerLens models: train one, splice it in place of
every MLP, build attribution graphs, label features, and test claims with interventions."""

from tl_clt.activations import ActivationBatch, ActivationSource, TokenBatch
from tl_clt.clt import CrossLayerTranscoder, RaggedFeatures, SparseFeatures
from tl_clt.config import CLTConfig, ModelIdentity, WeightProcessing
from tl_clt.errors import (
    CheckpointError,
    ConfigError,
    InputError,
    ModelMismatchError,
    TLCLTError,
    TrainingError,
    UnknownHookError,
    UnsupportedModelError,
)
from tl_clt.lens import Lens
from tl_clt.replacement import ReplacementModel
from tl_clt.training import TrainConfig, Trainer, TrainResult, train

__all__ = [
    "CLTConfig",
    "CheckpointError",
    "ConfigError",
    "CrossLayerTranscoder",
    "InputError",
    "Lens",
    "ModelIdentity",
    "ModelMismatchError",
    "ReplacementModel",
    "SparseFeatures",
    "TLCLTError",
    "UnknownHookError",
    "UnsupportedModelError",
    "WeightProcessing",
    "ActivationBatch",
    "ActivationSource",
    "RaggedFeatures",
    "TokenBatch",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "train",
]
