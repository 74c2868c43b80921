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
from torch.utils.data import DataLoader

from vae_lightning import MLPDecoder, MLPEncoder, MNISTDataModule, VAELitModule
from vae_lightning.data.loaders import seeded_normal
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


def test_test_metrics_count_every_image_once_with_per_image_noise(tiny_mnist, tmp_path):
    m, dm = tiny_model(nll_samples=16), datamodule(tiny_mnist)
    (metrics,) = trainer(tmp_path).test(m, datamodule=dm, verbose=False)
    # recompute by hand over the whole test split, one image at a time
    images = dm.splits["test"][0].float().div(255).unsqueeze(1)
    index = torch.arange(len(images))
    with torch.no_grad():
        terms = m.terms(images, seeded_normal(m.eval_seed, index, 1, m.latent_dim, 0))
    assert metrics["test/nelbo"] == pytest.approx(terms.nelbo.mean().item(), rel=1e-5)
    assert metrics["test/kl"] == pytest.approx(terms.kl.mean().item(), rel=1e-5)
    assert metrics["test/nll"] < metrics["test/nelbo"]
    with torch.no_grad():
        nll, variance = m.test_nll(images, index)
    assert metrics["test/nll"] == pytest.approx(nll.mean().item(), rel=1e-5)
    # the standard error of a mean of independent estimates: sqrt(sum of their variances) / n
    assert metrics["test/nll_mc_se"] == pytest.approx(variance.sum().sqrt().item() / len(images), rel=1e-4)


def test_test_nll_per_image_does_not_depend_on_how_the_images_are_split_between_cores():
    m, before = tiny_model(nll_samples=300, nll_chunk_size=64), torch.get_num_threads()
    images = torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    index = torch.arange(100, 107)
    estimates = []
    try:
        for threads in (1, 3):  # 3: parts of 3, 3 and 1 images, each on a thread of its own
            torch.set_num_threads(threads)
            with torch.inference_mode():
                estimates.append(m.test_nll(images, index))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    for one, split in zip(*estimates):
        torch.testing.assert_close(split, one, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_an_empty_test_batch_leaves_the_test_metrics_as_they_are(tmp_path, threads):
    """Under DDP a rank's share of a last test batch smaller than the process count is empty: the test
    metrics with it are those without it, on one thread or split between cores."""
    m, before = tiny_model(nll_samples=300), torch.get_num_threads()
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    batch = images, torch.zeros(5, dtype=torch.long), torch.arange(5)
    empty = tuple(t[:0] for t in batch)
    try:
        torch.set_num_threads(threads)
        results = [  # batch_size=None: the loader yields the batches as they are
            trainer(tmp_path).test(m, dataloaders=DataLoader(batches, batch_size=None), verbose=False)[0]
            for batches in ([batch], [batch, empty])
        ]
    finally:
        torch.set_num_threads(before)
    assert results[1] == pytest.approx(results[0], rel=1e-6)


def test_evaluation_numbers_do_not_depend_on_the_batch_size(tiny_mnist, tmp_path):
    m = tiny_model(nll_samples=8)
    results = [
        trainer(tmp_path).test(m, datamodule=datamodule(tiny_mnist, eval_batch_size=size), verbose=False)[0]
        for size in (7, 100)
    ]
    for key in ("test/nelbo", "test/nll", "test/kl"):
        assert results[0][key] == pytest.approx(results[1][key], rel=1e-6), key


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
        ({"latent_dim": 0}, "model.latent_dim must be a positive integer"),
        ({"recon_weight": -1.0}, "model.recon_weight must be a finite number >= 0"),
        ({"kl_weight": float("nan")}, "model.kl_weight must be a finite number >= 0"),
        ({"recon_weight": 0.0, "kl_weight": 0.0}, "both 0: the objective is constant"),
        ({"nll_samples": 0}, "model.nll_samples must be a positive integer"),
        ({"nll_chunk_size": -3}, "model.nll_chunk_size must be a positive integer"),
    ],
)
def test_bad_settings_are_refused_at_construction(kwargs, match):
    latent_dim = kwargs.pop("latent_dim", 2)
    with pytest.raises(ConfigError, match=match):
        VAELitModule(MLPEncoder(2), MLPDecoder(2), latent_dim=latent_dim, **kwargs)


def test_run_settings_stay_out_of_the_checkpoint_and_the_model_in(tiny_mnist, tmp_path):
    from vae_lightning.module import RUN_SETTINGS

    m = tiny_model(latent_dim=3, kl_weight=0.5, nll_samples=7, nonfinite="skip", train_matmul_precision="medium")
    t = trainer(tmp_path, max_epochs=1, enable_checkpointing=True)
    t.fit(m, datamodule=datamodule(tiny_mnist))
    saved = torch.load(t.checkpoint_callback.best_model_path, weights_only=True)["hyper_parameters"]
    assert not set(RUN_SETTINGS) & set(saved)
    assert (saved["latent_dim"], saved["kl_weight"], saved["objective"], saved["train_samples"]) == (3, 0.5, "elbo", 1)


def test_lightning_still_tells_a_cli_built_model_by_its_given_hyperparameters():
    """The one private name the module reads (`_given_hyperparameters`, Lightning 2.6.6): if Lightning
    renames it, CLI checkpoints would silently stop rebuilding their networks from class paths."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    from vae_lightning import module

    assert module._given_hyperparameters is _given_hyperparameters and _given_hyperparameters.get() is None


FIXTURE = Path(__file__).parent / "fixtures"


def test_a_checkpoint_written_before_the_module_was_simplified_loads_and_tests_to_the_same_numbers(tiny_mnist):
    """tests/fixtures/pre_simplicity.ckpt: `vae-lightning fit` of configs/two_latent.yaml (hidden 16, 2 epochs,
    nll_samples 8) on the tiny set, written by commit b449eb1; expected.json holds what that code measured."""
    expected = json.loads((FIXTURE / "expected.json").read_text())
    for settings, key in (({}, "as_saved"), ({"nll_samples": 32, "eval_seed": 3}, "nll_samples_32_eval_seed_3")):
        model = VAELitModule.load_from_checkpoint(FIXTURE / "pre_simplicity.ckpt", weights_only=True, **settings)
        assert model.nll_samples == settings.get("nll_samples", 8)
        (metrics,) = quiet_trainer().test(model, datamodule=datamodule(tiny_mnist), verbose=False)
        for name, value in expected[key].items():
            assert metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-5), (key, name)
