"""`AtomicCheckpointIO`: Lightning's checkpoint writer, each file written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from vae_lightning.atomic import save_atomically
from vae_lightning.errors import RunStopped


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its target, synced, then renamed into place: a full disk stops the run naming
    the file, the previous checkpoint intact. The CLI's default `trainer.plugins`; off: `--trainer.plugins null`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None) -> None:
        target = Path(path)
        try:
            save_atomically(checkpoint, target)
        except OSError as err:
            kept = f"the previous {target.name} is intact" if target.exists() else "no earlier file was there"
            raise RunStopped(
                f"could not write checkpoint {target}: {err.strerror or err} ({kept}). "
                f"Free disk space or make {target.parent} writable, then resume with --ckpt_path last."
            ) from err
