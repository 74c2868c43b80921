"""The encoder/decoder contract, checked when a model is built: `encoder(x)`, x (B, 1, 28, 28) in [0, 1], returns
q(z | x)'s `(mu, logvar)`, each (B, latent_dim); `decoder(z)`, z (B, latent_dim), returns logits (B, 1, 28, 28)."""

import torch
from torch import nn

from vae_lightning.errors import ConfigError, attributed

IMAGE_SHAPE = (1, 28, 28)


def _shapes(value) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(_shapes, value)) + "]"
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


@torch.no_grad()
def check_networks(encoder: nn.Module, decoder: nn.Module, latent_dim: int, batch: int = 2) -> None:
    """Run both networks once in eval mode (modes, batch-norm statistics kept); a ConfigError names what breaks."""
    enc, dec = f"model.encoder ({type(encoder).__name__})", f"model.decoder ({type(decoder).__name__})"
    latent, image = (batch, latent_dim), (batch, *IMAGE_SHAPE)
    link = f"make its latent size equal model.latent_dim={latent_dim} (the CLI links them)"
    modes = encoder.training, decoder.training
    encoder.eval(), decoder.eval()
    try:
        with attributed(f"{enc} fails on MNIST images of shape {image}", "make it take (batch, 1, 28, 28) images"):
            out = encoder(torch.rand(image))
        if (got := _shapes(out)) != f"[{latent}, {latent}]":
            raise ConfigError(
                f"{enc} must return (mu, logvar), each (batch, latent_dim) = {latent}, for input {image}; "
                f"it returned {got}: {link}."
            )
        with attributed(f"{dec} fails on latents of shape {latent}", link):
            logits = decoder(torch.randn(latent))
        if (got := _shapes(logits)) != str(image):
            raise ConfigError(f"{dec} must return logits of shape {image} for latents {latent}; it returned {got}.")
        for name, values in ((enc, out), (dec, [logits])):
            if dtypes := [str(t.dtype) for t in values if not t.is_floating_point()]:
                raise ConfigError(f"{name} must return floating-point values, unrounded; it returned {dtypes[0]}.")
    finally:
        encoder.train(modes[0]), decoder.train(modes[1])
