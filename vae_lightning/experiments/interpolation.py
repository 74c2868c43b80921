"""Interpolation (seed experiment 3): the line between two digits' latents, one shared eps."""

from dataclasses import dataclass
from typing import Literal

import torch

from vae_lightning.errors import ConfigError
from vae_lightning.experiments import compute, figures, measures
from vae_lightning.experiments.base import AtLeastTwo, Experiment, ExperimentData, Outcome
from vae_lightning.objectives import reparameterize

Digit = Literal[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]


@dataclass
class Interpolation(Experiment):
    """Experiment 3: two test images of different digits (the first of each), one shared eps,
    z1 = mu1 + eps * sigma1 and z2 = mu2 + eps * sigma2, `steps` points from z1 to z2 decoded.

    Measures: `class_changes` and `first_change` (step after which the judged digit first changes, -1 if never),
    `endpoints_match` (1 when the first decoding is judged the first digit and the last the second), `unclear`
    (fraction judged no clear digit).

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
        for digit in (a, b):
            if digit not in firsts:
                raise ConfigError(f"interpolation.digits: the test set has no image of a {digit}; choose another.")
        first, second = firsts[a], firsts[b]
        eps = torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(self.seed))  # (L,)
        z1, z2 = reparameterize(*compute.encode_images(model, data.images[[first, second]]), eps)  # (L,) each
        t = torch.linspace(0, 1, self.steps).unsqueeze(1)  # (steps, 1)
        line = compute.decode_latents(model, (1 - t) * z1 + t * z2)  # (steps, 1, 28, 28)
        figure = figures.image_rows(
            torch.cat([data.images[first : first + 1], line, data.images[second : second + 1]]).unsqueeze(0),
            f"from a {a} to a {b} (test images {first}, {second}), one shared eps",
            col_labels=[f"x{a}", *(f"{v:.2f}" for v in t.flatten().tolist()), f"x{b}"],
        )
        judged = data.judge(line)
        changes, places = measures.class_changes(judged.digit)
        measured = {
            "class_changes": float(changes),
            "first_change": float(places[0] if places else -1),
            "endpoints_match": float(judged.digit[0] == a and judged.digit[-1] == b),
            "unclear": measures.unclear_fraction(judged.clear),
        }
        return Outcome(figure, measured)
