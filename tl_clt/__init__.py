"""tl_clt: cross-layer transcoders for TransformerLens models: train one, splice it in place of
every MLP, build attribution graphs, label features, and test claims with interventions."""

from tl_clt.clt import CrossLayerTranscoder, SparseFeatures
from tl_clt.config import CLTConfig, ModelIdentity, WeightProcessing
from tl_clt.errors import (
    CheckpointError,
    ConfigError,
    InputError,
    ModelMismatchError,
    TLCLTError,
    UnknownHookError,
    UnsupportedModelError,
)
from tl_clt.lens import Lens
from tl_clt.replacement import ReplacementModel

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
]
from tl_clt import toy as toy  # the shipped model: tl_clt.toy.load_model()
