"""`Experiments`, the one callback that runs experiments during training (the CLI's `experiments.*`)."""

import inspect
import logging
import os
import re
from collections.abc import Sequence

import torch
from jsonargparse import ArgumentError, ArgumentParser
from jsonargparse.typing import PositiveInt
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from vae_lightning.distributed import gather_rows
from vae_lightning.errors import ConfigError
from vae_lightning.experiments import compute
from vae_lightning.experiments.base import Experiment, ExperimentData
from vae_lightning.experiments.classifier import digit_classifier
from vae_lightning.experiments.figures import publish
from vae_lightning.experiments.registry import EXPERIMENTS
from vae_lightning.projector import to_projectors
from vae_lightning.runs import run_dir

log = logging.getLogger(__name__)


class Experiments(Callback):
    """The experiments named in `names`, run together at the end of every `every_n_epochs`-th validation epoch
    on one copy of the test set (and its posterior, encoded once, each process its share).

    Each sends its figure to every logger that takes images, writes it as `<run dir>/figures/exp_<name>-epochNNN.png`
    and logs its numbers as `exp/<name>/<measure>`. One that does not fit the model (e.g. a 2-D grid of a 1-latent
    model) is skipped, saying why on the console. The digit classifier they share is trained (once, then cached)
    at the start of training, only when one of them will run in this fit.

    Args:
        names: experiments to run, in order, by name (`vae_lightning.experiments.EXPERIMENTS`; the README lists
            them); empty: none.
        every_n_epochs: run after validation epochs n, 2n, ...
        options: settings of single experiments by name, e.g. `{interpolation: {digits: [3, 8]}}`.
    """

    def __init__(
        self, names: Sequence[str] = (), every_n_epochs: PositiveInt = 5, options: dict[str, dict] | None = None
    ) -> None:
        options = options or {}
        for field, name in [*(("experiments.names", n) for n in names), *(("experiments.options", n) for n in options)]:
            if name not in EXPERIMENTS:
                raise ConfigError(f"{field}: {name!r} is not an experiment; choose from {', '.join(EXPERIMENTS)}.")
        self.every_n_epochs = every_n_epochs
        self.experiments = [configure(name, options.get(name, {}), f"experiments.options.{name}") for name in names]

    def fitting(self, model: LightningModule) -> list[Experiment]:
        return [e for e in self.experiments if e.skip_reason(model) is None]

    def due_in_this_fit(self, trainer: Trainer) -> bool:
        """Whether one of the validation epochs this fit still runs ends in the experiments' turn."""
        if trainer.max_epochs is None or trainer.max_epochs < 0:  # no epoch limit
            return True
        val_every = trainer.check_val_every_n_epoch or 1
        epochs = range(trainer.current_epoch + 1, trainer.max_epochs + 1)
        return any(epoch % self.every_n_epochs == 0 and epoch % val_every == 0 for epoch in epochs)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """After a resume has set the epoch: say which experiments are skipped, and train (or load) the digit
        classifier now rather than in the middle of training, only when an experiment will run in this fit."""
        if not trainer.is_global_zero:
            return
        for experiment in self.experiments:
            reason = experiment.skip_reason(pl_module)
            if reason is not None:
                log.info("Experiment %s skipped: %s; its numbers are not reported.", experiment.name, reason)
        if self.fitting(pl_module) and self.due_in_this_fit(trainer):
            digit_classifier(os.fspath(trainer.datamodule.data_dir))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Every rank gathers what the due experiments need; rank 0 runs them (the module in eval mode, as
        Lightning keeps it through validation) and publishes."""
        due = self.fitting(pl_module)
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs or not due:
            return
        folder = run_dir(trainer) / "figures"  # every rank: the run dir is broadcast
        data = ExperimentData.from_datamodule(trainer.datamodule)
        if any(e.uses_posterior for e in due):
            data.posterior = sharded_posterior(trainer, pl_module, data.images)  # every rank: gathers
        if not trainer.is_global_zero:
            return
        for experiment in due:
            key = f"exp/{experiment.name}"
            outcome = experiment.run(pl_module, data)
            publish(trainer, key, outcome.figure, folder)
            if outcome.embedding is not None:
                to_projectors(trainer.loggers, key, outcome.embedding, trainer.global_step)
            for measure, value in outcome.measures.items():
                pl_module.log(f"{key}/{measure}", float(value), rank_zero_only=True)


def configure(name: str, options: dict, field: str) -> Experiment:
    """The experiment `name` with `options`, each parsed as the type its class declares: a setting it does not
    have or a value of another type is refused naming `<field>.<setting>`."""
    cls = EXPERIMENTS[name]
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, name)
    declared = inspect.signature(cls).parameters
    for key, value in options.items():
        if key not in declared:
            raise ConfigError(f"{field}.{key}: {name} has no such setting; its settings: {', '.join(declared)}.")
        try:
            parser.parse_object({name: {key: value}})
        except ArgumentError as err:
            kind = declared[key].annotation  # as its source spells it, without module paths: `PositiveInt`
            kind = re.sub(r"\b(?:[a-z_]\w*\.)+", "", kind if isinstance(kind, str) else inspect.formatannotation(kind))
            message = f"{field}.{key}: {value!r} is not of type {kind}; see the {cls.__name__} docstring."
            raise ConfigError(message) from err
    return parser.instantiate(parser.parse_object({name: options}))[name]


def sharded_posterior(trainer: Trainer, module: LightningModule, images: Tensor) -> tuple[Tensor, Tensor]:
    """(mu, logvar) of all images: each rank encodes its share, every rank gets all (call on every rank)."""
    index = torch.arange(trainer.global_rank, len(images), trainer.world_size)
    mu, logvar = compute.encode_images(module, images[index])
    index, mu, logvar = (gather_rows(module, t).cpu() for t in (index, mu, logvar))
    order = index.argsort()
    return mu[order], logvar[order]
