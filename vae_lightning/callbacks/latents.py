"""`LatentWriter`: `vae-lightning predict` writes every image's posterior to a file and to embedding projectors."""

import logging
from pathlib import Path

import torch
from jsonargparse.typing import NonNegativeInt
from lightning.pytorch import Callback, LightningModule, Trainer

from vae_lightning.distributed import gather_rows
from vae_lightning.projector import Embedding, has_projector, to_projectors
from vae_lightning.runs import provenance, run_dir, save_atomically

log = logging.getLogger(__name__)
KEYS = ("mu", "logvar", "label", "index")


class LatentWriter(Callback):
    """Writes every rank's posteriors of the predict split, in dataset order, to `<output_dir>/latents_<split>.pt`:
    CPU tensors `mu`, `logvar` (N, L), `label`, `index` (N,), and `checkpoint`, `checkpoint_sha256` (None without one);
    the first `projector_points`, with digits and images, go to each TensorBoard or W&B projector as `latents/<split>`.

    Args:
        output_dir: folder for the file; default: the run's folder (`vae_lightning.runs.run_dir`).
        projector_points: at most this many points for the projectors; 0 sends none.
    """

    def __init__(self, output_dir: str | None = None, projector_points: NonNegativeInt = 10000) -> None:
        self.output_dir, self.projector_points = output_dir, projector_points
        self.last_path: Path | None = None
        self._rows: dict[str, list[torch.Tensor]] = {}

    def on_predict_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        thumbnails = bool(self.projector_points) and any(map(has_projector, trainer.loggers))
        self._rows = {key: [] for key in (*KEYS, *(["image"] if thumbnails else []))}  # images for a projector

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        for key in KEYS:
            self._rows[key].append(outputs[key].detach())
        if "image" in self._rows:  # as bytes: a quarter of the memory of float pixels
            self._rows["image"].append(batch[0].detach().mul(255).round().to(torch.uint8))

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rows = {key: gather_rows(pl_module, torch.cat(parts)).cpu() for key, parts in self._rows.items()}  # all ranks
        self._rows = {}
        order = rows["index"].argsort()
        rows = {key: value[order] for key, value in rows.items()}
        images = rows.pop("image", None)
        folder = Path(self.output_dir) if self.output_dir is not None else run_dir(trainer)  # every rank: broadcasts
        split = getattr(trainer.datamodule, "predict_split", "predict")
        self.last_path = folder / f"latents_{split}.pt"
        if not trainer.is_global_zero:
            return
        save_atomically({**rows, **provenance(trainer.ckpt_path)}, self.last_path)
        log.info("Wrote %d posteriors (mu, logvar, label, index) to %s", len(order), self.last_path)
        if images is not None:
            shown = slice(0, self.projector_points)
            embedding = Embedding(rows["mu"][shown], rows["label"][shown], rows["index"][shown], images[shown] / 255)
            to_projectors(trainer.loggers, f"latents/{split}", embedding, trainer.global_step)
