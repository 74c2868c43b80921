"""The experiments' maths on CPU tensors: encoding and decoding with a model (anything with `encode`, `decode`,
`latent_dim`, `device`; also the explorer's), a 2-D view of latent space, and the measures, tensors in, floats out."""

import torch
import torch.nn.functional as F
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
    """A 2-D view of latents (N, L): origin (L,), axes (2, L) and a description; the latent axes for 1 or 2
    latents, else the first two principal components. A latent's coordinates: (mu - origin) @ axes.T."""
    if mu.shape[1] == 2:
        return torch.zeros(2), torch.eye(2), "latent dimensions 0 and 1"
    if mu.shape[1] == 1:
        return torch.zeros(1), torch.ones(2, 1), "latent dimension 0 (both axes)"
    centre = mu.mean(0)
    _, s, v = torch.linalg.svd(mu - centre, full_matrices=False)
    explained = (s[:2].square().sum() / s.square().sum()).item()
    return centre, v[:2], f"PCA of {mu.shape[1]} latents ({explained:.0%} of the variance)"


def box_cells(points: Tensor, grid: int, low: float = 0.01, high: float = 0.99) -> tuple[Tensor, Tensor, Tensor]:
    """The box of the `low`-`high` quantiles of `points` (N, 2) in grid x grid cells: cell centres (G, G, 2) [i along
    the first axis, j the second], points per cell (G, G; the box closed) and the corners (2, 2) as [lows, highs]."""
    lows, highs = points.quantile(low, dim=0), points.quantile(high, dim=0)  # (2,) each
    counts, edges = torch.histogramdd(points, [grid, grid], range=torch.stack([lows, highs], 1).flatten().tolist())
    centres = torch.stack(torch.meshgrid(*[(e[1:] + e[:-1]) / 2 for e in edges], indexing="ij"), -1)
    return centres, counts, torch.stack([lows, highs])


def sweep_spread(images: Tensor) -> float:
    """Mean over pixels of the standard deviation across decodings (S, 1, 28, 28): 0 when identical, 0.5 at most."""
    return images.float().std(dim=0, unbiased=False).mean().item()


def knn_accuracy(points: Tensor, labels: Tensor, k: int = 5, seed: int = 0, chunk: int = 2048) -> float:
    """Held-out k-nearest-neighbour accuracy of `labels` from `points` (N, D): each point of a seeded half gets the
    most common label of its k nearest in the other half, ties to the nearest; 1.0 for separated classes."""
    points, labels = points.float(), labels.long()
    order = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))
    reference, query = order[: len(order) // 2], order[len(order) // 2 :]
    k, classes = min(k, len(reference)), int(labels.max()) + 1
    correct = 0
    for rows in query.split(chunk):
        nearest = torch.cdist(points[rows], points[reference]).topk(k, largest=False).indices  # (q, k), nearest first
        neighbours = labels[reference][nearest]  # (q, k)
        votes = F.one_hot(neighbours, classes).sum(1) + 0.5 * F.one_hot(neighbours[:, 0], classes)  # (q, C)
        correct += (votes.argmax(1) == labels[rows]).sum().item()
    return correct / len(query)


def silhouette_score(points: Tensor, labels: Tensor, max_points: int = 2000, seed: int = 0) -> float:
    """Mean silhouette (b - a) / max(a, b) of at most `max_points` seeded points; a: mean distance to the rest of its
    class, b: the smallest mean distance to another class. About 1 for tight, distant clusters, 0 for mixed ones."""
    points, labels = points.float(), labels.long()
    if len(points) > max_points:
        keep = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))[:max_points]
        points, labels = points[keep], labels[keep]
    _, index = labels.unique(return_inverse=True)  # (n,) each point's class
    one_hot = F.one_hot(index).float()  # (n, C)
    counts = one_hot.sum(0)  # (C,)
    summed = torch.cdist(points, points) @ one_hot  # (n, C) summed distances to each class
    own = counts[index]  # (n,) the size of each point's class
    a = summed.gather(1, index.unsqueeze(1)).squeeze(1) / (own - 1).clamp(min=1)  # the point itself adds 0
    b = (summed / counts).scatter(1, index.unsqueeze(1), float("inf")).min(1).values
    s = (b - a) / torch.maximum(a, b).clamp(min=1e-12)
    return torch.where(own > 1, s, 0.0).mean().item()  # singletons count as 0


def prior_fit(mu: Tensor) -> dict[str, float]:
    """How far posterior means (N, L) are from N(0, I): `mean_norm` (norm of the average mu), `spread` (mean
    per-dimension variance of mu; ~0 when all images map to one point), `cov_distance` (Frobenius norm of Cov(mu) - I
    over sqrt(L)) and `active_units` (dimensions with Var(mu_d) > 0.01, as in Burda et al. 2015)."""
    mu, dims = mu.double(), mu.shape[1]
    cov = torch.cov(mu.T).reshape(dims, dims)
    return {
        "mean_norm": mu.mean(0).norm().item(),
        "spread": cov.diagonal().mean().item(),
        "cov_distance": ((cov - torch.eye(dims, dtype=mu.dtype)).norm() / dims**0.5).item(),
        "active_units": float((cov.diagonal() > 0.01).sum()),
    }


def class_changes(classes: Tensor) -> int:
    """How many neighbouring entries (along every axis) of a class sequence (S,) or grid (H, W) differ."""
    return sum(int((classes.diff(dim=axis) != 0).sum()) for axis in range(classes.dim()))


def unclear_fraction(clear: Tensor) -> float:
    """Fraction of a boolean (N,) `clear` mask that is False."""
    return 1.0 - clear.float().mean().item()
