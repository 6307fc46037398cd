"""tl_clt: cross-layer transcoders for TransformerLens models: train one, splice it in place of
every MLP, build attribution graphs, label features, and test claims with interventions.

The names below are the public API. They load on first use (`import tl_clt` imports no
submodule: no torch, no TransformerLens), so a script that needs only the errors or a saved
graph pays only for those. Everything else stays importable from its module, e.g.
`tl_clt.clt.SparseFeatures`, `tl_clt.config.ModelIdentity`, `tl_clt.prune`,
`tl_clt.activations.ActivationSource`; the shipped toy model is `tl_clt.toy`, an example built
on the library that the library never imports.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it
_EXPORTS = {
    # the model and its transcoder
    "CLTConfig": "tl_clt.config",
    "CrossLayerTranscoder": "tl_clt.clt",
    "Lens": "tl_clt.lens",
    "load_model": "tl_clt.lens",
    "load_transcoder": "tl_clt.published",
    "ReplacementModel": "tl_clt.replacement",
    # attribution graphs
    "AttributionGraph": "tl_clt.graph",
    "LogitDifference": "tl_clt.attribution",
    "NodeKind": "tl_clt.graph",
    "attribute": "tl_clt.attribution",
    # interventions
    "Intervention": "tl_clt.interventions",
    "feature_effects": "tl_clt.effects",
    "generate": "tl_clt.generation",
    "intervene": "tl_clt.interventions",
    # labels, supernodes, pages
    "FeatureIndex": "tl_clt.labels",
    "build_feature_index": "tl_clt.labels",
    "group_supernodes": "tl_clt.supernodes",
    "render_graph": "tl_clt.viz.graph_page",
    "validate_supernodes": "tl_clt.supernodes",
    # training
    "TrainConfig": "tl_clt.training",
    "train": "tl_clt.training",
    # errors and warnings
    "AttributionCheckError": "tl_clt.errors",
    "CheckpointError": "tl_clt.errors",
    "ConfigError": "tl_clt.errors",
    "FileWriteError": "tl_clt.errors",
    "IndexMismatchError": "tl_clt.errors",
    "InputError": "tl_clt.errors",
    "ModelMismatchError": "tl_clt.errors",
    "TLCLTError": "tl_clt.errors",
    "TLCLTWarning": "tl_clt.errors",
    "TrainingError": "tl_clt.errors",
    "UnknownHookError": "tl_clt.errors",
    "UnsupportedModelError": "tl_clt.errors",
}

__all__ = [  # the keys of _EXPORTS (a test checks)
    "AttributionCheckError",
    "AttributionGraph",
    "CLTConfig",
    "CheckpointError",
    "ConfigError",
    "CrossLayerTranscoder",
    "FeatureIndex",
    "FileWriteError",
    "IndexMismatchError",
    "InputError",
    "Intervention",
    "Lens",
    "LogitDifference",
    "ModelMismatchError",
    "NodeKind",
    "ReplacementModel",
    "TLCLTError",
    "TLCLTWarning",
    "TrainConfig",
    "TrainingError",
    "UnknownHookError",
    "UnsupportedModelError",
    "attribute",
    "build_feature_index",
    "feature_effects",
    "generate",
    "group_supernodes",
    "intervene",
    "load_model",
    "load_transcoder",
    "render_graph",
    "train",
    "validate_supernodes",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a submodule: tl_clt.prune, ...
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and editors; at run time the names load on first use
    from tl_clt.attribution import LogitDifference, attribute
    from tl_clt.clt import CrossLayerTranscoder
    from tl_clt.config import CLTConfig
    from tl_clt.effects import feature_effects
    from tl_clt.errors import (
        CheckpointError,
        ConfigError,
        FileWriteError,
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
    from tl_clt.graph import AttributionGraph, NodeKind
    from tl_clt.interventions import Intervention, intervene
    from tl_clt.labels import FeatureIndex, build_feature_index
    from tl_clt.lens import Lens, load_model
    from tl_clt.published import load_transcoder
    from tl_clt.replacement import ReplacementModel
    from tl_clt.supernodes import group_supernodes, validate_supernodes
    from tl_clt.training import TrainConfig, train
    from tl_clt.viz.graph_page import render_graph
