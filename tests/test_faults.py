"""Faults and bad input around training: non-finite losses, wrong or damaged checkpoints, failed writes."""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS, cli_error, configs, subprocess_env

TWO = ["--config", CONFIGS / "two_latent.yaml"]
# NaNAfter (tests/probes.py) breaks on its 7th training call: global step 6, epoch 1, batch 1
NAN_FROM_STEP_6 = ("--model.encoder", "probes.NaNAfter", "--model.encoder.init_args.after", "7")


def fit_once(run_cli, tiny_config, tmp_path, *extra) -> Path:
    run_cli("fit", *TWO, "--config", tiny_config, "--trainer.max_epochs", "1", *extra)
    return tmp_path / "logs" / "two_latent" / "version_0" / "checkpoints" / "last.ckpt"


def test_a_non_finite_loss_stops_the_run_before_it_updates_the_weights(run_cli, capsys, tiny_config, tmp_path):
    err = cli_error(
        run_cli, capsys, "fit", *TWO, "--config", tiny_config, "--trainer.max_epochs", "3", *NAN_FROM_STEP_6, code=1
    )
    last = tmp_path / "logs" / "two_latent" / "version_0" / "checkpoints" / "last.ckpt"
    assert "non-finite loss at global step 6 (epoch 1, batch 1 of the epoch; loss=nan" in err
    assert f"Last good checkpoint: {last}" in err and "nonfinite.policy: skip" in err
    saved = torch.load(last, weights_only=True)  # saved again as the run stopped: the state before the bad step
    assert saved["global_step"] == 6 and all(torch.isfinite(v).all() for v in saved["state_dict"].values())


def test_nonfinite_skip_skips_the_bad_updates_and_finishes(run_cli, tiny_config, tmp_path):
    two_bad = (*NAN_FROM_STEP_6, "--model.encoder.init_args.until", "9")  # steps 6 and 7: 2 of epoch 1's 5 batches
    with pytest.warns(UserWarning, match="skipped this batch's update") as caught:
        cli = run_cli(
            "fit", *TWO, "--config", tiny_config, "--trainer.max_steps", "8", "--nonfinite.policy", "skip", *two_bad
        )
    skipped = [str(w.message) for w in caught if "skipped this batch's update" in str(w.message)]
    assert [m.split(" (")[0] for m in skipped] == [f"non-finite loss at global step {s}" for s in (6, 7)]
    assert cli.trainer.state.finished
    # the skipped steps changed nothing: the weights are those of the same run stopped after 6 steps
    reference = run_cli("fit", *TWO, "--config", tiny_config, "--trainer.max_steps", "6", *NAN_FROM_STEP_6)
    assert reference.trainer.global_step == 6
    assert all(torch.equal(p, reference.model.state_dict()[k]) for k, p in cli.model.state_dict().items())


def test_nonfinite_skip_stops_a_run_that_skips_most_of_an_epoch(run_cli, capsys, tiny_config, tmp_path):
    with pytest.warns(UserWarning, match="skipped this batch's update"):
        err = cli_error(
            run_cli, capsys, "fit", *TWO, "--config", tiny_config, "--trainer.max_epochs", "3",
            "--nonfinite.policy", "skip", *NAN_FROM_STEP_6, code=1,
        )  # fmt: skip
    assert "3 of this epoch's 5 training batches gave a non-finite loss, more than nonfinite.policy: skip" in err
    assert "allows (50%)" in err
    assert "Traceback" not in err
    checkpoints = sorted(p.name for p in tmp_path.glob("logs/**/*.ckpt"))
    assert checkpoints and not any("nan" in name for name in checkpoints)  # no NaN-scored "best"


def test_resuming_with_a_config_of_another_architecture_is_refused(run_cli, capsys, tiny_config, tmp_path):
    fit_once(run_cli, tiny_config, tmp_path)  # a 2-latent MLP, logged as "two_latent"
    err = cli_error(
        run_cli,
        capsys,
        "fit",
        *configs(CONFIGS / "cnn.yaml", tiny_config),
        "--ckpt_path",
        "last",
        "--trainer.logger.init_args.name",
        "two_latent",
    )
    assert "does not fit the model built from the config (model.latent_dim: 2 in the checkpoint, 20 in" in err
    assert "model.encoder: {'class_path': 'MLPEncoder'" in err and "{'class_path': 'ConvEncoder'" in err
    assert "missing from the checkpoint" in err and "its config.yaml" in err


def test_loading_weights_of_another_size_in_python_is_refused(run_cli, tiny_config, tmp_path):
    from lightning.pytorch import Trainer

    from vae_lightning import MLPDecoder, MLPEncoder, MNISTDataModule, VAELitModule

    checkpoint = fit_once(run_cli, tiny_config, tmp_path)
    model = VAELitModule(MLPEncoder(20), MLPDecoder(20), latent_dim=20)
    data = yaml.safe_load(tiny_config.read_text())["data"]
    with pytest.raises(RuntimeError, match=r"size mismatch for encoder.head.weight: .* torch.Size\(\[4, 400\]\)"):
        Trainer(logger=False, enable_progress_bar=False).test(
            model, MNISTDataModule(**data), ckpt_path=checkpoint, weights_only=True
        )


@pytest.mark.parametrize("damage", ["truncated", "flipped", "missing"])
def test_a_damaged_checkpoint_is_refused_saying_which(run_cli, capsys, tiny_config, tmp_path, damage):
    checkpoint = fit_once(run_cli, tiny_config, tmp_path)
    data = checkpoint.read_bytes()
    if damage == "truncated":
        checkpoint.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":  # one bit inside the stored weights
        middle = len(data) // 2
        checkpoint.write_bytes(data[:middle] + bytes([data[middle] ^ 0x10]) + data[middle + 1 :])
    else:
        checkpoint = checkpoint.with_name("gone.ckpt")
    err = cli_error(run_cli, capsys, "test", *TWO, "--config", tiny_config, "--ckpt_path", checkpoint)
    expected = {"truncated": "is truncated or corrupted", "flipped": "fails its checksum", "missing": "is not a file"}
    assert str(checkpoint) in err and expected[damage] in err


class Planted:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):  # unpickling it would create a file: proof that code ran
        return (open, (self.path, "w"))


def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(run_cli, capsys, tiny_config, tmp_path):
    checkpoint = fit_once(run_cli, tiny_config, tmp_path)
    content = torch.load(checkpoint, weights_only=True)
    content["planted"] = Planted(str(tmp_path / "code-ran"))
    torch.save(content, checkpoint)
    err = cli_error(run_cli, capsys, "test", *TWO, "--config", tiny_config, "--ckpt_path", checkpoint)
    assert "holds more than tensors and plain data, so it was not loaded" in err
    assert not (tmp_path / "code-ran").exists()


def test_a_class_path_outside_the_package_is_refused_before_it_is_imported(run_cli, capsys, tiny_config, tmp_path):
    """`this` prints the Zen of Python when imported; a `helpers.py` in the working folder would run likewise."""
    checkpoint = fit_once(run_cli, tiny_config, tmp_path)
    content = torch.load(checkpoint, weights_only=True)
    content["hyper_parameters"]["encoder"]["class_path"] = "this.Zen"
    torch.save(content, checkpoint)
    capsys.readouterr()
    for command in ("test", "predict"):
        err = cli_error(run_cli, capsys, command, *TWO, "--config", tiny_config, "--ckpt_path", checkpoint)
        assert "names code outside vae_lightning, torch.nn and torch.optim ('this.Zen')" in err
        assert "nothing was imported" in err and "this" not in sys.modules
    done = subprocess.run(
        [Path(sys.executable).parent / "vae-lightning-experiments", "--ckpt_path", str(checkpoint), "--output_dir",
         str(tmp_path / "figures")], env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "'this.Zen'" in done.stderr and "Beautiful is better" not in done.stdout


def test_a_class_path_the_config_names_itself_is_trusted_in_a_checkpoint(run_cli, tiny_config, tmp_path):
    own = ("--model.encoder", "probes.NaNAfter", "--model.encoder.init_args.after", "1000")  # healthy this long
    checkpoint = fit_once(run_cli, tiny_config, tmp_path, *own)  # not the package's: trusted as the config names it
    tested = run_cli("test", *TWO, "--config", tiny_config, *own, "--ckpt_path", checkpoint)
    assert type(tested.model.encoder).__name__ == "NaNAfter"


def test_an_unwritable_checkpoint_folder_is_refused_before_any_work(run_cli, capsys, tiny_config, tmp_path):
    err = cli_error(
        run_cli,
        capsys,
        "fit",
        *TWO,
        "--config",
        tiny_config,
        "--trainer.max_epochs",
        "1",
        "--last_checkpoint.dirpath",
        "/sys/vae-lightning-test",
    )  # fmt: skip  (sysfs: no new files, even for root)
    assert "last_checkpoint.dirpath: '/sys/vae-lightning-test' cannot be written" in err and "Traceback" not in err
    assert not (tmp_path / "logs").exists()  # nothing half-made left behind


@pytest.mark.slow
def test_a_write_failure_keeps_the_previous_checkpoint_intact(tiny_config, tmp_path):
    """A real failed write: the resumed process may not write files over 1 MB (RLIMIT_FSIZE)."""
    folder = tmp_path / "fixed"
    common = [
        sys.executable,
        "-m",
        "vae_lightning",
        "fit",
        *map(str, TWO),
        "--config",
        str(tiny_config),
        "--last_checkpoint.dirpath",
        str(folder),
        "--checkpoint.save_top_k",
        "0",
    ]
    env = subprocess_env(tmp_path)
    first = subprocess.run(
        [*common, "--trainer.max_epochs", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert first.returncode == 0, first.stderr[-2000:]
    before = (folder / "last.ckpt").read_bytes()
    assert len(before) > 1 << 20

    def small_files_only():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    second = subprocess.run(
        [*common, "--trainer.max_epochs", "2", "--ckpt_path", "last"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        preexec_fn=small_files_only,
    )
    assert second.returncode == 1, second.stderr[-3000:]
    assert (
        f"could not write checkpoint {folder / 'last.ckpt'}: File too large (the previous last.ckpt is intact)"
        in second.stderr
    )
    assert (folder / "last.ckpt").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # no temporary file left behind


def test_atomic_writes_leave_no_partial_file(tmp_path):
    from vae_lightning.runs import AtomicCheckpointIO

    io_ = AtomicCheckpointIO()
    io_.save_checkpoint({"w": torch.ones(3)}, tmp_path / "a.ckpt")
    assert torch.equal(torch.load(tmp_path / "a.ckpt", weights_only=True)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]
    assert zipfile.ZipFile(tmp_path / "a.ckpt").testzip() is None  # every member's CRC checks
