"""The maths of a VAE with a diagonal-Gaussian posterior, a N(0, I) prior and a Bernoulli decoder.

All quantities are in nats and per image (summed over pixels and latent dimensions). Shapes:
x (B, 1, 28, 28); mu, logvar (B, L); K draws of z (K, B, L); logits like x with the leading
sample dimension. `vae_terms` is the one loss computation: training (K draws, `elbo` or `iwae`,
the weights) and evaluation (one seeded draw) both call it. The prior appears in exactly two
functions, `gaussian_kl` (in closed form) and `log_prior_over_posterior` (per sample): change both
to change it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_lightning.errors import ConfigError
from vae_lightning.nets.mlp import MLPDecoder

Objective = Literal["elbo", "iwae"]
Estimator = Literal["standard", "dreg"]
Decoder = Callable[[Tensor], Tensor]  # z (N, L) -> logits (N, 1, 28, 28)
_IMAGE_DIMS = (-3, -2, -1)


def check_objective(objective: str, recon_weight: float, kl_weight: float, gradient_estimator: str) -> None:
    """Refuse settings of the objective that do not go together, naming the fields and the fix."""
    if gradient_estimator == "dreg" and objective != "iwae":
        raise ConfigError(
            "model.gradient_estimator: dreg (doubly reparameterized) is an estimator of the iwae objective's "
            "gradient: set model.objective: iwae, or gradient_estimator: standard."
        )
    if recon_weight == 0 and kl_weight == 0:
        raise ConfigError(
            "model.recon_weight and model.kl_weight are both 0: the objective is constant and nothing "
            "would train. Set at least one of them above 0."
        )
    if objective == "iwae" and (recon_weight, kl_weight) != (1.0, 1.0):
        raise ConfigError(
            f"model.objective: iwae bounds log p(x) as a whole and has no separate terms to weight, but "
            f"model.recon_weight={recon_weight:g} and model.kl_weight={kl_weight:g}: set both to 1, "
            "or use objective: elbo."
        )


class Terms(NamedTuple):
    """Per-image values (B,) of one batch."""

    loss: Tensor  # what training minimises
    recon: Tensor  # -log p(x | z), averaged over the K draws
    kl: Tensor  # KL(q(z | x) || p(z))
    nelbo: Tensor  # recon + kl: the negative ELBO, whatever the weights


# ---------------------------------------------------------------------------------------- the prior
def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per image, shape (...,): the analytic form."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def log_prior_over_posterior(eps: Tensor, z: Tensor, logvar: Tensor) -> Tensor:
    """log p(z) - log q(z | x) for z = mu + eps * sigma, diagonal Gaussians, per sample (...,); the
    log(2 pi) terms cancel. The squared norms as dot products: fewer passes over the draws."""
    return 0.5 * (torch.linalg.vecdot(eps, eps) - torch.linalg.vecdot(z, z) + logvar.sum(-1))


# ---------------------------------------------------------------------------------- the likelihood
def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x | z) = binary cross-entropy summed over pixels, per image, shape (...,).

    For binary x this is a true negative log-likelihood; for continuous x in [0, 1] it is the
    cross-entropy the seed and pytorch/examples use (not a normalised density).
    """
    logits, x = torch.broadcast_tensors(logits, x)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(_IMAGE_DIMS)


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = mu + eps * sigma, with eps ~ N(0, I) of shape (..., B, L); one fused pass (`addcmul`), which
    evaluation's thousands of draws per image make worth it."""
    return torch.addcmul(mu, eps, torch.exp(0.5 * logvar))


def decode_draws(x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor, decoder: Decoder) -> tuple[Tensor, Tensor]:
    """(z_k, log p(x | z_k)) for z_k = mu + eps_k * sigma: (K, B, L) and (K, B), in one decoder call."""
    z = reparameterize(mu, logvar, eps)  # (K, B, L)
    logits = decoder(z.flatten(0, 1)).unflatten(0, z.shape[:2])  # (K, B, 1, 28, 28)
    return z, -bernoulli_nll(logits, x)


# ---------------------------------------------------------------------------------- the objectives
def importance_weighted_bound(log_w: Tensor) -> Tensor:
    """log (1/K sum_k w_k), per image, from log weights (K, B): the IWAE bound on log p(x).

    With K = 1 it is the single-sample ELBO; it never decreases in expectation as K grows.
    """
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def doubly_reparameterized_bound(log_w: Tensor, z: Tensor) -> Tensor:
    """The importance-weighted bound (B,) of log weights (K, B), with the doubly reparameterized gradient
    (DReG; Tucker, Lawson, Gu, Maddison 2018).

    `log_w` must come from z_k = mu + eps_k * sigma with log q(z_k | x) evaluated at *detached* mu and
    sigma, so the encoder is reached only through z. With normalised weights w~_k (constants), the
    decoder's gradient is the IWAE one, sum_k w~_k d log w_k; the encoder's is sum_k w~_k^2
    d log w_k / d z_k dz_k: the decoder's path scaled once more by w~_k on its way back through z.
    The returned value is the bound itself.
    """
    weights = torch.softmax(log_w.detach(), dim=0)  # (K, B), w~_k
    if z.requires_grad:
        z.register_hook(lambda grad: grad * weights.unsqueeze(-1))  # (K, B, L): w~_k -> w~_k^2 for the encoder
    surrogate = (weights * log_w).sum(0)  # (B,), its gradient sum_k w~_k d log w_k
    return importance_weighted_bound(log_w).detach() + surrogate - surrogate.detach()


def vae_terms(
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    eps: Tensor,
    decoder: Decoder,
    objective: Objective = "elbo",
    recon_weight: float = 1.0,
    kl_weight: float = 1.0,
    gradient_estimator: Estimator = "standard",
) -> Terms:
    """The loss and its parts per image for K draws of z.

    Args:
        x: images (B, 1, 28, 28).
        mu, logvar: q(z | x), (B, L).
        eps: standard-normal noise (K, B, L).
        decoder: z (N, L) -> logits (N, 1, 28, 28).
        objective: `elbo`: `recon_weight * recon + kl_weight * kl`, recon averaged over the K draws,
            the KL in closed form. `iwae`: minus the importance-weighted bound over the K draws
            (Burda et al. 2015), which has no separate terms to weight.
        recon_weight, kl_weight: the weights of the `elbo` objective.
        gradient_estimator: for `iwae`, `standard` (the bound's own gradient) or `dreg`
            (`doubly_reparameterized_bound`: the same expected gradient, a less noisy encoder gradient).
    """
    z, log_px_z = decode_draws(x, mu, logvar, eps, decoder)  # (K, B, L), (K, B)
    recon, kl = -log_px_z.mean(0), gaussian_kl(mu, logvar)  # (B,) each
    if objective == "iwae" and gradient_estimator == "dreg":
        mu_, logvar_ = mu.detach(), logvar.detach()
        eps_ = (z - mu_) * torch.exp(-0.5 * logvar_)  # the same eps, as a function of z alone
        loss = -doubly_reparameterized_bound(log_px_z + log_prior_over_posterior(eps_, z, logvar_), z)
    elif objective == "iwae":
        loss = -importance_weighted_bound(log_px_z + log_prior_over_posterior(eps, z, logvar))
    else:
        loss = recon_weight * recon + kl_weight * kl
    return Terms(loss, recon, kl, recon + kl)


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x | z) per draw, shape (B, K), for logits (B, K, D) of K draws of each of B images x (B, D).

    The same value as `-bernoulli_nll` (to float rounding), as sum_d x_d l_d - softplus(l_d): the x term is
    one batched matrix-vector product and the rest `softplus_sum`, fewer passes over the (B, K, D) logits
    than the cross-entropy takes. Evaluation decodes thousands of draws per image, so each pass over
    their logits counts.
    """
    return torch.bmm(logits, x.unsqueeze(-1)).squeeze(-1) - softplus_sum(logits)


_EXP_LIMIT = 80.0  # exp(80) ~ 5.5e34 is finite in float32; above it softplus(l) = l to float precision


def softplus_sum(logits: Tensor) -> Tensor:
    """sum_d softplus(l_d) over the last dimension.

    On a CPU, without gradients, as log(1 + exp(l)): one new tensor and vectorised in-place passes, cheaper
    than torch's softplus kernel, which evaluates log1p per element (measured in docs/performance.md).
    Where 1 + exp(l) rounds to 1 (l < -16) the terms lost are below 6e-8 nats each. A row where exp
    overflows (a logit above ~88.7, where softplus(l) = l to float precision) is summed again with its
    logits above 80 counted as l - 80 + softplus(80): checking the row sums for that costs no pass over
    the logits. Elsewhere torch's own softplus (one fused kernel on a GPU).
    """
    if logits.device.type != "cpu" or logits.requires_grad:
        return F.softplus(logits).sum(-1)
    sums = logits.exp().add_(1.0).log_().sum(-1)
    overflowed = sums.isinf()
    if overflowed.any():
        rows = logits[overflowed]
        above = (rows - _EXP_LIMIT).clamp_min_(0.0).sum(-1)
        sums[overflowed] = rows.clamp_max(_EXP_LIMIT).exp_().add_(1.0).log_().sum(-1) + above
    return sums


LogLikelihood = Callable[[Tensor, Tensor], Tensor]
_BIAS_LIMIT = 60.0  # |b| below it: exp(b) is a normal float32, and exp(W h) underflowing to 0 loses < 1e-7 nats


def fused_log_likelihood(decoder: nn.Module) -> LogLikelihood | None:
    """For evaluation on a CPU: log p(x | z) of an `MLPDecoder`'s Bernoulli pixels in fewer passes over
    the draws' logits, as a function (z (b, k, L), x (b, D)) -> (b, k); None where it does not apply
    (gradients on, or not a CPU float32 `MLPDecoder`).

    Evaluation decodes thousands of draws per image, so every pass over a (draws, 784) tensor counts:
    - sum_d softplus(l_d) = sum_d log(1 + exp(W h)_d exp(b_d)), in place in the product W h: the output
      layer's bias b enters as the factor exp(b) in the pass that adds 1 (`addcmul`), not as a copy of b
      into every row before the product;
    - the data term sum_d x_d l_d = h . (W^T x) + b . x: per image one vector W^T x, then one product
      with the last hidden layer h instead of a pass over the logits.
    A draw whose sum is not finite (exp overflowed) has its logits computed and summed by `softplus_sum`,
    as are all draws of an output layer with |b| >= 60. The result equals the plain path to float32 rounding
    (tests/test_objectives.py; timed in docs/performance.md).
    """
    head = decoder.head if isinstance(decoder, MLPDecoder) else None
    if (
        head is None
        or torch.is_grad_enabled()
        or head.weight.device.type != "cpu"
        or head.weight.dtype != torch.float32
    ):
        return None
    weight, bias = head.weight, head.bias  # (D, H), (D,)
    exp_bias = bias.exp() if bias.abs().max() < _BIAS_LIMIT else None
    one = bias.new_ones(())

    def softplus_sums(h: Tensor) -> Tensor:  # sum_d softplus(l_d) per row of h
        if exp_bias is None:
            return softplus_sum(torch.addmm(bias, h, weight.T))
        exp_wh = torch.mm(h, weight.T).exp_()
        sums = torch.addcmul(one, exp_wh, exp_bias, out=exp_wh).log_().sum(-1)
        overflowed = ~sums.isfinite()
        if overflowed.any():
            sums[overflowed] = softplus_sum(torch.addmm(bias, h[overflowed], weight.T))
        return sums

    def log_likelihood(z: Tensor, x: Tensor) -> Tensor:
        h = decoder.body(z.reshape(-1, z.shape[-1]))  # (b * k, H)
        softplus = softplus_sums(h)
        data = torch.bmm(h.view(*z.shape[:2], -1), (x @ weight).unsqueeze(-1)).squeeze(-1)  # (b, k)
        return data + (x @ bias).unsqueeze(-1) - softplus.view(z.shape[:2])

    return log_likelihood


def log_importance_weights(
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    eps: Tensor,
    decoder: Decoder,
    chunk_size: int,
    log_likelihood: LogLikelihood | None = None,
) -> Tensor:
    """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x), z_k = mu + eps_k * sigma; shape (K, B).

    Decodes at most `chunk_size` (sample, image) pairs at once (whole images' rows of K samples when
    they fit), which bounds memory to about chunk_size * 784 * 4 bytes per intermediate whatever K is.

    Args:
        x: images (B, 1, 28, 28).
        mu, logvar: q(z | x), (B, L).
        eps: standard-normal noise (K, B, L), one row of K samples per image.
        decoder: z (N, L) -> logits (N, 1, 28, 28).
        chunk_size: (sample, image) pairs per decoder call.
        log_likelihood: (z (b, k, L), x (b, D)) -> log p(x | z) (b, k), in place of the decoder's logits and
            `bernoulli_log_likelihood` (`fused_log_likelihood`).
    """
    num_samples, batch = eps.shape[:2]
    pixels = x.flatten(1)  # (B, D)
    z = reparameterize(mu, logvar, eps)  # (K, B, L)
    log_w = log_prior_over_posterior(eps, z, logvar)  # (K, B); log p(x | z) is added chunk by chunk
    z, by_image = z.transpose(0, 1), log_w.T  # views (B, K, ...): a chunk's draws image-major
    image_step = max(1, min(batch, chunk_size // num_samples))  # at least 1: a batch may hold no images
    sample_step = min(num_samples, max(1, chunk_size // image_step))
    for b in range(0, batch, image_step):
        images = slice(b, b + image_step)
        for k in range(0, num_samples, sample_step):  # splits the samples only when one image's K exceed a chunk
            draws = slice(k, k + sample_step)
            chunk = z[images, draws]  # (b, k, L)
            if log_likelihood is None:
                logits = decoder(chunk.flatten(0, 1)).view(*chunk.shape[:2], -1)  # (b, k, D)
                by_image[images, draws] += bernoulli_log_likelihood(logits, pixels[images])
            else:
                by_image[images, draws] += log_likelihood(chunk, pixels[images])
    return log_w


class NLLEstimate(NamedTuple):
    """Per-image values (B,) of the importance-sampled -log p(x)."""

    nll: Tensor  # -log (1/K sum_k w_k)
    variance: Tensor  # its Monte-Carlo variance, by the delta method: sum_k w~_k^2 - 1/K


def monte_carlo_variance(log_w: Tensor) -> Tensor:
    """The delta-method variance (B,) of log (1/K sum_k w_k) over draws of the K samples, from log weights (K, B).

    Var[log mean w] ~= Var[w] / (K E[w]^2), estimated from the same K weights: with normalised weights
    w~_k = w_k / sum_j w_j it is sum_k w~_k^2 - 1/K (0 when the weights are equal, up to 1 - 1/K when one
    dominates). Heavy-tailed weights make it an underestimate, so evaluation also reports the spread
    over evaluation seeds (docs/results).
    """
    weights = torch.softmax(log_w, dim=0)
    return (weights.square().sum(0) - 1.0 / log_w.shape[0]).clamp_min(0.0)


def importance_weighted_nll(
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    decoder: Decoder,
    noise: Callable[[int, int], Tensor],
    num_samples: int,
    chunk_size: int,
    block_size: int = 128,
) -> NLLEstimate:
    """-log p(x) estimated with `num_samples` importance samples from q(z | x), per image (B,), with its
    Monte-Carlo variance.

    The samples come from `noise(block, n)` -> (n, B, L) in blocks of `block_size`, and at most
    `chunk_size` (sample, image) pairs are decoded at once, so memory stays bounded whatever k is. On a
    CPU without gradients an `MLPDecoder` goes through `fused_log_likelihood`.
    """
    fused = fused_log_likelihood(decoder)
    log_w = torch.cat(
        [
            log_importance_weights(
                x, mu, logvar, noise(block, min(block_size, num_samples - start)), decoder, chunk_size, fused
            )
            for block, start in enumerate(range(0, num_samples, block_size))
        ]
    )
    return NLLEstimate(-importance_weighted_bound(log_w), monte_carlo_variance(log_w))
