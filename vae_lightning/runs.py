"""A run's files: its folder whatever the logger, output folders checked before any work, writes never half-done."""

import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from vae_lightning.errors import ConfigError, RunStopped

log = logging.getLogger(__name__)
NUMBERED_LOGGERS = (".CSVLogger", ".TensorBoardLogger")  # name their runs' folders version_N in order
# `.<name>.tmp-<pid>` (atomic_path) and `.fetch-<pid>-<random>` (the MNIST fetcher's scratch folder)
TEMPORARY = re.compile(r"^\.(?:.+\.tmp|fetch)-(\d+)(?:-.*)?$")


def logger_root(trainer: Trainer) -> Path:
    """`<save_dir>/<name>` of the first logger, the parent of its runs' folders (a logger is required)."""
    logger = trainer.loggers[0]
    return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name)


def planned_run_dir(trainer: Trainer) -> Path | None:
    """`run_dir` unbroadcast, for checks before a run; None if the logger names it only as it starts (W&B, no `id`)."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    if (version := trainer.loggers[0].version) is None:
        return None
    return logger_root(trainer) / (version if isinstance(version, str) else f"version_{version}")  # as Lightning


def run_dir(trainer: Trainer) -> Path:
    """The run's own folder, `<save_dir>/<name>/<version>` of the first logger, else default_root_dir (every rank)."""
    return Path(trainer.strategy.broadcast(str(planned_run_dir(trainer))))


def claim_run_folder(logger: Any) -> tuple[Path, Path] | None:
    """For a CSV or TensorBoard logger without a `version`, on rank 0 (which holds the run's files): create
    `<save_dir>/<name>/version_N` now, N the first free number, and set `version: N`, so that runs started together
    never share a folder (`os.mkdir` is atomic). The new folder and the outermost folder created with it, else None."""
    if isinstance(logger, list) or not logger or not str(logger.get("class_path", "")).endswith(NUMBERED_LOGGERS):
        return None
    args = logger.get("init_args") or {}
    if args.get("version") is not None or rank_zero_only.rank != 0:
        return None
    root = Path(args.get("save_dir") or ".") / str(args.get("name") or "lightning_logs")
    taken = [int(p.name[8:]) for p in root.glob("version_*") if p.name[8:].isdigit()] if root.is_dir() else []
    first = max(taken, default=-1) + 1
    check_writable(root / f"version_{first}", "trainer.logger")
    created = highest_missing(root)  # the outermost folder above the run's that this creates, if any
    root.mkdir(parents=True, exist_ok=True)
    for version in range(first, first + 1000):
        with suppress(FileExistsError):  # another run took it first: the next
            (root / f"version_{version}").mkdir()
            args["version"] = version
            return root / f"version_{version}", created or root / f"version_{version}"
    raise RunStopped(f"trainer.logger: no free version_N folder in {root} after 1,000 tries: choose another name.")


@contextmanager
def releasing_claimed(state: dict) -> Iterator[None]:
    """After the block, remove the folder `state["claimed"]` (`claim_run_folder`) if it holds nothing, or, if the
    block failed, nothing but its saved config: no empty or half-made run folder is left."""
    removable = {"config.yaml", "hparams.yaml"}  # the block failed: the folder goes if it holds only these
    try:
        yield
        removable = set()  # it ended well: the folder goes only if empty
    finally:
        folder, top = state.get("claimed") or (None, None)
        if folder and folder.is_dir() and {p.name for p in folder.rglob("*") if p.is_file()} <= removable:
            shutil.rmtree(folder)
            # the folders created with it, while empty (another run may be there); `top` is absolute
            for parent in Path(os.path.abspath(folder)).parents:
                if not parent.is_relative_to(top) or any(parent.iterdir()):
                    break
                parent.rmdir()


def highest_missing(path: str | os.PathLike) -> Path | None:
    """The outermost folder of `path` that does not exist yet (what creating `path` creates), or None."""
    path = Path(os.path.abspath(path))
    missing = [p for p in (path, *path.parents) if not os.path.exists(p)]  # also what the system refuses (too long)
    return missing[-1] if missing else None


def check_writable(path: str | os.PathLike, field: str) -> Path:
    """Refuse a folder that cannot be created or written, creating nothing (tried in its nearest existing folder)."""
    path, missing = Path(path), highest_missing(path)
    existing = missing.parent if missing else Path(os.path.abspath(path))
    limit = os.pathconf(existing, "PC_NAME_MAX") if existing.is_dir() else 255
    if too_long := [part for part in path.parts if len(os.fsencode(part)) > limit]:
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
    """Refuse `outputs` (field, folder, glob) unwritable, or holding another run's matching files unless `overwrite`."""
    found = []
    for field, folder, pattern in outputs:
        check_writable(folder, field)  # a folder, or none yet: glob finds nothing there
        found += [(field, p) for p in sorted(folder.glob(pattern)) if not p.name.startswith(".")]
    if found and not overwrite:
        fields = sorted({field for field, _ in found})
        listed = ", ".join(str(path) for _, path in found[:3]) + (f" and {len(found) - 3} more" if found[3:] else "")
        raise ConfigError(
            f"{' / '.join(fields)}: this command would replace files of another run ({listed}). Choose another "
            f"folder (another logger name or version, or {fields[0]}), or pass --overwrite true to replace them."
        )


def sha256_of(path: str | os.PathLike) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def provenance(path: str | os.PathLike | None) -> dict[str, str | None]:
    """What an output was made from: the checkpoint's absolute path and SHA-256 (both None without one)."""
    if not path or not Path(path).is_file():
        return {"checkpoint": None, "checkpoint_sha256": None}
    return {"checkpoint": str(Path(path).resolve()), "checkpoint_sha256": sha256_of(path)}


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A path beside `path` to write to, renamed onto it if the block succeeds: `path` is old or whole, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_atomically(obj: object, path: Path) -> None:
    """`torch.save` through `atomic_path`, synced to disk before the rename. Serialised in memory first: torch's
    zip writer turns a failed file write (e.g. a full disk) into a RuntimeError without the OS's reason."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        out.write(buffer.getbuffer())
        out.flush()
        os.fsync(out.fileno())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return not isinstance(err, ProcessLookupError)  # PermissionError: someone else's process
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporaries in `folder` whose writing process is gone (a live process's write is left alone)."""
    for path in folder.iterdir() if folder.is_dir() else []:
        if (match := TEMPORARY.match(path.name)) is None or _alive(int(match.group(1))):
            continue
        try:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            log.info("removed %s, left by a write that was killed (process %s)", path, match.group(1))
        except OSError as err:  # e.g. a read-only folder: left, and said
            log.warning("could not remove the stale temporary %s (%s)", path, err)


class CLITrainer(Trainer):
    """Lightning's Trainer with `limit_*_batches` typed int first: Lightning's `Optional[Union[int, float]]` reaches
    the parser as float first (typing caches equal unions), which would turn `--trainer.limit_train_batches 1` into
    1.0, every batch. Here 1 is one batch, 1.0 all of them, 0.25 a quarter."""

    def __init__(
        self,
        *,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**{k: v for k, v in locals().items() if k.startswith("limit_")}, **kwargs)  # the four above


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint through `save_atomically`: a full disk stops the run naming the file, the previous
    checkpoint intact. The CLI's default `trainer.plugins`; off: `--trainer.plugins null`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        try:
            save_atomically(checkpoint, path)
        except OSError as err:
            kept = f"the previous {path.name} is intact" if path.exists() else "no earlier file was there"
            raise RunStopped(
                f"could not write checkpoint {path}: {err.strerror or err} ({kept}). "
                f"Free disk space or make {path.parent} writable, then resume with --ckpt_path last."
            ) from err


class ConfigToLoggers(SaveConfigCallback):
    """config.yaml in the log dir and the run's folder (W&B shares its log dir); the resolved config to every logger."""

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

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # after a command that ended well, below Lightning's own results table
        self.say_done(trainer, getattr(stage, "value", stage))

    @rank_zero_only
    def say_done(self, trainer: Trainer, command: str) -> None:
        """The command's last line: where its outputs went and the numbers that decide; after `fit`, the checkpoint
        kept as best, by which metric, and the command that tests it."""
        said = [f"{command} done; outputs in {self.run_folder}"]
        if command == "fit":
            best = next((cb for cb in trainer.checkpoint_callbacks if cb.monitor and cb.best_model_path), None)
            last = [Path(cb.dirpath) / "last.ckpt" for cb in trainer.checkpoint_callbacks if cb.filename == "last"]
            if best:
                said.append(f"best by {best.monitor} ({float(best.best_model_score):.5g}): {best.best_model_path}")
            kept = best.best_model_path if best else next((str(p) for p in last if p.is_file()), None)
            configs = " ".join(f"--config {getattr(p, 'relative', p)}" for p in self.config.get("config") or [])
            said += [f"test it: vae-lightning test {configs} --ckpt_path {kept}"] if kept else []
        else:
            stage = {"validate": "val", "test": "test"}.get(command)
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if stage and k.startswith(f"{stage}/")}
            said += [", ".join(f"{k} {v:.5g}" for k, v in metrics.items() if k.split("/")[1] in ("nelbo", "nll"))]
        print(f"vae-lightning: {'; '.join(s for s in said if s)}", flush=True)
