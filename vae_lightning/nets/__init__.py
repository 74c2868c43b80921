"""Encoders and decoders: plain `nn.Module`s under one contract (see `contract.py`)."""

from vae_lightning.nets.contract import IMAGE_SHAPE, check_networks
from vae_lightning.nets.conv import ConvDecoder, ConvEncoder
from vae_lightning.nets.mlp import MLPDecoder, MLPEncoder

__all__ = ["IMAGE_SHAPE", "ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder", "check_networks"]
