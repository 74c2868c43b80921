"""Weights & Biases through the CLI, offline for real: what the run wrote, one run under DDP, no API key anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, SECRET, cli_error, cli_subprocess, configs
from wandb_runs import WANDB, finished_records


def experiments_piece(tmp_path: Path) -> Path:
    piece = tmp_path / "experiments.yaml"
    piece.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "logger": {"init_args": {"save_dir": str(tmp_path / "logs"), "group": "tests", "tags": ["tiny"]}},
                },
                "experiments": {
                    "names": ["latent_manifold"],
                    "every_n_epochs": 1,
                    "options": {"latent_manifold": {"grid": 5}},
                },
            }
        )
    )
    return piece


def test_an_offline_run_holds_metrics_by_step_config_images_and_no_key(run_cli, tiny_config, tmp_path, offline):
    import wandb

    try:
        run_cli(
            "fit",
            *configs(CONFIGS / "two_latent.yaml", tiny_config, WANDB, experiments_piece(tmp_path)),
            "--trainer.max_epochs",
            "2",
            "--trainer.log_every_n_steps",
            "1",
        )
    finally:
        wandb.finish()
    (run,) = (tmp_path / "logs" / "wandb").glob("offline-run-*")
    run_id = run.name.rsplit("-", 1)[1]
    records = finished_records(next(run.glob("run-*.wandb")))

    config = {
        item.key: json.loads(item.value_json) for r in records if r.HasField("config") for item in r.config.update
    }
    resolved = config["config"]  # the full resolved CLI config
    assert resolved["model"]["latent_dim"] == 2 and resolved["data"]["batch_size"] == 50
    assert resolved["trainer"]["logger"]["init_args"]["tags"] == ["tiny"] and config["latent_dim"] == 2

    rows = [
        {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.HasField("history")
    ]
    logged = {key for row in rows for key in row}
    assert {"train/loss", "val/nelbo", "train/nelbo_epoch", "exp/latent_manifold/unclear"} <= logged
    assert all("trainer/global_step" in row for row in rows)  # every metric against the global step
    assert max(row["trainer/global_step"] for row in rows) == 10  # 2 epochs x 5 steps

    images = list((run / "files" / "media" / "images").rglob("*.png"))
    assert len([p for p in images if "latent_manifold" in p.name]) == 2  # one per epoch

    folder = tmp_path / "logs" / "vae-lightning" / run_id  # the run's own folder
    assert (folder / "checkpoints" / "last.ckpt").is_file() and (folder / "config.yaml").is_file()
    assert (folder / "figures" / "exp_latent_manifold-epoch001.png").is_file()

    written = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert written == []  # the API key is in no config, log, checkpoint or run file


@pytest.mark.slow
def test_two_ddp_processes_make_exactly_one_run(tiny_config, tmp_path, offline):

    out = cli_subprocess(
        [
            "fit",
            *configs(
                CONFIGS / "two_latent.yaml",
                tiny_config,
                WANDB,
                experiments_piece(tmp_path),
                CONFIGS / "trainer" / "ddp_cpu.yaml",
            ),
            "--trainer.max_epochs",
            "1",
        ],
        tmp_path,
    )
    assert "MEMBER: 2/2" in out
    runs = list((tmp_path / "logs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    assert len(list((runs[0] / "files" / "media" / "images").rglob("*latent_manifold*.png"))) == 1  # drawn once
    assert len(list((tmp_path / "logs" / "vae-lightning").iterdir())) == 1


def test_online_without_an_api_key_is_refused_before_training(run_cli, tiny_config, tmp_path, monkeypatch, capsys):
    for name in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    err = cli_error(
        run_cli, capsys, "fit", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, "--config", WANDB
    )  # exit code 2
    assert "run `wandb login`" in err and "WANDB_MODE=offline" in err
    assert not (tmp_path / "logs").exists()  # refused before anything was written


def test_log_model_offline_is_refused_naming_both_settings(run_cli, tiny_config, capsys, offline):
    err = cli_error(
        run_cli,
        capsys,
        "fit",
        *configs(CONFIGS / "two_latent.yaml", tiny_config, WANDB),
        "--trainer.logger.init_args.offline",
        "true",
        "--trainer.logger.init_args.log_model",
        "true",
    )  # exit code 2
    assert "error: WandbLogger(" in err  # Lightning's own refusal, naming both settings
    assert "Providing log_model=True and offline=True is an invalid configuration" in err
