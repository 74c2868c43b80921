"""The seed project's nine experiments as seven classes, one file each, registered in registry.py; `Experiments`
(schedule.py) runs them during training, `vae-lightning-experiments` (command.py) on a checkpoint."""

from vae_lightning.experiments.base import Experiment, ExperimentData, Outcome
from vae_lightning.experiments.classifier import digit_classifier
from vae_lightning.experiments.command import load_model, resolve_device
from vae_lightning.experiments.epsilon_sweep import EpsilonSweep
from vae_lightning.experiments.interpolation import Interpolation
from vae_lightning.experiments.latent_manifold import LatentManifold
from vae_lightning.experiments.latent_scatter import LatentScatter
from vae_lightning.experiments.latent_traversal import LatentTraversal
from vae_lightning.experiments.prior_samples import PriorSamples
from vae_lightning.experiments.reconstructions import Reconstructions
from vae_lightning.experiments.registry import EXPERIMENTS
from vae_lightning.experiments.schedule import Experiments

__all__ = [
    "EXPERIMENTS",
    "EpsilonSweep",
    "Experiment",
    "ExperimentData",
    "Experiments",
    "Interpolation",
    "LatentManifold",
    "LatentScatter",
    "LatentTraversal",
    "Outcome",
    "PriorSamples",
    "Reconstructions",
    "digit_classifier",
    "load_model",
    "resolve_device",
]
