"""`Experiments`, the one callback that runs experiments during training (the CLI's `experiments.*`)."""

import inspect
import logging
import math
import os
import re
from collections.abc import Sequence

import numpy
import torch
from jsonargparse import ArgumentError, ArgumentParser
from jsonargparse.typing import PositiveInt
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg

from vae_lightning.distributed import gather_rows
from vae_lightning.errors import ConfigError
from vae_lightning.experiments import compute
from vae_lightning.experiments.base import Experiment, ExperimentData
from vae_lightning.experiments.classifier import digit_classifier
from vae_lightning.experiments.figures import write_png
from vae_lightning.experiments.registry import EXPERIMENTS
from vae_lightning.projector import to_projectors
from vae_lightning.runs import run_dir

log = logging.getLogger(__name__)


def fitting(experiments: Sequence[Experiment], model, say: bool = False) -> tuple[list[Experiment], dict[str, str]]:
    """The experiments that fit `model`, and why each other one does not, by name (on the console if `say`)."""
    skipped = {e.name: reason for e in experiments if (reason := e.skip_reason(model)) is not None}
    for name, reason in skipped.items() if say else ():
        log.info("Experiment %s skipped: %s; its numbers are not reported.", name, reason)
    return [e for e in experiments if e.name not in skipped], skipped


class Experiments(Callback):
    """The experiments named in `names`, run after every `every_n_epochs`-th validation epoch on the test set and its
    posterior (each process encodes a share); one that does not fit the model is skipped, saying why. Each logs
    `exp/<name>/<measure>` and sends its figure to the image loggers and `<run dir>/figures/exp_<name>-epochNNN.png`.

    Args:
        names: experiments to run, in order, by name (`EXPERIMENTS`; the README lists them); empty: none.
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
        self.idle = not self.experiments  # the CLI leaves an idle piece out of the Trainer

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Say which experiments are skipped; load or train the digit classifier now when one will run in this fit."""
        if not trainer.is_global_zero or not fitting(self.experiments, pl_module, say=True)[0]:
            return
        last, step = trainer.max_epochs, math.lcm(self.every_n_epochs, trainer.check_val_every_n_epoch or 1)
        if last is None or last < 0 or last // step > trainer.current_epoch // step:  # a due, validated epoch left
            digit_classifier(os.fspath(trainer.datamodule.data_dir))

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Every rank encodes a share of the posterior; rank 0 runs the due experiments (in eval mode) and logs them."""
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        if not (due := fitting(self.experiments, pl_module)[0]):
            return
        folder = run_dir(trainer) / "figures"  # every rank: the run dir is broadcast
        data = ExperimentData.from_datamodule(trainer.datamodule)
        index = torch.arange(trainer.global_rank, len(data.images), trainer.world_size)
        mu, logvar = compute.encode_images(pl_module, data.images[index])
        index, mu, logvar = (gather_rows(pl_module, t).cpu() for t in (index, mu, logvar))
        data.posterior = mu[index.argsort()], logvar[index.argsort()]
        if not trainer.is_global_zero:
            return
        for experiment in due:  # its figure to the image loggers and as PNG (a CSV-only run keeps it too), its numbers
            key, outcome = f"exp/{experiment.name}", experiment.run(pl_module, data)
            canvas = FigureCanvasAgg(outcome.figure)
            canvas.draw()
            rgb = numpy.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3) uint8
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(key, rgb, global_step=trainer.global_step, dataformats="HWC")
                elif isinstance(logger, WandbLogger):
                    logger.log_image(key=key, images=[rgb], step=trainer.global_step)
            write_png(outcome.figure, folder / f"exp_{experiment.name}-epoch{trainer.current_epoch:03d}.png")
            if outcome.embedding is not None:
                to_projectors(trainer.loggers, key, outcome.embedding, trainer.global_step)
            pl_module.log_dict({f"{key}/{m}": float(v) for m, v in outcome.measures.items()}, rank_zero_only=True)


def configure(name: str, options: dict, field: str) -> Experiment:
    """The experiment `name` with `options` parsed as its class declares; a bad one refused as `<field>.<setting>`."""
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
