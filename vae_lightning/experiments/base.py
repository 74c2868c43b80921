"""What every experiment shares: the `Experiment` base, the test set it runs on and the `Outcome` it returns.

No postponed annotations here or in the experiments' files: jsonargparse 4.53 resolves a subclass's in its own
module alone and leaves every setting unchecked otherwise (tests/test_experiments.py checks that none is)."""

import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
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
    """A split (the experiments': test) as the model sees it, and where its MNIST files are (for the classifier)."""

    images: Tensor  # (N, 1, 28, 28) float pixels in [0, 1], CPU
    labels: Tensor  # (N,)
    data_dir: str
    posterior: tuple[Tensor, Tensor] | None = None  # (mu, logvar), each (N, L), once encoded

    @classmethod
    def from_datamodule(cls, datamodule, split: str = "test") -> "ExperimentData":
        images, labels = datamodule.splits[split]
        return cls(images.float().div(255).unsqueeze(1).cpu(), labels.cpu(), os.fspath(datamodule.data_dir))

    def judge(self, pixels: Tensor) -> Judgement:
        return judge(digit_classifier(self.data_dir)[0], pixels)

    def posterior_of(self, model) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of every image, encoded once (`Experiments` gathers it across ranks beforehand)."""
        if self.posterior is None:
            self.posterior = compute.encode_images(model, self.images)
        return self.posterior

    def pick(self, field: str, indices: Sequence[int]) -> Tensor:
        """The test images at `indices` (K, 1, 28, 28); an index outside the test set is refused naming `field`."""
        last = len(self.images) - 1
        if outside := [i for i in indices if not 0 <= i <= last]:
            raise ConfigError(f"{field}={outside[0]} is outside the test set (0..{last}): choose an index in it.")
        return self.images[list(indices)]

    def first_of_each_digit(self) -> dict[int, int]:
        return {int(digit): int((self.labels == digit).nonzero()[0]) for digit in self.labels.unique()}


@dataclass
class Outcome:
    figure: Figure
    measures: dict[str, float]  # logged as exp/<name>/<measure>
    embedding: Embedding | None = None  # points for the loggers' projectors


class Experiment:
    """A dataclass whose `run(model, data)` draws a figure and measures numbers from the model's weights and the
    test set alone. Its fields are its settings, typed to refuse bad values by name; its `Args:` become `--help`;
    `ordered` and `__post_init__` raise a ConfigError for rules across fields. Listed by `name` in `EXPERIMENTS`."""

    name: ClassVar[str]  # `experiments.names`, `exp/<name>/<measure>`, `--<name>.<setting>`
    ordered: ClassVar[tuple[str, ...]] = ()  # settings that must not decrease in this order, e.g. (start, stop)

    def __post_init__(self) -> None:
        for low, high in pairwise(self.ordered):
            if (a := getattr(self, low)) > (b := getattr(self, high)):
                raise ConfigError(f"{self.name}.{low} ({a}) is above {high} ({b}): lower {low} or raise {high}.")

    def skip_reason(self, model) -> str | None:
        """Why this experiment does not fit the model (say, too few latents), or None when it does."""
        return None

    def run(self, model, data: ExperimentData) -> Outcome:
        raise NotImplementedError
