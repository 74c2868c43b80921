"""The seed project's nine experiments: callbacks for training, a command for checkpoints, numbers for claims.

compute.py (what is decoded) -> render.py (figures) and measures.py (numbers); callbacks.py runs
them at validation-epoch end; command.py (`vae-lightning-experiments`) runs them on a checkpoint.
"""

from vae_lightning.experiments.callbacks import (
    EXPERIMENTS,
    EpsilonSweep,
    Experiment,
    Experiments,
    Interpolation,
    LatentManifold,
    LatentScatter,
    LatentTraversal,
    PriorSamples,
    Reconstructions,
)

__all__ = [
    "EXPERIMENTS",
    "EpsilonSweep",
    "Experiment",
    "Experiments",
    "Interpolation",
    "LatentManifold",
    "LatentScatter",
    "LatentTraversal",
    "PriorSamples",
    "Reconstructions",
]
