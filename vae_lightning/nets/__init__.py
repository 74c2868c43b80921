"""Encoders and decoders, plain `nn.Module`s under one contract (`contract.py`): the seed notebooks' MLPs and CNN."""

from collections.abc import Sequence
from typing import Literal

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

Activation = Literal["relu", "tanh", "elu", "gelu", "silu"]
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}
PIXELS = 28 * 28


def mlp(sizes: Sequence[int], out: int, activation: str) -> tuple[nn.Sequential, nn.Linear]:
    """Linear layers between consecutive `sizes`, each followed by the activation (the body), and one to `out`."""
    body = (m for n, k in zip(sizes, sizes[1:]) for m in (nn.Linear(n, k), ACTIVATIONS[activation]()))
    return nn.Sequential(*body), nn.Linear(sizes[-1], out)


class MLPEncoder(nn.Module):
    """(B, 1, 28, 28) pixels -> flattened -> hidden layers -> (mu, logvar), each (B, latent_dim).

    Args:
        latent_dim: size of z (linked from `model.latent_dim` by the CLI).
        hidden_dims: widths of the hidden layers, input side first.
        activation: nonlinearity after each hidden layer.
    """

    def __init__(
        self, latent_dim: PositiveInt = 20, hidden_dims: Sequence[PositiveInt] = (400,), activation: Activation = "relu"
    ):
        super().__init__()
        self.body, self.head = mlp([PIXELS, *hidden_dims], 2 * latent_dim, activation)  # head: mu and logvar at once

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.head(self.body(x.flatten(1))).chunk(2, dim=-1)  # mu, logvar: (B, latent) each


class MLPDecoder(nn.Module):
    """(B, latent_dim) z -> hidden layers -> Bernoulli logits (B, 1, 28, 28).

    Args:
        latent_dim: size of z (linked from `model.latent_dim` by the CLI).
        hidden_dims: widths of the hidden layers, latent side first.
        activation: nonlinearity after each hidden layer.
    """

    def __init__(
        self, latent_dim: PositiveInt = 20, hidden_dims: Sequence[PositiveInt] = (400,), activation: Activation = "relu"
    ):
        super().__init__()
        self.body, self.head = mlp([latent_dim, *hidden_dims], PIXELS, activation)

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
            nn.MaxPool2d(2),  # (B, 16, 12, 12)
            nn.Flatten(),  # (B, 2304)
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
            nn.Linear(latent_dim, 2304), ACTIVATIONS[activation](),  # (B, 2304)
            nn.Unflatten(1, (16, 12, 12)),  # (B, 16, 12, 12)
            nn.Upsample(scale_factor=2, mode="nearest"),  # (B, 16, 24, 24)
            nn.ConvTranspose2d(16, 32, 3), ACTIVATIONS[activation](),  # (B, 32, 26, 26)
            nn.ConvTranspose2d(32, 1, 3),  # (B, 1, 28, 28) logits
        )  # fmt: skip
        self.to(memory_format=torch.channels_last)  # oneDNN's fastest layout on CPUs

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
