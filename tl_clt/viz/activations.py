"""circuitsvis renderings of a prompt's features and of an intervention's effect on the output,
offline (the bundle inlined once per panel, every token escaped: `tl_clt.viz.circuitsvis`).

- `feature_activations(replacement, prompt, features)`: chosen features' activations over the
  prompt (circuitsvis `TextNeuronActivations`, one "neuron" per feature, and `ColoredTokens`
  for the strongest one);
- `logit_changes(result)`: the top next tokens before and after an intervention
  (`InterventionResult`), coloured by probability, and the change of their logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tl_clt.errors import InputError
from tl_clt.graph import AttributionGraph, NodeKind
from tl_clt.tokenization import visible
from tl_clt.viz import circuitsvis as cv
from tl_clt.viz import escape


def graph_features(graph: AttributionGraph, top: int = 12) -> list[tuple[int, int]]:
    """The graph's features (layer, feature), most influential first (each once)."""
    infl = graph.influence().influence
    order = torch.argsort(infl, descending=True).tolist()
    out: list[tuple[int, int]] = []
    for i in order:
        n = graph.nodes[i]
        if n.kind is NodeKind.FEATURE and (n.layer, n.feature) not in out:
            out.append((n.layer, n.feature))
        if len(out) == top:
            break
    return out


def feature_activations(
    replacement,
    prompt: str | torch.Tensor,
    features: Sequence[tuple[int, int]] | AttributionGraph | None = None,
    index: Any = None,
    top: int = 12,
) -> cv.Panel:
    """Activations of `features` ((layer, feature) pairs, or the most influential features of
    an attribution graph; default: the `top` features with the largest activation anywhere in
    the prompt, BOS aside) at every position of `prompt`, labelled from `index` when given."""
    lens, clt = replacement.lens, replacement.clt
    tokens = lens.tokens(prompt)
    with torch.no_grad():
        run = replacement.capture(tokens)
    acts = torch.stack([a[0] for a in run.features])  # [layer, pos, feature]
    if isinstance(features, AttributionGraph):
        features = graph_features(features, top)
    elif features is None:
        peak = acts[:, 1:].amax(dim=1) if acts.shape[1] > 1 else acts.amax(dim=1)  # BOS left out
        best = peak.flatten().topk(min(top, peak.numel()))
        F = acts.shape[2]
        features = [(int(g) // F, int(g) % F) for g in best.indices.tolist()]
    features = [(int(layer), int(f)) for layer, f in features]
    if not features:
        raise InputError("no features to show")
    for layer, f in features:
        if not (0 <= layer < clt.cfg.n_layers and 0 <= f < clt.cfg.n_features):
            raise InputError(f"feature {layer}:{f} is not in the transcoder")
    values = torch.stack([acts[layer, :, f] for layer, f in features], dim=-1)  # [pos, n]
    names = [_name(index, layer, f) for layer, f in features]
    str_tokens = [visible(t, spaces=False) for t in lens.token_texts(tokens)]
    header = f"<h3>feature activations over the prompt ({len(features)} features)</h3>"
    panel = cv.Panel(title="feature activations", header=header)
    panel.add(
        cv.text_neuron_activations(
            str_tokens, values[:, None, :].float().cpu(), firstDimensionName="Features",
            secondDimensionName="Feature", firstDimensionLabels=["features"],
            secondDimensionLabels=names,
        )
    )  # fmt: skip
    strongest = int(values.amax(0).argmax())
    panel.add(
        cv.colored_tokens(str_tokens, values[:, strongest].float().cpu()),
        f"<h4>{escape.text(names[strongest])}</h4>",
    )
    return panel


def _name(index: Any, layer: int, feature: int) -> str:
    label = index.label(layer, feature) if index is not None else None
    return f"{layer}:{feature}" + (f" {label.text}" if label is not None and label.text else "")


def logit_changes(result, k: int = 10, position: int = -1) -> cv.Panel:
    """The top `k` next tokens before and after the intervention of `result` (an
    `InterventionResult`), coloured by probability, and the change of the logits of every token
    in either list (after − before)."""
    before = result.top_tokens(after=False, k=k, position=position)
    after = result.top_tokens(after=True, k=k, position=position)
    union = list(dict.fromkeys([t.token_id for t in before] + [t.token_id for t in after]))
    delta = (result.logits_after[position] - result.logits_before[position]).float()
    changes = [float(delta[i]) for i in union]
    what = ", ".join(_describe(iv) for iv in result.interventions) or "none"
    header = (
        f"<h3>{escape.text(result.mode)} intervention: {escape.text(what)}</h3>"
        f"<p>answer {escape.text(repr(visible(result.answer_before)))} → "
        f"{escape.text(repr(visible(result.answer_after)))}</p>"
    )
    panel = cv.Panel(title="intervention", header=header)
    prob = {"minValue": 0.0, "maxValue": 1.0}
    shown = lambda ts: [f" {visible(t.token)} " for t in ts]  # noqa: E731
    panel.add(cv.colored_tokens(shown(before), [t.prob for t in before], **prob),
              "<h4>before (probability)</h4>")  # fmt: skip
    panel.add(cv.colored_tokens(shown(after), [t.prob for t in after], **prob),
              "<h4>after (probability)</h4>")  # fmt: skip
    top = max((abs(c) for c in changes), default=1.0) or 1.0
    names = [f" {visible(result.vocab[i])} " for i in union]
    panel.add(cv.colored_tokens(names, changes, minValue=-top, maxValue=top),
              "<h4>change of the logit (after − before)</h4>")  # fmt: skip
    return panel


def _describe(iv) -> str:
    how = f"×{iv.scale:g}" if iv.scale is not None else f"={iv.value:g}"
    return f"{iv.layer}:{iv.feature}@{iv.position} {how}"
