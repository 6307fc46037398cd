"""tl_clt: cross-layer transcoders for TransformerLens models: train one, splice it in place of
every MLP, build attribution graphs, label features, and test claims with interventions."""

from tl_clt import prune
from tl_clt.activations import ActivationBatch, ActivationSource, TokenBatch
from tl_clt.attribution import LogitDifference, attribute
from tl_clt.clt import CrossLayerTranscoder, RaggedFeatures, SparseFeatures
from tl_clt.config import CLTConfig, ModelIdentity, WeightProcessing
from tl_clt.effects import compare_with_graph, feature_effects
from tl_clt.errors import (
    CheckpointError,
    ConfigError,
    IndexMismatchError,
    InputError,
    ModelMismatchError,
    TLCLTError,
    TLCLTWarning,
    TrainingError,
    UnknownHookError,
    UnsupportedModelError,
)
from tl_clt.generation import generate
from tl_clt.graph import AttributionGraph, Node, NodeKind
from tl_clt.interventions import Intervention, intervene
from tl_clt.labels import FeatureIndex, build_feature_index
from tl_clt.lens import Lens
from tl_clt.replacement import ReplacementModel
from tl_clt.supernodes import GroupedGraph, Supernode, group_supernodes, validate_supernodes
from tl_clt.training import TrainConfig, Trainer, TrainResult, train
from tl_clt.viz.graph_page import render_graph

__all__ = [
    "ActivationBatch",
    "ActivationSource",
    "AttributionGraph",
    "CLTConfig",
    "CheckpointError",
    "ConfigError",
    "CrossLayerTranscoder",
    "FeatureIndex",
    "GroupedGraph",
    "IndexMismatchError",
    "InputError",
    "Intervention",
    "Lens",
    "LogitDifference",
    "ModelIdentity",
    "ModelMismatchError",
    "Node",
    "NodeKind",
    "RaggedFeatures",
    "ReplacementModel",
    "SparseFeatures",
    "Supernode",
    "TLCLTError",
    "TLCLTWarning",
    "TokenBatch",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "UnknownHookError",
    "UnsupportedModelError",
    "WeightProcessing",
    "attribute",
    "build_feature_index",
    "compare_with_graph",
    "feature_effects",
    "generate",
    "group_supernodes",
    "intervene",
    "prune",
    "render_graph",
    "train",
    "validate_supernodes",
]
from tl_clt import toy as toy  # the shipped model: tl_clt.toy.load_model()
