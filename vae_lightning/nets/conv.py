"""The seed notebook's convolutional encoder and decoder.

Encoder: conv 1->32 k3 (26x26), conv 32->16 k3 (24x24), max-pool 2 (16x12x12 = 2304),
linear 2304 -> (mu, logvar). Decoder: linear latent -> 2304, reshape 16x12x12, nearest
upsample x2 (24x24), transposed conv 16->32 k3 (26x26), transposed conv 32->1 k3 (28x28 logits).
"""

from __future__ import annotations

import torch
from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

from vae_lightning.nets.mlp import ACTIVATIONS, Activation

FEATURES = (16, 12, 12)  # channels, height, width after the encoder's pooling
FLAT = 16 * 12 * 12  # 2304


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
        self.head = nn.Linear(FLAT, 2 * latent_dim)
        # NHWC (channels-last): the layout oneDNN runs convolutions fastest in on CPUs.
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
            nn.Linear(latent_dim, FLAT), act(),  # (B, 2304)
            nn.Unflatten(1, FEATURES),  # (B, 16, 12, 12)
            nn.Upsample(scale_factor=2, mode="nearest"),  # (B, 16, 24, 24)
            nn.ConvTranspose2d(16, 32, 3), act(),  # (B, 32, 26, 26)
            nn.ConvTranspose2d(32, 1, 3),  # (B, 1, 28, 28) logits
        )  # fmt: skip
        self.to(memory_format=torch.channels_last)  # see ConvEncoder

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
