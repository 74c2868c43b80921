"""What every experiment shares: the `Experiment` base, the test set it runs on and the outcome it returns.

No postponed annotations here or in the experiments' files: jsonargparse 4.53 resolves a subclass's in its own
module alone and leaves every setting unchecked otherwise (tests/test_experiments.py checks that none is)."""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from jsonargparse.typing import restricted_number_type
from matplotlib.figure import Figure
from torch import Tensor

from vae_lightning.errors import ConfigError
from vae_lightning.experiments import compute
from vae_lightning.experiments.classifier import Judgement, digit_classifier, judge
from vae_lightning.projector import Embedding

AtLeastTwo = restricted_number_type("AtLeastTwo", int, (">=", 2))


@dataclass
class ExperimentData:
    """The test split as the model sees it, and where its MNIST files are (for the digit classifier)."""

    images: Tensor  # (N, 1, 28, 28) float pixels in [0, 1], CPU
    labels: Tensor  # (N,)
    data_dir: str
    posterior: tuple[Tensor, Tensor] | None = None  # (mu, logvar), each (N, L), once an experiment needed them

    @classmethod
    def from_datamodule(cls, datamodule) -> "ExperimentData":
        images, labels = datamodule.splits["test"]
        return cls(images.float().div(255).unsqueeze(1).cpu(), labels.cpu(), os.fspath(datamodule.data_dir))

    def judge(self, pixels: Tensor) -> Judgement:
        """The digit classifier's judgement of pixel probabilities (N, 1, 28, 28)."""
        return judge(digit_classifier(self.data_dir)[0], pixels)

    def posterior_of(self, model) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of every image under `model`, encoded once (`Experiments` gathers it across ranks first)."""
        if self.posterior is None:
            self.posterior = compute.encode_images(model, self.images)
        return self.posterior

    def pick(self, field: str, indices: Sequence[int]) -> Tensor:
        """The test images at `indices` (K, 1, 28, 28); an index outside the test set is refused naming `field`."""
        for index in indices:
            if not 0 <= index < len(self.images):
                raise ConfigError(
                    f"{field}={index} is outside the test set (0..{len(self.images) - 1}): choose an index in it."
                )
        return self.images[list(indices)]

    def first_of_each_digit(self) -> dict[int, int]:
        """The index of the first test image of each digit the test set holds, by digit."""
        return {int(digit): int((self.labels == digit).nonzero()[0]) for digit in self.labels.unique()}


@dataclass
class Outcome:
    figure: Figure
    measures: dict[str, float]  # logged as exp/<name>/<measure>
    embedding: Embedding | None = None  # points for the loggers' projectors


class Experiment:
    """One experiment: `run(model, data)` draws a figure and measures numbers, a pure function of the model's
    weights and the test set. A subclass is a dataclass registered in `registry.EXPERIMENTS`, whose fields are its
    settings: their types (`jsonargparse.typing`, `Literal`) refuse a bad value by name, its `Args:` become
    `--help`, and rules across fields raise a ConfigError in `__post_init__`."""

    name: ClassVar[str]  # `experiments.names`, `exp/<name>/<measure>`, `--<name>.<setting>`
    uses_posterior: ClassVar[bool] = False  # reads (mu, logvar) of the whole test set: encoded once, shared

    def skip_reason(self, model) -> str | None:
        """Why this experiment does not fit the model (say, too few latents), or None when it does."""
        return None

    def run(self, model, data: ExperimentData) -> Outcome:
        raise NotImplementedError
