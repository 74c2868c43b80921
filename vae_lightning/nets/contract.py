"""The contract every encoder/decoder pair keeps, checked once when a model is built.

- `encoder(x)`, x (B, 1, 28, 28) in [0, 1], returns q(z | x)'s `(mu, logvar)`, each (B, latent_dim).
- `decoder(z)`, z (B, latent_dim), returns Bernoulli logits (B, 1, 28, 28).
"""

import torch
from torch import nn

from vae_lightning.errors import ConfigError, attributed

IMAGE_SHAPE = (1, 28, 28)


def _is(value, shape: tuple[int, ...]) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == shape


def _shapes(value) -> str:
    """The shape of a tensor, the shapes of a sequence of them, else the type's name."""
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(_shapes, value)) + "]"
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


@torch.no_grad()
def check_networks(encoder: nn.Module, decoder: nn.Module, latent_dim: int, batch: int = 2) -> None:
    """Runs both networks once on a small batch in eval mode (no batch-norm statistics change; each network's
    mode is restored) and raises a ConfigError naming the network and the shapes if they break the contract."""
    for field, net in (("model.encoder", encoder), ("model.decoder", decoder)):
        if not isinstance(net, nn.Module):
            raise ConfigError(f"{field} must be a torch.nn.Module, got {type(net).__name__}.")
    enc, dec = f"model.encoder ({type(encoder).__name__})", f"model.decoder ({type(decoder).__name__})"
    x, z, latent = torch.rand(batch, *IMAGE_SHAPE), torch.randn(batch, latent_dim), (batch, latent_dim)
    link = f"make its latent size equal model.latent_dim={latent_dim} (the CLI links them)"
    inputs = "its layers must take (batch, 1, 28, 28) inputs"
    modes = encoder.training, decoder.training
    encoder.eval(), decoder.eval()
    try:
        with attributed(f"{enc} fails on MNIST images of shape {tuple(x.shape)}", inputs):
            out = encoder(x)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(_is(t, latent) for t in out)):
            raise ConfigError(
                f"{enc} must return (mu, logvar), each (batch, latent_dim) = {latent}, for input {tuple(x.shape)}; "
                f"it returned {_shapes(out)}: {link}."
            )
        with attributed(f"{dec} fails on latents of shape {tuple(z.shape)}", link):
            logits = decoder(z)
        if not _is(logits, (batch, *IMAGE_SHAPE)):
            raise ConfigError(
                f"{dec} must return logits of shape {(batch, *IMAGE_SHAPE)} for latents {tuple(z.shape)}; "
                f"it returned {_shapes(logits)}."
            )
        for name, values in ((enc, out), (dec, [logits])):
            if not all(t.is_floating_point() for t in values):
                raise ConfigError(
                    f"{name} must return floating-point values; it returned {', '.join(str(t.dtype) for t in values)}"
                    ". Return the layers' outputs without rounding or casting."
                )
    finally:
        encoder.train(modes[0]), decoder.train(modes[1])
