"""Every GPU number in one go (under 10 minutes on one CUDA GPU), written with the device's name to one JSON file.

In order, each step a real command of the package, its output in `<out>/<step>.log`:

  1. IWAE, k = 50, with DReG: `vae-lightning fit --config configs/paper/iwae_k50.yaml` (the IWAE k = 5
     recipe: one-cycle learning rate over `--iwae-epochs`, Glorot weights, the output bias at the data's
     mean) on the GPU, stopped after `--iwae-minutes` if given (`trainer.max_time`), then `test` of its last
     checkpoint at k = 5000;
  2. `scripts/benchmark.py --device cuda` at batch 128 and at batch 1024;
  3. `vae-lightning fit` + `test` of `configs/vanilla.yaml` with the data on the GPU.

    python scripts/gpu_runs.py                      # on a machine with one CUDA GPU
    python scripts/gpu_runs.py --dry-run            # the same steps on the CPU, tiny sizes (a test runs it)

The JSON (`<out>/gpu_runs.json`, also the last line printed) holds the machine, the device, the date,
and per step its wall time and numbers (test metrics in nats per image; the data mode and k with them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

from common import REPO, command, config_args, latest_version, logged_metrics, machine, relative, run, writable

# The dry run: every step on the CPU with a few batches, so a test can run the script end to end in minutes.
TINY = [
    "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "2",
    "--trainer.limit_test_batches", "2", "--test_likelihood.samples", "8",
]  # fmt: skip


def fit_and_test(name: str, config: str, extra: list[str], test_extra: list[str], out: Path) -> dict:
    """`vae-lightning fit` then `test` of the fit's last checkpoint; their wall times, epochs and test metrics."""
    cli, logs = command("vae-lightning"), out / "logs"
    fit_seconds = run([cli, "fit", *config_args(config, extra, logs, name)], out / f"{name}_fit.log")
    fit_dir = latest_version(logs / name)
    checkpoint = fit_dir / "checkpoints" / "last.ckpt"
    test_args = config_args(config, [*extra, *test_extra], logs, name)
    test_seconds = run([cli, "test", *test_args, "--ckpt_path", str(checkpoint)], out / f"{name}_test.log")
    fitted = logged_metrics(fit_dir)
    return {
        "config": f"configs/{config}.yaml",
        "arguments": extra,
        "epochs": int(fitted.get("epoch", -1)) + 1,
        "fit_seconds": round(fit_seconds, 1),
        "test_seconds": round(test_seconds, 1),
        "test": {k: v for k, v in logged_metrics(latest_version(logs / name)).items() if k.startswith("test/")},
        "checkpoint": relative(checkpoint),
    }


def benchmark(batch_size: int, device: str, data_dir: str | None, dry_run: bool, out: Path) -> dict:
    """`scripts/benchmark.py` at this batch size; its JSON."""
    result = out / f"benchmark_b{batch_size}.json"
    args = [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--device", device, "--batch-size", str(batch_size)]
    args += ["--json", str(result), *(["--data-dir", data_dir] if data_dir else [])]
    if dry_run:
        args += ["--epochs", "2", "--repeats", "1", "--limit-batches", "4", "--nll-samples", "4"]
    seconds = run(args, out / f"benchmark_b{batch_size}.log")
    return {"seconds": round(seconds, 1), **json.loads(result.read_text())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "gpu_runs", help="folder for logs and the JSON")
    parser.add_argument("--iwae-epochs", type=int, default=1000, help="epochs of step 1 (its one-cycle length)")
    parser.add_argument("--iwae-minutes", type=float, default=None, help="stop step 1's training after this long")
    parser.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: the package's)")
    parser.add_argument("--dry-run", action="store_true", help="every step on the CPU with tiny sizes")
    args = parser.parse_args()
    if args.iwae_epochs < 1 or (args.iwae_minutes is not None and args.iwae_minutes <= 0):
        parser.error("--iwae-epochs and --iwae-minutes must be positive")
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA GPU is visible: run it on a machine with one, or check the steps with --dry-run")
    writable(parser, "--out", args.out)
    device = "cpu" if args.dry_run else "cuda"
    trainer = ["--trainer.accelerator", "cpu"] if args.dry_run else ["--config", "configs/trainer/gpu.yaml"]
    data = ["--data.data_dir", args.data_dir] if args.data_dir else []
    tiny = TINY if args.dry_run else []
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    record = {
        "machine": machine(),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)",
        "date": datetime.date.today().isoformat(),
        "data": "IWAE: binarize dynamic, test NLL k = 5000; vanilla: continuous pixels, k = 1000; nats per image",
    }
    epochs = str(args.iwae_epochs)
    iwae = [*trainer, *data, "--trainer.max_epochs", epochs, "--model.lr_scheduler.init_args.total_steps", epochs]
    if args.iwae_minutes is not None:
        minutes = f"00:00:{int(args.iwae_minutes):02d}:{round(args.iwae_minutes % 1 * 60):02d}"
        iwae += ["--trainer.max_time", minutes]
    iwae += tiny
    record["iwae_k50_dreg"] = fit_and_test("gpu_iwae_k50_dreg", "paper/iwae_k50", iwae, [], args.out)
    print(f"iwae k=50 dreg: {record['iwae_k50_dreg']['test']}", flush=True)
    for batch_size in (128, 1024):
        record[f"benchmark_b{batch_size}"] = benchmark(batch_size, device, args.data_dir, args.dry_run, args.out)
        print(f"benchmark b{batch_size}: speed-up {record[f'benchmark_b{batch_size}'].get('speedup')}", flush=True)
    record["vanilla"] = fit_and_test("gpu_vanilla", "vanilla", [*trainer, *data, *tiny], [], args.out)
    record["seconds"] = round(time.perf_counter() - start, 1)
    (args.out / "gpu_runs.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
