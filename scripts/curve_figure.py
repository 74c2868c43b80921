"""Draw again the figure of a curve `nll_curve.py` measured, from its JSON, with other runs' curves beside it.

    python scripts/curve_figure.py docs/results/paper_vae_k1_curve.json \\
        --beside "first recipe=docs/results/paper_vae_k1_exp_curve.json"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import writable
from nll_curve import draw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("record", type=Path, help="<name>_curve.json; the figure goes beside it as <name>_curve.png")
    parser.add_argument("--beside", nargs="*", default=[], help="LABEL=JSON: other curves, drawn in grey")
    args = parser.parse_args()
    for path in [args.record, *(item.partition("=")[2] for item in args.beside)]:
        if path and not Path(path).is_file():
            parser.error(f"{path}: no such file")
    writable(parser, "record", file=args.record.with_suffix(".png"))
    beside = {}
    for item in args.beside:
        label, _, path = item.partition("=")
        if not path:
            parser.error(f"--beside {item!r}: give LABEL=PATH")
        beside[label] = json.loads(Path(path).read_text())
    name = args.record.name.removesuffix("_curve.json")
    draw(json.loads(args.record.read_text()), args.record.with_suffix(".png"), name, beside)


if __name__ == "__main__":
    main()
