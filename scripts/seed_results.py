"""Train and test the shipped configs through the CLI, and write their test numbers with timings.

    python scripts/seed_results.py --output docs/results/seed_variants.json
    python scripts/seed_results.py --runs vanilla-b128-e10 --output docs/results/reference.json

Each run is `vae-lightning fit --config configs/<variant>.yaml [overrides]` then
`vae-lightning test ... --ckpt_path <its last.ckpt>`, in subprocesses, exactly as a user runs them.
Prints a Markdown table; writes one JSON record per run (metrics, settings, seconds, machine).
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import yaml
from common import REPO, command, config_args, latest_version, logged_metrics, machine, run, writable

# name -> (variant config, extra CLI arguments)
RUNS: dict[str, tuple[str, list[str]]] = {
    "vanilla": ("vanilla", []),
    "two_latent": ("two_latent", []),
    "cnn": ("cnn", []),
    "no_kld": ("no_kld", []),
    "no_recon": ("no_recon", []),
    # pytorch/examples' vae/main.py setting: 10 epochs at batch 128 (its test loss: about 105.6 nats)
    "vanilla-b128-e10": ("vanilla", ["--trainer.max_epochs", "10", "--data.batch_size", "128"]),
    # the IWAE paper's one-stochastic-layer models on dynamically binarized MNIST, test NLL with k = 5000;
    # on a 2-core CPU only bounded runs (the configs' 1,000 epochs are meant for a GPU)
    "paper_vae_k1-e30": ("paper/vae_k1", ["--trainer.max_epochs", "30"]),
    "paper_iwae_k50-e5": ("paper/iwae_k50", ["--trainer.max_epochs", "5"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(RUNS)[:5], choices=list(RUNS))
    parser.add_argument("--output", type=Path, required=True, help="JSON file for the records")
    parser.add_argument("--workdir", type=Path, default=REPO / "logs" / "seed_results")
    args = parser.parse_args()
    writable(parser, "--output", file=args.output)
    writable(parser, "--workdir", args.workdir)
    cli = [command("vae-lightning")]
    records = []
    for name in args.runs:
        variant, extra = RUNS[name]
        save_dir = args.workdir / name
        common = config_args(variant, extra, save_dir, name)
        save_dir.mkdir(parents=True, exist_ok=True)
        print(f"[{name}] fit ...", flush=True)
        fit_seconds = run([*cli, "fit", *common], save_dir / "fit.log")
        fit_dir = latest_version(save_dir / name)
        config = (fit_dir / "config.yaml").read_text()
        print(f"[{name}] fit {fit_seconds:.0f} s; test ...", flush=True)
        test_seconds = run(
            [*cli, "test", *common, "--ckpt_path", str(fit_dir / "checkpoints" / "last.ckpt")], save_dir / "test.log"
        )
        test_dir = latest_version(save_dir / name)
        metrics = {k: v for k, v in logged_metrics(test_dir).items() if k.startswith("test/")}
        resolved = yaml.safe_load(config)
        record = {
            "name": name,
            "command": f"vae-lightning fit --config configs/{variant}.yaml {' '.join(extra)}".strip(),
            "epochs": resolved["trainer"]["max_epochs"],
            "batch_size": resolved["data"]["batch_size"],
            "binarize": resolved["data"]["binarize"],
            "objective": resolved["model"].get("objective", "elbo"),
            "train_samples": resolved["model"].get("train_samples", 1),
            "train_matmul_precision": (resolved.get("speed") or {}).get("init_args", {}).get("train_matmul_precision"),
            "nll_samples": resolved["test_likelihood"]["init_args"]["samples"],
            "val_nelbo_last": logged_metrics(fit_dir).get("val/nelbo"),
            **metrics,
            "fit_seconds": round(fit_seconds, 1),
            "test_seconds": round(test_seconds, 1),
            "machine": machine(),
            "date": datetime.date.today().isoformat(),
        }
        records.append(record)
        print(json.dumps(record), flush=True)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(records, indent=1) + "\n")

    print("\n| run | data | objective (k) | epochs | batch | test nelbo | test nll (k) | fit s | test s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in records:
        print(
            f"| {r['name']} | {r['binarize']} | {r['objective']} ({r['train_samples']}) | {r['epochs']} | "
            f"{r['batch_size']} | {r['test/nelbo']:.2f} | {r['test/nll']:.2f} ({r['nll_samples']}) | "
            f"{r['fit_seconds']:.0f} | {r['test_seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
