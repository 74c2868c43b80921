"""Latent traversal (seed experiment 2): what one latent dimension alone changes in a decoding."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt

from vae_lightning.experiments import compute, figures
from vae_lightning.experiments.base import Experiment, ExperimentData, Outcome


@dataclass
class LatentTraversal(Experiment):
    """Experiment 2: one latent dimension set to each of `steps` values from `low` to `high`, the others at the
    image's mu; a row per dimension. Measures: `same_class` (fraction of decodings judged the digit of the image's
    reconstruction), `class_changes` (along a row, averaged over rows), `pixel_distance` (mean |decoding -
    reconstruction|), `reference_distance` (mean |reconstruction of another test image - reconstruction| over the
    first 100 test images: the yardstick for "close").

    Args:
        image_index: which test image.
        dims: the dimensions to sweep; default all.
        low: first value.
        high: last value.
        steps: values per row.
    """

    name = "latent_traversal"
    image_index: NonNegativeInt = 0
    dims: Sequence[NonNegativeInt] | None = None
    low: float = -3.0
    high: float = 3.0
    steps: PositiveInt = 11

    def skip_reason(self, model) -> str | None:
        fits = not self.dims or max(self.dims) < model.latent_dim
        return None if fits else f"dims {list(self.dims)} do not exist in a {model.latent_dim}-latent model"

    def run(self, model, data: ExperimentData) -> Outcome:
        dims = list(self.dims) if self.dims else list(range(model.latent_dim))
        values = torch.linspace(self.low, self.high, self.steps)  # (S,)
        mu, _ = compute.encode_images(model, data.pick("latent_traversal.image_index", [self.image_index]))  # (1, L)
        z = mu.repeat(len(dims) * len(values), 1).view(len(dims), len(values), -1)  # (D, S, L)
        z[range(len(dims)), :, dims] = values  # row d: its dimension swept
        rows = compute.decode_latents(model, z.flatten(0, 1)).view(len(dims), len(values), 1, 28, 28)
        reconstruction = compute.decode_latents(model, mu)  # (1, 1, 28, 28)
        title = f"one latent swept, the rest at mu (test image {self.image_index})"
        labels = [f"z[{d}]" for d in dims], [f"{v + 0.0:.1f}" for v in values.tolist()]
        figure = figures.image_rows(rows, title, *labels)
        judged = data.judge(rows.flatten(0, 1))
        original = data.judge(reconstruction).digit[0]
        measured = {
            "same_class": (judged.digit == original).float().mean().item(),
            "class_changes": sum(compute.class_changes(row) for row in judged.digit.view(len(dims), -1)) / len(dims),
            "pixel_distance": (rows - reconstruction).abs().mean().item(),
            "reference_distance": (compute.reconstruct(model, data.images[:100]) - reconstruction).abs().mean().item(),
        }
        return Outcome(figure, measured)
