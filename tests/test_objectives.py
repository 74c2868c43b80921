"""The maths, on its own: KL, Bernoulli likelihood, importance-weighted bound."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vae_lightning.callbacks.speed import subnormals_flushed
from vae_lightning.nets import ConvDecoder, MLPDecoder
from vae_lightning.objectives import (
    bernoulli_nll,
    fused_log_likelihood,
    gaussian_kl,
    importance_weighted_bound,
    importance_weighted_nll,
    log_importance_weights,
    log_prior_over_posterior,
    reparameterize,
    softplus_sum,
)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert gaussian_kl(torch.zeros(4, 3), torch.zeros(4, 3)).abs().max() == 0
    kl = gaussian_kl(torch.randn(100, 3), torch.randn(100, 3))
    assert (kl > 0).all()


def test_analytic_kl_matches_a_monte_carlo_estimate():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 4), torch.randn(5, 4) * 0.5
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(4), torch.ones(4))
    z = q.sample((200_000,))  # (S, 5, 4)
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)
    torch.testing.assert_close(gaussian_kl(mu, logvar), monte_carlo, atol=0.02, rtol=0.01)


def test_bernoulli_nll_is_the_summed_cross_entropy():
    logits = torch.randn(3, 1, 28, 28)
    x = torch.rand(3, 1, 28, 28)
    p = torch.sigmoid(logits).double()
    expected = -(x * p.log() + (1 - x) * (1 - p).log()).sum((1, 2, 3))
    torch.testing.assert_close(bernoulli_nll(logits, x).double(), expected, rtol=1e-5, atol=1e-3)
    # leading sample dimensions broadcast against x
    assert bernoulli_nll(logits.expand(7, -1, -1, -1, -1), x).shape == (7, 3)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("scale", [1.0, 100.0])  # 100: logits in the hundreds, beyond exp's float32 range
def test_log_importance_weights_are_the_training_path_s_terms(binary, scale):
    """Evaluation's image-major, chunked computation gives log p(x | z) + log p(z) - log q(z | x) as
    the training path computes them (`bernoulli_nll`: the cross-entropy), to float32 rounding."""
    torch.manual_seed(2)
    decoder = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 784), nn.Unflatten(1, (1, 28, 28)))
    with torch.no_grad():
        decoder[2].weight.mul_(scale)
    x = torch.bernoulli(torch.full((9, 1, 28, 28), 0.2)) if binary else torch.rand(9, 1, 28, 28)
    mu, logvar, eps = torch.randn(9, 4), torch.randn(9, 4) * 0.3, torch.randn(50, 9, 4)
    with torch.no_grad():
        z = reparameterize(mu, logvar, eps)
        log_px_z = -bernoulli_nll(decoder(z.flatten(0, 1)).unflatten(0, z.shape[:2]), x)
        expected = log_px_z + log_prior_over_posterior(eps, z, logvar)
        assert expected.isfinite().all()
        for chunk_size in (7, 37, 450, 10**6):
            got = log_importance_weights(x, mu, logvar, eps, decoder, chunk_size)
            torch.testing.assert_close(got, expected, rtol=2e-6, atol=1e-3)


def mlp_log_likelihood(decoder: MLPDecoder, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Evaluation's log p(x | z) (B, K) of z (K, B, L), x (B, 784): with mu = 0 and sigma = 1, z = eps and
    log w = log p(x | z) exactly."""
    zeros = torch.zeros(z.shape[1:])
    return log_importance_weights(x.view(-1, 1, 28, 28), zeros, zeros, z, decoder, chunk_size=2048).T


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("activation", ["tanh", "relu", "gelu"])
@pytest.mark.parametrize("hidden_dims", [(200, 200), ()])
@pytest.mark.parametrize("beyond_exp", ["biases", "weights"])
def test_the_mlp_evaluation_likelihood_equals_the_decoder_s_cross_entropy(beyond_exp, activation, hidden_dims, binary):
    """Evaluation's likelihood of an `MLPDecoder` gives the float64 cross-entropy of the decoder's own logits to
    float32 rounding, also for draws whose logits pass exp's float32 range: through large weights with small
    biases (`fused_log_likelihood`: exp(W h) overflowing or underflowing while exp(b) scales it, overflowing rows
    summed again) or through biases beyond +-60 (the fused path steps aside: the decoder's logits)."""
    torch.manual_seed(6)
    decoder = MLPDecoder(latent_dim=8, hidden_dims=hidden_dims, activation=activation).eval()
    with torch.no_grad():
        if beyond_exp == "biases":
            decoder.head.bias[:3] = torch.tensor([120.0, 90.0, -120.0])  # exp(l) overflows float32 above ~88.7
        else:
            decoder.head.weight.mul_(60.0)  # W h in the hundreds either way
            decoder.head.bias[:3] = torch.tensor([-55.0, 55.0, 0.0])
        z = torch.randn(30, 4, 8) * 2
        x = torch.rand(4, 784)
        x = torch.bernoulli(x) if binary else x
        assert (fused_log_likelihood(decoder) is None) == (beyond_exp == "biases")
        got = mlp_log_likelihood(decoder, z, x)
        logits = decoder(z.transpose(0, 1).flatten(0, 1)).double().view(4, 30, 1, 28, 28)
    expected = -bernoulli_nll(logits, x.double().view(4, 1, 1, 28, 28))
    torch.testing.assert_close(got.double(), expected, rtol=2e-6, atol=1e-3)


def test_the_evaluation_likelihood_keeps_a_bias_whose_exp_leaves_float32():
    """exp(-95) is subnormal, zero where subnormals are flushed (as evaluation runs): with a bias below -60 the
    fused path steps aside, so logits near -7 from W h near 88 still count (about 1e-3 nats per pixel)."""
    decoder = MLPDecoder(latent_dim=1, hidden_dims=()).eval()
    flushed, threads = subnormals_flushed(), torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # this thread alone, where the flushing set here holds
        torch.set_flush_denormal(True)
        with torch.no_grad():
            decoder.head.weight.fill_(1.0)
            decoder.head.bias.fill_(-95.0)
            z = 88.0 + 0.5 * torch.rand(20, 3, 1, generator=torch.Generator().manual_seed(0))  # exp(W h) finite
            x = torch.zeros(3, 784)
            got = mlp_log_likelihood(decoder, z, x)
            logits = decoder(z.transpose(0, 1).flatten(0, 1)).double().view(3, 20, 1, 28, 28)
    finally:
        torch.set_flush_denormal(flushed)
        torch.set_num_threads(threads)
    expected = -bernoulli_nll(logits, x.double().view(3, 1, 1, 28, 28))
    assert (expected < -0.5).all()  # 784 pixels at ~1e-3 nats each
    torch.testing.assert_close(got.double(), expected, rtol=2e-6, atol=1e-4)


def test_the_fused_likelihood_is_used_only_where_it_applies():
    """The fused path replaces the plain one in evaluation of an MLPDecoder only (with gradients on, or for
    another decoder, the decoder's own forward is used), and the NLL estimate is the plain path's (with gradients
    on: the decoder's logits)."""
    mlp = MLPDecoder(latent_dim=4, hidden_dims=(32,), activation="tanh")
    with torch.no_grad():
        assert fused_log_likelihood(mlp) is not None
        assert fused_log_likelihood(ConvDecoder(latent_dim=4)) is None
        assert fused_log_likelihood(nn.Sequential(nn.Linear(4, 784))) is None
    assert fused_log_likelihood(mlp) is None  # gradients on: training keeps autograd's path
    x, mu, logvar = torch.bernoulli(torch.full((5, 1, 28, 28), 0.3)), torch.randn(5, 4), torch.randn(5, 4) * 0.3

    def noise(block, n):
        return torch.randn(n, 5, 4, generator=torch.Generator().manual_seed(block))

    with torch.no_grad():
        estimate = importance_weighted_nll(x, mu, logvar, mlp, noise, 300, 256)  # blocks of 128
    eps = torch.cat([noise(0, 128), noise(1, 128), noise(2, 44)])
    plain = -importance_weighted_bound(log_importance_weights(x, mu, logvar, eps, mlp, 256))
    assert plain.requires_grad  # the decoder's own logits
    torch.testing.assert_close(estimate.nll, plain.detach(), rtol=2e-6, atol=1e-4)


class OneLatentDecoder(nn.Module):
    """z (N, 1) -> logits (N, 1, 28, 28), linear in z: a model whose log p(x) we can integrate."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.w = torch.randn(1, 1, 28, 28, generator=generator) * 0.2
        self.b = torch.randn(1, 1, 28, 28, generator=generator)

    def forward(self, z):
        return z.view(-1, 1, 1, 1) * self.w + self.b


def on_grid(decoder, x, mu, logvar, points=20001, limit=10.0):
    """Exact (to quadrature error) log p(x) and ELBO of a 1-latent model, by the trapezoid rule."""
    z = torch.linspace(-limit, limit, points, dtype=torch.float64)
    log_px_z = -bernoulli_nll(decoder(z.float().unsqueeze(1)).unsqueeze(1), x).double()  # (G, B)
    log_prior = -0.5 * z.square() - 0.5 * math.log(2 * math.pi)  # (G,)
    dz = (z[1] - z[0]).item()
    log_px = torch.logsumexp(log_px_z + log_prior.unsqueeze(1), 0) + math.log(dz)
    q = torch.distributions.Normal(mu.double().squeeze(1), (0.5 * logvar.double().squeeze(1)).exp())
    q_density = q.log_prob(z.unsqueeze(1)).exp()  # (G, B)
    elbo = (q_density * log_px_z).sum(0) * dz - gaussian_kl(mu, logvar).double()
    return log_px, elbo


def test_importance_weighted_bound_sits_between_elbo_and_log_px_and_tightens():
    torch.manual_seed(0)
    decoder = OneLatentDecoder()
    x = torch.bernoulli(torch.sigmoid(decoder(torch.randn(6, 1))))  # data from the model
    # a deliberately imperfect posterior: q(z|x) = N(0.5, 0.6^2) for every image
    mu, logvar = torch.full((6, 1), 0.5), torch.full((6, 1), 2 * math.log(0.6))
    log_px, elbo = on_grid(decoder, x, mu, logvar)
    assert (log_px - elbo > 0.5).all()  # the case is not trivial: a real gap to close

    def bounds(k, repeats):  # (repeats, B) independent estimates with k samples each
        log_w = log_importance_weights(x, mu, logvar, torch.randn(repeats * k, 6, 1), decoder, 1 << 16)
        return importance_weighted_bound(log_w.view(repeats, k, 6).transpose(0, 1)).double()

    runs = {k: bounds(k, repeats) for k, repeats in ((1, 4000), (10, 400), (100, 40), (1000, 10))}
    mean = {k: r.mean(0) for k, r in runs.items()}
    error = {k: 4 * r.std(0) / math.sqrt(len(r)) + 1e-3 for k, r in runs.items()}  # 4 standard errors
    assert ((mean[1] - elbo).abs() < error[1]).all()  # k = 1 is the ELBO
    for small, large in ((1, 10), (10, 100), (100, 1000)):
        assert (mean[large] > mean[small] - error[small] - error[large]).all(), (small, large)
    assert (mean[1000] < log_px + error[1000]).all()  # a lower bound on log p(x) ...
    assert (log_px - mean[1000] < 0.15 * (log_px - elbo)).all()  # ... that closes most of the gap


def test_nll_estimate_is_below_the_negative_elbo_on_average():
    torch.manual_seed(1)
    decoder = nn.Sequential(nn.Linear(3, 784), nn.Unflatten(1, (1, 28, 28)))
    x = torch.bernoulli(torch.full((16, 1, 28, 28), 0.3))
    mu, logvar = torch.randn(16, 3) * 0.3, torch.full((16, 3), -1.0)
    with torch.no_grad():
        nll = -importance_weighted_bound(log_importance_weights(x, mu, logvar, torch.randn(500, 16, 3), decoder, 2048))
        one = torch.stack(
            [
                -importance_weighted_bound(log_importance_weights(x, mu, logvar, torch.randn(1, 16, 3), decoder, 2048))
                for _ in range(500)
            ]
        )
    assert nll.mean() < one.mean()


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_chunking_does_not_change_the_weights(chunk_size):
    decoder = nn.Sequential(nn.Linear(2, 784), nn.Unflatten(1, (1, 28, 28)))
    x, mu, logvar, eps = torch.rand(5, 1, 28, 28), torch.randn(5, 2), torch.randn(5, 2), torch.randn(33, 5, 2)
    with torch.no_grad():
        reference = log_importance_weights(x, mu, logvar, eps, decoder, chunk_size=10**9)
        torch.testing.assert_close(log_importance_weights(x, mu, logvar, eps, decoder, chunk_size), reference)


def test_monte_carlo_variance_predicts_the_spread_over_draws():
    """The delta-method variance each estimate reports matches the variance of the estimates over 400
    independent draws of the k samples (a ratio within 0.7-1.4: 400 draws measure a variance to ~7%),
    for a q near the posterior and wider than it, where the weights are bounded; a q narrower than the
    posterior gives heavy-tailed weights, for which the delta method reads low (objectives.monte_carlo_variance)."""
    torch.manual_seed(4)
    decoder = OneLatentDecoder()
    x = torch.bernoulli(torch.sigmoid(decoder(torch.randn(6, 1))))
    z = torch.linspace(-10, 10, 20001)
    log_joint = -bernoulli_nll(decoder(z.unsqueeze(1)).unsqueeze(1), x) - 0.5 * z.square().unsqueeze(1)  # (G, B)
    posterior = torch.softmax(log_joint.double(), 0)
    mean = (posterior * z.double().unsqueeze(1)).sum(0)
    sd = ((posterior * (z.double().unsqueeze(1) - mean).square()).sum(0)).sqrt()
    mu, logvar = (mean + 0.3 * sd).float().unsqueeze(1), (2 * (1.5 * sd).log()).float().unsqueeze(1)
    estimates = [
        importance_weighted_nll(x, mu, logvar, decoder, lambda block, n: torch.randn(n, 6, 1), 200, 4096)
        for _ in range(400)
    ]
    spread = torch.stack([e.nll for e in estimates]).double().var(0)  # (B,)
    predicted = torch.stack([e.variance for e in estimates]).double().mean(0)
    assert (predicted > 1e-5).all()  # a real spread to predict
    ratio = predicted / spread
    assert ((ratio > 0.7) & (ratio < 1.4)).all(), ratio


def test_the_estimate_streamed_block_by_block_equals_the_one_over_all_weights_at_once():
    """Running sums over blocks of 128 draws give -log (1/K sum w) and the delta-method variance sum w~^2 - 1/K of
    all K weights at once; equal weights have variance 0."""
    torch.manual_seed(5)
    decoder = OneLatentDecoder()
    x, mu, logvar = torch.bernoulli(torch.full((3, 1, 28, 28), 0.4)), torch.randn(3, 1), torch.randn(3, 1) * 0.3
    eps = torch.randn(300, 3, 1)
    estimate = importance_weighted_nll(x, mu, logvar, decoder, lambda block, n: eps[block * 128 :][:n], 300, 512)
    log_w = log_importance_weights(x, mu, logvar, eps, decoder, 512).double()
    torch.testing.assert_close(estimate.nll, -importance_weighted_bound(log_w).float())
    weights = torch.softmax(log_w, 0)
    torch.testing.assert_close(estimate.variance, (weights.square().sum(0) - 1 / 300).float())
    same = importance_weighted_nll(x, mu, logvar, decoder, lambda block, n: torch.zeros(n, 3, 1), 300, 512)
    assert same.variance.abs().max() < 1e-6


@pytest.mark.parametrize("scale", [1.0, 30.0, "one row"])  # 30: beyond exp's float32 range (|l| up to ~150)
def test_softplus_sum_matches_softplus_in_float64(scale):
    logits = torch.randn(6, 784, generator=torch.Generator().manual_seed(8)) * (1.0 if scale == "one row" else scale)
    if scale == "one row":  # one row overflows exp, the others do not
        logits[2, 5] = 120.0
    expected = torch.nn.functional.softplus(logits.double()).sum(-1)
    before = logits.clone()
    with torch.no_grad():
        got = softplus_sum(logits)
    torch.testing.assert_close(got.double(), expected, rtol=2e-6, atol=1e-3)
    assert torch.equal(logits, before)  # the decoder's output is left as it was
