"""`tl-clt trace "prompt"`: build a prompt's attribution graph on the shipped model (or on
`--model MODEL --clt DIR`, by the rule in `tl_clt.commands._common`), prune it, group its
features into supernodes, write the graph files, the Neuronpedia JSON (with the supernodes)
and, with `--html`, the graph page; print the strongest paths to the top logit, the
replacement and completeness scores and the supernodes (with `--validate-supernodes`, each
checked by ablation)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from tl_clt.commands._common import add_model_arguments, resolve_replacement

HELP = "build, prune and save the attribution graph of a prompt; print its top paths and scores"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", help="the prompt to trace (a BOS is prepended)")
    add_model_arguments(parser, device=False)
    parser.add_argument("--out", metavar="DIR", help="output directory (default: graphs/<slug>)")
    parser.add_argument("--slug", help="the graph's name in the files (default: from the prompt)")
    parser.add_argument("--target", action="append", metavar="TOKEN",
                        help="a logit target token (repeatable; default: the most likely tokens): "
                             "text that is exactly one token as encoded on its own (' Paris' "
                             "with its space for a subword tokenizer), or id:N for token id N")  # fmt: skip
    parser.add_argument(
        "--logit-diff", nargs=2, metavar=("A", "B"),
        help="target logit(A) - logit(B); each a token as for --target",
    )  # fmt: skip
    parser.add_argument("--max-feature-nodes", type=int, help="feature-node budget (default: all)")
    parser.add_argument("--batch-size", type=int, default=256, help="targets per backward pass")
    parser.add_argument("--node-threshold", type=float, default=0.8)
    parser.add_argument("--edge-threshold", type=float, default=0.98)
    parser.add_argument("--rank-prunable-only", action="store_true",
                        help="measure the node threshold against the features' and errors' "
                        "influence only (tokens are kept anyway)")  # fmt: skip
    parser.add_argument("--paths", type=int, default=5, help="how many top paths to print")
    parser.add_argument(
        "--html", metavar="PATH", help="write the graph page (one offline HTML file)"
    )
    parser.add_argument("--index", metavar="DB", help="a feature index (tl-clt label) for labels")
    parser.add_argument(
        "--supernodes",
        choices=("auto", "none"),
        default="auto",
        help="group the pruned graph's features into supernodes (default: auto)",
    )
    parser.add_argument(
        "--supernode-threshold",
        type=float,
        default=0.5,
        metavar="D",
        help="largest mean distance (1 - cosine) within a supernode (default 0.5)",
    )
    parser.add_argument(
        "--validate-supernodes",
        action="store_true",
        help="ablate each supernode and compare with the grouped graph's prediction",
    )
    parser.add_argument(
        "--faithfulness",
        type=int,
        default=0,
        metavar="N",
        help="turn off the N strongest source features one at a time and compare the graph's "
        "prediction with the change in the model itself (writes faithfulness.json; default 0)",
    )


def slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:48].rstrip("-") or "graph"


def token_arg(text: str) -> str | int:
    """A token named on the command line: "id:N" is token id N, anything else its text."""
    from tl_clt.errors import InputError

    if text.startswith("id:"):
        try:
            return int(text[3:])
        except ValueError:
            raise InputError(f"{text!r}: write id:N with N a token id, e.g. id:42") from None
    return text


def open_index(path: str | None) -> Any:
    from tl_clt.errors import InputError
    from tl_clt.labels import FeatureIndex

    if path is None:
        return None
    if not Path(path).is_file():
        raise InputError(f"--index {path} is not a file; build one with `tl-clt label`")
    return FeatureIndex(path)


def run(args: argparse.Namespace) -> int:
    from tl_clt import LogitDifference, attribute, group_supernodes
    from tl_clt.prune import PruneSpec
    from tl_clt.viz.graph_page import render_graph
    from tl_clt.viz.neuronpedia import write_neuronpedia

    rm = resolve_replacement(args)
    clt = rm.clt
    index = open_index(args.index)
    if index is not None:
        index.check_transcoder(clt)
    targets = (
        LogitDifference(*map(token_arg, args.logit_diff))
        if args.logit_diff
        else None
        if args.target is None
        else [token_arg(t) for t in args.target]
    )
    graph = attribute(
        rm, args.prompt, targets=targets,
        max_feature_nodes=args.max_feature_nodes, batch_size=args.batch_size,
    )  # fmt: skip
    spec = PruneSpec(args.node_threshold, args.edge_threshold,
                     rank_always_kept=not args.rank_prunable_only)  # fmt: skip
    pruned = graph.prune(spec)  # the one pruning: files, JSON and page all show it
    grouped = None
    if args.supernodes == "auto":
        grouped = group_supernodes(pruned, clt, index, threshold=args.supernode_threshold)
    slug = args.slug or slugify(args.prompt)
    out = Path(args.out or Path("graphs") / slug)
    graph.save(out / "graph")
    pruned.save(out / "pruned")
    write_neuronpedia(pruned, out, slug, supernodes=grouped or (), index=index)
    _report(graph, pruned, args.paths, out, slug)
    if grouped is not None:
        _report_supernodes(rm, grouped, args.validate_supernodes, graph)
    if args.faithfulness < 0:
        from tl_clt.errors import InputError

        raise InputError(f"--faithfulness {args.faithfulness}: give a number of features >= 0")
    if args.faithfulness:
        _report_faithfulness(rm, graph, args.faithfulness, out)
    if args.html:
        page = render_graph(pruned, index, grouped, clt)
        path = page.save(args.html)
        print(
            f"wrote the graph page {path} ({path.stat().st_size / 2**20:.2f} MB); open it in a browser"
        )
    return 0


def _report_faithfulness(rm: Any, graph: Any, n: int, out: Path) -> None:
    import json

    from tl_clt._files import atomic_write_text
    from tl_clt.faithfulness import faithfulness

    result = faithfulness(rm, graph, n_sources=n)
    print(result)
    atomic_write_text(out / "faithfulness.json", json.dumps(result.to_dict(), indent=2) + "\n")
    print(f"wrote {out / 'faithfulness.json'}")


def _report_supernodes(rm: Any, grouped: Any, validate: bool, graph: Any) -> None:
    from tl_clt import validate_supernodes

    print(f"supernodes: {len(grouped.supernodes)}")
    for s in grouped.supernodes:
        print(f"  {s.name}: {len(s.members)} features")
    members = sorted({i for s in grouped.supernodes for i in s.members})
    if members:
        # measured in the whole graph: every feature outside the supernodes counts as error
        sc = graph.scores(grouped.graph.original_index[members].tolist())
        print(
            f"the supernodes' {len(members)} features alone: replacement score {sc.replacement:.3f}, "
            f"completeness {sc.completeness:.3f} (every other feature counts as error)"
        )
    if validate and grouped.supernodes:
        print(validate_supernodes(rm, grouped))


def _report(graph: Any, pruned: Any, k: int, out: Path, slug: str) -> None:
    from tl_clt.graph import NodeKind

    full = graph.scores()
    print(f"prompt: {graph.prompt!r}  ({graph.info.model}, {graph.info.transcoder})")
    counts = ", ".join(f"{int(graph.mask(kind).sum())} {kind.value}" for kind in NodeKind)
    print(
        f"graph: {counts}; pruned to {pruned.n_nodes} nodes, {int((pruned.adjacency != 0).sum())} edges"
    )
    kept = graph.kept_influence(pruned)
    print(
        f"pruning kept {kept.n_kept} of {kept.n_features} features, holding "
        f"{kept.kept_share:.1%} of the features' influence (tokens, always kept, hold "
        f"{kept.token_share:.1%} of all influence)"
    )
    logits = [pruned.nodes[i] for i in pruned.indices(NodeKind.LOGIT)]
    top = max(logits, key=lambda n: n.weight)
    print(
        f"top logit: {top.shown_token!r}"
        + (f" (p={top.probability:.3f})" if top.probability is not None else "")
    )
    print(f"top paths to {top.shown_token!r} (share of its input carried by the path):")
    for path in pruned.top_paths(k):
        labels = " -> ".join(pruned.nodes[i].label() for i in path.nodes)
        print(f"  {path.score:.4f}  {labels}")
    info = pruned.info
    print(
        f"replacement score: {info.replacement_score:.3f} pruned, {full.replacement:.3f} unpruned, "
        f"{info.replacement_score_strict:.3f} strict"
    )
    print(
        f"completeness score: {info.completeness_score:.3f} pruned, {full.completeness:.3f} "
        f"unpruned, {info.completeness_score_strict:.3f} strict"
    )
    print(
        "(pruned: the pruned graph scored on its own edges; strict: what pruning dropped counts "
        "as error, so the share of the answer the pruned graph accounts for)"
    )
    print(f"wrote {out / 'graph'}, {out / 'pruned'} and {out / (slug + '.json')}")
