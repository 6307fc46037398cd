"""Offline HTML for tl_clt: escaping helpers, self-contained pages, circuitsvis with its bundle
inlined, feature cards and browsers; `neuronpedia` exports graphs as Neuronpedia /
circuit-tracer JSON."""

from tl_clt.viz import escape
from tl_clt.viz.circuitsvis import Panel, Vis, colored_tokens, text_neuron_activations, topk_samples
from tl_clt.viz.features import feature_browser, feature_card, feature_payload
from tl_clt.viz.page import Page

__all__ = [
    "Page",
    "Panel",
    "Vis",
    "colored_tokens",
    "escape",
    "feature_browser",
    "feature_card",
    "feature_payload",
    "text_neuron_activations",
    "topk_samples",
]
