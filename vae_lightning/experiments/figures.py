"""Figures: tensors in, `matplotlib.figure.Figure` out (Agg canvas, no pyplot state), sent to every logger that
takes images and always written as PNG, so a CSV-only run keeps them too."""

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from vae_lightning.atomic import atomic_path

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


def centres(n: int) -> list[int]:
    """The pixel centres of n thumbnails along an axis of `show`'s grid."""
    return [15 + 29 * i for i in range(n)]


def image_rows(images: Tensor, title: str, row_labels: Sequence[str] = (), col_labels: Sequence[str] = ()) -> Figure:
    """A grid of thumbnails from images (R, C, 1, 28, 28), with optional row and column labels."""
    rows, cols = images.shape[:2]
    width = max(4.0, cols * CELL + (1.2 if row_labels else 0.3))
    figure = new_figure(width, rows * CELL + 0.6 + (0.3 if col_labels else 0.0))
    ax = figure.add_subplot()
    show(ax, images.flatten(0, 1), rows, cols)
    ax.set_xticks(centres(cols) if col_labels else [], col_labels, fontsize=6, rotation=90 if cols > 12 else 0)
    ax.set_yticks(centres(rows) if row_labels else [], row_labels, fontsize=7)
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    ax.set_title(title, fontsize=9)
    return figure


def manifold(images: Tensor, values: Tensor, dims: tuple[int, int], title: str) -> Figure:
    """Decodings on a grid (G, G, 1, 28, 28), axes labelled with the latent values."""
    grid = images.shape[0]
    figure = new_figure(grid * CELL + 1.0, grid * CELL + 1.0)
    ax = figure.add_subplot()
    show(ax, images.flatten(0, 1), grid, grid)
    ax.set_xticks(centres(grid), [f"{v + 0.0:.1f}" for v in values.tolist()], fontsize=6, rotation=90)
    ax.set_yticks(centres(grid), [f"{v + 0.0:.1f}" for v in values.flip(0).tolist()], fontsize=6)
    ax.set(xlabel=f"z[{dims[0]}]", ylabel=f"z[{dims[1]}]")
    ax.set_title(title, fontsize=9)
    return figure


def scatter(
    points: Tensor,
    labels: Tensor,
    title: str,
    axis_names: tuple[str, str],
    box: Tensor,
    decodings: Tensor,
    empty: Tensor,
) -> Figure:
    """Left: latent points (N, 2) coloured by digit, with the box [lows, highs] (2, 2) outlined.
    Right: decodings (G, G, 1, 28, 28) at the centres of the box's cells, [i along x, j along y];
    cells no point falls in (`empty`, (G, G) bool) framed in red."""
    grid = decodings.shape[0]
    figure = new_figure(12.0, 5.6)
    left, right = figure.subplots(1, 2, width_ratios=[1.15, 1])
    colours = matplotlib.colormaps["tab10"]
    for digit in range(10):
        chosen = labels == digit
        left.scatter(*points[chosen].T, s=2, alpha=0.5, color=colours(digit), label=str(digit), rasterized=True)
    (x0, y0), (x1, y1) = box.tolist()
    left.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--", linewidth=0.8))
    left.legend(title="digit", markerscale=5, fontsize=7, title_fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    left.set(xlabel=axis_names[0], ylabel=axis_names[1])
    left.set_title(title, fontsize=9)
    show(right, decodings.transpose(0, 1).flip(0).flatten(0, 1), grid, grid)  # rows: top = largest 2nd coordinate
    for i, j in empty.nonzero().tolist():
        row, col = grid - 1 - j, i
        right.add_patch(Rectangle((29 * col + 0.5, 29 * row + 0.5), 28, 28, fill=False, edgecolor="red", linewidth=1))
    right.set(xticks=[], yticks=[])
    right.set_title(f"decodings over the dashed box; red: cells without test latents ({int(empty.sum())})", fontsize=9)
    return figure
