"""Real DDP: two gloo processes through the CLI give the same numbers, figures and predictions as one."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
import yaml
from conftest import CONFIGS, cli_subprocess, configs, read_metrics

from vae_lightning.experiments.command import main as experiments_main

DDP_CPU = ["--config", CONFIGS / "trainer" / "ddp_cpu.yaml"]  # 2 processes over gloo


def test_the_entry_point_releases_the_process_group_when_the_run_is_over(tiny_config, tmp_path, monkeypatch):
    # Lightning destroys the process group at exit only under NCCL; a gloo one left to interpreter shutdown can abort a
    # process whose run succeeded (SIGABRT, "terminate called without an active exception"), so `main` does.
    from probes import ProcessGroupSeen

    from vae_lightning.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vae-lightning"])  # pytest's own arguments are not ours
    ProcessGroupSeen.seen.clear()
    environment = dict(os.environ)
    try:
        main(
            [
                "fit",
                *configs(str(CONFIGS / "two_latent.yaml"), str(tiny_config)),
                *map(str, DDP_CPU),
                "--trainer.devices",
                "1",
                "--trainer.max_epochs",
                "1",
                "--trainer.limit_train_batches",
                "2",
                "--trainer.limit_val_batches",
                "1",
                "--trainer.callbacks",
                '[{"class_path": "probes.ProcessGroupSeen"}]',
            ]
        )
    finally:  # Lightning's launcher leaves LOCAL_RANK, MASTER_PORT, ... here; later DDP subprocesses would inherit them
        os.environ.clear()
        os.environ.update(environment)
    assert ProcessGroupSeen.seen == [True]  # the run had a gloo group (DDP, one process)
    assert not torch.distributed.is_initialized()


@pytest.mark.slow
def test_a_two_process_fit_gathers_experiments_and_two_processes_test_and_predict_like_one(tiny_config, tmp_path):
    base = ["--config", CONFIGS / "two_latent.yaml", "--config", tiny_config]
    experiments = tmp_path / "experiments.yaml"  # two experiments that gather the test posterior across ranks
    experiments.write_text(
        yaml.safe_dump({"experiments": {"names": ["latent_scatter", "epsilon_sweep"], "every_n_epochs": 1}})
    )
    out = cli_subprocess(
        [
            "fit",
            *base,
            "--config",
            experiments,
            *DDP_CPU,
            "--trainer.max_epochs",
            "1",
            "--trainer.logger.init_args.name",
            "fit",
        ],
        tmp_path,
    )
    assert "MEMBER: 2/2" in out
    run = tmp_path / "logs" / "fit" / "version_0"
    assert sorted(p.name for p in (run / "figures").iterdir()) == [
        "exp_epsilon_sweep-epoch000.png",
        "exp_latent_scatter-epoch000.png",
    ]
    logged = read_metrics(tmp_path / "logs" / "fit", "exp/")
    checkpoint = run / "checkpoints" / "last.ckpt"

    # the figures' numbers from the gathered posterior equal a single process's on the same weights
    single = experiments_main(
        [
            "--ckpt_path",
            str(checkpoint),
            "--output_dir",
            str(tmp_path / "single"),
            "--experiments",
            "[latent_scatter, epsilon_sweep]",
        ]
    )["experiments"]
    for name, values in single.items():
        for key, value in values.items():
            assert logged[f"exp/{name}/{key}"] == pytest.approx(value, rel=1e-4, abs=1e-6), (name, key)

    results, latents = {}, {}
    for name, extra in (("one", ["--trainer.devices", "1"]), ("two", DDP_CPU)):
        for stage in ("validate", "test"):
            out = cli_subprocess(
                [
                    stage,
                    *base,
                    *extra,
                    "--ckpt_path",
                    checkpoint,
                    "--trainer.logger.init_args.name",
                    f"{stage}_{name}",
                    "--data.eval_batch_size",
                    "30",
                ],
                tmp_path,
            )
            assert ("MEMBER: 2/2" in out) == (name == "two")  # really two ranks
        results[name] = {
            **read_metrics(tmp_path / "logs" / f"validate_{name}", "val/"),
            **read_metrics(tmp_path / "logs" / f"test_{name}", "test/"),
        }
        cli_subprocess(
            [
                "predict",
                *base,
                *extra,
                "--ckpt_path",
                checkpoint,
                "--predictions.output_dir",
                tmp_path / f"predict_{name}",
                "--data.eval_batch_size",
                "30",
            ],
            tmp_path,
        )
        latents[name] = torch.load(tmp_path / f"predict_{name}" / "latents_test.pt", weights_only=True)
    assert set(results["one"]) == {
        f"{stage}/{k}" for stage in ("val", "test") for k in ("loss", "recon", "kl", "nelbo")
    } | {"test/nll", "test/nll_mc_se"}
    for key, value in results["one"].items():
        assert results["two"][key] == pytest.approx(value, rel=1e-5), key
    assert torch.equal(latents["two"]["index"], torch.arange(100))  # every image once, in order
    for key in ("mu", "logvar", "label"):
        torch.testing.assert_close(latents["two"][key], latents["one"][key])


@pytest.mark.slow
def test_every_rank_trains_on_a_disjoint_shard_and_each_epoch_covers_the_training_set_once(tiny_config, tmp_path):
    from probes import image_codes

    from vae_lightning.data import MNISTDataModule

    probe = tmp_path / "probe.yaml"
    probe.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [{"class_path": "probes.SeenImages", "init_args": {"out_dir": str(tmp_path / "seen")}}]
                }
            }
        )
    )
    out = cli_subprocess(
        ["fit", *configs(CONFIGS / "two_latent.yaml", tiny_config, probe), *DDP_CPU, "--trainer.max_epochs", "2"],
        tmp_path,
    )
    assert "MEMBER: 2/2" in out
    seen = [json.loads((tmp_path / "seen" / f"rank{r}.json").read_text()) for r in (0, 1)]
    config = yaml.safe_load(tiny_config.read_text())["data"]
    datamodule = MNISTDataModule(**config)
    datamodule.setup("fit")
    training_images = sorted(image_codes(datamodule.splits["train"][0]))
    orders = []
    for epoch in ("0", "1"):
        shards = [seen[r][epoch] for r in (0, 1)]
        assert not set(shards[0]) & set(shards[1])  # disjoint
        assert sorted(shards[0] + shards[1]) == training_images  # together: every training image once
        assert len(shards[0]) == len(shards[1]) == 125  # the global batch of 50 split 25 + 25
        orders.append(shards[0])
    assert orders[0] != orders[1]  # a new permutation each epoch
