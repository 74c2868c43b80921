"""The seed project's experiments as Lightning callbacks, one per experiment.

Each callback's `run(model, data)` is pure (a model and the test set in, a figure and numbers out);
the Lightning hook only schedules it, gathers what it needs on every rank, and on rank 0 publishes
the figure (every image logger + PNG) and logs the numbers as `exp/<experiment>/<measure>`.
The post-hoc command `vae-lightning-experiments` calls the same `run`.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.datasets import MNIST

from vae_lightning.distributed import gather_rows
from vae_lightning.errors import ConfigError, check_choice, check_int
from vae_lightning.experiments import compute, measures, render
from vae_lightning.experiments.classifier import DigitClassifier, Judgement, cached_classifier, judge
from vae_lightning.experiments.figures import figure_dir, publish
from vae_lightning.projector import Embedding, to_projectors

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4)
def digit_classifier(data_dir: str) -> tuple[DigitClassifier, dict[str, float]]:
    """The cached digit classifier for the MNIST files in `data_dir` (trained there once)."""
    train, test = MNIST(data_dir, train=True), MNIST(data_dir, train=False)
    return cached_classifier(data_dir, train.data, train.targets, test.data, test.targets)


@dataclass
class ExperimentData:
    """The test split as the model sees it, and where its MNIST files are (for the classifier)."""

    images: Tensor  # (N, 1, 28, 28) float pixels in [0, 1], CPU
    labels: Tensor  # (N,)
    data_dir: str
    posterior: tuple[Tensor, Tensor] | None = None  # (mu, logvar), each (N, L), once an experiment needed them

    def judge(self, pixels: Tensor) -> Judgement:
        return judge(digit_classifier(self.data_dir)[0], pixels)

    def posterior_of(self, model) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of every image under `model`, encoded once (callbacks gather it across ranks first)."""
        if self.posterior is None:
            self.posterior = compute.encode_images(model, self.images)
        return self.posterior

    def first_of_digit(self, digit: int) -> int:
        hits = (self.labels == digit).nonzero()
        if not len(hits):
            raise ConfigError(f"the test set has no image of digit {digit}: choose other digits.")
        return int(hits[0])

    @classmethod
    def from_datamodule(cls, datamodule) -> ExperimentData:
        images, labels = datamodule.splits["test"]
        return cls(images.float().div(255).unsqueeze(1).cpu(), labels.cpu(), os.fspath(datamodule.data_dir))


def sharded_posterior(module: LightningModule, images: Tensor) -> tuple[Tensor, Tensor]:
    """(mu, logvar) of all images: each rank encodes its share, every rank gets all (call on every rank)."""
    trainer = module._trainer
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    index = torch.arange(rank, len(images), world)
    mu, logvar = compute.encode_images(module, images[index])
    index, mu, logvar = (gather_rows(module, t).cpu() for t in (index, mu, logvar))
    order = index.argsort()
    return mu[order], logvar[order]


@dataclass
class Outcome:
    figure: Figure
    measures: dict[str, float]
    embedding: Embedding | None = None  # points for the loggers' projectors


class Experiment(Callback):
    """Runs one experiment at the end of every `every_n_epochs`-th validation epoch.

    Args:
        every_n_epochs: run after validation epochs n, 2n, ...
    """

    name: ClassVar[str]
    uses_posterior: ClassVar[bool] = False  # needs the posterior of the whole test set

    def __init__(self, every_n_epochs: int = 1) -> None:
        self.every_n_epochs = check_int(f"{type(self).__name__}.every_n_epochs", every_n_epochs)
        self.last_png: Path | None = None

    def skip_reason(self, model) -> str | None:
        """Why this experiment does not fit the model, or None when it does."""
        return None

    def run(self, model, data: ExperimentData) -> Outcome:
        raise NotImplementedError

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        prepare(trainer, pl_module, [self])

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run_due(trainer, pl_module, [self])


def will_run(trainer: Trainer, module: LightningModule, experiment: Experiment) -> bool:
    """Whether `experiment` fits the model and one of the epochs this fit still trains ends in its turn."""
    if experiment.skip_reason(module) is not None:
        return False
    if trainer.max_epochs is None or trainer.max_epochs < 0:  # no epoch limit
        return True
    val_every = trainer.check_val_every_n_epoch or 1
    return any(
        (epoch + 1) % experiment.every_n_epochs == 0 and (epoch + 1) % val_every == 0
        for epoch in range(trainer.current_epoch, trainer.max_epochs)
    )


def prepare(trainer: Trainer, module: LightningModule, experiments: Sequence[Experiment]) -> None:
    """At the start of training (after a resume has set the epoch): say which experiments do not fit the
    model and are skipped, and train (or load) the digit classifier, before the first epoch rather than in
    the middle of training, and only when an experiment will run in this fit."""
    if not trainer.is_global_zero:
        return
    for experiment in experiments:
        reason = experiment.skip_reason(module)
        if reason is not None:
            log.info("Experiment %s skipped: %s; its numbers are not reported.", experiment.name, reason)
    if any(will_run(trainer, module, e) for e in experiments):
        digit_classifier(os.fspath(trainer.datamodule.data_dir))


def run_due(trainer: Trainer, module: LightningModule, experiments: Sequence[Experiment]) -> None:
    """Run the experiments due after this validation epoch on one copy of the test set (and its posterior,
    encoded once and gathered across ranks when one needs it); rank 0 publishes. Call on every rank."""
    due = [
        e
        for e in experiments
        if not trainer.sanity_checking
        and (trainer.current_epoch + 1) % e.every_n_epochs == 0
        and e.skip_reason(module) is None
    ]
    if not due:
        return
    folder = figure_dir(trainer)  # every rank: trainer.log_dir broadcasts
    data = ExperimentData.from_datamodule(trainer.datamodule)
    if any(e.uses_posterior for e in due):
        data.posterior = sharded_posterior(module, data.images)  # every rank: gathers
    if not trainer.is_global_zero:
        return
    was_training = module.training
    module.eval()
    try:
        for experiment in due:
            outcome = experiment.run(module, data)
            experiment.last_png = publish(trainer, f"exp/{experiment.name}", outcome.figure, folder)
            if outcome.embedding is not None:
                to_projectors(trainer.loggers, f"exp/{experiment.name}", outcome.embedding, trainer.global_step)
            for key, value in outcome.measures.items():
                module.log(f"exp/{experiment.name}/{key}", float(value), rank_zero_only=True)
    finally:
        module.train(was_training)


def _check_index(name: str, index: int, data: ExperimentData) -> int:
    if not 0 <= index < len(data.images):
        raise ConfigError(f"{name}={index} is outside the test set (0..{len(data.images) - 1}).")
    return index


class Reconstructions(Experiment):
    """Test images (top) beside their reconstructions decode(mu) (bottom), one per digit by default.

    Measures, over the first `measured` test images: `pixel_error` (mean |x - reconstruction|),
    `clear` (fraction judged a clear digit), `accuracy` (fraction judged the image's own digit).

    Args:
        indices: test-set indices to show; default the first image of each digit.
        measured: how many test images the measures use.
        every_n_epochs: run after validation epochs n, 2n, ...
    """

    name = "reconstructions"

    def __init__(self, indices: Sequence[int] | None = None, measured: int = 1000, every_n_epochs: int = 1):
        super().__init__(every_n_epochs)
        for index in indices or ():
            check_int("reconstructions.indices", index, minimum=0)
        self.indices, self.measured = indices, check_int("reconstructions.measured", measured)

    def run(self, model, data: ExperimentData) -> Outcome:
        shown = (
            list(self.indices)
            if self.indices
            else [data.first_of_digit(d) for d in range(10) if (data.labels == d).any()]
        )
        originals = data.images[[_check_index("reconstructions.indices", i, data) for i in shown]]
        figure = render.image_rows(
            torch.stack([originals, compute.reconstruct(model, originals)]),
            "test images (top) and reconstructions decode(mu) (bottom)",
            row_labels=["x", "decode(mu)"],
        )
        images, labels = data.images[: self.measured], data.labels[: self.measured]
        reconstructions = compute.reconstruct(model, images)
        judged = data.judge(reconstructions)
        return Outcome(
            figure,
            {
                "pixel_error": (images - reconstructions).abs().mean().item(),
                "clear": judged.clear.float().mean().item(),
                "accuracy": (judged.digit == labels).float().mean().item(),
            },
        )


class EpsilonSweep(Experiment):
    """Experiments 1 and 6: z = mu + eps * sigma for one test image, the same eps in every dimension,
    eps from `eps_start` to `eps_stop` in steps of `eps_step` (the seed: 0.00 to 0.95 by 0.05).

    Measures: `spread` (mean per-pixel standard deviation across the sweep's decodings; 0 when they
    are identical), `reference_spread` (the same across the reconstructions of 20 different test
    images: the yardstick for "alike"), `mean_sigma` (posterior sigma averaged over the test set and
    dimensions), `class_changes` (changes of the judged digit along the sweep), `unclear` (fraction
    of the sweep judged no clear digit).

    Args:
        image_index: which test image.
        eps_start: first eps.
        eps_stop: last eps (included).
        eps_step: spacing.
        every_n_epochs: run after validation epochs n, 2n, ...
    """

    name = "epsilon_sweep"
    uses_posterior = True

    def __init__(
        self,
        image_index: int = 0,
        eps_start: float = 0.0,
        eps_stop: float = 0.95,
        eps_step: float = 0.05,
        every_n_epochs: int = 1,
    ):
        super().__init__(every_n_epochs)
        if not eps_step > 0 or eps_stop < eps_start:
            raise ConfigError("EpsilonSweep needs eps_step > 0 and eps_stop >= eps_start.")
        check_int("epsilon_sweep.image_index", image_index, minimum=0)
        self.image_index, self.eps = image_index, torch.arange(eps_start, eps_stop + eps_step / 2, eps_step)

    def run(self, model, data: ExperimentData) -> Outcome:
        image = data.images[_check_index("epsilon_sweep.image_index", self.image_index, data)]
        decodings = compute.epsilon_sweep(model, image, self.eps)  # (S, 1, 28, 28)
        spread = measures.sweep_spread(decodings)
        figure = render.image_rows(
            decodings.unsqueeze(0),
            f"z = mu + eps * sigma, test image {self.image_index}, spread {spread:.4f}",
            col_labels=[f"{e:.2f}" for e in self.eps.tolist()],
        )
        judged = data.judge(decodings)
        posterior = data.posterior_of(model)
        others = compute.decode_latents(model, posterior[0][:20])  # reconstructions of 20 different images
        return Outcome(
            figure,
            {
                "spread": spread,
                "reference_spread": measures.sweep_spread(others),
                "mean_sigma": measures.mean_posterior_sigma(posterior[1]),
                "class_changes": float(measures.class_changes(judged.digit)[0]),
                "unclear": measures.unclear_fraction(judged.clear),
            },
        )


class LatentTraversal(Experiment):
    """Experiment 2: one latent dimension set to each of `steps` values from `low` to `high`, the others
    at the image's mu; one row per dimension.

    Measures: `same_class` (fraction of decodings judged the digit of the image's reconstruction),
    `class_changes` (changes along a row, averaged over rows), `pixel_distance` (mean |decoding -
    reconstruction|), `reference_distance` (mean |reconstruction of another test image -
    reconstruction|, over the first 100 test images: the yardstick for "close").

    Args:
        image_index: which test image.
        dims: the dimensions to sweep; default all.
        low: first value.
        high: last value.
        steps: values per row.
        every_n_epochs: run after validation epochs n, 2n, ...
    """

    name = "latent_traversal"

    def __init__(
        self,
        image_index: int = 0,
        dims: Sequence[int] | None = None,
        low: float = -3.0,
        high: float = 3.0,
        steps: int = 11,
        every_n_epochs: int = 1,
    ):
        super().__init__(every_n_epochs)
        check_int("latent_traversal.image_index", image_index, minimum=0)
        for dim in dims or ():
            check_int("latent_traversal.dims", dim, minimum=0)
        check_int("latent_traversal.steps", steps)
        self.image_index, self.dims, self.values = image_index, dims, torch.linspace(low, high, steps)

    def skip_reason(self, model) -> str | None:
        if self.dims and max(self.dims) >= model.latent_dim:
            return f"dims {list(self.dims)} do not exist in a {model.latent_dim}-latent model"
        return None

    def run(self, model, data: ExperimentData) -> Outcome:
        dims = list(self.dims) if self.dims else list(range(model.latent_dim))
        image = data.images[_check_index("latent_traversal.image_index", self.image_index, data)]
        rows = compute.latent_traversal(model, image, dims, self.values)  # (D, S, 1, 28, 28)
        reconstruction = compute.reconstruct(model, image.unsqueeze(0))
        figure = render.image_rows(
            rows,
            f"one latent swept, the rest at mu (test image {self.image_index})",
            row_labels=[f"z[{d}]" for d in dims],
            col_labels=[f"{v + 0.0:.1f}" for v in self.values.tolist()],
        )
        judged = data.judge(rows.flatten(0, 1))
        original = data.judge(reconstruction).digit[0]
        digits = judged.digit.view(len(dims), -1)
        others = compute.reconstruct(model, data.images[:100])
        return Outcome(
            figure,
            {
                "same_class": (judged.digit == original).float().mean().item(),
                "class_changes": sum(measures.class_changes(row)[0] for row in digits) / len(dims),
                "pixel_distance": (rows - reconstruction).abs().mean().item(),
                "reference_distance": (others - reconstruction).abs().mean().item(),
            },
        )


class Interpolation(Experiment):
    """Experiment 3: two test images of different digits (the first of each), one shared eps,
    z1 = mu1 + eps * sigma1 and z2 = mu2 + eps * sigma2, `steps` points from z1 to z2 decoded.

    Measures: `class_changes` and `first_change` (step after which the judged digit first changes,
    -1 if never), `endpoints_match` (1 when the first decoding is judged the first digit and the
    last the second), `unclear` (fraction judged no clear digit).

    Args:
        digits: the two digits.
        steps: points on the line, ends included.
        seed: seeds the shared eps.
        every_n_epochs: run after validation epochs n, 2n, ...
    """

    name = "interpolation"

    def __init__(self, digits: tuple[int, int] = (4, 9), steps: int = 20, seed: int = 0, every_n_epochs: int = 1):
        super().__init__(every_n_epochs)
        if len(digits) != 2 or digits[0] == digits[1] or not all(d in range(10) for d in digits):
            raise ConfigError(f"Interpolation.digits must be two different digits, got {digits!r}.")
        check_int("interpolation.steps", steps, minimum=2)
        self.digits, self.steps, self.seed = tuple(digits), steps, seed

    def run(self, model, data: ExperimentData) -> Outcome:
        first, second = (data.first_of_digit(d) for d in self.digits)
        eps = torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(self.seed))
        line = compute.interpolation(model, data.images[first], data.images[second], self.steps, eps)
        shown = torch.cat([data.images[first : first + 1], line, data.images[second : second + 1]])
        labels = [f"x{self.digits[0]}"] + [f"{t:.2f}" for t in torch.linspace(0, 1, self.steps).tolist()]
        figure = render.image_rows(
            shown.unsqueeze(0),
            f"from a {self.digits[0]} to a {self.digits[1]} (test images {first}, {second}), one shared eps",
            col_labels=labels + [f"x{self.digits[1]}"],
        )
        judged = data.judge(line)
        changes, places = measures.class_changes(judged.digit)
        return Outcome(
            figure,
            {
                "class_changes": float(changes),
                "first_change": float(places[0] if places else -1),
                "endpoints_match": float(judged.digit[0] == self.digits[0] and judged.digit[-1] == self.digits[1]),
                "unclear": measures.unclear_fraction(judged.clear),
            },
        )


class LatentManifold(Experiment):
    """Experiment 4: a `grid` x `grid` lattice of z at standard-normal quantiles from `low` to `high` in
    two latent dimensions (the others 0), decoded.

    Measures: `digits_present` (distinct digits judged clear somewhere on the grid),
    `class_changes` (adjacent cells judged different), `unclear` (fraction judged no clear digit).

    Args:
        grid: cells per side.
        low: lowest quantile.
        high: highest quantile.
        dims: the two latent dimensions.
        every_n_epochs: run after validation epochs n, 2n, ...
    """

    name = "latent_manifold"

    def __init__(
        self,
        grid: int = 15,
        low: float = 0.01,
        high: float = 0.99,
        dims: tuple[int, int] = (0, 1),
        every_n_epochs: int = 1,
    ):
        super().__init__(every_n_epochs)
        if not 0 < low < high < 1:
            raise ConfigError(f"LatentManifold needs 0 < low < high < 1, got {low}, {high}.")
        check_int("latent_manifold.grid", grid)
        for dim in dims:
            check_int("latent_manifold.dims", dim, minimum=0)
        self.dims, self.values = tuple(dims), compute.normal_quantiles(grid, low, high)

    def skip_reason(self, model) -> str | None:
        if model.latent_dim < 2 or max(self.dims) >= model.latent_dim or self.dims[0] == self.dims[1]:
            return f"dims {self.dims} are not two distinct dimensions of a {model.latent_dim}-latent model"
        return None

    def run(self, model, data: ExperimentData) -> Outcome:
        images = compute.latent_manifold(model, self.values, self.dims)  # (G, G, 1, 28, 28)
        rest = "" if model.latent_dim == 2 else f", other {model.latent_dim - 2} latents 0"
        figure = render.manifold(images, self.values, self.dims, f"decodings on a standard-normal grid{rest}")
        judged = data.judge(images.flatten(0, 1))
        grid = len(self.values)
        return Outcome(
            figure,
            {
                "digits_present": float(judged.digit[judged.clear].unique().numel()),
                "class_changes": float(measures.grid_class_changes(judged.digit.view(grid, grid))),
                "unclear": measures.unclear_fraction(judged.clear),
            },
        )


class LatentScatter(Experiment):
    """Experiments 5, 7, 8: posterior means of the test set coloured by digit (for more than 2 latents,
    their first two principal components, named in the title), beside the decodings of a `grid` x
    `grid` lattice of cells over the box the points fill (their 1st-99th percentiles).

    Measures: `knn_accuracy` (held-out k-NN accuracy of the digit from mu, in all latent dims),
    `silhouette` (of the digit classes in latent space), `mean_norm`, `spread`, `cov_distance` and
    `active_units` of mu against N(0, I) (see `measures.prior_fit`), `box_unclear` (share of the
    cells whose centre decodes to no clear digit), `empty_share` (share of cells no test latent falls
    in: the empty regions between digits) and `empty_unclear` (share of those empty cells that
    decode to no clear digit; 0 when there are none).

    Args:
        max_points: plot and measure at most this many test images (default all).
        knn_k: neighbours for the k-NN accuracy.
        grid: cells per side of the box.
        every_n_epochs: run after validation epochs n, 2n, ...
        projector: also send the plotted points, in all latent dimensions, with their digits and images,
            to the attached TensorBoard and W&B loggers' embedding projectors (`vae_lightning.projector`).
    """

    name = "latent_scatter"
    uses_posterior = True

    def __init__(
        self,
        max_points: int | None = None,
        knn_k: int = 5,
        grid: int = 15,
        every_n_epochs: int = 1,
        projector: bool = False,
    ):
        super().__init__(every_n_epochs)
        if max_points is not None:
            check_int("latent_scatter.max_points", max_points, minimum=2)
        check_int("latent_scatter.knn_k", knn_k)
        check_int("latent_scatter.grid", grid)
        self.max_points, self.knn_k, self.grid, self.projector = max_points, knn_k, grid, projector

    def skip_reason(self, model) -> str | None:
        if model.latent_dim < 2:
            return f"a scatter plane needs 2 latent dimensions, the model has {model.latent_dim}"
        return None

    def run(self, model, data: ExperimentData) -> Outcome:
        mu = data.posterior_of(model)[0]
        labels = data.labels
        if self.max_points is not None:
            mu, labels = mu[: self.max_points], labels[: self.max_points]
        origin, axes, how = compute.plane_of(mu)
        points = compute.project(mu, origin, axes)
        centres, counts, box = compute.box_cells(points, self.grid)
        decodings = compute.decode_latents(model, origin + centres.flatten(0, 1) @ axes)
        clear = data.judge(decodings).clear.view(self.grid, self.grid)
        empty = counts == 0
        names = ("z[0]", "z[1]") if "latent dimensions" in how else ("PC 1", "PC 2")
        figure = render.scatter(
            points,
            labels,
            f"posterior means of {len(mu):,} test images: {how}",
            names,
            box,
            decodings.view(self.grid, self.grid, 1, 28, 28),
            empty,
        )
        return Outcome(
            figure,
            {
                "knn_accuracy": measures.knn_accuracy(mu, labels, k=self.knn_k),
                "silhouette": measures.silhouette_score(mu, labels),
                **measures.prior_fit(mu),
                "box_unclear": measures.unclear_fraction(clear.flatten()),
                "empty_share": empty.float().mean().item(),
                "empty_unclear": measures.unclear_fraction(clear[empty]) if empty.any() else 0.0,
            },
            Embedding(mu, labels, torch.arange(len(mu)), data.images[: len(mu)]) if self.projector else None,
        )


class PriorSamples(Experiment):
    """Experiment 9: decodings of z ~ N(0, I); the figure shows the first `shown`.

    Measures: `unclear` (fraction of `num_samples` decodings judged no clear digit).

    Args:
        num_samples: samples measured.
        shown: samples drawn in the figure (a square number fills the grid).
        seed: seeds z.
        every_n_epochs: run after validation epochs n, 2n, ...
    """

    name = "prior_samples"

    def __init__(self, num_samples: int = 1000, shown: int = 100, seed: int = 0, every_n_epochs: int = 1):
        super().__init__(every_n_epochs)
        if shown > num_samples or shown < 1:
            raise ConfigError(f"PriorSamples needs 1 <= shown <= num_samples, got {shown}, {num_samples}.")
        self.num_samples, self.shown, self.seed = num_samples, shown, seed

    def run(self, model, data: ExperimentData) -> Outcome:
        samples = compute.prior_samples(model, self.num_samples, self.seed)
        judged = data.judge(samples)
        cols = int(self.shown**0.5 + 0.999)
        rows = -(-self.shown // cols)
        grid = torch.ones(rows * cols, 1, 28, 28)
        grid[: self.shown] = samples[: self.shown]
        unclear = measures.unclear_fraction(judged.clear)
        figure = render.image_rows(
            grid.view(rows, cols, 1, 28, 28),
            f"z ~ N(0, I), {model.latent_dim} latents: {unclear:.0%} of {self.num_samples} judged no clear digit",
        )
        return Outcome(figure, {"unclear": unclear})


EXPERIMENTS: dict[str, type[Experiment]] = {
    cls.name: cls
    for cls in (
        Reconstructions,
        EpsilonSweep,
        LatentTraversal,
        Interpolation,
        LatentManifold,
        LatentScatter,
        PriorSamples,
    )
}


class Experiments(Callback):
    """The experiments named in `names`, run together at the end of every `every_n_epochs`-th validation
    epoch on one copy of the test set (and its posterior, encoded once); the CLI's `experiments.*`.

    Each sends its figure to every logger that takes images, writes it as
    `<run dir>/figures/exp_<name>-epochNNN.png`, and logs its numbers as `exp/<name>/<measure>`.
    An experiment that does not fit the model (e.g. a 2-D grid of a 1-latent model) is skipped, with a
    line on the console saying why. The digit classifier they share is trained (once, then cached) at
    the start of training, and only when one of them will run in this fit.

    Args:
        names: experiments to run, in order, from reconstructions, epsilon_sweep, latent_traversal,
            interpolation, latent_manifold, latent_scatter, prior_samples; empty: none.
        every_n_epochs: run after validation epochs n, 2n, ...
        options: settings of single experiments by name, e.g. `{interpolation: {digits: [3, 8]}}`.
    """

    def __init__(
        self, names: Sequence[str] = (), every_n_epochs: int = 5, options: dict[str, dict] | None = None
    ) -> None:
        check_int("experiments.every_n_epochs", every_n_epochs)
        for name in [*names, *(options or {})]:
            check_choice("experiments.names", name, tuple(EXPERIMENTS))
        self.experiments = []
        for name in names:
            try:
                experiment = EXPERIMENTS[name](**(options or {}).get(name, {}), every_n_epochs=every_n_epochs)
            except TypeError as err:  # an option the experiment does not have
                raise ConfigError(
                    f"experiments.options.{name}: {err}; see the {EXPERIMENTS[name].__name__} docstring."
                ) from err
            self.experiments.append(experiment)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        prepare(trainer, pl_module, self.experiments)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        run_due(trainer, pl_module, self.experiments)
