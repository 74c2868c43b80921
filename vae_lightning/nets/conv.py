"""The seed notebook's convolutional encoder and decoder, channels-last (oneDNN's fastest layout on CPUs)."""

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from vae_lightning.nets.mlp import ACTIVATIONS, Activation


class ConvEncoder(nn.Module):
    """(B, 1, 28, 28) pixels -> two 3x3 convolutions, 2x2 max-pool -> (mu, logvar), each (B, latent_dim).

    Args:
        latent_dim: size of z (linked from `model.latent_dim` by the CLI).
        activation: nonlinearity after each convolution.
    """

    def __init__(self, latent_dim: PositiveInt = 20, activation: Activation = "relu"):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), act(),  # (B, 32, 26, 26)
            nn.Conv2d(32, 16, 3), act(),  # (B, 16, 24, 24)
            nn.MaxPool2d(2),  # (B, 16, 12, 12)
            nn.Flatten(),  # (B, 2304)
        )  # fmt: skip
        self.head = nn.Linear(2304, 2 * latent_dim)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.features(x)).chunk(2, dim=-1)  # (B, latent) each
        return mu, logvar


class ConvDecoder(nn.Module):
    """(B, latent_dim) z -> linear to 16x12x12, upsample x2, two 3x3 transposed convolutions -> logits (B, 1, 28, 28).

    Args:
        latent_dim: size of z (linked from `model.latent_dim` by the CLI).
        activation: nonlinearity after the linear layer and the first transposed convolution.
    """

    def __init__(self, latent_dim: PositiveInt = 20, activation: Activation = "relu"):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 2304), act(),  # (B, 2304)
            nn.Unflatten(1, (16, 12, 12)),  # (B, 16, 12, 12)
            nn.Upsample(scale_factor=2, mode="nearest"),  # (B, 16, 24, 24)
            nn.ConvTranspose2d(16, 32, 3), act(),  # (B, 32, 26, 26)
            nn.ConvTranspose2d(32, 1, 3),  # (B, 1, 28, 28) logits
        )  # fmt: skip
        self.to(memory_format=torch.channels_last)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
