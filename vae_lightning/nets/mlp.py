"""Fully connected encoder and decoder (the seed notebooks' 784-400-latent-400-784 by default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from vae_lightning.errors import check_choice, check_int

Activation = Literal["relu", "tanh", "elu", "gelu", "silu", "leaky_relu", "softplus"]
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU,
    "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU, "softplus": nn.Softplus,
}  # fmt: skip
PIXELS = 28 * 28


def check_sizes(owner: str, latent_dim: int, hidden_dims: Sequence[int], activation: str) -> None:
    """Refuse a non-positive size or an unknown activation, naming the field of `owner` (e.g. model.encoder)."""
    check_int(f"{owner}.latent_dim", latent_dim)
    for i, width in enumerate(hidden_dims):
        check_int(f"{owner}.hidden_dims[{i}]", width)
    check_choice(f"{owner}.activation", activation, sorted(ACTIVATIONS))


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, the activation after every one."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """(B, 1, 28, 28) pixels -> flattened -> hidden layers -> (mu, logvar), each (B, latent_dim).

    Args:
        latent_dim: size of z (linked from `model.latent_dim` by the CLI).
        hidden_dims: widths of the hidden layers, input side first.
        activation: nonlinearity after each hidden layer.
    """

    def __init__(self, latent_dim: int = 20, hidden_dims: Sequence[int] = (400,), activation: Activation = "relu"):
        super().__init__()
        check_sizes("model.encoder", latent_dim, hidden_dims, activation)
        self.body = mlp([PIXELS, *hidden_dims], activation)
        self.head = nn.Linear(hidden_dims[-1] if hidden_dims else PIXELS, 2 * latent_dim)  # mu and logvar at once

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(x.flatten(1))  # (B, hidden)
        mu, logvar = self.head(h).chunk(2, dim=-1)  # (B, latent) each
        return mu, logvar


class MLPDecoder(nn.Module):
    """(B, latent_dim) z -> hidden layers -> Bernoulli logits (B, 1, 28, 28).

    Args:
        latent_dim: size of z (linked from `model.latent_dim` by the CLI).
        hidden_dims: widths of the hidden layers, latent side first.
        activation: nonlinearity after each hidden layer.
    """

    def __init__(self, latent_dim: int = 20, hidden_dims: Sequence[int] = (400,), activation: Activation = "relu"):
        super().__init__()
        check_sizes("model.decoder", latent_dim, hidden_dims, activation)
        self.body = mlp([latent_dim, *hidden_dims], activation)
        self.head = nn.Linear(hidden_dims[-1] if hidden_dims else latent_dim, PIXELS)

    def forward(self, z: Tensor) -> Tensor:
        return self.head(self.body(z)).view(-1, 1, 28, 28)  # (B, 1, 28, 28) logits


__all__ = ["ACTIVATIONS", "MLPDecoder", "MLPEncoder"]
