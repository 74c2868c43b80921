"""What the explorer shows, computed with torch alone (no web library): a split's posterior, its 2-D map, and
every decoding the page asks for with the digit classifier's judgement of it.

The map is the plane the `LatentScatter` experiment draws (`compute.plane_of`): the latents themselves for
2 latents, else the first two principal components of the posterior means. A point (x, y) of a PCA plane is
mapped back to z = mean + x * axis_1 + y * axis_2: the components off the plane stay at the data mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vae_lightning.experiments import compute
from vae_lightning.experiments.classifier import NO_DIGIT, DigitClassifier, judge


@dataclass
class Decoding:
    """One decoded latent: its z, pixel probabilities (28, 28), the judged digit and the classifier's confidence."""

    z: Tensor  # (L,)
    pixels: Tensor  # (28, 28) in [0, 1]
    digit: int  # 0-9, or NO_DIGIT
    probability: float  # of the top class
    clear: bool  # a digit at probability >= CLEAR_THRESHOLD

    @property
    def verdict(self) -> str:
        """The page's line under the image: the judged digit and how sure the classifier is."""
        if self.digit == NO_DIGIT:
            return f"no digit (p = {self.probability:.2f})"
        return f"judged {self.digit} (p = {self.probability:.2f}, {'clear' if self.clear else 'not clear'})"


class Explorer:
    """A model, one split of images and the digit classifier, with every computation the page needs.

    Args:
        model: a trained `VAELitModule` in eval mode.
        images: (N, 1, 28, 28) pixels in [0, 1], as the model sees them.
        labels: (N,) digits.
        classifier: the package's digit classifier (experiments.classifier).
        max_sliders: how many latent dimensions get a traversal slider: the most active first (largest
            variance of mu over the split).
    """

    def __init__(
        self, model, images: Tensor, labels: Tensor, classifier: DigitClassifier, max_sliders: int = 10
    ) -> None:
        self.model, self.images, self.labels, self.classifier = model, images, labels, classifier
        self.mu, self.logvar = compute.encode_images(model, images)
        self.origin, self.axes, self.plane = compute.plane_of(self.mu)
        self.points = compute.project(self.mu, self.origin, self.axes)  # (N, 2)
        self.inverse = torch.linalg.pinv(self.axes)  # (L, 2): for PCA's orthonormal axes, their transpose
        activity = self.mu.var(0) if len(self.mu) > 1 else torch.zeros(self.mu.shape[1])
        self.slider_dims = activity.argsort(descending=True)[:max_sliders].tolist()
        self.activity = activity

    @property
    def latent_dim(self) -> int:
        return self.mu.shape[1]

    def z_at(self, x: float, y: float) -> Tensor:
        """The latent (L,) at map point (x, y): the plane's least-squares inverse (for PCA: the other
        components at the data mean)."""
        return self.origin + self.inverse @ torch.tensor([x, y], dtype=self.inverse.dtype)

    def traversal_z(self, index: int, values: dict[int, float]) -> Tensor:
        """The posterior mean of image `index` with the given dimensions set to the given values."""
        z = self.mu[index].clone()
        for dim, value in values.items():
            z[dim] = value
        return z

    def interpolation_z(self, first: int, second: int, t: float, eps: Tensor | None) -> Tensor:
        """(1 - t) z1 + t z2, with z_i = mu_i, or, given one shared eps (L,), z_i = mu_i + eps * sigma_i (the seed's
        shared-eps interpolation)."""
        ends = [self.mu[i] + (eps * (0.5 * self.logvar[i]).exp() if eps is not None else 0.0) for i in (first, second)]
        return (1.0 - t) * ends[0] + t * ends[1]

    def prior_z(self, n: int, seed: int) -> Tensor:
        """n draws (n, L) of z ~ N(0, I), seeded."""
        return torch.randn(n, self.latent_dim, generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def decode(self, z: Tensor) -> list[Decoding]:
        """Decodings of latents (n, L) or (L,), each judged by the classifier."""
        z = z.reshape(-1, self.latent_dim).float()
        pixels = compute.decode_latents(self.model, z)  # (n, 1, 28, 28)
        judged = judge(self.classifier, pixels)
        top = judged.probs.max(-1).values
        return [
            Decoding(z[i], pixels[i, 0], int(judged.digit[i]), float(top[i]), bool(judged.clear[i]))
            for i in range(len(z))
        ]
