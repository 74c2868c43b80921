"""Latents in the loggers' embedding projectors: TensorBoard's Projector tab and W&B's 2-D projection panel.

Both take the points in all latent dimensions and project them themselves (PCA, t-SNE, UMAP), showing each point's
digit and image, so a user can look for the images behind a cluster or a gap. `vae-lightning predict` sends its
split's latents; `LatentScatter(projector=true)` the ones it plots, at its epochs.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from torch import Tensor

log = logging.getLogger(__name__)


class Embedding(NamedTuple):
    """Points for a projector, in one order."""

    mu: Tensor  # (N, L) posterior means
    labels: Tensor  # (N,) digits
    index: Tensor  # (N,) positions in the split
    images: Tensor  # (N, 1, 28, 28) pixel values in [0, 1]


def has_projector(logger: Logger) -> bool:
    """Whether `to_projectors` sends anything to this logger."""
    return isinstance(logger, (TensorBoardLogger, WandbLogger))


def to_projectors(loggers: list[Logger], tag: str, embedding: Embedding, step: int) -> None:
    """Send `embedding` to every TensorBoard and W&B logger in `loggers`; call on rank 0.

    TensorBoard: `add_embedding` writes the points, a metadata table (digit, index) and a sprite of the images, with
    the `projector_config.pbtxt` its Projector tab reads. W&B: a `wandb.Table` under `tag` with columns index, digit,
    image and z0..z{L-1}; its 2-D projection panel projects the z columns and shows each point's image.
    """
    mu, labels, index = embedding.mu.detach().float().cpu(), embedding.labels.tolist(), embedding.index.tolist()
    images = embedding.images.detach().float().cpu().clamp(0.0, 1.0)
    reached = []
    for logger in filter(has_projector, loggers):
        if isinstance(logger, TensorBoardLogger):
            metadata = [[str(d), str(i)] for d, i in zip(labels, index)]
            logger.experiment.add_embedding(mu, metadata, images, step, tag, metadata_header=["digit", "index"])
            logger.experiment.flush()
            reached.append("TensorBoard")
        else:
            import wandb  # a declared dependency; imported here as only W&B runs need it

            pixels = images.mul(255).round().to(torch.uint8).squeeze(1).numpy()  # (N, 28, 28)
            columns = ["index", "digit", "image", *(f"z{d}" for d in range(mu.shape[1]))]
            rows = [[i, d, wandb.Image(p), *z] for i, d, p, z in zip(index, labels, pixels, mu.tolist())]
            logger.log_table(key=tag, columns=columns, data=rows, step=step)
            reached.append("W&B")
    if reached:
        log.info("Sent %d latents (%s) to the projector of %s", len(mu), tag, " and ".join(reached))
