"""Collectives that work the same on one process and under DDP (call them on every rank)."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor


def attached_trainer(module: LightningModule) -> Trainer | None:
    """The Trainer running `module`, or None when it runs outside one (`module.trainer` raises then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def gather_rows(module: LightningModule, rows: Tensor) -> Tensor:
    """Concatenate every rank's `rows` (N_r, ...) along dim 0, ranks in order; N_r may differ.

    Pads each rank's rows to the longest, all-gathers on the module's device, trims the padding.
    Returns the rows on the module's device; on a single process returns `rows` unchanged.
    """
    trainer = attached_trainer(module)
    if trainer is None or trainer.world_size == 1:
        return rows
    rows = rows.to(module.device)
    lengths = module.all_gather(torch.tensor(len(rows), device=module.device)).tolist()  # (world,)
    padded = rows.new_zeros(max(lengths), *rows.shape[1:])
    padded[: len(rows)] = rows
    gathered = module.all_gather(padded)  # (world, max_len, ...)
    return torch.cat([gathered[r, :n] for r, n in enumerate(lengths)])


def release_process_group() -> None:
    """Destroy this process's default process group, if there is one (call it on every rank when the
    run is over). Lightning does this at exit for NCCL alone; a gloo group left to the interpreter's
    finalization can abort a process whose run succeeded ("terminate called without an active
    exception", SIGABRT: gloo's worker threads still hold tensors while Python is torn down)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
