"""No user error ends in a traceback: one table of bad inputs through the real CLI, each answered by one
line on stderr naming the field, and exit code 2. The next case is one line of `BAD_INPUT`."""

from __future__ import annotations

import pytest
from conftest import CONFIGS, cli_error

from vae_lightning.errors import ConfigError, explain

TWO = ("--config", CONFIGS / "two_latent.yaml")
SHORT = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1")

# (arguments after the variant config and the tiny set, text the message must hold)
BAD_INPUT = [
    (("--trainer.accelerator", "gpu"), "trainer.accelerator"),
    (("--trainer.max_epochs", "-5"), "trainer.max_epochs"),
    (("--model.optimizer.init_args.lr", "-1", *SHORT), "model.optimizer.init_args.lr"),
    (("--model.optimizer.init_args.eps", "-1", *SHORT), "model.optimizer.init_args"),
    (("--trainer.gradient_clip_val", "-1"), "trainer.gradient_clip_val must be a clip value (null: none) >= 0"),
    (("--model.latent_dim", "100000000000"), "model.latent_dim, the networks' sizes or data.batch_size"),
    (("--trainer.logger.init_args.name", "x" * 300, *SHORT), "a path: [Errno 36] File name too long"),
    (
        (
            "--model.lr_scheduler",
            "torch.optim.lr_scheduler.ReduceLROnPlateau",
            "--model.lr_scheduler_interval",
            "step",
            *SHORT,
        ),
        "model.lr_scheduler_interval",
    ),  # fmt: skip
    (
        (
            "--trainer.callbacks",
            '[{"class_path": "vae_lightning.experiments.Interpolation", "init_args": {"digits": [3, 3]}}]',
        ),
        "Interpolation.digits must be two different digits",
    ),  # fmt: skip
]


@pytest.mark.parametrize(("args", "expected"), BAD_INPUT, ids=[case[1][:40] for case in BAD_INPUT])
def test_bad_input_ends_in_one_line_naming_the_field(run_cli, capsys, tiny_config, args, expected):
    err = cli_error(run_cli, capsys, "fit", *TWO, "--config", tiny_config, *args)
    assert expected in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("vae-lightning: error:")]) == 1


def test_the_debug_switch_shows_the_whole_traceback(run_cli, tiny_config, monkeypatch):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    monkeypatch.setenv("VAE_LIGHTNING_DEBUG", "1")
    with pytest.raises(MisconfigurationException):
        run_cli("fit", *TWO, "--config", tiny_config, "--trainer.max_epochs", "-5")


def test_what_is_not_a_user_error_is_not_explained_away():
    assert explain(ZeroDivisionError("division by zero")) is None
    assert explain(KeyError("state_dict")) is None
    wrapped = ValueError("Does not validate against any of the Union subtypes")
    wrapped.__cause__ = ConfigError("Interpolation.digits must be two different digits")
    assert explain(wrapped) == "Interpolation.digits must be two different digits"


def test_checkpointing_switched_off_runs_without_checkpoint_callbacks(run_cli, tiny_config, tmp_path):
    fit = run_cli("fit", *TWO, "--config", tiny_config, *SHORT, "--trainer.enable_checkpointing", "false")
    assert fit.trainer.state.finished and fit.trainer.checkpoint_callback is None
    assert not list(tmp_path.glob("logs/**/*.ckpt"))


def test_the_experiments_command_explains_the_same_way(run_cli, tiny_config, tmp_path, capsys):
    from vae_lightning.experiments.command import main as experiments_main

    run_cli("fit", *TWO, "--config", tiny_config, *SHORT)
    checkpoint = next(tmp_path.glob("logs/two_latent/version_0/checkpoints/last.ckpt"))
    with pytest.raises(SystemExit) as refused:
        experiments_main(["--ckpt_path", str(checkpoint), "--output_dir", str(tmp_path / "out"),
                          "--device", "cuda", "--experiments", "[prior_samples]"])  # fmt: skip
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "Traceback" not in err
    assert err.startswith("vae-lightning-experiments: error: --device cuda: this machine has no usable CUDA GPU")
