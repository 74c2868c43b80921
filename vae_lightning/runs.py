"""Where a run's files go (one folder per run, whatever the logger), and the checks that a run may write
there: before any work starts, every output folder must be writable and hold nothing of another run."""

from __future__ import annotations

import os
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
    """`run_dir` as this process sees it, without broadcasting (for checks before a run starts), or None
    when the logger decides its folder only once it starts (W&B without an `id`)."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    version = trainer.loggers[0].version
    return None if version is None else _version_dir(trainer, version)


def run_dir(trainer: Trainer) -> Path:
    """`<save_dir>/<name>/<version>` of the first logger (where Lightning puts the run's checkpoints),
    else the trainer's default_root_dir.

    For CSV and TensorBoard loggers that is their log dir (`logs/vanilla/version_3`); for W&B, whose
    log dir is shared by every run, it is `<save_dir>/<project>/<run id>`. Rank 0's answer is
    broadcast: call on every rank.
    """
    path = _version_dir(trainer, trainer.loggers[0].version) if trainer.loggers else Path(trainer.default_root_dir)
    return Path(trainer.strategy.broadcast(str(path)))


def _version_dir(trainer: Trainer, version: int | str | None) -> Path:
    """`<save_dir>/<name>/<version>`: a string version as it is, a number as `version_N` (Lightning's naming)."""
    return logger_root(trainer) / (version if isinstance(version, str) else f"version_{version}")


def first_existing(path: Path) -> Path:
    """`path` or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable(path: str | os.PathLike, field: str) -> Path:
    """Refuse a folder that cannot be created or written (creating nothing): the folder itself when it
    exists, else its nearest existing ancestor, must be a folder this process can create a file in."""
    path = Path(path)
    with attributed(field, "shorten or fix the path"):  # e.g. a part over the filesystem's 255 bytes
        existing = first_existing(path)
    limit = os.pathconf(existing, "PC_NAME_MAX") if existing.is_dir() else 255
    too_long = [part for part in path.parts if len(os.fsencode(part)) > limit]
    if too_long:
        raise ConfigError(
            f"{field}: {too_long[0][:40]!r}... is {len(os.fsencode(too_long[0]))} bytes long, and each part of a "
            f"path in {existing} holds at most {limit}: shorten it."
        )
    if not existing.is_dir():
        inside = "" if existing == Path(os.path.abspath(path)) else f", so {str(path)!r} cannot be a folder"
        raise ConfigError(f"{field}: {str(existing)!r} is a file, not a folder{inside}: choose another.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ConfigError(
            f"{field}: {str(path)!r} cannot be written ({err.strerror or err} in {existing}): "
            f"choose a writable folder for {field}."
        ) from err
    return path


def refuse_earlier_outputs(outputs: Iterable[tuple[str, Path, str]], overwrite: bool) -> None:
    """Refuse to write where another run's files are, unless `overwrite`.

    Args:
        outputs: (field, folder, glob pattern) of what this command will write; each folder is checked
            writable, and any existing file matching its pattern is another run's.
        overwrite: the user's `--overwrite true`: such files may be replaced.
    """
    found = []
    for field, folder, pattern in outputs:
        check_writable(folder, field)
        if folder.is_dir():
            found += [(field, p) for p in sorted(folder.glob(pattern)) if not p.name.startswith(".")]
    if found and not overwrite:
        fields = sorted({field for field, _ in found})
        listed = ", ".join(str(path) for _, path in found[:3])
        listed += f" and {len(found) - 3} more" if len(found) > 3 else ""
        raise ConfigError(
            f"{' / '.join(fields)}: this command would replace files of another run ({listed}). Choose another "
            f"folder (another logger name or version, or {fields[0]}), or pass --overwrite true to replace them."
        )


def highest_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what creating `path` creates), or None."""
    path = Path(os.path.abspath(path))
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def remove_if_unused(folder: Path) -> None:
    """Remove `folder` (one this command created) when it holds nothing but the config the run saved: a run
    refused or stopped before it wrote anything leaves no half-made folder behind."""
    if not folder.is_dir():
        return
    files = [p for p in folder.rglob("*") if p.is_file()]
    if all(p.name in ("config.yaml", "hparams.yaml") for p in files):
        for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        folder.rmdir()


class ConfigToLoggers(SaveConfigCallback):
    """Writes config.yaml to the log dir (LightningCLI's behaviour) and to the run's own folder when that differs
    (W&B shares its log dir between runs), and logs the full resolved config to every logger, so a W&B run
    carries it under `config`."""

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
