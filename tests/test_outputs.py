"""Nothing lost, nothing silently replaced, runs that mean what they say: outputs checked before any work,
provenance in what a command writes, `--ckpt_path last|best`, resume on the same data, Ctrl-C, skipped
experiments, and the digit classifier trained only when it is used."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS, cli_error, cli_subprocess, configs, subprocess_env

TWO = ("--config", CONFIGS / "two_latent.yaml")
ONE_EPOCH = ("--trainer.max_epochs", "1")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# (the setting that pins where a command writes, the subcommand that repeats it, the field the refusal names)
SAME_PLACE_TWICE = [
    (("--trainer.logger.init_args.version", "5"), "fit", "trainer.logger"),
    (("--last_checkpoint.dirpath", "{tmp}/fixed"), "fit", "last_checkpoint.dirpath"),
    (("--checkpoint.dirpath", "{tmp}/fixed"), "fit", "checkpoint.dirpath"),
    (("--predictions.output_dir", "{tmp}/out"), "predict", "predictions.output_dir"),
]


@pytest.mark.parametrize(("pin", "subcommand", "field"), SAME_PLACE_TWICE, ids=[c[2] for c in SAME_PLACE_TWICE])
def test_a_second_run_never_replaces_the_first_one_s_files_unasked(
    run_cli, capsys, tiny_config, tmp_path, pin, subcommand, field
):
    pin = [a.replace("{tmp}", str(tmp_path)) for a in pin]
    first = run_cli("fit", *TWO, "--config", tiny_config, *ONE_EPOCH)
    ckpt = ("--ckpt_path", first.trainer.checkpoint_callback.best_model_path) if subcommand == "predict" else ()
    run_cli(subcommand, *TWO, "--config", tiny_config, *ONE_EPOCH, *pin, *ckpt)
    written = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".ckpt", ".pt", ".csv")}
    err = cli_error(run_cli, capsys, subcommand, *TWO, "--config", tiny_config, *ONE_EPOCH, *pin, *ckpt)
    assert f"{field}: this command would replace files of another run" in err and "--overwrite true" in err
    assert all(p.read_bytes() == data for p, data in written.items())  # refused before writing anything
    again = run_cli(subcommand, *TWO, "--config", tiny_config, *ONE_EPOCH, *pin, *ckpt, "--overwrite", "true")
    assert again.trainer.state.finished


def test_predictions_and_measures_say_which_checkpoint_made_them(run_cli, tiny_config, tmp_path):
    from vae_lightning.experiments.command import main as experiments_main

    fit = run_cli("fit", *TWO, "--config", tiny_config, *ONE_EPOCH)
    best = Path(fit.trainer.checkpoint_callback.best_model_path)
    run_cli("predict", *TWO, "--config", tiny_config, "--ckpt_path", best, "--predictions.output_dir", tmp_path / "p")
    latents = torch.load(tmp_path / "p" / "latents_test.pt", weights_only=True)
    assert latents["checkpoint"] == str(best.resolve()) and latents["checkpoint_sha256"] == sha256(best)
    record = experiments_main(["--ckpt_path", str(best), "--output_dir", str(tmp_path / "m"),
                               "--experiments", "[prior_samples]", "--prior_samples.num_samples", "20",
                               "--prior_samples.shown", "4"])  # fmt: skip
    assert record["checkpoint"] == str(best.resolve()) and record["checkpoint_sha256"] == sha256(best)
    (tmp_path / "m" / "measures.json").unlink()  # a figure alone is still another run's: not replaced unasked
    with pytest.raises(SystemExit):
        experiments_main(["--ckpt_path", str(best), "--output_dir", str(tmp_path / "m"),
                          "--experiments", "[prior_samples]"])  # fmt: skip


def test_default_root_dir_moves_the_whole_run(run_cli, tiny_config, tmp_path):
    run_cli(
        "fit", *TWO, "--config", tiny_config, *ONE_EPOCH,
        "--trainer.logger.init_args.save_dir", "logs", "--trainer.default_root_dir", tmp_path / "elsewhere",
    )  # fmt: skip
    run = tmp_path / "elsewhere" / "logs" / "two_latent" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.csv").is_file()
    assert not (tmp_path / "logs").exists()


def test_ckpt_path_best_finds_the_best_of_the_newest_run(run_cli, tiny_config, tmp_path):
    run_cli("fit", *TWO, "--config", tiny_config, *ONE_EPOCH)
    newer = run_cli("fit", *TWO, "--config", tiny_config, "--trainer.max_epochs", "2")
    tested = run_cli("test", *TWO, "--config", tiny_config, "--ckpt_path", "best")
    assert Path(tested.trainer.ckpt_path) == Path(newer.trainer.checkpoint_callback.best_model_path)
    assert "version_1" in tested.trainer.ckpt_path


# (a data setting that changes what a resumed run would train or validate on, its new value)
OTHER_DATA = [("val_size", "60"), ("binarize", "dynamic"), ("seed", "7")]


@pytest.mark.parametrize(("key", "value"), OTHER_DATA, ids=[k for k, _ in OTHER_DATA])
def test_resuming_on_other_data_is_refused_naming_the_setting(run_cli, capsys, tiny_config, tmp_path, key, value):
    run_cli("fit", *TWO, "--config", tiny_config, *ONE_EPOCH)
    err = cli_error(
        run_cli, capsys, "fit", *TWO, "--config", tiny_config, "--trainer.max_epochs", "2",
        "--ckpt_path", "last", f"--data.{key}", value,
    )  # fmt: skip
    assert f"resuming would continue on other data than the run saw (data.{key}:" in err and "Traceback" not in err


CHANGED_ON_RESUME = [
    (("--model.optimizer.init_args.lr", "0.0001"), "model.optimizer.init_args.lr: 0.001 in the checkpoint, 0.0001 in"),
    (("--model.optimizer", "torch.optim.SGD", "--model.optimizer.init_args.lr", "0.01"), "model.optimizer: {'class_"),
    (("--model.lr_scheduler", "torch.optim.lr_scheduler.StepLR", "--model.lr_scheduler.init_args.step_size", "1"),
     "model.lr_scheduler: None in the checkpoint"),
    (("--model.objective", "iwae", "--model.train_samples", "2"), "model.objective: 'elbo' in the checkpoint"),
    (("--model.kl_weight", "0.5"), "model.kl_weight: 1.0 in the checkpoint, 0.5 in the config"),
]  # fmt: skip


@pytest.mark.parametrize("explicit", [False, True], ids=["last", "file"])
@pytest.mark.parametrize(("change", "named"), CHANGED_ON_RESUME, ids=[c[0][0] for c in CHANGED_ON_RESUME])
def test_resuming_with_changed_training_settings_is_refused_naming_them(
    run_cli, capsys, tiny_config, tmp_path, change, named, explicit
):
    run_cli("fit", *TWO, "--config", tiny_config, *ONE_EPOCH)
    last = tmp_path / "logs" / "two_latent" / "version_0" / "checkpoints" / "last.ckpt"
    args = ("--trainer.max_epochs", "2", "--ckpt_path", str(last) if explicit else "last", *change)
    err = cli_error(run_cli, capsys, "fit", *TWO, "--config", tiny_config, *args)
    assert "a resumed fit continues the run as it trained, its optimizer's state and settings included" in err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "logs" / "two_latent" / "version_1").exists()


def test_resuming_may_change_epochs_log_cadence_and_evaluation_samples(run_cli, tiny_config, tmp_path):
    run_cli("fit", *TWO, "--config", tiny_config, *ONE_EPOCH)
    resumed = run_cli(
        "fit", *TWO, "--config", tiny_config, "--trainer.max_epochs", "2", "--ckpt_path", "last",
        "--trainer.log_every_n_steps", "2", "--test_likelihood.samples", "4",
    )  # fmt: skip
    assert resumed.trainer.state.finished and resumed.trainer.current_epoch == 2


def test_an_explicit_checkpoint_of_another_architecture_is_named(run_cli, capsys, tiny_config, tmp_path):
    fit = run_cli("fit", *TWO, "--config", tiny_config, *ONE_EPOCH)
    capsys.readouterr()
    best = fit.trainer.checkpoint_callback.best_model_path
    tested = run_cli("test", *configs(CONFIGS / "vanilla.yaml", tiny_config), "--ckpt_path", best)
    err = capsys.readouterr().err
    assert "the model is the checkpoint's, not the config's" in err
    assert "model.latent_dim: 2 in the checkpoint, 20 in the config" in err
    assert tested.model.latent_dim == 2


def test_ctrl_c_saves_last_ckpt_exits_130_and_the_run_resumes(tiny_config, tmp_path):
    stop = tmp_path / "stop.yaml"  # SIGINT at step 7: epoch 1, batch 2 of 5 (no scheduled save there)
    stop.write_text(yaml.safe_dump({"trainer": {"callbacks": [{"class_path": "probes.InterruptAt",
                                                                "init_args": {"step": 7}}]}}))  # fmt: skip
    out = cli_subprocess(
        ["fit", *TWO, *configs(tiny_config, stop), "--trainer.max_epochs", "3"], tmp_path, returncode=130
    )
    last = tmp_path / "logs" / "two_latent" / "version_0" / "checkpoints" / "last.ckpt"
    assert (
        f"interrupted (Ctrl-C); saved {last} (global step 7): continue with the same command and --ckpt_path last"
        in out
    )
    assert "Traceback" not in out
    assert torch.load(last, weights_only=True)["global_step"] == 7
    out = cli_subprocess(["fit", *TWO, "--config", tiny_config, "--trainer.max_epochs", "3", "--ckpt_path", "last"],
                         tmp_path)  # fmt: skip
    assert "`Trainer.fit` stopped: `max_epochs=3` reached." in out


def test_sigterm_saves_last_ckpt_at_the_step_reached_exits_143_and_the_run_resumes(tiny_config, tmp_path):
    stop = tmp_path / "stop.yaml"  # SIGTERM (a scheduler's or Slurm's stop) at step 7: epoch 1, batch 2 of 5
    probe = {"class_path": "probes.InterruptAt", "init_args": {"step": 7, "signum": "SIGTERM"}}
    stop.write_text(yaml.safe_dump({"trainer": {"callbacks": [probe]}}))
    out = cli_subprocess(
        ["fit", *TWO, *configs(tiny_config, stop), "--trainer.max_epochs", "3"], tmp_path, returncode=143
    )
    last = tmp_path / "logs" / "two_latent" / "version_0" / "checkpoints" / "last.ckpt"
    line = f"terminated (SIGTERM); saved {last} (global step 7): continue with the same command and --ckpt_path last"
    assert line in out and "Traceback" not in out
    assert torch.load(last, weights_only=True)["global_step"] == 7
    out = cli_subprocess(["fit", *TWO, "--config", tiny_config, "--trainer.max_epochs", "3", "--ckpt_path", "last"],
                         tmp_path)  # fmt: skip
    assert "`Trainer.fit` stopped: `max_epochs=3` reached." in out


@pytest.mark.parametrize(("signum", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_test_of_any_k_stops_within_seconds_of_sigterm_or_ctrl_c(tiny_config, tmp_path, signum, code):
    probe = tmp_path / "probe.yaml"  # k = 10^9 draws per image: days of work, in memory that does not grow
    probe.write_text(yaml.safe_dump({"trainer": {"callbacks": [{"class_path": "probes.SignalDuringTest",
                                                                "init_args": {"signum": signum}}]}}))  # fmt: skip
    args = ["test", *TWO, *configs(tiny_config, probe), "--test_likelihood.samples", "1000000000"]
    started = time.monotonic()
    out = cli_subprocess(args, tmp_path, timeout=90, returncode=code)
    assert time.monotonic() - started < 60 and "Traceback" not in out
    assert ("terminated (SIGTERM)" if signum == "SIGTERM" else "interrupted (Ctrl-C)") in out


def test_two_runs_started_together_never_share_a_folder(tiny_config, tmp_path):
    command = [sys.executable, "-m", "vae_lightning", "fit", *TWO, "--config", tiny_config, *ONE_EPOCH]
    started = [
        subprocess.Popen(list(map(os.fspath, command)), cwd=tmp_path, env=subprocess_env(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(3)
    ]  # fmt: skip
    outs = [process.communicate(timeout=300)[0] for process in started]
    assert [process.returncode for process in started] == [0, 0, 0], outs
    runs = sorted((tmp_path / "logs" / "two_latent").iterdir())
    assert [run.name for run in runs] == ["version_0", "version_1", "version_2"]
    for run in runs:  # each its own config, checkpoint and one epoch of metrics
        logger = yaml.safe_load((run / "config.yaml").read_text())["trainer"]["logger"]
        assert logger["init_args"]["version"] == int(run.name.removeprefix("version_"))
        assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0
        assert "train/nelbo_epoch" in (run / "metrics.csv").read_text().splitlines()[0]


def test_a_claimed_run_folder_is_released_when_the_command_fails_or_writes_nothing(
    run_cli, capsys, tiny_config, tmp_path
):
    cli_error(run_cli, capsys, "fit", *TWO, "--config", tiny_config, "--checkpoint.monitor", "val/nope")
    assert not (tmp_path / "logs").exists()  # nothing left of the folder claimed for the run
    run_cli("fit", *TWO, "--config", tiny_config, "--trainer.fast_dev_run", "true")  # writes no files
    assert not (tmp_path / "logs").exists()
    relative = ("--trainer.logger.init_args.save_dir", "relative_logs")  # below the working folder, tmp_path
    cli_error(run_cli, capsys, "fit", *TWO, "--config", tiny_config, *relative, "--checkpoint.monitor", "val/nope")
    assert not (tmp_path / "relative_logs").exists()


def test_a_temporary_file_left_by_a_killed_save_is_cleaned_up_by_the_next_run(run_cli, tiny_config, tmp_path):
    folder = tmp_path / "fixed"
    killed = (  # a real process killed in the middle of an atomic write
        "import os, signal; from pathlib import Path; from vae_lightning.runs import atomic_path\n"
        f"with atomic_path(Path({str(folder / 'last.ckpt')!r})) as tmp:\n"
        "    tmp.write_bytes(b'half a checkpoint'); os.kill(os.getpid(), signal.SIGKILL)"
    )
    done = subprocess.run([sys.executable, "-c", killed], env=subprocess_env(tmp_path))
    assert done.returncode == -signal.SIGKILL
    (stale,) = folder.iterdir()
    assert stale.name.startswith(".last.ckpt.tmp-")
    live = folder / f".best.ckpt.tmp-{os.getpid()}"  # a write under way in a live process is left alone
    live.write_bytes(b"")
    run_cli("fit", *TWO, "--config", tiny_config, *ONE_EPOCH, "--last_checkpoint.dirpath", folder)
    assert not stale.exists() and live.exists() and (folder / "last.ckpt").is_file()


def test_experiments_that_do_not_fit_the_model_are_skipped_saying_why(run_cli, caplog, tiny_config, tmp_path):
    package = logging.getLogger("vae_lightning")  # its console lines, which do not propagate to pytest's
    package.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="vae_lightning")
    fit = run_cli(
        "fit", *TWO, "--config", tiny_config, *ONE_EPOCH, "--model.latent_dim", "1",
        "--experiments.names", "[latent_scatter, latent_manifold, prior_samples]", "--experiments.every_n_epochs", "1",
        "--experiments.options", '{"prior_samples": {"num_samples": 20, "shown": 4}}',
    )  # fmt: skip
    package.removeHandler(caplog.handler)
    err = caplog.text
    assert "Experiment latent_scatter skipped: a scatter plane needs 2 latent dimensions" in err
    assert "Experiment latent_manifold skipped: dims (0, 1) are not two distinct dimensions" in err
    logged = set(fit.trainer.logged_metrics)
    assert "exp/prior_samples/unclear" in logged
    assert not any(k.startswith(("exp/latent_scatter", "exp/latent_manifold")) for k in logged)


def test_the_classifier_is_trained_only_when_an_experiment_runs_and_a_read_only_data_dir_is_fine(
    run_cli, tiny_config, tiny_mnist, tmp_path, monkeypatch, read_only
):
    data_dir = tiny_mnist[0]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    experiments = ("--experiments.names", "[prior_samples]", "--experiments.options",
                   '{"prior_samples": {"num_samples": 20, "shown": 4}}')  # fmt: skip
    with read_only(data_dir):
        run_cli("fit", *TWO, "--config", tiny_config, *ONE_EPOCH, *experiments, "--experiments.every_n_epochs", "5")
        assert not list(tmp_path.rglob("digits-*.pt"))  # no experiment due in this fit: no classifier
        fit = run_cli(
            "fit", *TWO, "--config", tiny_config, *ONE_EPOCH, *experiments, "--experiments.every_n_epochs", "1"
        )
        assert fit.trainer.state.finished
    assert [p.parent for p in tmp_path.rglob("digits-*.pt")] == [
        tmp_path / "user-cache" / "vae-lightning" / "classifiers"
    ]


def test_output_folders_in_a_trainer_built_in_python_refuse_another_run_s_files(tiny_mnist, tmp_path):
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import CSVLogger

    from vae_lightning import VAELitModule
    from vae_lightning.callbacks import OutputFolders
    from vae_lightning.data import MNISTDataModule
    from vae_lightning.errors import ConfigError
    from vae_lightning.nets import MLPDecoder, MLPEncoder

    data_dir, checksums = tiny_mnist
    earlier = tmp_path / "logs" / "run" / "version_0" / "checkpoints" / "last.ckpt"  # not metrics.csv: the CSVLogger
    earlier.parent.mkdir(parents=True)  # empties that as it starts, before any callback
    earlier.write_text("an earlier run's")
    data = MNISTDataModule(str(data_dir), batch_size=50, val_size=50, checksums=checksums, download=False)
    logger = CSVLogger(tmp_path / "logs", name="run", version=0)
    trainer = Trainer(max_epochs=1, logger=logger, callbacks=[OutputFolders()], enable_progress_bar=False)
    with pytest.raises(ConfigError, match="trainer.logger: this command would replace files of another run"):
        trainer.fit(VAELitModule(MLPEncoder(), MLPDecoder()), datamodule=data)
    assert earlier.read_text() == "an earlier run's" and len(list(tmp_path.rglob("*.ckpt"))) == 1
