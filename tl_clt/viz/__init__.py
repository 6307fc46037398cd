"""Offline HTML for tl_clt: escaping helpers, self-contained pages, circuitsvis with its bundle
inlined (feature cards, feature activations, logits before and after an intervention), feature
browsers, graph pages (`render_graph`); `neuronpedia` exports graphs as Neuronpedia /
circuit-tracer JSON."""

from tl_clt.viz import escape
from tl_clt.viz.activations import feature_activations, logit_changes
from tl_clt.viz.circuitsvis import Panel, Vis, colored_tokens, text_neuron_activations, topk_samples
from tl_clt.viz.features import feature_browser, feature_card, feature_payload
from tl_clt.viz.graph_page import GraphPage, render_graph
from tl_clt.viz.page import Page

__all__ = [
    "GraphPage",
    "Page",
    "Panel",
    "Vis",
    "colored_tokens",
    "escape",
    "feature_activations",
    "feature_browser",
    "feature_card",
    "feature_payload",
    "logit_changes",
    "render_graph",
    "text_neuron_activations",
    "topk_samples",
]
