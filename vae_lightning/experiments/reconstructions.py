"""Reconstructions: test images beside their reconstructions, and how recognisable these are."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt

from vae_lightning.experiments import compute, figures
from vae_lightning.experiments.base import Experiment, ExperimentData, Outcome


@dataclass
class Reconstructions(Experiment):
    """Test images (top) above their reconstructions decode(mu). Measures, over the first `measured` test images:
    `pixel_error` (mean |x - reconstruction|), `clear` (fraction judged a clear digit), `accuracy` (fraction judged
    the image's own digit).

    Args:
        indices: test-set indices to show; default the first image of each digit.
        measured: how many test images the measures use.
    """

    name = "reconstructions"
    indices: Sequence[NonNegativeInt] | None = None
    measured: PositiveInt = 1000

    def run(self, model, data: ExperimentData) -> Outcome:
        originals = data.pick("reconstructions.indices", self.indices or list(data.first_of_each_digit().values()))
        shown = torch.stack([originals, compute.reconstruct(model, originals)])  # (2, K, 1, 28, 28)
        figure = figures.image_rows(shown, "test images and their reconstructions", ["x", "decode(mu)"])
        images, labels = data.images[: self.measured], data.labels[: self.measured]
        reconstructions = compute.reconstruct(model, images)
        judged = data.judge(reconstructions)
        measured = {
            "pixel_error": (images - reconstructions).abs().mean().item(),
            "clear": judged.clear.float().mean().item(),
            "accuracy": (judged.digit == labels).float().mean().item(),
        }
        return Outcome(figure, measured)
