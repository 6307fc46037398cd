"""Figures for docs/graphs.md and the README: the graph page of the two-hop prompt as a PNG
(headless Chromium's `--screenshot`), and the table of grouped-graph predictions against
group-ablation measurements on the case-study prompts.

With the shipped toy model and its CLT (`tl_clt.toy.load_lens` / `load_clt`) it writes
`docs/img/two-hop-graph.png` and `docs/img/supernode-checks.md`, tracing the first held-out
items of each task family (the two-hop one is "the capital of the state containing dallas
is"); the feature index comes from `--index PATH` (built there over the shipped corpus when the
file does not exist yet). Without the shipped model it runs the same code on a random 4-layer
model with a random CLT (prompts of random words, a small index over random text) and names its
files `random-model-graph.png` / `random-model-checks.md`, so nothing it writes can pass for
the real figures.

    python scripts/graph_figures.py [--out docs/img] [--index features.db] [--items 2]
"""

from __future__ import annotations

import argparse
import importlib
import math
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from tl_clt import ReplacementModel, attribute, group_supernodes, render_graph, validate_supernodes
from tl_clt.errors import TLCLTError
from tl_clt.graph import NodeKind
from tl_clt.supernodes.validate import _pearson, _relative
from tl_clt.viz.neuronpedia import node_ids

ROOT = Path(__file__).resolve().parent.parent


def shipped(index_path: Path, n_items: int):
    """(rm, index, {family: prompts}, two-hop prompt) from the shipped model, or None."""
    try:
        toy = importlib.import_module("tl_clt.toy")
        lens, clt = toy.load_lens(), toy.load_clt()
    except (ImportError, AttributeError, TLCLTError) as exc:
        print(f"# no shipped model and CLT ({type(exc).__name__}: {exc}): a random model instead")
        return None
    from tl_clt import build_feature_index

    rm = ReplacementModel(lens, clt)
    # labelled with the shipped token classes, as `tl-clt label` does; an index made for
    # another transcoder is refused (IndexMismatchError), not silently reused
    index = build_feature_index(
        rm, toy.corpus_texts(), index_path, token_classes=toy.token_classes()
    )
    prompts = {f: [i.prompt for i in toy.load_items(f)[:n_items]] for f in toy.FAMILIES}
    two_hop = [i for i in toy.load_items("two_hop") if "dallas" in i.prompt] or toy.load_items(
        "two_hop"
    )
    return rm, index, prompts, two_hop[0].prompt


def random_model(n_items: int):
    """The same on a random 4-layer d_model 128 model and a random CLT (1,024 features)."""
    from tl_clt import CLTConfig, CrossLayerTranscoder, build_feature_index
    from tl_clt.labels import IndexConfig
    from tl_clt.lens import tiny_model

    torch.manual_seed(0)
    lens = tiny_model("gpt2", n_layers=4, d_model=128, d_mlp=512, d_vocab=700, n_ctx=64)
    clt = CrossLayerTranscoder(CLTConfig(n_layers=4, d_model=128, n_features=1024,
                                         model=lens.identity()))  # fmt: skip
    rm = ReplacementModel(lens, clt.eval())
    gen = torch.Generator().manual_seed(1)
    words = [" ".join(f"w{int(i)}" for i in torch.randint(0, 690, (7,), generator=gen))
             for _ in range(3 * n_items + 1)]  # fmt: skip
    tokens = torch.randint(3, 700, (64, 24), generator=gen)
    tokens[:, 0] = lens.tokenizer.bos_token_id
    names = [lens.mlp_in(layer, clt.cfg.input_hook) for layer in range(4)]
    with torch.no_grad():  # encoder biases: about 25 active features per token and layer
        clt.W_enc.normal_(0.0, 128**-0.5)
        _, cache = lens.cache(tokens[:8], names)
        for layer, name in enumerate(names):
            h = cache[name][:, 1:].flatten(0, 1) @ clt.W_enc_at(layer)
            clt.b_enc[layer] = -h.topk(25, dim=-1).values[:, -1].mean()
    index = build_feature_index(rm, tokens, Path(tempfile.mkdtemp()) / "features.db",
                                IndexConfig(k=8, n_pool=200), progress=False)  # fmt: skip
    prompts = {f"random {k}": words[1 + k * n_items : 1 + (k + 1) * n_items] for k in range(3)}
    return rm, index, prompts, words[0]


# ---------------------------------------------------------------------- the picture
def screenshot(page: Path, png: Path, fragment: str, size: tuple[int, int]) -> None:
    """Chromium's own `--screenshot` of the page (at `#fragment`)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from browser import FLAGS, chromium

    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", "--hide-scrollbars",
               f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=5000",
               f"--screenshot={png.resolve()}", page.resolve().as_uri() + f"#{fragment}"]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def two_hop_figure(rm, index, prompt: str, png: Path, threshold: float) -> None:
    graph = attribute(rm, prompt, progress=False)
    pruned = graph.prune()
    grouped = group_supernodes(pruned, rm.clt, index, threshold=threshold)
    page = render_graph(pruned, index, grouped, title=f"attribution graph: {prompt}")
    html = page.save(Path(tempfile.mkdtemp()) / "two-hop.html")
    infl = pruned.influence().influence
    feats = pruned.indices(NodeKind.FEATURE)
    top = max(feats, key=lambda i: float(infl[i])) if feats else pruned.indices(NodeKind.LOGIT)[0]
    columns = max(len(graph.tokens), 8)
    size = (min(2400, 600 + 110 * columns), 1000)
    screenshot(html, png, f"node={node_ids(pruned)[top]}", size)
    kept = html.with_name(png.stem + ".html")
    shutil.copy(html, kept)
    print(f"wrote {png} ({pruned.n_nodes} nodes, {len(grouped.supernodes)} supernodes; "
          f"the page itself: {kept})")  # fmt: skip


# ---------------------------------------------------------------------- the table
def checks(rm, index, prompts: dict[str, list[str]], threshold: float) -> str:
    rows = ["| task | prompt | supernode | members | grouped graph | node graph | measured | "
            "linear | direct: summed edges | direct: measured |",
            "|---|---|---|---:|---:|---:|---:|:---:|---:|---:|"]  # fmt: skip
    totals: dict[str, list[float]] = {"pred": [], "node": [], "meas": [], "dpred": [], "dmeas": []}
    summary = ["| task | supernodes | correlation | relative error | node graph: rel. error | "
               "linear runs | direct: rel. error |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for family, texts in prompts.items():
        fam: dict[str, list[float]] = {k: [] for k in totals}
        n_linear = 0
        for prompt in texts:
            pruned = attribute(rm, prompt, progress=False).prune()
            grouped = group_supernodes(pruned, rm.clt, index, threshold=threshold)
            if not grouped.supernodes:
                rows.append(f"| {family} | {prompt} | (no supernode) | | | | | | | |")
                continue
            total = validate_supernodes(rm, grouped)
            direct = validate_supernodes(rm, grouped, how="direct")
            for c, d in zip(total.checks, direct.checks):
                name = c.name.replace("|", "\\|")
                rows.append(f"| {family} | {prompt} | {name} | {c.n_members} | {c.predicted:+.3f} | "
                            f"{c.node_predicted:+.3f} | {c.measured:+.3f} | "
                            f"{'yes' if c.linear else 'no'} | {d.predicted:+.3f} | {d.measured:+.3f} |")  # fmt: skip
                for key, v in zip(fam, (c.predicted, c.node_predicted, c.measured, d.predicted,
                                        d.measured)):  # fmt: skip
                    fam[key].append(v)
                n_linear += c.linear
        for key in totals:
            totals[key] += fam[key]
        summary.append(_summary(family, fam, n_linear))
    n_linear = -1  # not summed over tasks
    summary.append(_summary("all", totals, n_linear))
    return "\n".join(rows) + "\n\n" + "\n".join(summary)


def _summary(name: str, v: dict[str, list[float]], n_linear: int) -> str:
    def f(x: float) -> str:
        return "–" if math.isnan(x) else f"{x:.3f}"

    lin = "" if n_linear < 0 else str(n_linear)
    return (f"| {name} | {len(v['meas'])} | {f(_pearson(v['pred'], v['meas']))} | "
            f"{f(_relative(v['pred'], v['meas']))} | {f(_relative(v['node'], v['meas']))} | {lin} | "
            f"{f(_relative(v['dpred'], v['dmeas']))} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--index", type=Path, default=ROOT / "features.db",
                        help="the shipped model's feature index (built here if missing)")  # fmt: skip
    parser.add_argument("--items", type=int, default=2, help="held-out items per task family")
    parser.add_argument("--threshold", type=float, default=None,
                        help="supernode distance threshold (default 0.5; 1.0 on the random "
                        "model, whose features share no role at 0.5)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup = shipped(args.index, args.items)
    real = setup is not None
    rm, index, prompts, two_hop = setup if real else random_model(args.items)
    threshold = args.threshold if args.threshold is not None else (0.5 if real else 1.0)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "two-hop-graph" if real else "random-model-graph"
    two_hop_figure(rm, index, two_hop, args.out / f"{stem}.png", threshold)
    table = checks(rm, index, prompts, threshold)
    what = "the shipped toy model and CLT" if real else "a random model and CLT (not the figures)"
    text = (f"Supernodes (threshold {threshold}) checked by ablation on {what}: each "
            "supernode's members set to 0 at their positions; change of the top logit (logit "
            "minus mean logit), predicted by the grouped graph (members move together), by the "
            "node graph, and measured in constrained mode; 'direct' holds every other feature "
            f"at its clean value.\n\n{table}\n")  # fmt: skip
    path = args.out / ("supernode-checks.md" if real else "random-model-checks.md")
    path.write_text(text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
