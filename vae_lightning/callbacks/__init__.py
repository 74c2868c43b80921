"""How a run is evaluated, guarded, kept and sped up: Lightning callbacks, each in its own file, each on by default
through the CLI (`cli.PIECES`) and off with `--<key> null`."""

from vae_lightning.callbacks.guard import NonFiniteGuard
from vae_lightning.callbacks.initialise import Initialisation
from vae_lightning.callbacks.last_checkpoint import LastCheckpoint
from vae_lightning.callbacks.latents import LatentWriter
from vae_lightning.callbacks.likelihood import TestLikelihood
from vae_lightning.callbacks.outputs import OutputFolders
from vae_lightning.callbacks.resume import ExactResume
from vae_lightning.callbacks.speed import CPUSpeed
from vae_lightning.callbacks.warmup import KLWarmup

__all__ = [
    "CPUSpeed",
    "ExactResume",
    "Initialisation",
    "KLWarmup",
    "LastCheckpoint",
    "LatentWriter",
    "NonFiniteGuard",
    "OutputFolders",
    "TestLikelihood",
]
