"""What the experiments (and the explorer) decode: pure functions of a model (anything with `encode`, `decode`,
`latent_dim`, `device`) and tensors. Inputs and outputs are on the CPU; work runs on the model's device."""

import torch
from torch import Tensor


@torch.no_grad()
def encode_images(model, images: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """Posterior (mu, logvar), each (N, L), of images (N, 1, 28, 28)."""
    parts = [model.encode(chunk.to(model.device)) for chunk in images.split(batch_size)]
    return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()


@torch.no_grad()
def decode_latents(model, z: Tensor, batch_size: int = 1000) -> Tensor:
    """Pixel probabilities (N, 1, 28, 28) of latents (N, L)."""
    return torch.cat([model.decode(chunk.to(model.device)).cpu() for chunk in z.split(batch_size)])


def reconstruct(model, images: Tensor) -> Tensor:
    """decode(mu) of images (N, 1, 28, 28): pixel probabilities (N, 1, 28, 28)."""
    return decode_latents(model, encode_images(model, images)[0])


def plane_of(mu: Tensor) -> tuple[Tensor, Tensor, str]:
    """A 2-D view of latents (N, L): (origin (L,), axes (2, L), description): for 2 latents the latent axes
    themselves, for more the first two principal components of mu."""
    if mu.shape[1] == 2:
        return torch.zeros(2), torch.eye(2), "latent dimensions 0 and 1"
    if mu.shape[1] == 1:
        return torch.zeros(1), torch.ones(2, 1), "latent dimension 0 (both axes)"
    centre = mu.mean(0)
    _, s, v = torch.linalg.svd(mu - centre, full_matrices=False)
    explained = (s[:2].square().sum() / s.square().sum()).item()
    return centre, v[:2], f"PCA of {mu.shape[1]} latents ({explained:.0%} of the variance)"


def project(mu: Tensor, origin: Tensor, axes: Tensor) -> Tensor:
    """Coordinates (N, 2) of latents in the plane (origin, axes)."""
    return (mu - origin) @ axes.T


def box_cells(points: Tensor, grid: int, low: float = 0.01, high: float = 0.99) -> tuple[Tensor, Tensor, Tensor]:
    """Cut the box holding the `low`-`high` quantiles of `points` (N, 2) into grid x grid cells.

    Returns the cell centres (grid, grid, 2), indexed [i along the first axis, j along the second], how many
    points fall in each cell (grid, grid), and the box corners (2, 2) as [lows, highs].
    """
    lows, highs = points.quantile(low, dim=0), points.quantile(high, dim=0)  # (2,) each
    size = (highs - lows) / grid
    steps = torch.arange(grid) + 0.5
    centres = torch.stack(torch.meshgrid(lows[0] + steps * size[0], lows[1] + steps * size[1], indexing="ij"), -1)
    inside = ((points >= lows) & (points <= highs)).all(1)  # the box is closed on both sides
    cell = ((points - lows) / size).floor().long().clamp(0, grid - 1)  # (N, 2)
    counts = torch.bincount(cell[inside, 0] * grid + cell[inside, 1], minlength=grid * grid)
    return centres, counts.view(grid, grid), torch.stack([lows, highs])
