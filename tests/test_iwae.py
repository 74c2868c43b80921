"""The training objectives (`model.objective`, `model.train_samples`): the k-sample ELBO and the IWAE bound
of Burda et al. (2015), checked against a 1-latent model whose log p(x) is integrated on a grid."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import CONFIGS, configs
from test_objectives import OneLatentDecoder, on_grid
from torch import nn

from vae_lightning import MLPDecoder, MLPEncoder, VAELitModule
from vae_lightning.errors import ConfigError
from vae_lightning.objectives import bernoulli_nll, gaussian_kl, vae_terms


class FixedPosterior(nn.Module):
    """q(z | x) = N(0.5, 0.6^2) for every image: deliberately imperfect, so the bounds have a gap to close."""

    def forward(self, x):
        mu = torch.full((len(x), 1), 0.5)
        return mu, torch.full_like(mu, 2 * math.log(0.6))


def one_latent(objective: str, k: int) -> VAELitModule:
    return VAELitModule(FixedPosterior(), OneLatentDecoder(), latent_dim=1, objective=objective, train_samples=k)


def test_the_k_sample_elbo_averages_the_reconstruction_over_its_draws():
    torch.manual_seed(0)
    model = VAELitModule(MLPEncoder(3, [32]), MLPDecoder(3, [32]), latent_dim=3, train_samples=4, kl_weight=0.5)
    x = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3))
    torch.manual_seed(1)
    terms = model.terms(x)
    torch.manual_seed(1)
    mu, logvar = model.encode(x)
    eps = torch.randn(4, 5, 3)
    recon = torch.stack([bernoulli_nll(model.decoder(mu + e * (0.5 * logvar).exp()), x) for e in eps]).mean()
    kl = gaussian_kl(mu, logvar).mean()
    torch.testing.assert_close(terms.recon.mean(), recon)
    torch.testing.assert_close(terms.loss.mean(), recon + 0.5 * kl)
    torch.testing.assert_close(terms.nelbo.mean(), recon + kl)


def test_with_one_sample_both_objectives_are_the_elbo():
    torch.manual_seed(0)
    decoder = OneLatentDecoder()
    x = torch.bernoulli(torch.sigmoid(decoder(torch.randn(6, 1))))
    mu, logvar = FixedPosterior()(x)
    _, elbo = on_grid(decoder, x, mu, logvar)
    iwae, vae = one_latent("iwae", 1), one_latent("elbo", 1)
    # the same draw: IWAE's k = 1 term is log p(x|z) + log p(z) - log q(z|x), the ELBO's a KL in closed form
    torch.manual_seed(2)
    single = -iwae.terms(x).loss.mean()
    torch.manual_seed(2)
    z = 0.5 + 0.6 * torch.randn(6, 1)
    log_q = torch.distributions.Normal(0.5, 0.6).log_prob(z).sum(-1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(single, (-bernoulli_nll(decoder(z), x) + log_p - log_q).mean())
    # ... whose expectation is the ELBO, as is the single-sample ELBO's
    with torch.no_grad():
        draws = {
            name: torch.stack([-m.terms(x).loss.mean() for _ in range(3000)]).double()
            for name, m in (("iwae", iwae), ("elbo", vae))
        }
    for name, values in draws.items():
        error = 4 * values.std() / math.sqrt(len(values))
        assert abs(values.mean() - elbo.mean()) < error, name


def test_the_iwae_bound_sits_between_the_elbo_and_log_px_and_tightens_with_k():
    torch.manual_seed(0)
    decoder = OneLatentDecoder()
    x = torch.bernoulli(torch.sigmoid(decoder(torch.randn(6, 1))))
    log_px, elbo = on_grid(decoder, x, *FixedPosterior()(x))
    log_px, elbo = log_px.mean().item(), elbo.mean().item()  # the training loss is a batch mean
    assert log_px - elbo > 0.5

    bound, error = {}, {}
    for k, repeats in ((1, 3000), (5, 1000), (50, 200), (500, 40)):
        model = one_latent("iwae", k)
        with torch.no_grad():
            values = torch.stack([-model.terms(x).loss.mean() for _ in range(repeats)]).double()
        bound[k], error[k] = values.mean().item(), 4 * values.std().item() / math.sqrt(repeats) + 1e-3
    assert abs(bound[1] - elbo) < error[1]
    for small, large in ((1, 5), (5, 50), (50, 500)):
        assert bound[large] > bound[small] + 0.05 - error[small] - error[large], (small, large)  # strictly tighter
    assert bound[500] < log_px + error[500]
    assert log_px - bound[500] < 0.15 * (log_px - elbo)


def test_iwae_trains_every_parameter():
    torch.manual_seed(0)
    model = VAELitModule(MLPEncoder(2, [16]), MLPDecoder(2, [16]), latent_dim=2, objective="iwae", train_samples=5)
    model.terms(torch.bernoulli(torch.full((4, 1, 28, 28), 0.3))).loss.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize(
    ("setting", "match"),
    [
        (["--model.objective", "iwea"], 'Parser key "model.objective"'),
        (["--model.train_samples", "0"], 'Parser key "model.train_samples"'),
        (["--model.objective", "iwae", "--model.kl_weight", "0.5"], "set both to 1"),
    ],
)
def test_bad_objective_settings_are_refused_naming_the_key(run_cli, capsys, setting, match):
    from conftest import cli_error

    assert match in cli_error(run_cli, capsys, "fit", "--config", CONFIGS / "vanilla.yaml", *setting)


@pytest.mark.parametrize("config", ["vae_k1.yaml", "iwae_k5.yaml", "iwae_k50.yaml"])
def test_the_paper_configs_train_and_test_through_the_cli(run_cli, tiny_config, tmp_path, config):
    fit = run_cli(
        "fit",
        *configs(CONFIGS / "paper" / config, tiny_config),
        "--trainer.max_epochs",
        "1",
        "--model.train_samples",
        "5" if "iwae" in config else "1",
    )
    model = fit.trainer.lightning_module
    assert (model.objective, model.latent_dim, model.train_samples) == (
        ("iwae", 50, 5) if "iwae" in config else ("elbo", 50, 1)
    )
    assert fit.datamodule.binarize == "dynamic"
    assert model.gradient_estimator == ("dreg" if "iwae" in config else "standard")
    assert type(model.encoder.body[1]).__name__ == "Tanh" and [m.out_features for m in model.encoder.body[::2]] == [
        200,
        200,
    ]
    last = next(tmp_path.glob("logs/**/last.ckpt"))
    test = run_cli("test", "--config", CONFIGS / "paper" / config, "--config", tiny_config, "--ckpt_path", last)
    metrics = test.trainer.callback_metrics
    assert metrics["test/nll"] < metrics["test/nelbo"]


# ------------------------------------------------------------------------------------------- DReG
def gradient_draws(estimator: str, k: int, draws: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-draw gradients of the iwae loss of a small fixed model on 4 fixed images, each draw its own
    eps (the same eps sequence for either estimator): (encoder (draws, P_enc), decoder (draws, P_dec))."""
    torch.manual_seed(0)
    encoder, decoder = MLPEncoder(2, [16]), MLPDecoder(2, [16])
    x = torch.bernoulli(torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
    noise = torch.Generator().manual_seed(2)
    rows = ([], [])
    for _ in range(draws):
        mu, logvar = encoder(x)
        eps = torch.randn(k, 4, 2, generator=noise)
        loss = vae_terms(x, mu, logvar, eps, decoder, "iwae", gradient_estimator=estimator).loss.sum()
        for row, net in zip(rows, (encoder, decoder)):
            row.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, net.parameters(), retain_graph=True)]))
    return torch.stack(rows[0]), torch.stack(rows[1])


def snr(gradients: torch.Tensor) -> float:
    """The mean over parameters of |E g| / std g (Rainforth et al. 2018), over draws (rows)."""
    return (gradients.mean(0).abs() / gradients.std(0).clamp_min(1e-12)).mean().item()


def test_dreg_keeps_the_value_and_the_decoder_gradient_and_the_expected_encoder_gradient():
    k, draws = 10, 600
    standard_encoder, standard_decoder = gradient_draws("standard", k, draws)
    dreg_encoder, dreg_decoder = gradient_draws("dreg", k, draws)
    assert torch.allclose(standard_decoder, dreg_decoder, rtol=1e-4, atol=1e-3)  # draw by draw, to float32 sums
    # the encoder's: the same expectation (the two means differ by no more than their Monte-Carlo error)
    difference = standard_encoder - dreg_encoder  # (draws, P): the same eps in both, so the error is paired
    z = difference.mean(0) / (difference.std(0) / draws**0.5).clamp_min(1e-12)
    assert (z.abs() < 4).float().mean() > 0.99 and z.abs().mean() < 1.2
    assert not torch.allclose(standard_encoder, dreg_encoder)  # and yet another estimator, draw by draw


def test_the_encoder_gradient_snr_falls_with_k_under_the_standard_estimator_not_under_dreg():
    draws = 300
    standard = {k: snr(gradient_draws("standard", k, draws)[0]) for k in (1, 100)}
    dreg = {k: snr(gradient_draws("dreg", k, draws)[0]) for k in (1, 100)}
    assert standard[100] < 0.7 * standard[1]  # Rainforth et al.: O(1 / sqrt(k))
    assert dreg[100] > standard[100] and dreg[100] >= 0.9 * dreg[1]


def test_dreg_needs_the_iwae_objective():
    with pytest.raises(ConfigError, match="model.gradient_estimator: dreg"):
        VAELitModule(MLPEncoder(2, [8]), MLPDecoder(2, [8]), latent_dim=2, gradient_estimator="dreg")


def test_dreg_trains_through_the_cli(run_cli, tiny_config):
    cli = run_cli("fit", *configs(CONFIGS / "paper" / "iwae_k50.yaml", tiny_config), "--model.gradient_estimator",
                  "dreg", "--model.train_samples", "5", "--trainer.fast_dev_run", "2")  # fmt: skip
    assert cli.model.gradient_estimator == "dreg" and cli.trainer.state.finished
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())
