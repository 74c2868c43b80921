"""`ExactResume`: every process's random state in the checkpoint, so a resumed fit repeats an uninterrupted one."""

from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn


class ExactResume(Callback):
    """Saves each process's torch random state (the reparameterisation noise) with every checkpoint and restores it
    on resume when the process count matches (data order and binarization are functions of seed, epoch and batch)."""

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        states = {"cpu": torch.get_rng_state()}
        if pl_module.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(pl_module.device)
        # (world, ...) each: every rank's state, gathered (every rank saves; rank 0 writes)
        gathered = {k: pl_module.all_gather(v.to(pl_module.device)).cpu() for k, v in states.items()}
        checkpoint["rng_states"] = {k: v.view(trainer.world_size, -1) for k, v in gathered.items()}

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if states is not None and len(states["cpu"]) != trainer.world_size:
            rank_zero_warn(
                f"checkpoint saved by {len(states['cpu'])} processes, resumed by {trainer.world_size}: the noise "
                "streams start afresh, so the run will not repeat an uninterrupted one exactly."
            )
        elif states is not None:
            torch.set_rng_state(states["cpu"][trainer.global_rank].clone())  # a view of a larger tensor crashes torch
            if "cuda" in states and pl_module.device.type == "cuda":
                torch.cuda.set_rng_state(states["cuda"][trainer.global_rank].clone(), pl_module.device)
