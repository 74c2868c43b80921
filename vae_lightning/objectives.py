"""The maths of a VAE with a diagonal-Gaussian posterior, a N(0, I) prior and a Bernoulli decoder.

All quantities are in nats and per image (summed over pixels and latent dimensions). Shapes:
x (B, 1, 28, 28); mu, logvar, z (B, L); logits like x; leading sample dimensions broadcast.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

_IMAGE_DIMS = (-3, -2, -1)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per image, shape (...,): the analytic form."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x | z) = binary cross-entropy summed over pixels, per image, shape (...,).

    For binary x this is a true negative log-likelihood; for continuous x in [0, 1] it is the
    cross-entropy the seed and pytorch/examples use (not a normalised density).
    """
    logits, x = torch.broadcast_tensors(logits, x)
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(_IMAGE_DIMS)


def bernoulli_nll_mean(logits: Tensor, x: Tensor) -> Tensor:
    """`bernoulli_nll(logits, x).mean()` for logits and x of the same shape (B, ...), in one reduction:
    the training step's form (it skips the per-image sums: ~60 us a step of the MLP at batch 128)."""
    return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z = mu + eps * sigma, with eps ~ N(0, I) of shape (..., B, L)."""
    return mu + eps * torch.exp(0.5 * logvar)


def log_prior_over_posterior(eps: Tensor, z: Tensor, logvar: Tensor) -> Tensor:
    """log p(z) - log q(z | x) for z = mu + eps * sigma, diagonal Gaussians, per sample (...,); the
    log(2 pi) terms cancel."""
    return 0.5 * (eps.square() - z.square() + logvar).sum(-1)


def log_importance_weights(
    x: Tensor, mu: Tensor, logvar: Tensor, eps: Tensor, decoder: Callable[[Tensor], Tensor], chunk_size: int
) -> Tensor:
    """log w_k = log p(x | z_k) + log p(z_k) - log q(z_k | x), z_k = mu + eps_k * sigma; shape (K, B).

    Args:
        x: images (B, 1, 28, 28).
        mu, logvar: q(z | x), (B, L).
        eps: standard-normal noise (K, B, L), one row of K samples per image.
        decoder: z (N, L) -> logits (N, 1, 28, 28).
        chunk_size: at most this many (sample, image) pairs are decoded at once, bounding memory
            to about chunk_size * 784 * 4 bytes per intermediate.
    """
    num_samples, batch = eps.shape[:2]
    sample_step, image_step = max(1, chunk_size // batch), min(batch, chunk_size)
    rows = []
    for k in range(0, num_samples, sample_step):
        columns = []
        for b in range(0, batch, image_step):  # splits the images only when chunk_size < batch
            e = eps[k : k + sample_step, b : b + image_step]  # (k, b, L)
            z = reparameterize(mu[b : b + image_step], logvar[b : b + image_step], e)  # (k, b, L)
            logits = decoder(z.flatten(0, 1)).unflatten(0, z.shape[:2])  # (k, b, 1, 28, 28)
            log_px_z = -bernoulli_nll(logits, x[b : b + image_step])  # (k, b)
            columns.append(log_px_z + log_prior_over_posterior(e, z, logvar[b : b + image_step]))
        rows.append(torch.cat(columns, dim=1))
    return torch.cat(rows)


def importance_weighted_bound(log_w: Tensor) -> Tensor:
    """log (1/K sum_k w_k), per image, from log weights (K, B): the IWAE bound on log p(x).

    With K = 1 it is the single-sample ELBO; it never decreases in expectation as K grows.
    """
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])
