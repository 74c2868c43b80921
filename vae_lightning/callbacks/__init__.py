"""Callbacks that evaluate, guard, keep or speed up a run; `cli.PIECES` turns each on, `--<key> null` turns it off."""

from vae_lightning.callbacks.guard import NonFiniteGuard as NonFiniteGuard
from vae_lightning.callbacks.initialise import Initialisation as Initialisation
from vae_lightning.callbacks.last_checkpoint import LastCheckpoint as LastCheckpoint
from vae_lightning.callbacks.latents import LatentWriter as LatentWriter
from vae_lightning.callbacks.likelihood import TestLikelihood as TestLikelihood
from vae_lightning.callbacks.outputs import OutputFolders as OutputFolders
from vae_lightning.callbacks.progress import Progress as Progress
from vae_lightning.callbacks.resume import ExactResume as ExactResume
from vae_lightning.callbacks.speed import CPUSpeed as CPUSpeed
from vae_lightning.callbacks.warmup import KLWarmup as KLWarmup
