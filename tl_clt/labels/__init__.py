"""Automatic feature labels: a streaming feature index (top contexts, samples, density,
histograms, logit effects) in one SQLite file, an offline summariser, pluggable explainers,
and detection scores on held-out contexts."""

from tl_clt.labels.explainers import label_features, llm_explainer, load_explainer, prompt
from tl_clt.labels.index import build_feature_index
from tl_clt.labels.reader import FeatureIndex
from tl_clt.labels.scoring import ScoreSummary, detection_score, score_labels
from tl_clt.labels.source import TensorSource, TextSource, TokenBatch, TokenSource
from tl_clt.labels.stream import IndexConfig
from tl_clt.labels.summarise import OfflineExplainer, SummariserConfig, summarise
from tl_clt.labels.types import (
    Context,
    DetectionScore,
    Example,
    FeatureExamples,
    FeatureLabel,
    FeatureStats,
    Label,
    LogitEffects,
    Rule,
)

__all__ = [
    "Context",
    "DetectionScore",
    "Example",
    "FeatureExamples",
    "FeatureIndex",
    "FeatureLabel",
    "FeatureStats",
    "IndexConfig",
    "Label",
    "LogitEffects",
    "OfflineExplainer",
    "Rule",
    "ScoreSummary",
    "SummariserConfig",
    "TensorSource",
    "TextSource",
    "TokenBatch",
    "TokenSource",
    "build_feature_index",
    "detection_score",
    "label_features",
    "llm_explainer",
    "load_explainer",
    "prompt",
    "score_labels",
    "summarise",
]
