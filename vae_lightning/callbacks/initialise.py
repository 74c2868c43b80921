"""`Initialisation`: the networks' starting weights, and the decoder's output bias from the training images."""

from typing import Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from vae_lightning.errors import ConfigError


class Initialisation(Callback):
    """The starting point of a fit from scratch (a resumed one's is in its checkpoint); the defaults keep torch's.

    Args:
        weights: `torch` (each layer's default) or `glorot`: Glorot-uniform weights, zero biases (Burda et al.'s code).
        output_bias: `torch` (as `weights` left it) or `data_mean`: the decoder's last bias at the mean image's logit.
        clip: how far the mean is kept from 0 and 1 before its logit.
    """

    def __init__(
        self,
        weights: Literal["torch", "glorot"] = "torch",
        output_bias: Literal["torch", "data_mean"] = "torch",
        clip: float = 0.001,
    ) -> None:
        if not 0.0 < clip < 0.5:
            raise ConfigError(f"init.clip={clip} must lie in (0, 0.5): the mean is clipped to [clip, 1 - clip].")
        self.weights, self.output_bias, self.clip = weights, output_bias, clip
        self.idle = weights == output_bias == "torch"  # the CLI leaves an idle piece out of the Trainer

    @torch.no_grad()
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.ckpt_path is not None:
            return
        for layer in pl_module.modules() if self.weights == "glorot" else []:
            if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        if self.output_bias == "data_mean":
            mean = trainer.datamodule.train_pixel_mean()  # (C, H, W)
            biases = [(n, p) for n, p in pl_module.decoder.named_parameters() if n.endswith("bias")]
            if not biases:
                raise ConfigError("init.output_bias: the decoder has no bias to set: use output_bias torch.")
            name, bias = biases[-1]
            if bias.numel() not in (mean.numel(), len(mean)):
                raise ConfigError(
                    f"init.output_bias: the decoder's last bias `{name}` has {bias.numel()} values, neither one per "
                    f"pixel nor one per channel of the {tuple(mean.shape)} images: use output_bias torch."
                )
            mean = mean.reshape(bias.shape) if bias.numel() == mean.numel() else mean.flatten(1).mean(1)
            bias.copy_(torch.logit(mean.clamp(self.clip, 1 - self.clip)).to(bias))
