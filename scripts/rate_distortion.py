"""The rate-distortion sweep of `configs/sweeps/beta.yaml` on this machine, without W&B: every point a real fit.

    python scripts/rate_distortion.py                              # the sweep's grid (its time: docs/results)
    python scripts/rate_distortion.py --betas 0.1 1 10 --epochs 5  # a shorter one

The grid is the sweep's: `model.kl_weight` (beta) x `model.latent_dim`, on the sweep's config. Each point runs
the command `wandb agent` would (`vae-lightning fit --config configs/vanilla.yaml --model.kl_weight=B
--model.latent_dim=L`), logged as CSV instead of W&B, `--jobs` points at a time with one torch thread each;
then `vae-lightning test` of its last checkpoint (test recon is the distortion D, test kl the rate R, both
in nats per image; test nll at k = `--nll-samples`) and `vae-lightning-experiments --experiments
[latent_scatter]` (active units, k-NN accuracy of the digit from mu). Writes `<output>/rate_distortion.json`
and two figures: R against D with lines of constant ELBO (R + D; Alemi et al. 2018, "Fixing a Broken
ELBO"), and beta against test NLL, active units and k-NN accuracy.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from common import REPO, command, latest_version, logged_metrics, machine, relative, run, writable

SWEEP = REPO / "configs" / "sweeps" / "beta.yaml"


def sweep_grid(path: Path) -> tuple[list[str], list[float], list[int]]:
    """The sweep's configs (its command's `--config` files but the logger's), betas and latent sizes."""
    sweep = yaml.safe_load(path.read_text())
    parts = [str(part) for part in sweep["command"]]
    configs = [parts[i + 1] for i, part in enumerate(parts) if part == "--config" and "logger" not in parts[i + 1]]
    parameters = sweep["parameters"]
    return configs, parameters["model.kl_weight"]["values"], parameters["model.latent_dim"]["values"]


def one_point(configs: list[str], beta: float, latents: int, args, workdir: Path) -> dict:
    """Fit, test and measure one point; its numbers."""
    name = f"latent{latents}_beta{beta:g}"
    folder = workdir / name
    point = ["--model.kl_weight", str(beta), "--model.latent_dim", str(latents)]
    logged = [*point, "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(folder)]
    logged += ["--trainer.logger.init_args.name", "run"]
    settings = [*(a for c in configs for a in ("--config", c)), *logged]  # the fit's and the test's
    fit = [command("vae-lightning"), "fit", *settings]
    fit += ["--experiments.names", "[]", *(["--trainer.max_epochs", str(args.epochs)] if args.epochs else [])]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(f"[{name}] fit ...", flush=True)
    fit_seconds = run(fit, folder / "fit.log", env=env)
    fit_dir = latest_version(folder / "run")
    checkpoint = fit_dir / "checkpoints" / "last.ckpt"
    test = [command("vae-lightning"), "test", *settings]
    test += ["--ckpt_path", str(checkpoint), "--test_likelihood.samples", str(args.nll_samples)]
    run(test, folder / "test.log", env=env)
    tested = logged_metrics(latest_version(folder / "run"))
    experiments = [
        command("vae-lightning-experiments"),
        "--ckpt_path",
        str(checkpoint),
        "--experiments",
        "[latent_scatter]",
    ]
    experiments += ["--output_dir", str(folder / "experiments"), "--overwrite", "true"]
    run(experiments, folder / "experiments.log", env=env)
    scatter = json.loads((folder / "experiments" / "measures.json").read_text())["experiments"]["latent_scatter"]
    print(
        f"[{name}] done: fit {fit_seconds:.0f} s, D {tested['test/recon']:.2f}, R {tested['test/kl']:.2f}", flush=True
    )
    return {
        "beta": beta,
        "latent_dim": latents,
        "epochs": int(logged_metrics(fit_dir)["epoch"]) + 1,
        "fit_seconds": round(fit_seconds, 1),
        "distortion": tested["test/recon"],
        "rate": tested["test/kl"],
        "nelbo": tested["test/nelbo"],
        "nll": tested["test/nll"],
        "nll_mc_se": tested["test/nll_mc_se"],
        "active_units": scatter["active_units"],
        "knn_accuracy": scatter["knn_accuracy"],
        "checkpoint": relative(checkpoint),
    }


def draw(points: list[dict], path: Path) -> None:
    """Rate against distortion with lines of constant ELBO, and beta against test NLL, active units, k-NN."""
    import numpy
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(16, 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    plane, *panels = figure.subplots(1, 4, gridspec_kw={"width_ratios": [1.6, 1, 1, 1]})
    sizes = sorted({p["latent_dim"] for p in points})
    groups = {size: sorted((p for p in points if p["latent_dim"] == size), key=lambda p: p["beta"]) for size in sizes}
    d = numpy.array([p["distortion"] for p in points])
    r = numpy.array([p["rate"] for p in points])
    pad = 0.08 * max(numpy.ptp(d), numpy.ptp(r), 1.0)
    xlim, ylim = (d.min() - pad, d.max() + pad), (max(0.0, r.min() - pad), r.max() + pad)
    for elbo in numpy.linspace(xlim[0] + ylim[0], xlim[1] + ylim[1], 12)[1:-1]:  # R + D = const: slope -1
        plane.plot([elbo - ylim[1], elbo - ylim[0]], [ylim[1], ylim[0]], color="0.88", lw=0.8, zorder=0)
    best = min(points, key=lambda p: p["nelbo"])
    plane.plot([best["nelbo"] - ylim[1], best["nelbo"] - ylim[0]], [ylim[1], ylim[0]], color="0.6", lw=1, ls="--",
               zorder=0, label=f"R + D = {best['nelbo']:.1f} (the best ELBO)")  # fmt: skip
    for size, group in groups.items():
        plane.plot([p["distortion"] for p in group], [p["rate"] for p in group], marker="o", label=f"{size} latents")
        for p in group:
            plane.annotate(f"beta {p['beta']:g}", (p["distortion"], p["rate"]), fontsize=7, xytext=(5, 3),
                           textcoords="offset points")  # fmt: skip
    plane.set(xlim=xlim, ylim=ylim, aspect="equal", xlabel="distortion D: test recon (nats per image)",
              ylabel="rate R: test KL (nats per image)", title="rate-distortion (grey: R + D constant)")  # fmt: skip
    plane.legend(loc="upper right", fontsize=8)
    betas = sorted({p["beta"] for p in points})
    titles = ("test NLL (nats per image)", "active units", "k-NN accuracy of the digit")
    for axis, key, label in zip(panels, ("nll", "active_units", "knn_accuracy"), titles):
        for size, group in groups.items():
            values = [p[key] for p in group]
            axis.plot([p["beta"] for p in group], values, marker="o", label=f"{size} latents")
        axis.set(xscale="log", xlabel="beta (model.kl_weight)", title=label)
        axis.set_xticks(betas, [f"{b:g}" for b in betas])
        axis.minorticks_off()
        axis.legend(fontsize=8)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", type=Path, default=SWEEP, help="the W&B sweep whose grid to run")
    parser.add_argument("--config", action="append", default=[], help="a config piece after the sweep's (repeatable)")
    parser.add_argument("--betas", type=float, nargs="+", default=None, help="instead of the sweep's")
    parser.add_argument("--latents", type=int, nargs="+", default=None, help="instead of the sweep's")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--nll-samples", type=int, default=500, help="k of test/nll")
    parser.add_argument("--jobs", type=int, default=2, help="points at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per point")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "results")
    parser.add_argument("--workdir", type=Path, default=REPO / "logs" / "rate_distortion")
    args = parser.parse_args()
    for flag in ("epochs", "nll_samples", "jobs", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1")
    for path in (args.sweep, *args.config):
        if not Path(path).is_file():
            parser.error(f"no such file: {path}")
    writable(parser, "--output", args.output)
    writable(parser, "--workdir", args.workdir)
    configs, betas, latents = sweep_grid(args.sweep)
    configs += [str(Path(path).resolve()) for path in args.config]  # the fits run from the repository root
    grid = [(b, size) for size in (args.latents or latents) for b in (args.betas or betas)]
    betas, sizes = sorted({b for b, _ in grid}), sorted({size for _, size in grid})
    if bad := [f"beta {b:g}" for b in betas if b < 0] + [f"{size} latents" for size in sizes if size < 1]:
        parser.error(f"the grid holds {', '.join(bad)}: betas must be >= 0 (model.kl_weight), latents >= 1")
    start = time.perf_counter()

    def attempt(point: tuple[float, int]) -> dict:  # a failed point is named at the end; the others still run
        try:
            return one_point(configs, *point, args, args.workdir)
        except SystemExit as failed:
            print(f"[latent{point[1]}_beta{point[0]:g}] {failed}", flush=True)
            return {"beta": point[0], "latent_dim": point[1], "failed": str(failed)}

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(attempt, grid))
    points, failed = [p for p in results if "failed" not in p], [p for p in results if "failed" in p]
    seconds = time.perf_counter() - start
    if not points:
        sys.exit(f"every point failed; the first: {failed[0]['failed']}")
    args.output.mkdir(parents=True, exist_ok=True)
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "command": "python scripts/rate_distortion.py " + " ".join(sys.argv[1:]),
        "sweep": str(args.sweep.relative_to(REPO)) if args.sweep.is_relative_to(REPO) else str(args.sweep),
        "configs": configs,
        "data": "continuous pixels (x/255), BCE summed over pixels, nats per image; test nll at k importance samples",
        "nll_samples": args.nll_samples,
        "jobs": args.jobs,
        "threads_per_job": args.threads,
        "wall_seconds": round(seconds, 1),
        "points": points,
        "failed": failed,
    }
    (args.output / "rate_distortion.json").write_text(json.dumps(record, indent=1) + "\n")
    draw(points, args.output / "rate_distortion.png")
    print(
        f"{len(points)} points in {seconds / 60:.1f} min: {args.output / 'rate_distortion.json'}, rate_distortion.png"
    )
    if failed:
        sys.exit(f"{len(failed)} of {len(grid)} points failed (named above and in the JSON's 'failed'): see their logs")


if __name__ == "__main__":
    main()
