"""Measures: pure functions from plain tensors (no model, no Lightning) to Python floats, one for each claim the
seed notebooks made, shared by the scheduler, the post-hoc command and the tests."""

import torch
import torch.nn.functional as F
from torch import Tensor


def sweep_spread(images: Tensor) -> float:
    """Mean over pixels of the standard deviation across S decodings (S, 1, 28, 28) of one image: 0 when they are
    identical, about 0.5 at most (pixels flipping between 0 and 1)."""
    return images.float().std(dim=0, unbiased=False).mean().item()


def mean_posterior_sigma(logvar: Tensor) -> float:
    """Mean of sigma = exp(logvar / 2) over images and latent dimensions; logvar (N, L)."""
    return torch.exp(0.5 * logvar.float()).mean().item()


def knn_accuracy(points: Tensor, labels: Tensor, k: int = 5, seed: int = 0, chunk: int = 2048) -> float:
    """Held-out k-nearest-neighbour accuracy of `labels` from `points` (N, D).

    A seeded half of the points is the reference set; each point of the other half gets the most common label
    among its k nearest reference points (Euclidean; ties go to the nearest of the tied labels). Chance is about
    1/number of classes; 1.0 when the classes are separated.
    """
    points, labels = points.float(), labels.long()
    order = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))
    reference, query = order[: len(order) // 2], order[len(order) // 2 :]
    k = min(k, len(reference))
    classes = int(labels.max()) + 1
    correct = 0
    for rows in query.split(chunk):
        nearest = torch.cdist(points[rows], points[reference]).topk(k, largest=False).indices  # (q, k), nearest first
        neighbours = labels[reference][nearest]  # (q, k)
        votes = F.one_hot(neighbours, classes).sum(1) + 0.5 * F.one_hot(neighbours[:, 0], classes)  # (q, C)
        correct += (votes.argmax(1) == labels[rows]).sum().item()
    return correct / len(query)


def silhouette_score(points: Tensor, labels: Tensor, max_points: int = 2000, seed: int = 0) -> float:
    """Mean silhouette (b - a) / max(a, b) of a seeded subsample of at most `max_points` points.

    a: mean distance to the other points of its own class; b: the smallest mean distance to the points of another
    class. About 1 for tight, distant clusters; about 0 for mixed classes.
    """
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
    """How far the aggregate of posterior means (N, L) is from N(0, I).

    Returns `mean_norm` (norm of the average mu), `spread` (mean per-dimension variance of mu; 1 for a perfect
    fit of the means alone, ~0 when every image maps to the same point), `cov_distance` (Frobenius norm of
    Cov(mu) - I divided by sqrt(L)) and `active_units` (latent dimensions whose mu varies across images,
    Var(mu_d) > 0.01, as in Burda et al. 2015).
    """
    mu, dims = mu.double(), mu.shape[1]
    cov = torch.cov(mu.T).reshape(dims, dims)
    return {
        "mean_norm": mu.mean(0).norm().item(),
        "spread": cov.diagonal().mean().item(),
        "cov_distance": ((cov - torch.eye(dims, dtype=mu.dtype)).norm() / dims**0.5).item(),
        "active_units": float((cov.diagonal() > 0.01).sum()),
    }


def class_changes(classes: Tensor) -> tuple[int, list[int]]:
    """How many consecutive entries of a class sequence (S,) differ, and where (i: between steps i and i + 1)."""
    changed = (classes[1:] != classes[:-1]).nonzero().flatten().tolist()
    return len(changed), changed


def grid_class_changes(classes: Tensor) -> int:
    """Number of horizontally or vertically adjacent cells of a (H, W) class grid that differ."""
    return int((classes[1:] != classes[:-1]).sum() + (classes[:, 1:] != classes[:, :-1]).sum())


def unclear_fraction(clear: Tensor) -> float:
    """Fraction of images that are not a clear digit, from a boolean (N,) `clear` mask."""
    return 1.0 - clear.float().mean().item()
