"""`AtomicCheckpointIO`: Lightning's checkpoint writer, each file written whole or not at all."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vae_lightning.atomic import atomic_path
from vae_lightning.errors import RunStopped


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, syncs it, then renames it into place.

    A full disk or an unwritable folder stops the run naming the file, and the previous checkpoint at that
    path stays intact (a rename happens whole or not at all). The CLI's default `trainer.plugins`; off:
    `--trainer.plugins null`.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        target = Path(path)
        buffer = io.BytesIO()  # serialised in memory first: torch.save's zip writer turns a failed file
        torch.save(checkpoint, buffer)  # write (e.g. a full disk) into a RuntimeError without the OS's reason
        try:
            with atomic_path(target) as tmp, open(tmp, "wb") as out:
                out.write(buffer.getbuffer())
                out.flush()
                os.fsync(out.fileno())
        except OSError as err:
            kept = f"the previous {target.name} is intact" if target.exists() else "no earlier file was there"
            raise RunStopped(
                f"could not write checkpoint {target}: {err.strerror or err} ({kept}). "
                f"Free disk space or make {target.parent} writable, then resume with --ckpt_path last."
            ) from err
