"""Epsilon sweep (seed experiments 1 and 6): how much the decoding of one image moves as z leaves mu."""

from dataclasses import dataclass

import torch
from jsonargparse.typing import NonNegativeInt, PositiveFloat

from vae_lightning.errors import ConfigError
from vae_lightning.experiments import compute, figures, measures
from vae_lightning.experiments.base import Experiment, ExperimentData, Outcome
from vae_lightning.objectives import reparameterize


@dataclass
class EpsilonSweep(Experiment):
    """Experiments 1 and 6: z = mu + eps * sigma for one test image, the same eps in every dimension, eps from
    `eps_start` to `eps_stop` in steps of `eps_step` (the seed: 0.00 to 0.95 by 0.05).

    Measures: `spread` (mean per-pixel standard deviation across the sweep's decodings; 0 when they are
    identical), `reference_spread` (the same across the reconstructions of 20 different test images: the
    yardstick for "alike"), `mean_sigma` (posterior sigma averaged over the test set and dimensions),
    `class_changes` (changes of the judged digit along the sweep), `unclear` (fraction of the sweep judged no
    clear digit).

    Args:
        image_index: which test image.
        eps_start: first eps.
        eps_stop: last eps (included; at least eps_start).
        eps_step: spacing.
    """

    name = "epsilon_sweep"
    uses_posterior = True
    image_index: NonNegativeInt = 0
    eps_start: float = 0.0
    eps_stop: float = 0.95
    eps_step: PositiveFloat = 0.05

    def __post_init__(self) -> None:
        if self.eps_stop < self.eps_start:
            raise ConfigError(
                f"epsilon_sweep.eps_stop ({self.eps_stop}) is below eps_start ({self.eps_start}): "
                f"raise eps_stop or lower eps_start."
            )

    def run(self, model, data: ExperimentData) -> Outcome:
        eps = torch.arange(self.eps_start, self.eps_stop + self.eps_step / 2, self.eps_step)  # (S,)
        mu, logvar = compute.encode_images(model, data.pick("epsilon_sweep.image_index", [self.image_index]))  # (1, L)
        decodings = compute.decode_latents(model, reparameterize(mu, logvar, eps.view(-1, 1)))  # (S, 1, 28, 28)
        spread = measures.sweep_spread(decodings)
        figure = figures.image_rows(
            decodings.unsqueeze(0),
            f"z = mu + eps * sigma, test image {self.image_index}, spread {spread:.4f}",
            col_labels=[f"{e:.2f}" for e in eps.tolist()],
        )
        judged = data.judge(decodings)
        mu, logvar = data.posterior_of(model)
        measured = {
            "spread": spread,
            "reference_spread": measures.sweep_spread(compute.decode_latents(model, mu[:20])),  # 20 other images
            "mean_sigma": measures.mean_posterior_sigma(logvar),
            "class_changes": float(measures.class_changes(judged.digit)[0]),
            "unclear": measures.unclear_fraction(judged.clear),
        }
        return Outcome(figure, measured)
