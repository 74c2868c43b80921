"""What the explorer shows, computed with torch alone (no web library): a split's posterior, its 2-D map (the plane
`LatentScatter` draws: the latents themselves for 2, else the first two principal components of the posterior
means), and every decoding the page asks for, with the digit classifier's judgement of it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vae_lightning.experiments import compute
from vae_lightning.experiments.classifier import NO_DIGIT, DigitClassifier, judge


@dataclass
class Decoding:
    """One decoded latent and the classifier's judgement of it."""

    z: Tensor  # (L,)
    pixels: Tensor  # (28, 28) in [0, 1]
    digit: int  # 0-9, or NO_DIGIT
    probability: float  # of the top class
    clear: bool  # a digit at probability >= CLEAR_THRESHOLD

    @property
    def verdict(self) -> str:
        """The page's line under the image."""
        if self.digit == NO_DIGIT:
            return f"no digit (p = {self.probability:.2f})"
        return f"judged {self.digit} (p = {self.probability:.2f}, {'clear' if self.clear else 'not clear'})"


class Explorer:
    """A model in eval mode, a split's images (N, 1, 28, 28) in [0, 1] as it sees them with their digits (N,), and
    the digit classifier, with every computation the page needs; `max_sliders` dimensions get a traversal slider,
    the most active (variance of mu) first."""

    def __init__(self, model, images: Tensor, labels: Tensor, classifier: DigitClassifier, max_sliders: int = 10):
        self.model, self.images, self.labels, self.classifier = model, images, labels, classifier
        self.mu, self.logvar = compute.encode_images(model, images)  # (N, L) each
        self.latent_dim = self.mu.shape[1]
        self.origin, self.axes, self.plane = compute.plane_of(self.mu)
        self.points = compute.project(self.mu, self.origin, self.axes)  # (N, 2)
        self.inverse = torch.linalg.pinv(self.axes)  # (L, 2): for PCA's orthonormal axes, their transpose
        self.activity = self.mu.var(0) if len(self.mu) > 1 else torch.zeros(self.latent_dim)  # (L,)
        self.slider_dims = self.activity.argsort(descending=True)[:max_sliders].tolist()

    def z_at(self, x: float, y: float) -> Tensor:
        """The latent (L,) at map point (x, y), by the plane's least-squares inverse (for PCA: the components off
        the plane at the data mean)."""
        return self.origin + self.inverse @ torch.tensor([x, y], dtype=self.inverse.dtype)

    def traversal_z(self, index: int, values: dict[int, float]) -> Tensor:
        """The posterior mean of image `index` with the given dimensions set to the given values."""
        z = self.mu[index].clone()
        z[list(values)] = torch.tensor(list(values.values()), dtype=z.dtype)
        return z

    def interpolation_z(self, first: int, second: int, t: float, eps: Tensor | None) -> Tensor:
        """(1 - t) z1 + t z2, with z_i = mu_i, or, given one shared eps (L,), z_i = mu_i + eps * sigma_i (the seed's
        shared-eps interpolation)."""
        ends = [self.mu[i] + (eps * (0.5 * self.logvar[i]).exp() if eps is not None else 0.0) for i in (first, second)]
        return (1.0 - t) * ends[0] + t * ends[1]

    @torch.no_grad()
    def decode(self, z: Tensor) -> list[Decoding]:
        """Decodings of latents (n, L) or (L,), each judged by the classifier."""
        z = z.reshape(-1, self.latent_dim).float()
        pixels = compute.decode_latents(self.model, z)  # (n, 1, 28, 28)
        judged = judge(self.classifier, pixels)
        top = judged.probs.max(-1).values  # (n,)
        rows = zip(z, pixels[:, 0], judged.digit.tolist(), top.tolist(), judged.clear.tolist())
        return [Decoding(*row) for row in rows]
