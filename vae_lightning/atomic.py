"""Writes that a reader (or a crash) never sees half-done: write beside the target, then rename."""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

log = logging.getLogger(__name__)

# `.<name>.tmp-<pid>` (atomic_path) and `.fetch-<pid>-<random>` (the MNIST fetcher's scratch folder)
TEMPORARY = re.compile(r"^\.(?:.+\.tmp|fetch)-(\d+)(?:-.*)?$")


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
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        pass
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporaries in `folder` whose writing process is gone (a live process's write is left alone)."""
    for path in folder.iterdir() if folder.is_dir() else []:
        match = TEMPORARY.match(path.name)
        if match is None or _alive(int(match.group(1))):
            continue
        try:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        except OSError as err:  # e.g. a read-only folder: left, and said
            log.warning("could not remove the stale temporary %s (%s)", path, err)
        else:
            log.info("removed %s, left by a write that was killed (process %s)", path, match.group(1))
