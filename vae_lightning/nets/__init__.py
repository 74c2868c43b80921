"""Encoders and decoders (plain `nn.Module`s) and their contract, checked by `check_networks` when a model is built:
`encoder(x)`, x (B, 1, 28, 28) in [0, 1], returns `(mu, logvar)`, each (B, latent_dim); `decoder(z)`, logits like x."""

from collections.abc import Sequence
from typing import Literal

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from vae_lightning.errors import ConfigError, attributed

Activation = Literal["relu", "tanh", "elu", "gelu", "silu"]
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}


class _MLP(nn.Module):
    """Linear layers through `hidden_dims`, each followed by the activation (the body), then a linear head.

    Args:
        latent_dim: size of z (linked from `model.latent_dim` by the CLI).
        hidden_dims: widths of the hidden layers, input side (pixels for the encoder, z for the decoder) first.
        activation: nonlinearity after each hidden layer.
    """

    def __init__(
        self, latent_dim: PositiveInt = 20, hidden_dims: Sequence[PositiveInt] = (400,), activation: Activation = "relu"
    ):
        super().__init__()
        ends = (784, 2 * latent_dim) if isinstance(self, MLPEncoder) else (latent_dim, 784)  # 28x28 pixels; mu, logvar
        sizes = [ends[0], *hidden_dims]
        body = (m for n, k in zip(sizes, sizes[1:]) for m in (nn.Linear(n, k), ACTIVATIONS[activation]()))
        self.body, self.head = nn.Sequential(*body), nn.Linear(sizes[-1], ends[1])


class MLPEncoder(_MLP):
    """(B, 1, 28, 28) pixels -> flattened -> hidden layers -> (mu, logvar), each (B, latent_dim)."""

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.head(self.body(x.flatten(1))).chunk(2, dim=-1)  # mu, logvar: (B, latent) each


class MLPDecoder(_MLP):
    """(B, latent_dim) z -> hidden layers -> Bernoulli logits (B, 1, 28, 28)."""

    def forward(self, z: Tensor) -> Tensor:
        return self.head(self.body(z)).view(-1, 1, 28, 28)  # (B, 1, 28, 28) logits


class ConvEncoder(nn.Module):
    """(B, 1, 28, 28) pixels -> two 3x3 convolutions, 2x2 max-pool -> (mu, logvar), each (B, latent_dim).

    Args:
        latent_dim: size of z (linked from `model.latent_dim` by the CLI).
        activation: nonlinearity after each convolution.
    """

    def __init__(self, latent_dim: PositiveInt = 20, activation: Activation = "relu"):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), ACTIVATIONS[activation](),  # (B, 32, 26, 26)
            nn.Conv2d(32, 16, 3), ACTIVATIONS[activation](),  # (B, 16, 24, 24)
            nn.MaxPool2d(2), nn.Flatten(),  # (B, 16, 12, 12) -> (B, 2304)
        )  # fmt: skip
        self.head = nn.Linear(2304, 2 * latent_dim)
        self.to(memory_format=torch.channels_last)  # oneDNN's fastest layout on CPUs

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.head(self.features(x)).chunk(2, dim=-1)  # mu, logvar: (B, latent) each


class ConvDecoder(nn.Module):
    """(B, latent_dim) z -> linear to 16x12x12, upsample x2, two 3x3 transposed convolutions -> logits (B, 1, 28, 28).

    Args:
        latent_dim: size of z (linked from `model.latent_dim` by the CLI).
        activation: nonlinearity after the linear layer and the first transposed convolution.
    """

    def __init__(self, latent_dim: PositiveInt = 20, activation: Activation = "relu"):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 2304), ACTIVATIONS[activation](), nn.Unflatten(1, (16, 12, 12)),  # (B, 16, 12, 12)
            nn.Upsample(scale_factor=2, mode="nearest"),  # (B, 16, 24, 24)
            nn.ConvTranspose2d(16, 32, 3), ACTIVATIONS[activation](),  # (B, 32, 26, 26)
            nn.ConvTranspose2d(32, 1, 3),  # (B, 1, 28, 28) logits
        )  # fmt: skip
        self.to(memory_format=torch.channels_last)  # oneDNN's fastest layout on CPUs

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def _shapes(value) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(_shapes, value)) + "]"
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


@torch.no_grad()
def check_networks(encoder: nn.Module, decoder: nn.Module, latent_dim: int) -> None:
    """Run both networks once in eval mode (modes, batch-norm statistics kept); a ConfigError names what breaks."""
    enc, dec = f"model.encoder ({type(encoder).__name__})", f"model.decoder ({type(decoder).__name__})"
    latent, image = (2, latent_dim), (2, 1, 28, 28)
    link = f"make its latent size equal model.latent_dim={latent_dim} (the CLI links them)"
    modes = encoder.training, decoder.training
    encoder.eval(), decoder.eval()
    try:
        with attributed(f"{enc} fails on MNIST images of shape {image}", "make it take (batch, 1, 28, 28) images"):
            out = encoder(torch.rand(image))
        if (got := _shapes(out)) != f"[{latent}, {latent}]":
            want = f"(mu, logvar), each (batch, latent_dim) = {latent}"
            raise ConfigError(f"{enc} must return {want}; it returned {got}: {link}.")
        with attributed(f"{dec} fails on latents of shape {latent}", link):
            logits = decoder(torch.randn(latent))
        if (got := _shapes(logits)) != str(image):
            raise ConfigError(f"{dec} must return logits of shape {image} for latents {latent}; it returned {got}.")
        for name, values in ((enc, out), (dec, [logits])):
            if dtypes := [str(t.dtype) for t in values if not t.is_floating_point()]:
                raise ConfigError(f"{name} must return floating-point values, unrounded; it returned {dtypes[0]}.")
    finally:
        encoder.train(modes[0]), decoder.train(modes[1])
