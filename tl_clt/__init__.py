"""tl_clt: cross-layer transcoders for TransformerLens models: train one, splice it in place of
every MLP, build attribution graphs, label features, and test claims with interventions."""

from tl_clt.clt import CrossLayerTranscoder, SparseFeatures
from tl_clt.config import CLTConfig, ModelIdentity, WeightProcessing
from tl_clt.effects import feature_effects
from tl_clt.errors import (
    CheckpointError,
    ConfigError,
    InputError,
    ModelMismatchError,
    TLCLTError,
    UnknownHookError,
    UnsupportedModelError,
)
from tl_clt.generation import generate
from tl_clt.interventions import Intervention, intervene
from tl_clt.labels import FeatureIndex, build_feature_index
from tl_clt.lens import Lens
from tl_clt.replacement import ReplacementModel

__all__ = [
    "CLTConfig",
    "CheckpointError",
    "ConfigError",
    "CrossLayerTranscoder",
    "FeatureIndex",
    "InputError",
    "Intervention",
    "Lens",
    "ModelIdentity",
    "ModelMismatchError",
    "ReplacementModel",
    "SparseFeatures",
    "TLCLTError",
    "UnknownHookError",
    "UnsupportedModelError",
    "WeightProcessing",
    "build_feature_index",
    "feature_effects",
    "generate",
    "intervene",
]

from tl_clt import prune  # noqa: E402
from tl_clt.attribution import LogitDifference, attribute  # noqa: E402
from tl_clt.graph import AttributionGraph, Node, NodeKind  # noqa: E402

__all__ += ["AttributionGraph", "LogitDifference", "Node", "NodeKind", "attribute", "prune"]

from tl_clt.supernodes import GroupedGraph, Supernode, group_supernodes, validate_supernodes  # noqa: E402, I001
from tl_clt.viz.graph_page import render_graph  # noqa: E402

__all__ += ["GroupedGraph", "Supernode", "group_supernodes", "render_graph", "validate_supernodes"]
