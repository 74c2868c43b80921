"""The paper recipe's pieces with a real Trainer on the tiny set: the KL warm-up and the networks' starting point."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from builders import quiet_trainer, tiny_data, tiny_model
from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger

from vae_lightning import ConvDecoder, ConvEncoder, VAELitModule
from vae_lightning.callbacks import Initialisation, KLWarmup
from vae_lightning.errors import ConfigError


def test_the_kl_weight_rises_linearly_over_the_warm_up_and_only_the_loss_uses_it(tiny_mnist, tmp_path):
    """10 steps an epoch, a warm-up of one epoch: weights 0, 0.1, ..., 0.9, then the configured 2.0 x 1."""
    trainer = quiet_trainer(max_epochs=2, log_every_n_steps=1, logger=CSVLogger(tmp_path), callbacks=[KLWarmup(1)])
    model = tiny_model(kl_weight=2.0)
    trainer.fit(model, datamodule=tiny_data(tiny_mnist))
    rows = [
        r
        for r in csv.DictReader(Path(trainer.logger.log_dir, "metrics.csv").read_text().splitlines())
        if r["train/loss"]
    ]
    weights = [float(r["train/kl_weight"]) for r in rows]
    assert weights == pytest.approx([2.0 * min(1.0, step / 10) for step in range(20)])
    for r, w in zip(rows, weights):
        recon, kl = float(r["train/recon"]), float(r["train/kl"])
        assert float(r["train/loss"]) == pytest.approx(recon + w * kl, rel=1e-5)
        assert float(r["train/nelbo"]) == pytest.approx(recon + kl, rel=1e-5)
    assert model.kl_weight == 2.0  # the model leaves the fit as configured


def test_a_warm_up_in_steps_and_none_at_all():
    assert KLWarmup(steps=7).length(None) == 7
    assert KLWarmup().idle
    with pytest.raises(ConfigError, match="give one length"):
        KLWarmup(epochs=1, steps=1)


def test_a_fit_from_scratch_starts_glorot_with_the_output_bias_at_the_data_s_mean(tiny_mnist):
    class Start(Callback):
        def on_train_start(self, trainer, pl_module):
            self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}

    start, data = Start(), tiny_data(tiny_mnist)
    trainer = quiet_trainer(max_steps=1, callbacks=[Initialisation("glorot", "data_mean", clip=0.01), start])
    trainer.fit(tiny_model(), datamodule=data)
    mean = data.train_pixel_mean()
    assert mean.shape == (1, 28, 28) and 0 < mean.mean() < 0.5 and mean.min() == 0  # MNIST's borders are empty
    expected = torch.logit(mean.clamp(0.01, 0.99)).flatten()
    torch.testing.assert_close(start.state["decoder.head.bias"], expected)
    biases = [v for k, v in start.state.items() if k.endswith("bias") and k != "decoder.head.bias"]
    assert biases and all((b == 0).all() for b in biases)
    w = start.state["encoder.body.0.weight"]  # 64 x 784: Glorot's bound sqrt(6 / (fan_in + fan_out))
    assert w.abs().max() <= (6 / (784 + 64)) ** 0.5 and w.abs().max() > 0.9 * (6 / (784 + 64)) ** 0.5


def test_a_per_channel_output_bias_takes_the_channel_s_mean(tiny_mnist):
    class Start(Callback):
        def on_train_start(self, trainer, pl_module):
            self.bias = pl_module.decoder.net[-1].bias.detach().clone()

    start, data = Start(), tiny_data(tiny_mnist)
    torch.manual_seed(0)
    model = VAELitModule(ConvEncoder(2), ConvDecoder(2), latent_dim=2)
    trainer = quiet_trainer(max_steps=1, callbacks=[Initialisation(output_bias="data_mean"), start])
    trainer.fit(model, datamodule=data)
    torch.testing.assert_close(start.bias, torch.logit(data.train_pixel_mean().mean().clamp(0.001, 0.999)).view(1))


def test_the_defaults_leave_torch_s_initialisation_as_it_is(tiny_mnist):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quiet_trainer(max_steps=0, callbacks=[Initialisation()]).fit(model, datamodule=tiny_data(tiny_mnist))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_decoder_without_a_bias_is_refused_naming_the_setting(tiny_mnist):
    from torch import nn

    from vae_lightning import MLPEncoder

    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Linear(2, 784, bias=False), nn.Unflatten(1, (1, 28, 28)))
    model = VAELitModule(MLPEncoder(2, [16]), decoder, latent_dim=2)
    with pytest.raises(ConfigError, match="init.output_bias: the decoder has no bias"):
        quiet_trainer(max_steps=1, callbacks=[Initialisation(output_bias="data_mean")]).fit(
            model, datamodule=tiny_data(tiny_mnist)
        )


def test_paper_seeds_collects_resumed_runs_and_their_tests(run_cli, tiny_config, tmp_path):
    """Two seeds of a 2-epoch fit, one of them resumed for its second epoch, each tested: one curve each, spliced
    across versions, their test/nll and the spread across them."""
    import json
    import subprocess
    import sys

    from conftest import CONFIGS, REPO, subprocess_env

    config = ("--config", CONFIGS / "vanilla.yaml", "--config", tiny_config)
    for seed, pieces in ((1, [1, 2]), (2, [2])):
        name = ("--trainer.logger.init_args.name", f"s{seed}", "--seed_everything", str(seed))
        for epochs in pieces:
            resume = ("--ckpt_path", "last") if epochs != pieces[0] else ()
            run_cli("fit", *config, *name, "--trainer.max_epochs", str(epochs), *resume)
        run_cli("test", *config, *name, "--ckpt_path", "last")
    out = tmp_path / "seeds"
    args = ["--logs", tmp_path / "logs", "--runs", "s1", "s2", "--config", CONFIGS / "vanilla.yaml", "--out", out]
    done = subprocess.run(
        [sys.executable, REPO / "scripts" / "paper_seeds.py", *map(str, args)],
        env=subprocess_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(out.with_suffix(".json").read_text())
    assert [run["epochs"] for run in record["runs"]] == [2, 2] and out.with_suffix(".png").is_file()
    assert all(list(run["train_nelbo_by_epoch"]) == ["0", "1"] for run in record["runs"])
    nll = [run["test"]["test/nll"] for run in record["runs"]]
    assert record["test_nll_mean"] == pytest.approx(sum(nll) / 2) and record["test_nll_sd_across_runs"] > 0
    assert record["config"] == "configs/vanilla.yaml" and record["runs"][0]["checkpoint"].endswith("last.ckpt")
    merged = tmp_path / "merged"  # s1 from the earlier JSON (its logs could be gone), s2 read again
    args = ["--logs", tmp_path / "logs", "--runs", "s2", "--config", CONFIGS / "vanilla.yaml", "--out", merged]
    done = subprocess.run(
        [sys.executable, REPO / "scripts" / "paper_seeds.py", *map(str, args), "--keep", str(out.with_suffix(".json"))],
        env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = json.loads(merged.with_suffix(".json").read_text())
    assert [run["name"] for run in again["runs"]] == ["s1", "s2"] and again["test_nll_mean"] == record["test_nll_mean"]
