"""Run the five demos in one process and print each report and a summary.

python demos/run_all.py [--quick] [--out DIR] [--no-labels]
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import _kit

DEMOS = ("two_hop", "rhyme", "multilingual", "addition", "hallucination")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="a small sample of held-out items each")
    p.add_argument("--out", type=Path, default=_kit.OUT, help="where the graph pages go")
    p.add_argument("--no-labels", action="store_true", help="skip the feature index and labels")
    p.add_argument("--results", type=Path, help="also write every table as markdown here")
    p.add_argument("demos", nargs="*", choices=[*DEMOS, []], metavar="DEMO", help=", ".join(DEMOS))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary, reports = [], []
    for name in args.demos or DEMOS:
        t0 = time.perf_counter()
        verdict = importlib.import_module(name).run(args.quick, args.out, not args.no_labels)
        verdict.seconds = time.perf_counter() - t0
        print(verdict.report(), "\n", flush=True)
        reports.append(f"## {name}\n\n```\n{verdict.report(max_rows=None)}\n```\n")
        for c in verdict.checks:
            target = f"target {c.target:.0%}" if c.target is not None else "measured"
            summary.append(f"{name:<14} {c.rate:7.1%}  ({target})  {c.name}")
    print("== summary (success rate over held-out items)")
    print("\n".join(summary))
    if args.results:
        sample = "a small sample" if args.quick else "all (or the stated sample of) held-out items"
        text = (f"# Demo results\n\nWritten by `python demos/run_all.py --results` over {sample}; "
                "every row is a real intervention on the shipped model.\n\n```\n"
                + "\n".join(summary) + "\n```\n\n" + "\n".join(reports))  # fmt: skip
        args.results.write_text(text.replace(str(args.out), "demos/out"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
