"""The seed notebooks' nine experiments as seven classes, one file each, by name in registry.py; `Experiments`
(schedule.py) runs them during training, `vae-lightning-experiments` (command.py) on a checkpoint."""

from vae_lightning.experiments.classifier import digit_classifier
from vae_lightning.experiments.command import load_model, resolve_device
from vae_lightning.experiments.registry import EXPERIMENTS
from vae_lightning.experiments.schedule import Experiments

__all__ = ["EXPERIMENTS", "Experiments", "digit_classifier", "load_model", "resolve_device"]
