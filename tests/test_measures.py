"""Measures give the expected extremes on constructed cases."""

from __future__ import annotations

import math

import pytest
import torch

from vae_lightning.experiments import compute


def clusters(separation: float, n_per_class: int = 200, classes: int = 10, dim: int = 2, seed: int = 0):
    """Gaussian blobs (unit spread) with centres `separation` apart on a circle; labels by blob."""
    generator = torch.Generator().manual_seed(seed)
    angles = torch.arange(classes) * 2 * math.pi / classes
    centres = torch.zeros(classes, dim)
    centres[:, 0], centres[:, 1] = torch.cos(angles), torch.sin(angles)
    centres *= separation / (2 * math.sin(math.pi / classes))  # neighbouring centres `separation` apart
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return centres[labels] + torch.randn(len(labels), dim, generator=generator), labels


def test_identical_decodings_have_no_spread_and_varied_ones_do():
    same = torch.rand(1, 1, 28, 28).expand(20, -1, -1, -1)
    assert compute.sweep_spread(same) == 0
    coin_flips = torch.randint(0, 2, (20, 1, 28, 28)).float()
    assert compute.sweep_spread(coin_flips) == pytest.approx(0.5, abs=0.03)
    assert 0 < compute.sweep_spread(same + 0.01 * torch.randn(20, 1, 28, 28)) < 0.02


def test_separated_clusters_are_recognised_and_mixed_ones_are_not():
    points, labels = clusters(separation=20)
    assert compute.knn_accuracy(points, labels) == 1.0
    assert compute.silhouette_score(points, labels) > 0.85
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    assert compute.knn_accuracy(points, shuffled) < 0.2  # chance is 0.1
    assert abs(compute.silhouette_score(points, shuffled)) < 0.1  # (slightly negative: b is a minimum)


def test_knn_and_silhouette_grow_with_separation():
    knn = [compute.knn_accuracy(*clusters(s)) for s in (0.5, 2, 4)]
    silhouette = [compute.silhouette_score(*clusters(s)) for s in (0.5, 2, 4)]
    assert knn == sorted(knn) and silhouette == sorted(silhouette)


def test_silhouette_matches_its_definition_on_a_tiny_case():
    points = torch.tensor([[0.0], [1.0], [10.0], [12.0]])
    labels = torch.tensor([0, 0, 1, 1])
    a = torch.tensor([1.0, 1.0, 2.0, 2.0])
    b = torch.tensor([11.0, 10.0, 9.5, 11.5])
    expected = ((b - a) / torch.maximum(a, b)).mean().item()
    assert compute.silhouette_score(points, labels) == pytest.approx(expected)


def test_prior_fit_of_the_prior_itself_and_of_a_collapsed_posterior():
    fit = compute.prior_fit(torch.randn(20_000, 4, generator=torch.Generator().manual_seed(0)))
    assert fit["mean_norm"] < 0.05 and abs(fit["spread"] - 1) < 0.05 and fit["cov_distance"] < 0.05
    collapsed = compute.prior_fit(torch.zeros(500, 4) + 1e-4 * torch.randn(500, 4))
    assert collapsed["spread"] < 1e-6 and collapsed["cov_distance"] == pytest.approx(1.0, abs=1e-3)
    wide = compute.prior_fit(10 * torch.randn(5000, 2))
    assert wide["spread"] > 50


def test_class_changes_count_the_transitions_along_every_axis():
    assert compute.class_changes(torch.tensor([4, 4, 4, 9, 9, 7])) == 2
    assert compute.class_changes(torch.tensor([1, 1, 1])) == 0
    grid = torch.tensor([[1, 1, 2], [1, 1, 2], [3, 3, 3]])
    assert compute.class_changes(grid) == 2 + 3  # two horizontal, three vertical
    assert compute.class_changes(torch.zeros(5, 5, dtype=torch.long)) == 0


def test_unclear_fraction():
    assert compute.unclear_fraction(torch.tensor([True, True, False, False])) == 0.5
    assert compute.unclear_fraction(torch.ones(10, dtype=torch.bool)) == 0.0


def test_box_cells_count_the_points_in_each_cell():
    # two tight clusters in opposite corners of the box: the middle cells are empty
    generator = torch.Generator().manual_seed(0)
    points = torch.cat(
        [torch.rand(500, 2, generator=generator) * 0.1, 1 + torch.rand(500, 2, generator=generator) * 0.1]
    )
    centres, counts, box = compute.box_cells(points, grid=5, low=0.0, high=1.0)
    assert centres.shape == (5, 5, 2) and counts.shape == (5, 5)
    assert counts.sum() == 1000  # the box is closed: points on its far edges count in the last cells
    assert counts[0, 0] > 0 and counts[4, 4] > 0 and counts[2, 2] == 0 and (counts > 0).sum() <= 4
    torch.testing.assert_close(box, torch.stack([points.min(0).values, points.max(0).values]))
    assert centres[0, 0, 0] < centres[1, 0, 0] and centres[0, 0, 1] < centres[0, 1, 1]  # [i along x, j along y]


def test_active_units_count_the_dimensions_that_vary():
    mu = torch.zeros(1000, 5)
    mu[:, 0], mu[:, 3] = torch.randn(1000), 0.5 * torch.randn(1000)  # two informative dimensions
    mu[:, 1] = 0.01 * torch.randn(1000)  # variance 1e-4: inactive
    assert compute.prior_fit(mu)["active_units"] == 2
