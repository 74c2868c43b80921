"""Latent manifold (seed experiment 4): decodings of a grid over two latent dimensions."""

from dataclasses import dataclass

from jsonargparse.typing import NonNegativeInt, OpenUnitInterval, PositiveInt

from vae_lightning.errors import ConfigError
from vae_lightning.experiments import compute, measures, render
from vae_lightning.experiments.base import Experiment, ExperimentData, Outcome


@dataclass
class LatentManifold(Experiment):
    """Experiment 4: a `grid` x `grid` lattice of z at standard-normal quantiles from `low` to `high` in
    two latent dimensions (the others 0), decoded.

    Measures: `digits_present` (distinct digits judged clear somewhere on the grid),
    `class_changes` (adjacent cells judged different), `unclear` (fraction judged no clear digit).

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
        dims = tuple(self.dims)
        if model.latent_dim < 2 or max(dims) >= model.latent_dim or dims[0] == dims[1]:
            return f"dims {dims} are not two distinct dimensions of a {model.latent_dim}-latent model"
        return None

    def run(self, model, data: ExperimentData) -> Outcome:
        values = compute.normal_quantiles(self.grid, self.low, self.high)
        images = compute.latent_manifold(model, values, self.dims)  # (G, G, 1, 28, 28)
        rest = "" if model.latent_dim == 2 else f", other {model.latent_dim - 2} latents 0"
        figure = render.manifold(images, values, self.dims, f"decodings on a standard-normal grid{rest}")
        judged = data.judge(images.flatten(0, 1))
        return Outcome(
            figure,
            {
                "digits_present": float(judged.digit[judged.clear].unique().numel()),
                "class_changes": float(measures.grid_class_changes(judged.digit.view(self.grid, self.grid))),
                "unclear": measures.unclear_fraction(judged.clear),
            },
        )
