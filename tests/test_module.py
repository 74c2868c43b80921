"""VAELitModule: objective, metrics, public API, checkpoints, refusal of bad settings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from builders import quiet_trainer, tiny_data, tiny_model
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger

from vae_lightning import MLPDecoder, MLPEncoder, MNISTDataModule, VAELitModule
from vae_lightning.callbacks import TestLikelihood
from vae_lightning.errors import ConfigError
from vae_lightning.objectives import bernoulli_nll, gaussian_kl, reparameterize


def datamodule(tiny_mnist, **kwargs) -> MNISTDataModule:
    return tiny_data(tiny_mnist, **{"eval_batch_size": 40, **kwargs})


def trainer(tmp_path, **kwargs) -> Trainer:
    return quiet_trainer(**{"logger": CSVLogger(tmp_path), **kwargs})


def test_public_methods_have_the_documented_shapes_and_ranges():
    m = tiny_model(latent_dim=3)
    x = torch.rand(4, 1, 28, 28)
    mu, logvar = m.encode(x)
    assert mu.shape == logvar.shape == (4, 3)
    for images in (m.decode(mu), m.reconstruct(x), m.sample(6)):
        assert images.shape[1:] == (1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert m.sample(6).shape[0] == 6
    assert torch.equal(m.reconstruct(x), m.decode(mu))
    generator = torch.Generator().manual_seed(1)
    assert torch.equal(m.sample(2, generator=generator), m.sample(2, generator=torch.Generator().manual_seed(1)))


@pytest.mark.parametrize(
    ("recon_weight", "kl_weight", "pure"), [(0.0, 1.0, "kl"), (1.0, 0.0, "recon"), (2.0, 0.5, None)]
)
def test_weights_scale_the_terms_and_zero_leaves_the_pure_term(recon_weight, kl_weight, pure):
    m = tiny_model(recon_weight=recon_weight, kl_weight=kl_weight)
    x = torch.rand(8, 1, 28, 28)
    eps = torch.randn(1, 8, 2)
    terms = m.terms(x, eps)
    mu, logvar = m.encode(x)
    recon, kl = bernoulli_nll(m.decoder(reparameterize(mu, logvar, eps[0])), x), gaussian_kl(mu, logvar)
    torch.testing.assert_close(terms.recon, recon)
    torch.testing.assert_close(terms.nelbo, recon + kl)
    torch.testing.assert_close(terms.loss, recon_weight * recon + kl_weight * kl)
    if pure:
        assert torch.equal(terms.loss, getattr(terms, pure))


def test_the_loss_still_reaches_every_parameter_when_a_weight_is_zero():
    # DDP needs a gradient for every parameter: a zero weight must give zeros, not missing grads.
    m = tiny_model(recon_weight=0.0)
    loss = m.terms(torch.rand(4, 1, 28, 28)).loss.mean()
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    assert all(p.grad.abs().max() == 0 for p in m.decoder.parameters())


def test_training_lowers_the_validation_nelbo_and_logs_exact_epoch_means(tiny_mnist, tmp_path):
    m, dm = tiny_model(), datamodule(tiny_mnist)
    t = trainer(tmp_path, max_epochs=3, log_every_n_steps=1)
    before = t.validate(m, datamodule=dm, verbose=False)[0]["val/nelbo"]
    t = trainer(tmp_path, max_epochs=3, log_every_n_steps=1)
    t.fit(m, datamodule=dm)
    assert t.callback_metrics["val/nelbo"] < before - 50
    rows = list(csv.DictReader(Path(t.logger.log_dir, "metrics.csv").read_text().splitlines()))
    steps = [float(r["train/nelbo"]) for r in rows if r["train/nelbo"] and r["epoch"] == "2"]
    epoch_mean = [float(r["train/nelbo_epoch"]) for r in rows if r["train/nelbo_epoch"] and r["epoch"] == "2"]
    assert len(steps) == 10  # 250 images / 25
    assert epoch_mean == [pytest.approx(sum(steps) / len(steps), rel=1e-5)]


def test_a_python_built_model_reloads_with_its_networks_given(tiny_mnist, tmp_path):
    m, dm = tiny_model(latent_dim=3, kl_weight=0.5), datamodule(tiny_mnist)
    t = trainer(tmp_path, max_epochs=1, enable_checkpointing=True)
    t.fit(m, datamodule=dm)
    path = t.checkpoint_callback.best_model_path
    assert "encoder" not in torch.load(path, weights_only=True)["hyper_parameters"]  # no pickled modules
    again = VAELitModule.load_from_checkpoint(
        path, encoder=MLPEncoder(3, [64]), decoder=MLPDecoder(3, [64]), weights_only=True
    )
    assert again.kl_weight == 0.5
    for key, value in m.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"recon_weight": 0.0, "kl_weight": 0.0}, "both 0 \\(a constant objective\\)"),
        ({"gradient_estimator": "dreg"}, "model.gradient_estimator: dreg .* set model.objective: iwae"),
        ({"objective": "iwae", "kl_weight": 0.5}, "model.objective: iwae bounds log p.x. as a whole"),
    ],
)
def test_settings_that_do_not_go_together_are_refused_at_construction(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        VAELitModule(MLPEncoder(2), MLPDecoder(2), latent_dim=2, **kwargs)


def test_the_checkpoint_holds_what_the_model_is(tiny_mnist, tmp_path):
    m = tiny_model(latent_dim=3, kl_weight=0.5)
    t = trainer(tmp_path, max_epochs=1, enable_checkpointing=True)
    t.fit(m, datamodule=datamodule(tiny_mnist))
    saved = torch.load(t.checkpoint_callback.best_model_path, weights_only=True)["hyper_parameters"]
    assert set(saved) == {"latent_dim", "recon_weight", "kl_weight", "objective", "train_samples"} | {
        "gradient_estimator",
        "lr_scheduler",
    }  # the networks and the optimizer, built in Python, are not pickled into it
    assert (saved["latent_dim"], saved["kl_weight"], saved["objective"], saved["train_samples"]) == (3, 0.5, "elbo", 1)


FIXTURE = Path(__file__).parent / "fixtures"


def test_a_checkpoint_written_before_the_module_was_simplified_loads_and_tests_to_the_same_numbers(tiny_mnist):
    """tests/fixtures/pre_simplicity.ckpt: `vae-lightning fit` of configs/two_latent.yaml (hidden 16, 2 epochs,
    nll_samples 8) on the tiny set, written by commit b449eb1; expected.json holds what that code measured."""
    expected = json.loads((FIXTURE / "expected.json").read_text())
    for settings, key in (({}, "as_saved"), ({"samples": 32, "seed": 3}, "nll_samples_32_eval_seed_3")):
        model = VAELitModule.load_from_checkpoint(FIXTURE / "pre_simplicity.ckpt", weights_only=True)
        likelihood = TestLikelihood(**{"samples": 8, **settings})
        (metrics,) = quiet_trainer(callbacks=[likelihood]).test(model, datamodule=datamodule(tiny_mnist), verbose=False)
        for name, value in expected[key].items():
            if name == "test/nll" or not settings:  # the evaluation seed now seeds the test likelihood alone
                assert metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-5), (key, name)
