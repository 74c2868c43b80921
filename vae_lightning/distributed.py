"""Collectives that work the same on one process and under DDP (call them on every rank)."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule
from torch import Tensor


def gather_rows(module: LightningModule, rows: Tensor) -> Tensor:
    """Concatenate every rank's `rows` (N_r, ...) along dim 0, ranks in order; N_r may differ.

    Pads each rank's rows to the longest, all-gathers on the module's device, trims the padding.
    Returns the rows on the module's device; on a single process returns `rows` unchanged.
    """
    trainer = module._trainer
    if trainer is None or trainer.world_size == 1:
        return rows
    rows = rows.to(module.device)
    lengths = module.all_gather(torch.tensor(len(rows), device=module.device)).tolist()  # (world,)
    padded = rows.new_zeros(max(lengths), *rows.shape[1:])
    padded[: len(rows)] = rows
    gathered = module.all_gather(padded)  # (world, max_len, ...)
    return torch.cat([gathered[r, :n] for r, n in enumerate(lengths)])
