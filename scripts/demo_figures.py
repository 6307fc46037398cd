"""Screenshots of the five demos' graph pages for demos/README.md: headless Chromium's own
`--screenshot` of each page in demos/out/ (run `python demos/run_all.py` first), written to
demos/img/<demo>.png.

    python scripts/demo_figures.py [--pages demos/out] [--out demos/img]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from graph_figures import ROOT, screenshot

DEMOS = ("two_hop", "rhyme", "multilingual", "addition", "hallucination")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pages", type=Path, default=ROOT / "demos" / "out")
    p.add_argument("--out", type=Path, default=ROOT / "demos" / "img")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in DEMOS:
        page = args.pages / f"{name}.html"
        if not page.is_file():
            raise SystemExit(f"{page} is missing: run `python demos/run_all.py` first")
        png = args.out / f"{name}.png"
        screenshot(page, png, "", (1400, 560))
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
