"""Resume exactly: real processes stopped at an epoch boundary or killed mid-epoch end bit-identical."""

from __future__ import annotations

import signal

import pytest
import torch
import yaml
from conftest import CONFIGS, cli_error, cli_subprocess, configs

# Every random stream in play, the Glorot start of a fit from scratch, and a KL warm-up the resume lands inside.
BASE = ["--config", CONFIGS / "two_latent.yaml", "--data.binarize", "dynamic", "--init.weights", "glorot"]
BASE += ["--init.output_bias", "data_mean", "--kl_warmup.epochs", "3"]


def final_state(log_root) -> dict:
    """The state of the newest last.ckpt under a logger's root."""
    newest = max(log_root.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    return torch.load(newest, weights_only=True)


def assert_same_training(a: dict, b: dict) -> None:
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    states_a, states_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert states_a.keys() == states_b.keys() and len(states_a) > 0
    for state_a, state_b in zip(states_a.values(), states_b.values(), strict=True):
        assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


@pytest.mark.slow
def test_a_run_stopped_at_an_epoch_boundary_resumes_bit_identical(tiny_config, tmp_path):
    run = lambda name, *extra: cli_subprocess(  # noqa: E731
        ["fit", *BASE, "--config", tiny_config, "--trainer.logger.init_args.name", name, *extra], tmp_path
    )
    run("whole", "--trainer.max_epochs", "4")
    run("parts", "--trainer.max_epochs", "2")
    out = run("parts", "--trainer.max_epochs", "4", "--ckpt_path", "last")
    assert "Resuming from" in out and "version_0/checkpoints/last.ckpt" in out
    whole, parts = final_state(tmp_path / "logs" / "whole"), final_state(tmp_path / "logs" / "parts")
    assert parts["global_step"] == 20  # 4 epochs x 5 steps
    assert_same_training(whole, parts)


@pytest.mark.slow
def test_a_run_killed_mid_epoch_resumes_from_its_last_checkpoint_and_finishes_the_same(tiny_config, tmp_path):
    every = ["--last_checkpoint.every_n_train_steps", "3"]
    cli_subprocess(
        [
            "fit",
            *BASE,
            "--config",
            tiny_config,
            "--trainer.logger.init_args.name",
            "whole",
            "--trainer.max_epochs",
            "3",
            *every,
        ],
        tmp_path,
    )
    killer = tmp_path / "killer.yaml"  # SIGKILL at step 8: epoch 1, batch 3 of 5; last checkpoint at step 6
    killer.write_text(
        yaml.safe_dump({"trainer": {"callbacks": [{"class_path": "probes.KillAt", "init_args": {"step": 8}}]}})
    )
    cli_subprocess(
        [
            "fit",
            *BASE,
            *configs(tiny_config, killer),
            "--trainer.logger.init_args.name",
            "killed",
            "--trainer.max_epochs",
            "3",
            *every,
        ],
        tmp_path,
        returncode=-signal.SIGKILL,
    )
    saved = torch.load(tmp_path / "logs" / "killed" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, 6)  # mid-epoch: lost only steps 7 and 8
    out = cli_subprocess(
        [
            "fit",
            *BASE,
            "--config",
            tiny_config,
            "--trainer.logger.init_args.name",
            "killed",
            "--trainer.max_epochs",
            "3",
            *every,
            "--ckpt_path",
            "last",
        ],
        tmp_path,
    )
    assert "`Trainer.fit` stopped: `max_epochs=3` reached." in out
    assert_same_training(final_state(tmp_path / "logs" / "whole"), final_state(tmp_path / "logs" / "killed"))


def test_resuming_with_nothing_to_resume_is_refused(run_cli, capsys, tiny_config, tmp_path):
    err = cli_error(run_cli, capsys, "fit", *BASE, "--config", tiny_config, "--ckpt_path", "last")  # exit code 2
    assert "--ckpt_path last: no last.ckpt under" in err and "nothing to resume" in err
