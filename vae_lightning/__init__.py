"""vae-lightning: train, measure and look inside Variational Autoencoders on MNIST."""

import logging as _logging

from vae_lightning.data import MNISTDataModule
from vae_lightning.errors import ConfigError
from vae_lightning.module import VAELitModule
from vae_lightning.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder

__version__ = "0.1.0"
__all__ = ["ConfigError", "ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "MNISTDataModule", "VAELitModule"]

# Progress lines (data fetching) reach the console like Lightning's own, unless the user set up logging.
_log = _logging.getLogger(__name__)
if not _logging.getLogger().hasHandlers() and not _log.handlers:
    _log.setLevel(_logging.INFO)
    _log.addHandler(_logging.StreamHandler())
    _log.propagate = False
