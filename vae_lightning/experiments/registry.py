"""The experiments by name, in the order they run: a new one is its own file and one entry here."""

from vae_lightning.experiments.base import Experiment
from vae_lightning.experiments.epsilon_sweep import EpsilonSweep
from vae_lightning.experiments.interpolation import Interpolation
from vae_lightning.experiments.latent_manifold import LatentManifold
from vae_lightning.experiments.latent_scatter import LatentScatter
from vae_lightning.experiments.latent_traversal import LatentTraversal
from vae_lightning.experiments.prior_samples import PriorSamples
from vae_lightning.experiments.reconstructions import Reconstructions

IN_ORDER = (Reconstructions, EpsilonSweep, LatentTraversal, Interpolation, LatentManifold, LatentScatter, PriorSamples)
EXPERIMENTS: dict[str, type[Experiment]] = {cls.name: cls for cls in IN_ORDER}
