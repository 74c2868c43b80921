"""The contract every encoder/decoder pair keeps, checked once when a model is built.

- `encoder(x)`, x of shape (B, 1, 28, 28) in [0, 1], returns `(mu, logvar)`, each (B, latent_dim):
  the mean and log-variance of the diagonal Gaussian q(z | x).
- `decoder(z)`, z of shape (B, latent_dim), returns Bernoulli logits of shape (B, 1, 28, 28).
"""

from __future__ import annotations

import torch
from torch import nn

from vae_lightning.errors import ConfigError

IMAGE_SHAPE = (1, 28, 28)


def _name(net: nn.Module) -> str:
    return type(net).__name__


def _shapes(value) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_shapes(v) for v in value) + "]"
    return type(value).__name__


@torch.no_grad()
def check_networks(encoder: nn.Module, decoder: nn.Module, latent_dim: int, batch: int = 2) -> None:
    """Run both networks once on a small batch and refuse shapes that break the contract.

    Runs in eval mode (no batch-norm statistics change) and restores each network's mode.

    Raises:
        ConfigError: naming the network, the shapes it got and returned, and what was expected.
    """
    for field, net in (("model.encoder", encoder), ("model.decoder", decoder)):
        if not isinstance(net, nn.Module):
            raise ConfigError(f"{field} must be a torch.nn.Module, got {type(net).__name__}.")
    x = torch.rand(batch, *IMAGE_SHAPE)
    z = torch.randn(batch, latent_dim)
    expected_latent = (batch, latent_dim)
    modes = encoder.training, decoder.training
    encoder.eval(), decoder.eval()
    try:
        try:
            out = encoder(x)
        except Exception as err:
            raise ConfigError(
                f"model.encoder ({_name(encoder)}) fails on MNIST images of shape {tuple(x.shape)}: {err}. "
                f"Its layers must take (batch, 1, 28, 28) inputs."
            ) from err
        if (
            not isinstance(out, (tuple, list))
            or len(out) != 2
            or not all(isinstance(t, torch.Tensor) and tuple(t.shape) == expected_latent for t in out)
        ):
            raise ConfigError(
                f"model.encoder ({_name(encoder)}) must return (mu, logvar), each (batch, latent_dim) = "
                f"{expected_latent}, for input {tuple(x.shape)}; it returned {_shapes(out)}. "
                f"Make its latent size equal model.latent_dim={latent_dim} (the CLI links them)."
            )
        if not all(t.is_floating_point() for t in out):
            raise ConfigError(
                f"model.encoder ({_name(encoder)}) must return floating-point (mu, logvar); it returned "
                f"{', '.join(str(t.dtype) for t in out)}. Return the layers' outputs without rounding or casting."
            )
        try:
            logits = decoder(z)
        except Exception as err:
            raise ConfigError(
                f"model.decoder ({_name(decoder)}) fails on latents of shape {tuple(z.shape)}: {err}. "
                f"Make its latent size equal model.latent_dim={latent_dim} (the CLI links them)."
            ) from err
        if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (batch, *IMAGE_SHAPE):
            raise ConfigError(
                f"model.decoder ({_name(decoder)}) must return logits of shape {(batch, *IMAGE_SHAPE)} for "
                f"latents {tuple(z.shape)}; it returned {_shapes(logits)}."
            )
        if not logits.is_floating_point():
            raise ConfigError(
                f"model.decoder ({_name(decoder)}) must return floating-point logits; it returned {logits.dtype}. "
                f"Return the last layer's output without rounding or casting."
            )
    finally:
        encoder.train(modes[0]), decoder.train(modes[1])
