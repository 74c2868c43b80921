"""No user error ends in a traceback: one table of bad inputs through the real CLI, each answered by one
line on stderr naming the field, and exit code 2. The next case is one line of `BAD_INPUT`."""

from __future__ import annotations

import pytest
from conftest import CONFIGS, cli_error

TWO = ("--config", CONFIGS / "two_latent.yaml")
SHORT = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1")

# (subcommand, arguments after the variant config and the tiny set, text the message must hold); `{tmp}` is
# the test's folder, which holds `bad.yaml` (a YAML error), `weights.pt` (a bare state_dict), `plain.ckpt`
# (some other dict) and `a-file`.
BAD_INPUT = [
    ("fit", ("--trainer.accelerator", "gpu"), "trainer: No supported gpu backend found"),
    ("fit", ("--trainer.max_epochs", "-5"), "trainer: `max_epochs` must be a non-negative integer"),
    ("fit", ("--model.optimizer.init_args.lr", "-1", *SHORT), "model.optimizer: Invalid learning rate: -1.0"),
    ("fit", ("--model.optimizer.init_args.eps", "-1", *SHORT), "model.optimizer: Invalid epsilon value"),
    ("fit", ("--trainer.gradient_clip_val", "-1"), "trainer.gradient_clip_val must be a clip value (null: none) >= 0"),
    ("fit", ("--model.latent_dim", "100000000000"), "MLPEncoder(latent_dim=100000000000, hidden_dims=[400], "),
    ("fit", ("--trainer.logger.init_args.name", "x" * 300, *SHORT), "bytes long, and each part of a path in"),
    ("fit", ("--experiments.options", "{interpolation: {digits: [3, 3]}}"), "two different digits"),
    ("fit", ("--model.encoder", "probes.IntegerEncoder"), "model.encoder (IntegerEncoder) must return floating-point"),
    ("fit", ("--data.data_dir", ""), "data.data_dir='' is empty"),
    ("fit", ("--config", "{tmp}/bad.yaml"), "--config {tmp}/bad.yaml: not valid YAML at line 3, column 1"),
    ("fit", ("--trainer.logger.init_args.save_dir", "/sys/vae-x"), "trainer.logger: '/sys/vae-x/two_latent/version_0'"),
    ("fit", ("--checkpoint.dirpath", "{tmp}/a-file/checkpoints"), "checkpoint.dirpath: '{tmp}/a-file' is a file"),
    ("fit", ("--ckpt_path", "best"), "--ckpt_path best: no best checkpoint under {tmp}/logs/two_latent"),
    ("fit", ("--ckpt_path", "{tmp}/weights.pt"), "holds a bare state_dict (parameter tensors by name)"),
    ("test", ("--ckpt_path", "{tmp}/plain.ckpt"), "holds a dict of ['epoch', 'weights'], not a Lightning checkpoint"),
    ("predict", ("--predictions.output_dir", "{tmp}/a-file"), "predictions.output_dir: '{tmp}/a-file' is a file"),
    ("fit", ("--trainer.num_nodes", "2"), "trainer.num_nodes=2, but no launcher started this process"),
    ("fit", ("--trainer.devices", "0"), "trainer: `Trainer(devices='0')` value is not a valid input"),
    ("fit", ("--trainer.max_time", "abc"), "trainer: `Timer(duration='abc')` is not a valid duration"),
    ("fit", ("--trainer.val_check_interval", "1000"), "trainer: `val_check_interval` (1000) must be less"),
    ("fit", ("--trainer.accumulate_grad_batches", "0"), "trainer.accumulate_grad_batches must be a positive integer"),
    ("fit", ("--trainer.check_val_every_n_epoch", "0"), "trainer.check_val_every_n_epoch must be a positive integer"),
    ("fit", ("--checkpoint.monitor", "val/nope"), "checkpoint.monitor: 'val/nope' is not a metric the model logs"),
    ("fit", ("--trainer.callbacks", '[{"class_path": "lightning.pytorch.callbacks.EarlyStopping", '
             '"init_args": {"monitor": "val/nope"}}]'), "EarlyStopping.monitor: 'val/nope' is not a metric"),
    ("fit", ("--data.val_size", "0", "--trainer.callbacks",
             '[{"class_path": "lightning.pytorch.callbacks.EarlyStopping", "init_args": {"monitor": "val/nelbo"}}]'),
     "EarlyStopping.monitor: 'val/nelbo' is never measured"),
    ("predict", ("--data.val_size", "0", "--data.predict_split", "val"), "data.predict_split: val holds no images"),
    ("fit", ("--model.lr_scheduler", '{"class_path": "torch.optim.lr_scheduler.OneCycleLR", '
             '"init_args": {"max_lr": 0.003, "total_steps": 1}}', "--trainer.max_epochs", "2"),
     "model.lr_scheduler: OneCycleLR has total_steps=1 but trainer.max_epochs takes 2 epochs"),
    ("fit", ("--seed_everything", "-1"), "seed_everything: -1 is not in bounds"),
    ("fit", ("--model.nll_samples", "5"), "model.nll_samples is now test_likelihood.samples"),
    ("fit", ("--model.nonfinite", "skip"), "model.nonfinite is now nonfinite.policy"),
    ("fit", ("--speed", "false"), "--speed false is now --speed null"),
    ("fit", ("--model.lr_scheduler_interval", "step"), "model.lr_scheduler_interval is now nothing"),
    ("fit", ("--trainer.limit_train_batches", "-1"), "trainer: You have passed invalid value -1 for limit_train"),
    ("fit", ("--trainer.barebones", "true"), "trainer: `Trainer(barebones=True"),
    ("fit", ("--model.objective", "iwae", "--model.train_samples", "2", "--kl_warmup.epochs", "5"),
     "kl_warmup: model.objective is 'iwae', whose bound has no separate KL term"),
    ("fit", ("--kl_warmup.epochs", "5", "--kl_warmup.steps", "5"), "kl_warmup: epochs=5 and steps=5: give one"),
    ("fit", ("--config", CONFIGS / "logger" / "wandb.yaml", "--trainer.logger.init_args.offline", "true",
             "--trainer.logger.init_args.save_dir", "/sys/vae-w"), "trainer.logger: '/sys/vae-w/"),
]  # fmt: skip


@pytest.fixture
def bad_files(tmp_path):
    import torch

    (tmp_path / "bad.yaml").write_text("model:\n  latent_dim: [2\n")
    torch.save({"weight": torch.zeros(2), "bias": torch.zeros(2)}, tmp_path / "weights.pt")
    torch.save({"epoch": 3, "weights": [1.0]}, tmp_path / "plain.ckpt")
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path


@pytest.mark.parametrize(("subcommand", "args", "expected"), BAD_INPUT, ids=[c[2][:40] for c in BAD_INPUT])
def test_bad_input_ends_in_one_line_naming_the_field(
    run_cli, capsys, tiny_config, bad_files, subcommand, args, expected
):
    args = [str(a).replace("{tmp}", str(bad_files)) for a in args]
    err = cli_error(run_cli, capsys, subcommand, *TWO, "--config", tiny_config, *args)
    assert expected.replace("{tmp}", str(bad_files)) in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("vae-lightning: error:")]) == 1
    assert not (bad_files / "logs").exists()  # a refused run leaves no half-made folder


def test_the_debug_switch_shows_the_whole_traceback(run_cli, tiny_config, monkeypatch):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from vae_lightning.errors import ConfigError

    monkeypatch.setenv("VAE_LIGHTNING_DEBUG", "1")
    with pytest.raises(ConfigError) as raised:
        run_cli("fit", *TWO, "--config", tiny_config, "--trainer.max_epochs", "-5")
    assert isinstance(raised.value.__cause__, MisconfigurationException)  # where it arose, whole


def test_what_is_not_a_user_error_keeps_its_traceback(run_cli, tiny_config):
    """An error raised in our own code while the run trains is a bug to see whole, not a line."""
    with pytest.raises(ZeroDivisionError):
        run_cli("fit", *TWO, "--config", tiny_config, *SHORT, "--trainer.callbacks+=probes.DivideByZero")


def test_checkpointing_switched_off_runs_without_checkpoint_callbacks(run_cli, tiny_config, tmp_path):
    fit = run_cli("fit", *TWO, "--config", tiny_config, *SHORT, "--trainer.enable_checkpointing", "false")
    assert fit.trainer.state.finished and fit.trainer.checkpoint_callback is None
    assert not list(tmp_path.glob("logs/**/*.ckpt"))


# (arguments of `vae-lightning-experiments` after --ckpt_path and --output_dir, text the message must hold): a
# setting of the wrong type is refused as the flags are parsed (jsonargparse's usage and error), the rest as one line
EXPERIMENTS_BAD_INPUT = [
    (("--experiments", "[]"), "--experiments []: names no experiment, so there is nothing to run"),
    (("--device", "cuda"), "--device cuda: this machine has no usable CUDA GPU"),
    (("--output_dir", "{tmp}/a-file"), "--output_dir: '{tmp}/a-file' is a file, not a folder"),
    (("--experiments", "[bogus]"), "--experiments ['bogus'] unknown"),
    (("--latent_scatter.grid", "0"), 'Parser key "latent_scatter.grid"'),
    (("--interpolation.digits", "[3,3]"), "interpolation.digits must be two different digits"),
    (("--prior_samples.shown", "2000"), "prior_samples.shown (2000) is above num_samples (1000)"),
    (("--experiments", "[reconstructions]", "--reconstructions.indices", "[100000]"),
     "reconstructions.indices=100000 is outside the test set"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "expected"), EXPERIMENTS_BAD_INPUT, ids=[c[1][:30] for c in EXPERIMENTS_BAD_INPUT])
def test_the_experiments_command_explains_the_same_way(run_cli, tiny_config, bad_files, capsys, args, expected):
    from vae_lightning.experiments.command import main as experiments_main

    run_cli("fit", *TWO, "--config", tiny_config, *SHORT)
    checkpoint = next(bad_files.glob("logs/two_latent/version_0/checkpoints/last.ckpt"))
    with pytest.raises(SystemExit) as refused:
        experiments_main(["--ckpt_path", str(checkpoint), "--output_dir", str(bad_files / "out"),
                          *[a.replace("{tmp}", str(bad_files)) for a in args]])  # fmt: skip
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "Traceback" not in err
    parsed = err.startswith("usage: vae-lightning-experiments")  # refused by the flags' declared types
    assert parsed or err.startswith("vae-lightning-experiments: error:") and len(err.splitlines()) == 1
    assert f"error: {expected.replace('{tmp}', str(bad_files))}" in err
