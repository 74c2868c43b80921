"""The real CLI, in-process: help, printed configs, fast runs of every variant, checkpoints, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS, VARIANTS, cli_error, cli_subprocess, configs
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.profilers import SimpleProfiler

from vae_lightning import VAELitModule


def printed_config(run_cli, capsys, *configs, extra=()) -> dict:
    args = ["fit"] + [a for c in configs for a in ("--config", c)] + list(extra) + ["--print_config"]
    with pytest.raises(SystemExit) as done:
        run_cli(*args)
    assert done.value.code in (None, 0)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("subcommand", [None, "fit", "validate", "test", "predict"])
def test_help(run_cli, capsys, subcommand):
    with pytest.raises(SystemExit) as done:
        run_cli(*([subcommand] if subcommand else []), "--help")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert ("fit" in out and "explore" in out) if subcommand is None else "--model.latent_dim" in out
    if subcommand == "fit":  # docstrings become help text
        assert "global training batch" in out and "--test_likelihood TEST_LIKELIHOOD" in out


def test_a_run_piece_s_settings_have_help(run_cli, capsys):
    with pytest.raises(SystemExit):
        run_cli("fit", "--test_likelihood.help", "TestLikelihood")
    assert "importance samples per test image" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command", [[sys.executable, "-m", "vae_lightning"], [Path(sys.executable).parent / "vae-lightning"]]
)
def test_python_dash_m_and_the_console_script_run_the_cli(command):
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "{fit,validate,test,predict}" in done.stdout, done.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_config_prints_the_seed_setting(run_cli, capsys, variant):
    config = printed_config(run_cli, capsys, CONFIGS / f"{variant}.yaml")
    model, data = config["model"], config["data"]
    expected_latent = {"vanilla": 20, "cnn": 20}.get(variant, 2)
    assert model["latent_dim"] == expected_latent
    assert (model["recon_weight"], model["kl_weight"]) == {"no_kld": (1.0, 0.0), "no_recon": (0.0, 1.0)}.get(
        variant, (1.0, 1.0)
    )
    assert model["encoder"]["class_path"].endswith("ConvEncoder" if variant == "cnn" else "MLPEncoder")
    assert model["optimizer"]["class_path"] == "torch.optim.Adam" and model["optimizer"]["init_args"]["lr"] == 0.001
    assert data["batch_size"] == 100 and data["binarize"] == "none"
    assert config["checkpoint"]["init_args"]["monitor"] == "val/nelbo"
    assert config["last_checkpoint"]["class_path"].endswith("LastCheckpoint")


def test_trainer_and_logger_pieces_compose(run_cli, capsys):
    config = printed_config(
        run_cli, capsys, CONFIGS / "two_latent.yaml", CONFIGS / "trainer/cpu.yaml", CONFIGS / "logger/csv.yaml"
    )
    assert config["trainer"]["accelerator"] == "cpu"
    assert config["trainer"]["logger"]["init_args"]["name"] == "two_latent"  # the variant's name survives
    assert config["model"]["latent_dim"] == 2


@pytest.mark.parametrize("variant", ["vanilla", "cnn"])
def test_latent_dim_is_given_once_and_linked_into_both_networks(run_cli, variant):
    model = run_cli("--config", CONFIGS / f"{variant}.yaml", "--model.latent_dim", "7", run=False).model
    mu, logvar = model.encode(torch.rand(3, 1, 28, 28))
    assert mu.shape == logvar.shape == (3, 7) and model.decode(mu).shape == (3, 1, 28, 28)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_dev_run_of_each_variant(run_cli, tiny_config, variant):
    cli = run_cli(
        "fit", "--config", CONFIGS / f"{variant}.yaml", "--config", tiny_config, "--trainer.fast_dev_run", "true"
    )
    assert cli.trainer.state.finished
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert "val/nelbo" in cli.trainer.callback_metrics


def test_fit_writes_last_and_best_then_test_predict_and_reload_work(run_cli, tiny_config, tmp_path):
    fit = run_cli("fit", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, "--trainer.max_epochs", "3")
    folder = tmp_path / "logs" / "two_latent" / "version_0" / "checkpoints"
    names = sorted(p.name for p in folder.iterdir())
    assert names[-1] == "last.ckpt" and len(names) == 2 and names[0].startswith("best-epoch")
    assert fit.trainer.checkpoint_callback.best_model_path.endswith(names[0])
    last = folder / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 2  # the final state, whatever the best

    test = run_cli("test", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, "--ckpt_path", last)
    metrics = test.trainer.callback_metrics
    assert set(metrics) >= {"test/loss", "test/recon", "test/kl", "test/nelbo", "test/nll"}
    assert metrics["test/nll"] < metrics["test/nelbo"]

    model = VAELitModule.load_from_checkpoint(last, weights_only=True)  # no YAML needed
    assert model.latent_dim == 2 and type(model.encoder).__name__ == "MLPEncoder"
    trained = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in trained.items())

    predict = run_cli("predict", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, "--ckpt_path", last)
    path = predict.trainer.callbacks[[type(c).__name__ for c in predict.trainer.callbacks].index("LatentWriter")]
    latents = torch.load(path.last_path, weights_only=True)
    assert latents["mu"].shape == latents["logvar"].shape == (100, 2)
    assert torch.equal(latents["index"], torch.arange(100)) and torch.equal(latents["label"], torch.arange(100) % 10)
    model.eval()
    images = predict.datamodule.splits["test"][0][:5].float().div(255).unsqueeze(1)
    torch.testing.assert_close(latents["mu"][:5], model.encode(images)[0].detach())


def test_last_ckpt_holds_the_final_epoch_even_when_the_best_is_earlier(run_cli, tiny_config, tmp_path):
    # mode "max" makes the "best" the worst validation: the first epoch, since training lowers val/nelbo
    fit = run_cli(
        "fit", *configs(CONFIGS / "vanilla.yaml", tiny_config), "--trainer.max_epochs", "3", "--checkpoint.mode", "max"
    )
    folder = tmp_path / "logs" / "vanilla" / "version_0" / "checkpoints"
    best = torch.load(fit.trainer.checkpoint_callback.best_model_path, weights_only=True)
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert (best["epoch"], last["epoch"]) == (0, 2)
    final = fit.model.state_dict()
    assert all(torch.equal(value, final[key]) for key, value in last["state_dict"].items())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.batch_size", "0"], 'Parser key "data.batch_size"'),
        (["--data.val_size", "-1"], 'Parser key "data.val_size"'),
        (["--model.latent_dim", "0"], 'Parser key "model.latent_dim"'),
        (["--model.kl_weight", "-0.5"], 'Parser key "model.kl_weight"'),
        (["--model.recon_weight", "0", "--model.kl_weight", "0"], "recon_weight and model.kl_weight are both 0"),
        (["--model.encoder", "vae_lightning.nets.NoSuchEncoder"], "model.encoder"),
        (["--model.decoder", "test_nets.SmallImages"], "model.decoder (SmallImages) must return logits of shape"),
        (["--model.encoder", "test_nets.MeanOnly"], "model.encoder (MeanOnly) must return (mu, logvar)"),
        (["--data.binarize", "maybe"], "data.binarize"),
    ],
)
def test_bad_input_is_refused_before_training_with_the_field_named(run_cli, capsys, tiny_config, args, expected):
    err = cli_error(run_cli, capsys, "fit", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, *args)
    assert expected in err
    assert "Traceback" not in err


def test_val_size_0_trains_on_every_image_without_validation(run_cli, tiny_config, tmp_path):
    fit = run_cli("fit", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, "--data.val_size", "0",
                  "--trainer.max_epochs", "2")  # fmt: skip
    train_images = len(fit.datamodule.splits["train"][1])
    assert train_images == 300 and len(fit.datamodule.splits["val"][1]) == 0  # the tiny set's every training image
    assert fit.trainer.num_val_batches == [] or sum(fit.trainer.num_val_batches) == 0
    metrics = fit.trainer.logged_metrics
    assert "train/nelbo_epoch" in metrics and not any(name.startswith("val/") for name in metrics)
    folder = tmp_path / "logs" / "two_latent" / "version_0" / "checkpoints"
    assert [p.name for p in folder.glob("*.ckpt")] == ["last.ckpt"]  # no validation, no best checkpoint
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize(("limit", "batches"), [("1", 1), ("3", 3), ("1.0", 5), ("0.5", 2)])
def test_an_integer_limit_is_a_count_of_batches_and_a_float_a_fraction(run_cli, tiny_config, limit, batches):
    fit = run_cli("fit", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, "--trainer.max_epochs", "1",
                  "--trainer.limit_train_batches", limit, "--trainer.limit_val_batches", limit)  # fmt: skip
    assert fit.trainer.global_step == batches  # 250 training images in batches of 50: 5 in all
    assert fit.trainer.num_val_batches == [1 if limit in ("1", "0.5") else 2]  # 50 validation images in 40s


def test_evaluating_without_a_checkpoint_says_the_model_is_untrained(run_cli, capsys, tiny_config):
    fit = run_cli("fit", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, "--trainer.max_epochs", "1")
    capsys.readouterr()
    for subcommand in ("validate", "test", "predict"):
        run_cli(subcommand, "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config)
        assert f"no --ckpt_path, so this is the untrained model (initial weights): pass --ckpt_path last, best or " \
               f"a file to {subcommand} a trained one." in capsys.readouterr().err  # fmt: skip
    run_cli("test", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config,
            "--ckpt_path", fit.trainer.checkpoint_callback.best_model_path)  # fmt: skip
    assert "untrained" not in capsys.readouterr().err


def test_without_a_terminal_progress_is_a_plain_line_per_epoch_and_each_command_ends_with_its_outputs(
    tiny_config, tmp_path
):
    two = ("--config", CONFIGS / "two_latent.yaml", "--config", tiny_config)
    out = cli_subprocess(["fit", *two, "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "true"], tmp_path)
    assert "\x1b[" not in out and "\r" not in out  # no cursor control in a log file
    lines = out.splitlines()
    assert sum(line.startswith("epoch 1/2: step 5, ") for line in lines) == 1 and "val/nelbo=" in out
    run = tmp_path / "logs" / "two_latent" / "version_0"
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    assert lines[-1] == (
        f"vae-lightning: fit done; outputs in {run}; best by val/nelbo ({float(best.stem.split('nelbo')[1]):.5g}): "
        f"{best}; test it: vae-lightning test --config {CONFIGS / 'two_latent.yaml'} --config {tiny_config} "
        f"--ckpt_path {best}"
    )
    for command, shown in (("test", "test/nll"), ("validate", "val/nelbo"), ("predict", None)):
        out = cli_subprocess([command, *two, "--ckpt_path", best], tmp_path)
        last = out.splitlines()[-1]
        assert last.startswith(f"vae-lightning: {command} done; outputs in {tmp_path / 'logs' / 'two_latent'}")
        assert shown is None or f"{shown} " in last


def test_a_data_dir_that_is_a_file_is_refused(run_cli, capsys, tiny_config, tmp_path):
    (tmp_path / "a-file").write_text("")
    err = cli_error(
        run_cli, capsys, "fit", *configs(CONFIGS / "vanilla.yaml", tiny_config), "--data.data_dir", tmp_path / "a-file"
    )
    assert "data.data_dir=" in err and "a file, not a folder" in err


def test_an_unwritable_data_dir_is_refused_when_files_are_needed(run_cli, capsys, tiny_config):
    err = cli_error(
        run_cli,
        capsys,
        "fit",
        *configs(CONFIGS / "vanilla.yaml", tiny_config),
        "--data.data_dir",
        "/sys/vae-lightning-test",
        "--data.download",
        "true",
    )
    assert "data.data_dir='/sys/vae-lightning-test' is not writable" in err


def test_the_ddp_pieces_compose(run_cli, capsys):
    config = printed_config(run_cli, capsys, CONFIGS / "vanilla.yaml", CONFIGS / "trainer/ddp.yaml")
    assert (config["trainer"]["accelerator"], config["trainer"]["devices"], config["trainer"]["strategy"]) == (
        "gpu",
        -1,
        "ddp",
    )
    config = printed_config(run_cli, capsys, CONFIGS / "vanilla.yaml", CONFIGS / "trainer/ddp_cpu.yaml")
    assert config["trainer"]["strategy"]["init_args"]["process_group_backend"] == "gloo"
    assert config["trainer"]["devices"] == 2 and config["model"]["latent_dim"] == 20


def test_bf16_mixed_precision_trains(run_cli, tiny_config):
    cli = run_cli(
        "fit",
        *configs(CONFIGS / "two_latent.yaml", tiny_config),
        "--trainer.fast_dev_run",
        "true",
        "--trainer.precision",
        "bf16-mixed",
    )
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"]) and "val/nelbo" in cli.trainer.callback_metrics


def bars(cli) -> list:
    return [c for c in cli.trainer.callbacks if isinstance(c, ProgressBar)]


def test_the_progress_bar_is_lightning_s_at_its_refresh_rate_and_gives_way(run_cli, tiny_config):
    args = ("--config", CONFIGS / "vanilla.yaml", "--config", tiny_config, "--trainer.enable_progress_bar")
    [bar] = bars(run_cli(*args, "true", run=False))
    assert isinstance(bar, TQDMProgressBar) and bar.refresh_rate == 10
    [bar] = bars(run_cli(*args, "true", "--progress_bar.refresh_rate", "4", run=False))
    assert bar.refresh_rate == 4
    assert bars(run_cli(*args, "false", run=False)) == []  # no bar, and no clash with enable_progress_bar
    own = '[{"class_path": "lightning.pytorch.callbacks.TQDMProgressBar", "init_args": {"refresh_rate": 3}}]'
    [bar] = bars(run_cli(*args, "true", "--trainer.callbacks", own, run=False))  # the config's own bar alone
    assert bar.refresh_rate == 3


def test_a_configured_profiler_records(run_cli, tiny_config):
    args = ("fit", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, "--trainer.fast_dev_run", "true")
    simple = run_cli(*args, "--trainer.profiler", "simple")
    recorded = simple.trainer.profiler.recorded_durations
    assert type(simple.trainer.profiler) is SimpleProfiler and recorded["[Strategy]SingleDeviceStrategy.training_step"]


PIECE_TYPES = {
    "checkpoint": "ModelCheckpoint",
    "last_checkpoint": "LastCheckpoint",
    "test_likelihood": "TestLikelihood",
    "nonfinite": "NonFiniteGuard",
    "outputs": "OutputFolders",
    "exact_resume": "ExactResume",
    "speed": "CPUSpeed",
    "progress_bar": "TQDMProgressBar",
}


@pytest.mark.parametrize("piece", list(PIECE_TYPES))
def test_every_run_piece_is_on_by_default_and_off_with_one_setting(run_cli, tiny_config, piece):
    args = ("--config", CONFIGS / "vanilla.yaml", "--config", tiny_config, "--trainer.enable_progress_bar", "true")
    on = [type(c).__name__ for c in run_cli(*args, run=False).trainer.callbacks]
    off = run_cli(*args, f"--{piece}", "null", run=False).trainer.callbacks
    if piece == "progress_bar":  # Lightning's own bar then, redrawn every batch
        assert [c.refresh_rate for c in off if type(c).__name__ == "TQDMProgressBar"] == [1]
    else:
        assert [type(c).__name__ for c in off].count(PIECE_TYPES[piece]) == on.count(PIECE_TYPES[piece]) - 1


def test_idle_pieces_stay_out_of_the_trainer(run_cli, tiny_config):
    args = ("fit", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, "--trainer.fast_dev_run", "true")
    kinds = {type(c).__name__ for c in run_cli(*args, "--experiments.names", "[]").trainer.callbacks}
    assert "LatentWriter" not in kinds and "Experiments" not in kinds  # predict's writer, and no experiments to run
    assert "TestLikelihood" not in kinds and {"NonFiniteGuard", "ExactResume", "LastCheckpoint"} <= kinds
    assert "KLWarmup" not in kinds and "Initialisation" not in kinds  # torch's start and no warm-up: nothing to do
    set_up = {
        type(c).__name__ for c in run_cli(*args, "--kl_warmup.steps", "5", "--init.weights", "glorot").trainer.callbacks
    }
    assert {"KLWarmup", "Initialisation"} <= set_up
    test = ("test", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, "--trainer.fast_dev_run", "true")
    kinds = {type(c).__name__ for c in run_cli(*test).trainer.callbacks}
    assert "TestLikelihood" in kinds and not kinds & {"NonFiniteGuard", "ExactResume", "Experiments"}
    assert "Experiments" in {type(c).__name__ for c in run_cli(*args).trainer.callbacks}  # the config's experiments
    checkpoints = run_cli(*args, "--trainer.enable_checkpointing", "false").trainer.checkpoint_callbacks
    assert checkpoints == []  # no clash with Lightning's enable_checkpointing


def test_the_atomic_checkpoint_writer_is_the_default_plugin_and_off_with_one_setting(run_cli, tiny_config):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from vae_lightning.runs import AtomicCheckpointIO

    args = ("--config", CONFIGS / "vanilla.yaml", "--config", tiny_config)
    assert type(run_cli(*args, run=False).trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    assert type(run_cli(*args, "--trainer.plugins", "null", run=False).trainer.strategy.checkpoint_io) is (
        TorchCheckpointIO
    )


def test_the_no_op_profiler_is_the_default_and_any_profiler_replaces_it(run_cli, tiny_config):
    from lightning.pytorch.profilers import PassThroughProfiler, SimpleProfiler

    from vae_lightning.callbacks.speed import NoProfiler

    args = ("--config", CONFIGS / "vanilla.yaml", "--config", tiny_config)
    profiler = run_cli(*args, run=False).trainer.profiler
    assert type(profiler) is NoProfiler and profiler.profile("a") is profiler.profile("b")  # one shared context
    with profiler.profile("outer"), profiler.profile("inner"):  # nested, as Lightning's hook calls are
        pass
    assert type(run_cli(*args, "--trainer.profiler", "simple", run=False).trainer.profiler) is SimpleProfiler
    assert type(run_cli(*args, "--trainer.profiler", "null", run=False).trainer.profiler) is PassThroughProfiler


def test_a_checkpoint_decides_the_model_and_the_command_line_how_to_evaluate_it(run_cli, tiny_config, tmp_path):
    run_cli("fit", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, "--trainer.max_epochs", "1")
    last = tmp_path / "logs" / "two_latent" / "version_0" / "checkpoints" / "last.ckpt"
    assert "nll_samples" not in torch.load(last, weights_only=True)["hyper_parameters"]  # how to run: not the model
    test = run_cli(
        "test",
        *configs(CONFIGS / "two_latent.yaml", tiny_config),
        *("--ckpt_path", last, "--test_likelihood.samples", "3", "--test_likelihood.seed", "5"),
        *("--model.latent_dim", "7"),
    )
    [likelihood] = [c for c in test.trainer.callbacks if type(c).__name__ == "TestLikelihood"]
    assert (likelihood.samples, likelihood.seed) == (3, 5)  # how to evaluate: the command line's
    assert test.trainer.lightning_module.latent_dim == 2  # what the model is: the checkpoint's


def test_an_old_checkpoint_s_run_settings_give_way_to_the_command_line(run_cli, tiny_config, tmp_path):
    """tests/fixtures/pre_simplicity.ckpt (written when run settings were model hyperparameters) carries
    nll_samples 8 and eval_seed 0 among them; they are dropped, and its numbers are the old code's."""
    import json

    fixtures = Path(__file__).parent / "fixtures"
    assert torch.load(fixtures / "pre_simplicity.ckpt", weights_only=True)["hyper_parameters"]["nll_samples"] == 8
    test = run_cli(
        "test",
        *configs(CONFIGS / "two_latent.yaml", tiny_config),
        *("--ckpt_path", fixtures / "pre_simplicity.ckpt", "--test_likelihood.samples", "32"),
        *("--test_likelihood.seed", "3"),
    )
    expected = json.loads((fixtures / "expected.json").read_text())
    metrics = test.trainer.callback_metrics
    assert float(metrics["test/nll"]) == pytest.approx(expected["nll_samples_32_eval_seed_3"]["test/nll"], rel=1e-6)
    for name in ("test/nelbo", "test/kl", "test/recon"):  # one draw per image, seeded as before by seed 0
        assert float(metrics[name]) == pytest.approx(expected["as_saved"][name], rel=1e-6, abs=1e-5), name
