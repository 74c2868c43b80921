"""Latent scatter (seed experiments 5, 7, 8): where the test set lies in latent space, and what the gaps decode to."""

from dataclasses import dataclass

import torch
from jsonargparse.typing import PositiveInt
from matplotlib.patches import Rectangle

from vae_lightning.experiments import compute, figures
from vae_lightning.experiments.base import AtLeastTwo, Experiment, ExperimentData, Outcome
from vae_lightning.projector import Embedding


@dataclass
class LatentScatter(Experiment):
    """Experiments 5, 7, 8: posterior means of the test set by digit (beyond 2 latents, their first two principal
    components), beside decodings of a `grid` x `grid` lattice over the box they fill (1st-99th percentiles).
    Measures: `knn_accuracy` (held-out k-NN accuracy of the digit from mu, all latent dims), `silhouette` (of the
    digits in latent space), `mean_norm`, `spread`, `cov_distance`, `active_units` (mu against N(0, I), see
    `compute.prior_fit`), `box_unclear` (share of cells whose centre decodes to no clear digit), `empty_share` (share
    of cells no test latent falls in) and `empty_unclear` (share of those decoding to no clear digit; 0 if none).

    Args:
        max_points: plot and measure at most this many test images (default all).
        knn_k: neighbours for the k-NN accuracy.
        grid: cells per side of the box.
        projector: also send the points (all latents, digits, images) to the loggers' embedding projectors.
    """

    name = "latent_scatter"
    max_points: AtLeastTwo | None = None
    knn_k: PositiveInt = 5
    grid: PositiveInt = 15
    projector: bool = False

    def skip_reason(self, model) -> str | None:
        needs = f"a scatter plane needs 2 latent dimensions, the model has {model.latent_dim}"
        return needs if model.latent_dim < 2 else None

    def run(self, model, data: ExperimentData) -> Outcome:
        mu, labels, grid = data.posterior_of(model)[0][: self.max_points], data.labels[: self.max_points], self.grid
        origin, axes, how = compute.plane_of(mu)
        points = (mu - origin) @ axes.T  # (N, 2) in the plane
        centres, counts, box = compute.box_cells(points, grid)  # cell i along x, j along y
        decodings = compute.decode_latents(model, origin + centres.flatten(0, 1) @ axes)  # (G * G, 1, 28, 28)
        clear, empty = data.judge(decodings).clear.view(grid, grid), counts == 0
        measured = {
            "knn_accuracy": compute.knn_accuracy(mu, labels, k=self.knn_k),
            "silhouette": compute.silhouette_score(mu, labels),
            **compute.prior_fit(mu),
            "box_unclear": compute.unclear_fraction(clear.flatten()),
            "empty_share": empty.float().mean().item(),
            "empty_unclear": compute.unclear_fraction(clear[empty]) if empty.any() else 0.0,
        }
        embedding = Embedding(mu, labels, torch.arange(len(mu)), data.images[: len(mu)]) if self.projector else None
        figure = figures.new_figure(12.0, 5.6)
        left, right = figure.subplots(1, 2, width_ratios=[1.15, 1])
        for digit in range(10):  # left: the points by digit in tab10 (matplotlib's colour cycle), their box dashed
            chosen = points[labels == digit]
            left.scatter(*chosen.T, s=2, alpha=0.5, color=f"C{digit}", label=str(digit), rasterized=True)
        (x0, y0), (x1, y1) = box.tolist()
        left.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--", linewidth=0.8))
        left.legend(
            title="digit", markerscale=5, fontsize=7, title_fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5)
        )
        names = ("z[0]", "z[1]") if mu.shape[1] == 2 else ("PC 1", "PC 2")
        left.set(xlabel=names[0], ylabel=names[1])
        left.set_title(f"posterior means of {len(mu):,} test images: {how}", fontsize=9)
        cells = decodings.view(grid, grid, 1, 28, 28).transpose(0, 1).flip(0)  # right: row 0 at the largest y
        figures.show(right, cells.flatten(0, 1), grid)
        for i, j in empty.nonzero().tolist():  # cells without test latents framed in red
            right.add_patch(Rectangle((29 * i + 0.5, 29 * (grid - 1 - j) + 0.5), 28, 28, fill=False, edgecolor="red"))
        right.set(xticks=[], yticks=[])
        right.set_title(f"decodings over the dashed box; red: cells without test latents ({empty.sum():d})", fontsize=9)
        return Outcome(figure, measured, embedding)
