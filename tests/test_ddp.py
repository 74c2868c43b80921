"""Real DDP: two gloo processes through the CLI give the same numbers, figures and predictions as one."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS

from vae_lightning.experiments.command import main as experiments_main

DDP_CPU = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]


def cli_subprocess(args: list, cwd: Path, timeout: float = 240) -> str:
    """Run `python -m vae_lightning ...` in its own process group; kill the whole group if it hangs."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VAE_LIGHTNING_DATA_DIR": str(cwd / "unused")}
    command = [sys.executable, "-m", "vae_lightning", *map(os.fspath, args)]
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)  # fmt: skip
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # Lightning traps SIGTERM; the DDP ranks share the group
        out, _ = process.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(command)}\n{out[-3000:]}")
    assert process.returncode == 0, out[-3000:]
    return out


def read_test_metrics(log_root: Path) -> dict[str, float]:
    (version,) = [p for p in log_root.iterdir() if (p / "metrics.csv").exists()]
    rows = list(csv.DictReader(open(version / "metrics.csv")))
    return {k: float(v) for row in rows for k, v in row.items() if k.startswith("test/") and v}


@pytest.mark.slow
def test_two_processes_fit_test_and_predict_exactly_like_one(tiny_config, tmp_path):
    base = ["--config", CONFIGS / "two_latent.yaml", "--config", tiny_config]
    experiments = tmp_path / "experiments.yaml"  # two experiments that gather the test posterior across ranks
    experiments.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "vae_lightning.experiments.LatentScatter"},
        {"class_path": "vae_lightning.experiments.EpsilonSweep"},
    ]}}))  # fmt: skip
    out = cli_subprocess(["fit", *base, "--config", experiments, *DDP_CPU, "--trainer.max_epochs", "1",
                          "--trainer.logger.init_args.name", "fit"], tmp_path)  # fmt: skip
    assert "MEMBER: 2/2" in out
    run = tmp_path / "logs" / "fit" / "version_0"
    assert sorted(p.name for p in (run / "figures").iterdir()) == [
        "exp_epsilon_sweep-epoch000.png", "exp_latent_scatter-epoch000.png"]  # fmt: skip
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    logged = {k: float(v) for row in rows for k, v in row.items() if k.startswith("exp/") and v}
    checkpoint = run / "checkpoints" / "last.ckpt"

    # the figures' numbers from the gathered posterior equal a single process's on the same weights
    single = experiments_main(["--ckpt_path", str(checkpoint), "--output_dir", str(tmp_path / "single"),
                               "--experiments", "[latent_scatter, epsilon_sweep]"])["experiments"]  # fmt: skip
    for name, values in single.items():
        for key, value in values.items():
            assert logged[f"exp/{name}/{key}"] == pytest.approx(value, rel=1e-4, abs=1e-6), (name, key)

    results, latents = {}, {}
    for name, extra in (("one", ["--trainer.devices", "1"]), ("two", DDP_CPU)):
        out = cli_subprocess(["test", *base, *extra, "--ckpt_path", checkpoint, "--trainer.logger.init_args.name",
                              f"test_{name}", "--data.eval_batch_size", "30"], tmp_path)  # fmt: skip
        assert ("MEMBER: 2/2" in out) == (name == "two")  # really two ranks
        results[name] = read_test_metrics(tmp_path / "logs" / f"test_{name}")
        cli_subprocess(["predict", *base, *extra, "--ckpt_path", checkpoint, "--predictions.output_dir",
                        tmp_path / f"predict_{name}", "--data.eval_batch_size", "30"], tmp_path)  # fmt: skip
        latents[name] = torch.load(tmp_path / f"predict_{name}" / "latents_test.pt", weights_only=True)
    assert set(results["one"]) == {"test/loss", "test/recon", "test/kl", "test/nelbo", "test/nll"}
    for key, value in results["one"].items():
        assert results["two"][key] == pytest.approx(value, rel=1e-5), key
    assert torch.equal(latents["two"]["index"], torch.arange(100))  # every image once, in order
    for key in ("mu", "logvar", "label"):
        torch.testing.assert_close(latents["two"][key], latents["one"][key])
