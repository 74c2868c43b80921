"""Prior samples (seed experiment 9): decodings of z ~ N(0, I)."""

import math
from dataclasses import dataclass

import torch
from jsonargparse.typing import PositiveInt

from vae_lightning.experiments import compute, figures
from vae_lightning.experiments.base import Experiment, ExperimentData, Outcome


@dataclass
class PriorSamples(Experiment):
    """Experiment 9: decodings of z ~ N(0, I), the first `shown` in the figure. Measures: `unclear` (fraction of
    `num_samples` decodings judged no clear digit).

    Args:
        num_samples: samples measured.
        shown: samples drawn in the figure, at most num_samples (a square number fills the grid).
        seed: seeds z.
    """

    name = "prior_samples"
    num_samples: PositiveInt = 1000
    shown: PositiveInt = 100
    seed: int = 0
    ordered = ("shown", "num_samples")

    def run(self, model, data: ExperimentData) -> Outcome:
        z = torch.randn(self.num_samples, model.latent_dim, generator=torch.Generator().manual_seed(self.seed))
        samples = compute.decode_latents(model, z)  # (n, 1, 28, 28)
        unclear = compute.unclear_fraction(data.judge(samples).clear)
        cols = math.ceil(self.shown**0.5)
        rows = math.ceil(self.shown / cols)
        blanks = torch.ones(rows * cols - self.shown, 1, 28, 28)  # white cells after the last shown sample
        grid = torch.cat([samples[: self.shown], blanks]).view(rows, cols, 1, 28, 28)
        title = f"z ~ N(0, I), {model.latent_dim} latents: {unclear:.0%} of {self.num_samples} judged no clear digit"
        return Outcome(figures.image_rows(grid, title), {"unclear": unclear})
