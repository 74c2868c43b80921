"""Latent manifold (seed experiment 4): decodings of a lattice over two latent dimensions."""

from dataclasses import dataclass

import torch
from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt

from vae_lightning.errors import ConfigError
from vae_lightning.experiments import compute, figures
from vae_lightning.experiments.base import Experiment, ExperimentData, Outcome


@dataclass
class LatentManifold(Experiment):
    """Experiment 4: a `grid` x `grid` lattice of z at standard-normal quantiles from `low` to `high` in two latent
    dimensions (the others 0), decoded. Measures: `digits_present` (distinct digits judged clear somewhere on the
    grid), `class_changes` (adjacent cells judged different), `unclear` (fraction judged no clear digit).

    Args:
        grid: cells per side.
        low: lowest quantile.
        high: highest quantile (above low).
        dims: the two latent dimensions.
    """

    name = "latent_manifold"
    grid: PositiveInt = 15
    low: OpenUnitInterval = 0.01
    high: OpenUnitInterval = 0.99
    dims: tuple[NonNegativeInt, NonNegativeInt] = (0, 1)

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ConfigError(f"latent_manifold.low ({self.low}) must be below high ({self.high}): swap them.")

    def skip_reason(self, model) -> str | None:
        (x, y), latents = self.dims, model.latent_dim
        fits = x != y and max(x, y) < latents
        return None if fits else f"dims {(x, y)} are not two distinct dimensions of a {latents}-latent model"

    def run(self, model, data: ExperimentData) -> Outcome:
        grid, (x, y) = self.grid, self.dims
        values = torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(self.low, self.high, grid))  # (G,)
        z = torch.zeros(grid, grid, model.latent_dim)
        z[:, :, x] = values.view(1, grid)  # left to right
        z[:, :, y] = values.flip(0).view(grid, 1)  # row 0, the top, at the largest value (as in the seed notebook)
        images = compute.decode_latents(model, z.flatten(0, 1))  # (G * G, 1, 28, 28)
        rest = "" if model.latent_dim == 2 else f", other {model.latent_dim - 2} latents 0"
        labels = [f"{v + 0.0:.1f}" for v in values.tolist()]
        title = f"decodings on a standard-normal grid{rest}"
        figure = figures.image_rows(images.view(grid, grid, 1, 28, 28), title, labels[::-1], labels)
        figure.axes[0].set(xlabel=f"z[{x}]", ylabel=f"z[{y}]")
        judged = data.judge(images)
        measured = {
            "digits_present": float(judged.digit[judged.clear].unique().numel()),
            "class_changes": float(compute.class_changes(judged.digit.view(grid, grid))),
            "unclear": compute.unclear_fraction(judged.clear),
        }
        return Outcome(figure, measured)
