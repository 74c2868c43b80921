"""Prior samples (seed experiment 9): what the decoder makes of z ~ N(0, I)."""

from dataclasses import dataclass

import torch
from jsonargparse.typing import PositiveInt

from vae_lightning.errors import ConfigError
from vae_lightning.experiments import compute, figures, measures
from vae_lightning.experiments.base import Experiment, ExperimentData, Outcome


@dataclass
class PriorSamples(Experiment):
    """Experiment 9: decodings of z ~ N(0, I); the figure shows the first `shown`.

    Measures: `unclear` (fraction of `num_samples` decodings judged no clear digit).

    Args:
        num_samples: samples measured.
        shown: samples drawn in the figure, at most num_samples (a square number fills the grid).
        seed: seeds z.
    """

    name = "prior_samples"
    num_samples: PositiveInt = 1000
    shown: PositiveInt = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shown > self.num_samples:
            raise ConfigError(
                f"prior_samples.shown ({self.shown}) is above num_samples ({self.num_samples}): "
                f"lower shown or raise num_samples."
            )

    def run(self, model, data: ExperimentData) -> Outcome:
        z = torch.randn(self.num_samples, model.latent_dim, generator=torch.Generator().manual_seed(self.seed))
        samples = compute.decode_latents(model, z)  # (n, 1, 28, 28)
        unclear = measures.unclear_fraction(data.judge(samples).clear)
        cols = int(self.shown**0.5 + 0.999)
        rows = -(-self.shown // cols)
        grid = torch.ones(rows * cols, 1, 28, 28)  # blank cells after the last shown sample
        grid[: self.shown] = samples[: self.shown]
        figure = figures.image_rows(
            grid.view(rows, cols, 1, 28, 28),
            f"z ~ N(0, I), {model.latent_dim} latents: {unclear:.0%} of {self.num_samples} judged no clear digit",
        )
        return Outcome(figure, {"unclear": unclear})
