"""Fully connected encoder and decoder (the seed notebooks' 784-400-latent-400-784 by default)."""

from collections.abc import Sequence
from typing import Literal

from jsonargparse.typing import PositiveInt
from torch import Tensor, nn

Activation = Literal["relu", "tanh", "elu", "gelu", "silu", "leaky_relu", "softplus"]
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU,
    "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU, "softplus": nn.Softplus,
}  # fmt: skip
PIXELS = 28 * 28


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, the activation after every one."""
    pairs = zip(sizes[:-1], sizes[1:])
    return nn.Sequential(*(m for n, k in pairs for m in (nn.Linear(n, k), ACTIVATIONS[activation]())))


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
        self.body = mlp([PIXELS, *hidden_dims], activation)
        self.head = nn.Linear([PIXELS, *hidden_dims][-1], 2 * latent_dim)  # mu and logvar at once

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.head(self.body(x.flatten(1))).chunk(2, dim=-1)  # (B, latent) each
        return mu, logvar


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
        self.body = mlp([latent_dim, *hidden_dims], activation)
        self.head = nn.Linear([latent_dim, *hidden_dims][-1], PIXELS)

    def forward(self, z: Tensor) -> Tensor:
        return self.head(self.body(z)).view(-1, 1, 28, 28)  # (B, 1, 28, 28) logits
