"""Test NLL along a training run: `vae-lightning test` of each saved checkpoint, a figure against epochs and
against wall-clock, and the numbers as JSON.

The checkpoints are those a fit saved every N epochs (a ModelCheckpoint with `every_n_epochs` and
`save_top_k: -1` in `trainer.callbacks`, as `docs/results/README.md` shows). Each is tested with the
run's config at k = `--k` importance samples, and at k = `--k-final` for the epochs in `--final-epochs`
(the last always). Wall-clock is each checkpoint file's modification time minus `--start` (the run's
start, as `date -Iseconds` wrote it).

    python scripts/nll_curve.py --config configs/paper/vae_k1.yaml --checkpoints RUN/every100 \\
        --start "$(cat RUN/started)" --name paper_vae_k1 --out docs/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
from pathlib import Path

from common import command, latest_version, logged_metrics, machine, relative, run, writable


def epoch_of(path: Path) -> int:
    """The epoch number a checkpoint's file name carries (`epoch0099.ckpt`: 99, counted from 0)."""
    found = re.search(r"epoch(\d+)", path.name)
    if found is None:
        raise SystemExit(f"{path}: no epoch number in the file name")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config", required=True, nargs="+", help="the run's config files (the checkpoint decides the model)"
    )
    parser.add_argument("--checkpoints", type=Path, required=True, help="folder of epochNNNN.ckpt files")
    parser.add_argument("--start", required=True, help="the run's start time, ISO 8601")
    parser.add_argument("--name", required=True, help="names the figure and JSON: <out>/<name>_curve.{png,json}")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--k", type=int, default=500, help="importance samples for every checkpoint")
    parser.add_argument("--k-final", type=int, default=5000, help="importance samples for --final-epochs")
    parser.add_argument("--final-epochs", type=int, nargs="*", default=[], help="epochs (1-based) also at k-final")
    parser.add_argument("--published", type=float, default=None, help="a published test NLL, drawn as a line")
    parser.add_argument("--published-label", default="published", help="its label, e.g. 'Burda et al. 2016'")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--workdir", type=Path, default=Path("logs/nll_curve"), help="the test runs' logs")
    args = parser.parse_args()
    # the test commands run from the repository root (common.run): paths given from elsewhere made absolute
    args.config = [str(Path(c).resolve()) if Path(c).exists() else c for c in args.config]
    args.checkpoints, args.workdir, args.out = (p.resolve() for p in (args.checkpoints, args.workdir, args.out))
    writable(parser, "--out", args.out)
    writable(parser, "--workdir", args.workdir)
    try:
        start = datetime.datetime.fromisoformat(args.start.strip()).timestamp()
    except ValueError:
        parser.error(f"--start {args.start!r}: not an ISO date and time (e.g. 2026-12-04T15:09:00)")
    checkpoints = sorted(args.checkpoints.glob("*.ckpt"), key=epoch_of)
    if not checkpoints:
        parser.error(f"--checkpoints {args.checkpoints}: no .ckpt files")
    logs = args.workdir / args.name
    points = []
    for path in checkpoints:
        epoch = epoch_of(path) + 1
        point = {"epoch": epoch, "wall_seconds": round(path.stat().st_mtime - start, 1), "checkpoint": relative(path)}
        for k in sorted({args.k, *([args.k_final] if epoch in args.final_epochs or path == checkpoints[-1] else [])}):
            name = f"e{epoch:04d}_k{k}"
            arguments = [command("vae-lightning"), "test", *(a for c in args.config for a in ("--config", c))]
            arguments += ["--ckpt_path", str(path)]
            arguments += ["--test_likelihood.samples", str(k), "--trainer.enable_progress_bar", "false"]
            arguments += ["--trainer.logger.init_args.save_dir", str(logs), "--trainer.logger.init_args.name", name]
            arguments += ["--data.data_dir", args.data_dir] if args.data_dir else []
            seconds = run(arguments, logs / f"{name}.log")
            metrics = logged_metrics(latest_version(logs / name))
            point[f"nll_k{k}"], point[f"nll_k{k}_seconds"] = metrics["test/nll"], round(seconds, 1)
            point[f"nll_k{k}_mc_se"] = metrics["test/nll_mc_se"]
            point["nelbo"] = metrics["test/nelbo"]
            print(
                f"epoch {epoch}: test/nll (k={k}) {metrics['test/nll']:.3f} +- {metrics['test/nll_mc_se']:.3f}, "
                f"nelbo {metrics['test/nelbo']:.2f}",
                flush=True,
            )
        points.append(point)
    record = {
        "config": [relative(c) for c in args.config],
        "machine": machine(),
        "k": args.k,
        "k_final": args.k_final,
        "points": points,
    }
    if args.published is not None:
        record["published"] = {"nll": args.published, "label": args.published_label}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}_curve.json").write_text(json.dumps(record, indent=1) + "\n")
    draw(record, args.out / f"{args.name}_curve.png", args.name)


def draw(record: dict, path: Path, title: str, beside: dict[str, dict] | None = None) -> None:
    """The figure: test NLL (k and k-final) and nelbo against epochs and against wall-clock; `beside` adds
    other runs' k-point curves (label -> record, as this script writes them) in grey, for comparison."""
    from vae_lightning.experiments.figures import new_figure, write_png

    figure = new_figure(10, 4)
    for axes, x_key, label in zip(figure.subplots(1, 2), ("epoch", "wall_seconds"), ("epochs", "wall-clock (hours)")):
        scale = 3600 if x_key == "wall_seconds" else 1
        for key, style in ((f"nll_k{record['k']}", "o-"), (f"nll_k{record['k_final']}", "s")):
            shown = [p for p in record["points"] if key in p]
            axes.plot(
                [p[x_key] / scale for p in shown], [p[key] for p in shown], style, label=f"test NLL, k = {key[5:]}"
            )
        axes.plot([p[x_key] / scale for p in record["points"]], [p["nelbo"] for p in record["points"]], "x:",
                  label="test nelbo")  # fmt: skip
        for (name, other), shade in zip((beside or {}).items(), ("0.45", "0.7")):
            key = f"nll_k{other['k']}"
            axes.plot([p[x_key] / scale for p in other["points"]], [p[key] for p in other["points"]], ".--",
                      color=shade, label=f"{name}: test NLL, k = {other['k']}")  # fmt: skip
        if "published" in record:
            published = record["published"]
            axes.axhline(
                published["nll"], color="grey", linestyle="--", label=f"{published['label']}: {published['nll']}"
            )
        axes.set_xlabel(label)
        axes.set_ylabel("nats per image")
        axes.legend(fontsize=8)
    figure.suptitle(f"{title}: {record['machine']}", fontsize=9)
    write_png(figure, path)


if __name__ == "__main__":
    main()
