"""Interpolation (seed experiment 3): decodings on the line between two digits' latents."""

from dataclasses import dataclass
from typing import Literal

import torch

from vae_lightning.errors import ConfigError
from vae_lightning.experiments import compute, figures
from vae_lightning.experiments.base import AtLeastTwo, Experiment, ExperimentData, Outcome
from vae_lightning.objectives import reparameterize

Digit = Literal[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]


@dataclass
class Interpolation(Experiment):
    """Experiment 3: the first test images of two digits, one shared eps, z1 = mu1 + eps * sigma1 and z2 = mu2 +
    eps * sigma2, `steps` points from z1 to z2 decoded. Measures: `class_changes` and `first_change` (step after
    which the judged digit first changes, -1 if never), `endpoints_match` (1 when the first decoding is judged the
    first digit and the last the second), `unclear` (fraction judged no clear digit).

    Args:
        digits: two different digits.
        steps: points on the line, ends included.
        seed: seeds the shared eps.
    """

    name = "interpolation"
    digits: tuple[Digit, Digit] = (4, 9)
    steps: AtLeastTwo = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.digits[0] == self.digits[1]:
            raise ConfigError(f"interpolation.digits must be two different digits, got {list(self.digits)}.")

    def run(self, model, data: ExperimentData) -> Outcome:
        firsts, (a, b) = data.first_of_each_digit(), self.digits
        if missing := [digit for digit in (a, b) if digit not in firsts]:
            raise ConfigError(f"interpolation.digits: the test set has no image of a {missing[0]}; choose another.")
        ends = data.images[[firsts[a], firsts[b]]]  # (2, 1, 28, 28)
        eps = torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(self.seed))  # (L,)
        z1, z2 = reparameterize(*compute.encode_images(model, ends), eps)  # (L,) each
        t = torch.linspace(0, 1, self.steps).unsqueeze(1)  # (steps, 1)
        line = compute.decode_latents(model, (1 - t) * z1 + t * z2)  # (steps, 1, 28, 28)
        title = f"from a {a} to a {b} (test images {firsts[a]}, {firsts[b]}), one shared eps"
        labels = [f"x{a}", *(f"{v:.2f}" for v in t.flatten().tolist()), f"x{b}"]
        figure = figures.image_rows(torch.cat([ends[:1], line, ends[1:]]).unsqueeze(0), title, col_labels=labels)
        judged = data.judge(line)
        changes = compute.class_changes(judged.digit)
        first = int((judged.digit != judged.digit[0]).int().argmax()) - 1 if changes else -1  # after it, a new digit
        measured = {
            "class_changes": float(changes),
            "first_change": float(first),
            "endpoints_match": float(judged.digit[0] == a and judged.digit[-1] == b),
            "unclear": compute.unclear_fraction(judged.clear),
        }
        return Outcome(figure, measured)
