"""Measures: pure functions from tensors to numbers, one for each claim the seed notebooks made.

Every function takes plain tensors (no model, no Lightning) and returns Python floats or small
dicts of them, so the callbacks, the post-hoc command and the tests call the same code.
"""

from __future__ import annotations

import torch
from torch import Tensor


def sweep_spread(images: Tensor) -> float:
    """Mean over pixels of the standard deviation across a sweep's decodings.

    Args:
        images: (S, 1, 28, 28) pixel probabilities of S decodings of one image.

    0 when every decoding is identical; about 0.5 at most (pixels flipping between 0 and 1).
    """
    return images.float().std(dim=0, unbiased=False).mean().item()


def mean_posterior_sigma(logvar: Tensor) -> float:
    """Mean of sigma = exp(logvar / 2) over images and latent dimensions; logvar (N, L)."""
    return torch.exp(0.5 * logvar.float()).mean().item()


def knn_accuracy(points: Tensor, labels: Tensor, k: int = 5, seed: int = 0, chunk: int = 2048) -> float:
    """Held-out k-nearest-neighbour accuracy of `labels` from `points` (N, D).

    A seeded half of the points is the reference set; each point of the other half gets the most
    common label among its k nearest reference points (Euclidean; ties go to the nearest of the
    tied labels). Chance is about 1/number of classes; 1.0 when the classes are separated.
    """
    points, labels = points.float(), labels.long()
    order = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))
    reference, query = order[: len(order) // 2], order[len(order) // 2 :]
    k = min(k, len(reference))
    num_classes = int(labels.max()) + 1
    correct = 0
    for start in range(0, len(query), chunk):
        rows = query[start : start + chunk]
        distances = torch.cdist(points[rows], points[reference])  # (q, r)
        nearest = distances.topk(k, largest=False).indices  # (q, k), nearest first
        neighbour_labels = labels[reference][nearest]  # (q, k)
        # votes, with a tie-breaking bonus that favours labels met earlier (nearer)
        votes = torch.zeros(len(rows), num_classes)
        votes.scatter_add_(1, neighbour_labels, torch.ones_like(neighbour_labels, dtype=torch.float))
        votes.scatter_add_(1, neighbour_labels[:, :1], torch.full((len(rows), 1), 0.5))
        correct += (votes.argmax(1) == labels[rows]).sum().item()
    return correct / len(query)


def silhouette_score(points: Tensor, labels: Tensor, max_points: int = 2000, seed: int = 0) -> float:
    """Mean silhouette (b - a) / max(a, b) of a seeded subsample of at most `max_points` points.

    a: mean distance to the other points of its own class; b: the smallest mean distance to the
    points of another class. About 1 for tight, distant clusters; about 0 for mixed classes.
    """
    points, labels = points.float(), labels.long()
    if len(points) > max_points:
        keep = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))[:max_points]
        points, labels = points[keep], labels[keep]
    distances = torch.cdist(points, points)  # (n, n)
    classes = labels.unique()
    one_hot = (labels.unsqueeze(1) == classes.unsqueeze(0)).float()  # (n, C)
    counts = one_hot.sum(0)  # (C,)
    mean_to_class = distances @ one_hot  # (n, C) summed distances to each class
    own = one_hot.bool()
    own_counts = (counts.unsqueeze(0).expand_as(mean_to_class)[own] - 1).clamp(min=1)
    a = mean_to_class[own] / own_counts  # the point itself contributes distance 0
    other = (mean_to_class / counts).masked_fill(own, float("inf"))
    b = other.min(1).values
    s = (b - a) / torch.maximum(a, b).clamp(min=1e-12)
    s = torch.where(counts[one_hot.argmax(1)] > 1, s, torch.zeros_like(s))  # singletons count as 0
    return s.mean().item()


def prior_fit(mu: Tensor) -> dict[str, float]:
    """How far the aggregate of posterior means (N, L) is from N(0, I).

    Returns `mean_norm` (norm of the average mu), `spread` (mean per-dimension variance of mu;
    1 for a perfect fit of the means alone, ~0 when every image maps to the same point),
    `cov_distance` (Frobenius norm of Cov(mu) - I divided by sqrt(L)) and `active_units` (latent
    dimensions whose mu varies across images, Var(mu_d) > 0.01, as in Burda et al. 2015).
    """
    mu = mu.double()
    cov = torch.cov(mu.T).reshape(mu.shape[1], mu.shape[1])
    eye = torch.eye(mu.shape[1], dtype=mu.dtype)
    return {
        "mean_norm": mu.mean(0).norm().item(),
        "spread": cov.diagonal().mean().item(),
        "cov_distance": ((cov - eye).norm() / mu.shape[1] ** 0.5).item(),
        "active_units": float((cov.diagonal() > 0.01).sum()),
    }


def class_changes(classes: Tensor) -> tuple[int, list[int]]:
    """Number of places where consecutive entries of a class sequence (S,) differ, and those places.

    Position i means a change between step i and step i + 1.
    """
    changed = (classes[1:] != classes[:-1]).nonzero().flatten().tolist()
    return len(changed), changed


def grid_class_changes(classes: Tensor) -> int:
    """Number of horizontally or vertically adjacent cells of a (H, W) class grid that differ."""
    return int((classes[1:] != classes[:-1]).sum() + (classes[:, 1:] != classes[:, :-1]).sum())


def unclear_fraction(clear: Tensor) -> float:
    """Fraction of images that are not a clear digit, from a boolean (N,) `clear` mask."""
    return 1.0 - clear.float().mean().item()
