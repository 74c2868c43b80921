"""Epsilon sweep (seed experiments 1 and 6): how much sampling around one image's mean changes its decoding."""

from dataclasses import dataclass

import torch
from jsonargparse.typing import NonNegativeInt, PositiveFloat

from vae_lightning.experiments import compute, figures
from vae_lightning.experiments.base import Experiment, ExperimentData, Outcome
from vae_lightning.objectives import reparameterize


@dataclass
class EpsilonSweep(Experiment):
    """Experiments 1 and 6: z = mu + eps * sigma of one test image, one eps in every dimension. Measures: `spread`
    (mean per-pixel standard deviation across the decodings; 0 when identical), `reference_spread` (the same across
    the reconstructions of 20 test images: the yardstick for "alike"), `mean_sigma` (posterior sigma averaged over
    the test set and dimensions), `class_changes` (of the judged digit along the sweep), `unclear` (fraction judged
    no clear digit).

    Args:
        image_index: which test image.
        eps_start: first eps.
        eps_stop: last eps (included; at least eps_start).
        eps_step: spacing.
    """

    name = "epsilon_sweep"
    image_index: NonNegativeInt = 0
    eps_start: float = 0.0
    eps_stop: float = 0.95
    eps_step: PositiveFloat = 0.05
    ordered = ("eps_start", "eps_stop")

    def run(self, model, data: ExperimentData) -> Outcome:
        eps = torch.arange(self.eps_start, self.eps_stop + self.eps_step / 2, self.eps_step)  # (S,)
        mu, logvar = compute.encode_images(model, data.pick("epsilon_sweep.image_index", [self.image_index]))  # (1, L)
        decodings = compute.decode_latents(model, reparameterize(mu, logvar, eps.view(-1, 1)))  # (S, 1, 28, 28)
        spread = compute.sweep_spread(decodings)
        title = f"z = mu + eps * sigma, test image {self.image_index}, spread {spread:.4f}"
        figure = figures.image_rows(decodings.unsqueeze(0), title, col_labels=[f"{e:.2f}" for e in eps.tolist()])
        judged = data.judge(decodings)
        mu, logvar = data.posterior_of(model)
        measured = {
            "spread": spread,
            "reference_spread": compute.sweep_spread(compute.decode_latents(model, mu[:20])),
            "mean_sigma": logvar.mul(0.5).exp().mean().item(),
            "class_changes": float(compute.class_changes(judged.digit)),
            "unclear": compute.unclear_fraction(judged.clear),
        }
        return Outcome(figure, measured)
