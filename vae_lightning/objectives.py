"""The maths of a VAE with a diagonal-Gaussian posterior, a N(0, I) prior and a Bernoulli decoder.

All quantities are in nats per image (summed over pixels and latent dimensions). Shapes: x (B, 1, 28, 28);
mu, logvar (B, L); K draws of z (K, B, L); logits like x with a leading sample dimension. `vae_terms` is the one
loss computation, for training (K draws) and evaluation (one seeded draw). The prior appears in two functions,
`gaussian_kl` (closed form) and `log_prior_over_posterior` (per sample): change both to change it.
"""

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_lightning.errors import ConfigError
from vae_lightning.nets.mlp import MLPDecoder

Decoder = Callable[[Tensor], Tensor]  # z (N, L) -> logits (N, 1, 28, 28)
LogLikelihood = Callable[[Tensor, Tensor], Tensor]  # z (b, k, L), x (b, D) -> log p(x | z) (b, k)
_EXP_LIMIT = 80.0  # exp(80) ~ 5.5e34 is finite in float32; above it softplus(l) = l to float precision
_BIAS_LIMIT = 60.0  # |b| below it: exp(b) is a normal float32, and exp(W h) underflowing to 0 loses < 1e-7 nats


def check_objective(objective: str, recon_weight: float, kl_weight: float, gradient_estimator: str) -> None:
    """Refuse settings of the objective that do not go together, naming the fields and the fix."""
    if gradient_estimator == "dreg" and objective != "iwae":
        raise ConfigError(
            "model.gradient_estimator: dreg (doubly reparameterized) estimates the iwae objective's gradient: "
            "set model.objective: iwae, or gradient_estimator: standard."
        )
    if recon_weight == 0 and kl_weight == 0:
        raise ConfigError(
            "model.recon_weight and model.kl_weight are both 0: the objective is constant; set one of them above 0."
        )
    if objective == "iwae" and (recon_weight, kl_weight) != (1.0, 1.0):
        raise ConfigError(
            f"model.objective: iwae bounds log p(x) as a whole and has no terms to weight, but model.recon_weight="
            f"{recon_weight:g} and model.kl_weight={kl_weight:g}: set both to 1, or use objective: elbo."
        )


class Terms(NamedTuple):
    """Per-image values (B,) of one batch."""

    loss: Tensor  # what training minimises
    recon: Tensor  # -log p(x | z), averaged over the K draws
    kl: Tensor  # KL(q(z | x) || p(z))
    nelbo: Tensor  # recon + kl: the negative ELBO, whatever the weights


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per image (...,), in closed form."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def log_prior_over_posterior(eps: Tensor, z: Tensor, logvar: Tensor) -> Tensor:
    """log p(z) - log q(z | x) per sample (...,) for z = mu + eps * sigma; the log(2 pi) terms cancel, and the
    squared norms are dot products (fewer passes over the draws)."""
    return 0.5 * (torch.linalg.vecdot(eps, eps) - torch.linalg.vecdot(z, z) + logvar.sum(-1))


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x | z), the binary cross-entropy summed over pixels, per image (...,). For continuous x in [0, 1]
    it is the cross-entropy the seed and pytorch/examples use, not a normalised density."""
    logits, x = torch.broadcast_tensors(logits, x)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((-3, -2, -1))


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = mu + eps * sigma for eps (..., B, L), in one fused pass (evaluation draws thousands per image)."""
    return torch.addcmul(mu, eps, torch.exp(0.5 * logvar))


def decode_draws(x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor, decoder: Decoder) -> tuple[Tensor, Tensor]:
    """(z_k, log p(x | z_k)), (K, B, L) and (K, B), for z_k = mu + eps_k * sigma, in one decoder call."""
    z = reparameterize(mu, logvar, eps)  # (K, B, L)
    logits = decoder(z.flatten(0, 1)).unflatten(0, z.shape[:2])  # (K, B, 1, 28, 28)
    return z, -bernoulli_nll(logits, x)


def importance_weighted_bound(log_w: Tensor) -> Tensor:
    """log (1/K sum_k w_k) per image (B,) from log weights (K, B): the IWAE bound on log p(x); with K = 1 the
    single-sample ELBO, and it never decreases in expectation as K grows."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def doubly_reparameterized_bound(log_w: Tensor, z: Tensor) -> Tensor:
    """The importance-weighted bound (B,) with the doubly reparameterized gradient (DReG; Tucker et al. 2018).

    `log_w` (K, B) must evaluate log q(z_k | x) at *detached* mu and sigma, so the encoder is reached through z
    alone. With normalised weights w~_k the decoder's gradient is IWAE's, sum_k w~_k d log w_k; the encoder's
    is sum_k w~_k^2 d log w_k / d z_k dz_k: the same path scaled once more by w~_k through z.
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
    objective: Literal["elbo", "iwae"] = "elbo",
    recon_weight: float = 1.0,
    kl_weight: float = 1.0,
    gradient_estimator: Literal["standard", "dreg"] = "standard",
) -> Terms:
    """The loss and its parts per image for K draws of z: x (B, 1, 28, 28), mu and logvar (B, L), eps (K, B, L).

    `elbo`: recon_weight * recon + kl_weight * kl, recon averaged over the K draws, the KL in closed form. `iwae`:
    minus the importance-weighted bound (Burda et al. 2015), with its own gradient or `dreg`'s.
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
    """log p(x | z) (B, K) for logits (B, K, D) and images x (B, D): `-bernoulli_nll` as sum_d x_d l_d -
    softplus(l_d), a batched matrix-vector product and `softplus_sum`, fewer passes over the logits."""
    return torch.bmm(logits, x.unsqueeze(-1)).squeeze(-1) - softplus_sum(logits)


def softplus_sum(logits: Tensor) -> Tensor:
    """sum_d softplus(l_d) over the last dimension: on a CPU without gradients as log(1 + exp(l)) in in-place
    passes, cheaper than torch's softplus (which a GPU fuses). Terms lost where 1 + exp(l) rounds to 1 are below
    6e-8 nats; a row where exp overflows is summed again with its logits above 80 as l - 80 + softplus(80)."""
    if logits.device.type != "cpu" or logits.requires_grad:
        return F.softplus(logits).sum(-1)
    sums = logits.exp().add_(1.0).log_().sum(-1)
    overflowed = sums.isinf()
    if overflowed.any():
        rows = logits[overflowed]
        above = (rows - _EXP_LIMIT).clamp_min_(0.0).sum(-1)
        sums[overflowed] = rows.clamp_max(_EXP_LIMIT).exp_().add_(1.0).log_().sum(-1) + above
    return sums


def fused_log_likelihood(decoder: nn.Module) -> LogLikelihood | None:
    """log p(x | z) of an `MLPDecoder`'s pixels in fewer passes over the draws' logits, for evaluation on a CPU
    (docs/performance.md); None unless gradients are off and it is a CPU float32 `MLPDecoder`.

    sum_d softplus(l_d) = sum_d log(1 + exp(W h)_d exp(b_d)), in place in W h (the bias a factor, not a copy per
    row), and sum_d x_d l_d = h . (W^T x) + b . x. Rows that overflow, and all rows when |b| >= 60, go through
    `softplus_sum`.
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
    """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x) (K, B) for z_k = mu + eps_k * sigma, eps (K, B, L).

    Decodes at most `chunk_size` (sample, image) pairs at once, so memory is bounded whatever K is;
    `log_likelihood` (`fused_log_likelihood`) replaces the decoder and `bernoulli_log_likelihood`.
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
    """The delta-method variance (B,) of log (1/K sum_k w_k) from log weights (K, B): Var[w] / (K E[w]^2), from
    the same weights sum_k w~_k^2 - 1/K (0 for equal weights, up to 1 - 1/K for one dominant). Heavy-tailed
    weights make it read low, so evaluation also reports the spread over seeds (docs/results)."""
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
    """-log p(x) per image (B,) from `num_samples` importance samples of q(z | x), with its Monte-Carlo variance:
    the samples come from `noise(block, n)` -> (n, B, L) in blocks of `block_size`."""
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
