"""Where a run's files go (one folder per run, whatever the logger), and the checks that a run may write
there: before any work starts, every output folder must be writable and hold nothing of another run."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from vae_lightning.errors import ConfigError, attributed


def logger_root(trainer: Trainer) -> Path:
    """`<save_dir>/<name>` of the first logger, the parent of its runs' folders (a logger is required)."""
    logger = trainer.loggers[0]
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name)


def planned_run_dir(trainer: Trainer) -> Path | None:
    """`run_dir` unbroadcast, for checks before a run; None if the logger names it only as it starts (W&B, no `id`)."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    version = trainer.loggers[0].version
    if version is None:
        return None
    return logger_root(trainer) / (version if isinstance(version, str) else f"version_{version}")  # as Lightning


def run_dir(trainer: Trainer) -> Path:
    """The run's own folder, holding its checkpoints: `<save_dir>/<name>/<version>` of the first logger (CSV's
    `logs/vanilla/version_3`, W&B's `<save_dir>/<project>/<run id>`), else default_root_dir. Call on every rank."""
    return Path(trainer.strategy.broadcast(str(planned_run_dir(trainer))))


def highest_missing(path: str | os.PathLike) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what creating `path` creates), or None."""
    path = Path(os.path.abspath(path))
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, field: str) -> Path:
    """Refuse a folder that cannot be created or written, creating nothing (a file is tried in the folder, else in
    its nearest existing ancestor)."""
    path = Path(path)
    with attributed(field, "shorten or fix the path"):  # e.g. a part over the filesystem's 255 bytes
        missing = highest_missing(path)
    existing = missing.parent if missing else Path(os.path.abspath(path))
    limit = os.pathconf(existing, "PC_NAME_MAX") if existing.is_dir() else 255
    too_long = [part for part in path.parts if len(os.fsencode(part)) > limit]
    if too_long:
        raise ConfigError(
            f"{field}: {too_long[0][:40]!r}... is {len(os.fsencode(too_long[0]))} bytes long, and each part of a "
            f"path in {existing} holds at most {limit}: shorten it."
        )
    if not existing.is_dir():
        inside = f", so {str(path)!r} cannot be a folder" if missing else ""
        raise ConfigError(f"{field}: {str(existing)!r} is a file, not a folder{inside}: choose another.")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as err:
        raise ConfigError(
            f"{field}: {str(path)!r} cannot be written ({err.strerror or err} in {existing}): "
            f"choose a writable folder for {field}."
        ) from err
    return path


def refuse_earlier_outputs(outputs: Iterable[tuple[str, Path, str]], overwrite: bool) -> None:
    """Refuse folders (`outputs`: field, folder, glob of what this command writes there) that cannot be written or
    hold a matching file, another run's (unless `overwrite`: the user's `--overwrite true`)."""
    found = []
    for field, folder, pattern in outputs:
        check_writable(folder, field)
        if folder.is_dir():
            found += [(field, p) for p in sorted(folder.glob(pattern)) if not p.name.startswith(".")]
    if found and not overwrite:
        fields = sorted({field for field, _ in found})
        listed = ", ".join(str(path) for _, path in found[:3]) + (f" and {len(found) - 3} more" if found[3:] else "")
        raise ConfigError(
            f"{' / '.join(fields)}: this command would replace files of another run ({listed}). Choose another "
            f"folder (another logger name or version, or {fields[0]}), or pass --overwrite true to replace them."
        )


def remove_if_unused(folder: Path) -> None:
    """Remove `folder`, which this command created, if it holds nothing but the saved config: no half-made run."""
    if folder.is_dir() and all(p.name in ("config.yaml", "hparams.yaml") for p in folder.rglob("*") if p.is_file()):
        shutil.rmtree(folder)


class ConfigToLoggers(SaveConfigCallback):
    """config.yaml in the log dir (as LightningCLI) and in the run's own folder if another (W&B shares its log dir),
    and the resolved config logged to every logger (a W&B run's `config`)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # every rank: both read broadcasts (save_config below runs on rank 0 alone, so it must not)
        self.run_folder, self.log_folder = run_dir(trainer), Path(trainer.log_dir or "")
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:  # rank 0 only
        if self.log_folder != self.run_folder:
            self.run_folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, self.run_folder / self.config_filename, skip_none=False, overwrite=True)
        resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": resolved})
