"""Collect paper runs trained with `vae-lightning fit` and tested with `vae-lightning test --ckpt_path last` (each
run one logger name, its versions the resumed pieces of the fit and then the test): per run the training curve
(`train/nelbo_epoch` by epoch) and the test metrics; across runs the mean and the standard deviation of `test/nll`
beside its Monte-Carlo error. Writes `<out>.json` and `<out>.png` (the training curves, test NLL in the legend).

    python scripts/paper_seeds.py --logs logs --runs paper_vae_k1_s42 paper_vae_k1_s43 paper_vae_k1_s44 \\
        --config configs/paper/vae_k1.yaml --out docs/results/paper_vae_k1_seeds --published 86.76

`--keep JSON` adds the runs of an earlier output whose logs are gone (those not named in `--runs`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
from pathlib import Path

from common import machine, relative, writable


def read_run(folder: Path) -> dict:
    """The curve and the test metrics of one run (`<logs>/<name>`), from every version's metrics.csv in order."""
    curve: dict[int, float] = {}
    test: dict[str, float] = {}
    checkpoint = None
    versions = sorted(folder.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    if not versions:
        raise SystemExit(f"{folder}: no version_* folders: is --logs the fit's save_dir and the run name right?")
    for version in [v for v in versions if (v / "metrics.csv").is_file()]:  # a run stopped before it logged: none
        with open(version / "metrics.csv", newline="") as file:
            for row in csv.DictReader(file):
                if row.get("train/nelbo_epoch"):
                    curve[int(row["epoch"])] = float(row["train/nelbo_epoch"])  # a resumed version overrides
                test.update({k: float(v) for k, v in row.items() if k.startswith("test/") and v})
        if (version / "checkpoints" / "last.ckpt").is_file():
            checkpoint = version / "checkpoints" / "last.ckpt"
    if "test/nll" not in test:
        raise SystemExit(f"{folder}: no test/nll logged: run `vae-lightning test ... --ckpt_path last` first")
    return {
        "name": folder.name,
        "epochs": max(curve) + 1 if curve else 0,
        "checkpoint": checkpoint and relative(checkpoint),
        "test": test,
        "train_nelbo_by_epoch": {str(k): round(v, 4) for k, v in sorted(curve.items())},
    }


def draw(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run in record["runs"]:
        epochs = [int(k) + 1 for k in run["train_nelbo_by_epoch"]]
        label = f"{run['name']}: test NLL {run['test']['test/nll']:.3f}"
        ax.plot(epochs, list(run["train_nelbo_by_epoch"].values()), lw=1, label=label)
    ax.set(xlabel="epoch", ylabel="train nelbo (nats per image)", ylim=(80, 110), title=record["config"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logs", type=Path, default=Path("logs"), help="the fit's trainer.logger save_dir")
    parser.add_argument("--runs", nargs="+", required=True, help="logger names, one per seed")
    parser.add_argument("--config", required=True, help="the config the runs were trained with")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix (.json and .png)")
    parser.add_argument("--published", type=float, help="the published test NLL, kept beside the runs' in the JSON")
    parser.add_argument("--note", default="", help="how the runs were made (machine, threads, wall time)")
    parser.add_argument("--keep", type=Path, help="an earlier output JSON whose other runs are kept (logs since gone)")
    args = parser.parse_args()
    if not Path(args.config).is_file():
        parser.error(f"--config {args.config}: no such file")
    if args.keep is not None and not args.keep.is_file():
        parser.error(f"--keep {args.keep}: no such file")
    writable(parser, "--out", file=args.out.with_suffix(".json"))
    kept = json.loads(args.keep.read_text())["runs"] if args.keep else []
    runs = [run for run in kept if run["name"] not in args.runs] + [read_run(args.logs / name) for name in args.runs]
    nll = [run["test"]["test/nll"] for run in runs]
    record = {
        "config": relative(args.config),
        "machine": machine(),
        "note": args.note,
        "evaluation": "test/nll: -log p(x) per image, k = test_likelihood.samples importance samples, dynamically "
        "binarized test images (once, data seed), Bernoulli likelihood summed over pixels, mean over 10,000 images",
        "published": args.published,
        "runs": runs,
        "test_nll_mean": statistics.fmean(nll),
        "test_nll_sd_across_runs": statistics.stdev(nll) if len(nll) > 1 else None,
        "test_nll_mc_se_largest": max(run["test"].get("test/nll_mc_se", math.nan) for run in runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    draw(record, args.out.with_suffix(".png"))
    sd = record["test_nll_sd_across_runs"]
    print(f"test NLL {record['test_nll_mean']:.3f}" + (f" ± {sd:.3f} (sd over {len(nll)} runs)" if sd else ""))


if __name__ == "__main__":
    main()
