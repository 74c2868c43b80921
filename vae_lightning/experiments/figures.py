"""Figures: tensors in, `matplotlib.figure.Figure` out (Agg canvas, no pyplot state), sent to every logger that
takes images and always written as PNG, so a CSV-only run keeps them too."""

import re
from collections.abc import Sequence
from pathlib import Path

import numpy
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from vae_lightning.runs import atomic_path

CELL = 0.42  # inches per 28x28 thumbnail


def new_figure(width: float, height: float) -> Figure:
    """A Figure on an Agg canvas, never registered with pyplot (nothing to close, nothing leaks)."""
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def write_png(figure: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def publish(trainer: Trainer, key: str, figure: Figure, folder: Path) -> None:
    """On rank 0: send a figure to the TensorBoard and W&B loggers at the trainer's global step, and write it as
    `<folder>/<key>-epoch<NNN>.png`."""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    rgb = numpy.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 3) uint8
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, rgb, global_step=trainer.global_step, dataformats="HWC")
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[rgb], step=trainer.global_step)
    write_png(figure, folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)}-epoch{trainer.current_epoch:03d}.png")


def show(ax, images: Tensor, rows: int, cols: int) -> None:
    """Draw images (rows * cols, 1, 28, 28) on `ax` as one grey grid, a white pixel between them."""
    canvas = torch.ones(rows * 29 + 1, cols * 29 + 1)
    for index, image in enumerate(images.detach().float().cpu().reshape(rows * cols, 28, 28)):
        top, left = 1 + 29 * (index // cols), 1 + 29 * (index % cols)
        canvas[top : top + 28, left : left + 28] = image
    ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")


def image_rows(images: Tensor, title: str, row_labels: Sequence[str] = (), col_labels: Sequence[str] = ()) -> Figure:
    """A grid of thumbnails from images (R, C, 1, 28, 28), with optional row and column labels."""
    rows, cols = images.shape[:2]
    width = max(4.0, cols * CELL + (1.2 if row_labels else 0.3))
    figure = new_figure(width, rows * CELL + 0.6 + (0.3 if col_labels else 0.0))
    ax = figure.add_subplot()
    show(ax, images.flatten(0, 1), rows, cols)
    centres = [15 + 29 * i for i in range(max(rows, cols))]  # of the thumbnails along an axis of `show`'s grid
    ax.set_xticks(centres[:cols] if col_labels else [], col_labels, fontsize=6, rotation=90 if cols > 12 else 0)
    ax.set_yticks(centres[:rows] if row_labels else [], row_labels, fontsize=7)
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    ax.set_title(title, fontsize=9)
    return figure
