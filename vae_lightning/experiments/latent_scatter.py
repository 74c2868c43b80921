"""Latent scatter (seed experiments 5, 7 and 8): where the test set lies in latent space, and what the empty
places between the digits decode to."""

from dataclasses import dataclass

import torch
from jsonargparse.typing import PositiveInt

from vae_lightning.experiments import compute, figures, measures
from vae_lightning.experiments.base import AtLeastTwo, Experiment, ExperimentData, Outcome
from vae_lightning.projector import Embedding


@dataclass
class LatentScatter(Experiment):
    """Experiments 5, 7, 8: posterior means of the test set coloured by digit (for more than 2 latents, their
    first two principal components, named in the title), beside the decodings of a `grid` x `grid` lattice of
    cells over the box the points fill (their 1st-99th percentiles).

    Measures: `knn_accuracy` (held-out k-NN accuracy of the digit from mu, in all latent dims), `silhouette` (of
    the digit classes in latent space), `mean_norm`, `spread`, `cov_distance` and `active_units` of mu against
    N(0, I) (see `measures.prior_fit`), `box_unclear` (share of the cells whose centre decodes to no clear digit),
    `empty_share` (share of cells no test latent falls in: the empty regions between digits) and `empty_unclear`
    (share of those empty cells that decode to no clear digit; 0 when there are none).

    Args:
        max_points: plot and measure at most this many test images (default all).
        knn_k: neighbours for the k-NN accuracy.
        grid: cells per side of the box.
        projector: also send the plotted points, in all latent dimensions, with their digits and images, to the
            attached TensorBoard and W&B loggers' embedding projectors (`vae_lightning.projector`).
    """

    name = "latent_scatter"
    uses_posterior = True
    max_points: AtLeastTwo | None = None
    knn_k: PositiveInt = 5
    grid: PositiveInt = 15
    projector: bool = False

    def skip_reason(self, model) -> str | None:
        if model.latent_dim < 2:
            return f"a scatter plane needs 2 latent dimensions, the model has {model.latent_dim}"
        return None

    def run(self, model, data: ExperimentData) -> Outcome:
        mu, labels = data.posterior_of(model)[0][: self.max_points], data.labels[: self.max_points]
        origin, axes, how = compute.plane_of(mu)
        points = compute.project(mu, origin, axes)  # (N, 2)
        centres, counts, box = compute.box_cells(points, self.grid)
        decodings = compute.decode_latents(model, origin + centres.flatten(0, 1) @ axes)  # (G * G, 1, 28, 28)
        clear = data.judge(decodings).clear.view(self.grid, self.grid)
        empty = counts == 0
        title = f"posterior means of {len(mu):,} test images: {how}"
        names = ("z[0]", "z[1]") if "latent dimensions" in how else ("PC 1", "PC 2")
        figure = figures.scatter(
            points, labels, title, names, box, decodings.view(self.grid, self.grid, 1, 28, 28), empty
        )
        measured = {
            "knn_accuracy": measures.knn_accuracy(mu, labels, k=self.knn_k),
            "silhouette": measures.silhouette_score(mu, labels),
            **measures.prior_fit(mu),
            "box_unclear": measures.unclear_fraction(clear.flatten()),
            "empty_share": empty.float().mean().item(),
            "empty_unclear": measures.unclear_fraction(clear[empty]) if empty.any() else 0.0,
        }
        embedding = Embedding(mu, labels, torch.arange(len(mu)), data.images[: len(mu)]) if self.projector else None
        return Outcome(figure, measured, embedding)
