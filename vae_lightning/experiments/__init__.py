"""The experiments, a class a file, named in registry.py; run in training (schedule.py), on checkpoints (command.py)."""

from vae_lightning.experiments.classifier import digit_classifier as digit_classifier
from vae_lightning.experiments.registry import EXPERIMENTS as EXPERIMENTS
from vae_lightning.experiments.schedule import Experiments as Experiments
