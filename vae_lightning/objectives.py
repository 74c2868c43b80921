"""VAE maths (Gaussian q, N(0, I) prior, Bernoulli p(x | z)) in nats per image; x (B, 1, 28, 28), z (K, B, L)."""

import math
from collections.abc import Callable
from itertools import product
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vae_lightning.errors import ConfigError
from vae_lightning.nets import MLPDecoder

Decoder = Callable[[Tensor], Tensor]  # z (N, L) -> logits (N, 1, 28, 28)
Noise = Callable[[int, int], Tensor]  # (block, n) -> eps (n, B, L), each block of draws its own stream
NOISE_BLOCK = 128  # draws per block of evaluation noise
_BIAS_LIMIT = 60.0  # |b| below it: exp(b) is a normal float32, and exp(W h) underflowing to 0 loses < 1e-7 nats


def check_objective(objective: str, recon_weight: float, kl_weight: float, gradient_estimator: str) -> None:
    if gradient_estimator == "dreg" and objective != "iwae":
        fix = "set model.objective: iwae, or gradient_estimator: standard"
        raise ConfigError(f"model.gradient_estimator: dreg (doubly reparameterized) estimates iwae's gradient: {fix}.")
    if recon_weight == 0 and kl_weight == 0:
        raise ConfigError("model.recon_weight and model.kl_weight are both 0 (a constant objective): set one above 0.")
    if objective == "iwae" and (recon_weight, kl_weight) != (1.0, 1.0):
        raise ConfigError(
            f"model.objective: iwae bounds log p(x) as a whole and has no terms to weight, but model.recon_weight="
            f"{recon_weight:g} and model.kl_weight={kl_weight:g}: set both to 1, or use objective: elbo."
        )


class Terms(NamedTuple):  # per-image values (B,) of one batch
    loss: Tensor  # what training minimises
    recon: Tensor  # -log p(x | z), averaged over the K draws
    kl: Tensor  # KL(q(z | x) || p(z))
    nelbo: Tensor  # recon + kl: the negative ELBO, whatever the weights


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per image (...,), in closed form."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def log_prior_over_posterior(eps: Tensor, z: Tensor, logvar: Tensor) -> Tensor:
    """log p(z) - log q(z | x) per sample (...,) for z = mu + eps * sigma (the log(2 pi) terms cancel)."""
    return 0.5 * (torch.linalg.vecdot(eps, eps) - torch.linalg.vecdot(z, z) + logvar.sum(-1))


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x | z) per image (...,): the binary cross-entropy summed over pixels (not a density for continuous x)."""
    logits, x = torch.broadcast_tensors(logits, x)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((-3, -2, -1))


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = mu + eps * sigma for eps (..., B, L), in one fused pass."""
    return torch.addcmul(mu, eps, torch.exp(0.5 * logvar))


def importance_weighted_bound(log_w: Tensor) -> Tensor:
    """log (1/K sum_k w_k) (B,) from log weights (K, B): the IWAE bound on log p(x), the ELBO's for K = 1."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def doubly_reparameterized_bound(log_px_z: Tensor, z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """The importance-weighted bound (B,) with the doubly reparameterized gradient (DReG; Tucker et al. 2018): the
    encoder gets sum_k w~_k^2 d log w_k / dz_k dz_k (log q at detached mu, sigma; a hook on z), the decoder IWAE's."""
    mu, logvar = mu.detach(), logvar.detach()
    log_w = log_px_z + log_prior_over_posterior((z - mu) * torch.exp(-0.5 * logvar), z, logvar)  # (K, B), eps of z
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
    """The one loss computation, per image, for K draws of z: `elbo`: recon_weight * recon + kl_weight * kl (closed
    form); `iwae`: minus the importance-weighted bound (Burda et al. 2015), with its own gradient or `dreg`'s."""
    z = reparameterize(mu, logvar, eps)  # (K, B, L)
    log_px_z = -bernoulli_nll(decoder(z.flatten(0, 1)).unflatten(0, z.shape[:2]), x)  # (K, B), one decoder call
    recon, kl = -log_px_z.mean(0), gaussian_kl(mu, logvar)  # (B,) each
    if objective == "elbo":
        loss = recon_weight * recon + kl_weight * kl
    elif gradient_estimator == "dreg":
        loss = -doubly_reparameterized_bound(log_px_z, z, mu, logvar)
    else:
        loss = -importance_weighted_bound(log_px_z + log_prior_over_posterior(eps, z, logvar))
    return Terms(loss, recon, kl, recon + kl)


def softplus_sum(logits: Tensor) -> Tensor:
    """sum_d softplus(l_d) over the last dim; on a CPU without gradients log(1 + exp(l)) in place, overflows redone."""
    if logits.device.type != "cpu" or logits.requires_grad:
        return F.softplus(logits).sum(-1)
    sums = logits.exp().add_(1.0).log_().sum(-1)
    if (overflowed := sums.isinf()).any():
        sums[overflowed] = F.softplus(logits[overflowed]).sum(-1)
    return sums


def fused_log_likelihood(decoder: nn.Module) -> Callable[[Tensor, Tensor], Tensor] | None:
    """log p(x | z) (b, k) of z (b, k, L), x (b, D) for a CPU float32 `MLPDecoder`, |b| < 60, without gradients (else
    None), with no logits: sum_d softplus(l_d) = sum_d log(1 + exp(W h)_d exp(b_d)), sum_d x_d l_d = h.W^T x + b.x."""
    if not isinstance(decoder, MLPDecoder) or torch.is_grad_enabled():
        return None
    weight, bias = decoder.head.weight, decoder.head.bias  # (D, H), (D,)
    if (weight.device.type, weight.dtype) != ("cpu", torch.float32) or bias.abs().max() >= _BIAS_LIMIT:
        return None
    exp_bias, one = bias.exp(), bias.new_ones(())

    def log_likelihood(z: Tensor, x: Tensor) -> Tensor:
        h = decoder.body(z.reshape(-1, z.shape[-1]))  # (b * k, H)
        exp_wh = torch.mm(h, weight.T).exp_()
        softplus = torch.addcmul(one, exp_wh, exp_bias, out=exp_wh).log_().sum(-1)  # (b * k,)
        if (overflowed := ~softplus.isfinite()).any():
            softplus[overflowed] = F.softplus(torch.addmm(bias, h[overflowed], weight.T)).sum(-1)
        data = torch.bmm(h.view(*z.shape[:2], -1), (x @ weight).unsqueeze(-1)).squeeze(-1)  # (b, k)
        return data + (x @ bias).unsqueeze(-1) - softplus.view(z.shape[:2])

    return log_likelihood


def log_importance_weights(
    x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor, decoder: Decoder, chunk_size: int
) -> Tensor:
    """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x) (K, B) for z_k = mu + eps_k * sigma, eps (K, B, L),
    decoding at most `chunk_size` (sample, image) pairs at once, so memory is bounded whatever K is."""

    def decoded(chunk: Tensor, pixels: Tensor) -> Tensor:  # -bernoulli_nll (b, k) in fewer passes over the logits
        logits = decoder(chunk.flatten(0, 1)).view(*chunk.shape[:2], -1)  # (b, k, D)
        return torch.bmm(logits, pixels.unsqueeze(-1)).squeeze(-1) - softplus_sum(logits)

    log_likelihood = fused_log_likelihood(decoder) or decoded
    num_samples, batch = eps.shape[:2]
    z = reparameterize(mu, logvar, eps)  # (K, B, L)
    log_w = log_prior_over_posterior(eps, z, logvar)  # (K, B); log p(x | z) is added chunk by chunk
    z, by_image = z.transpose(0, 1), log_w.T  # views (B, K, ...): a chunk's draws image-major
    image_step = max(1, min(batch, chunk_size // num_samples))  # at least 1: a batch may hold no images
    sample_step = min(num_samples, max(1, chunk_size // image_step))  # below K only when one image's K exceed a chunk
    for b, k in product(range(0, batch, image_step), range(0, num_samples, sample_step)):
        images, draws = slice(b, b + image_step), slice(k, k + sample_step)
        by_image[images, draws] += log_likelihood(z[images, draws], x[images].flatten(1))  # (b, k)
    return log_w


class NLLEstimate(NamedTuple):  # per-image values (B,) of the importance-sampled -log p(x)
    nll: Tensor  # -log (1/K sum_k w_k)
    variance: Tensor  # its Monte-Carlo variance, by the delta method: sum_k w~_k^2 - 1/K


def importance_weighted_nll(
    x: Tensor, mu: Tensor, logvar: Tensor, decoder: Decoder, noise: Noise, num_samples: int, chunk_size: int
) -> NLLEstimate:
    """-log p(x) (B,) and its Monte-Carlo variance from `num_samples` importance samples of q(z | x) by `noise`, block
    by block, in running float64 sums of w and w^2 scaled by the largest log w so far: memory does not grow with K."""
    peak = mu.new_full((len(x),), -math.inf, dtype=torch.float64)  # the largest log w so far, per image
    sums, squares = peak.new_zeros(len(x)), peak.new_zeros(len(x))  # sum w, sum w^2, each over exp(peak)
    for block, start in enumerate(range(0, num_samples, NOISE_BLOCK)):
        eps = noise(block, min(NOISE_BLOCK, num_samples - start))
        log_w = log_importance_weights(x, mu, logvar, eps, decoder, chunk_size).double()  # (n, B)
        new_peak = torch.maximum(peak, log_w.amax(0))
        shift = torch.where(new_peak.isfinite(), new_peak, 0.0)  # an image whose every weight is 0 keeps 0
        scale, w = (peak - shift).exp(), (log_w - shift).exp()
        peak, sums, squares = new_peak, sums * scale + w.sum(0), squares * scale.square() + w.square().sum(0)
    nll = math.log(num_samples) - torch.where(peak.isfinite(), peak, 0.0) - sums.log()
    variance = (squares / sums.square() - 1.0 / num_samples).clamp_min(0.0)  # sum_k w~_k^2 - 1/K (delta method)
    return NLLEstimate(nll.float(), variance.float())
