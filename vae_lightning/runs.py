"""Where a run's files go: one folder per run, whatever the logger."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Trainer


def logger_root(trainer: Trainer) -> Path:
    """`<save_dir>/<name>` of the first logger, the parent of its runs' folders (a logger is required)."""
    logger = trainer.loggers[0]
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name)


def run_dir(trainer: Trainer) -> Path:
    """`<save_dir>/<name>/<version>` of the first logger (where Lightning puts the run's checkpoints),
    else the trainer's default_root_dir.

    For CSV and TensorBoard loggers that is their log dir (`logs/vanilla/version_3`); for W&B, whose
    log dir is shared by every run, it is `<save_dir>/<project>/<run id>`. Rank 0's answer is
    broadcast: call on every rank.
    """
    if trainer.loggers:
        logger = trainer.loggers[0]
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        path = logger_root(trainer) / version
    else:
        path = Path(trainer.default_root_dir)
    return Path(trainer.strategy.broadcast(str(path)))
