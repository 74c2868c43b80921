"""Writes that a reader (or a crash) never sees half-done: write beside the target, then rename."""

from __future__ import annotations

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
    """A temporary path beside `path` to write to; renamed onto `path` when the block succeeds, removed
    whatever happens, so `path` holds either its previous contents or the whole new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_atomically(obj: object, path: Path) -> None:
    """`torch.save` through `atomic_path`."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files and folders a killed write left in `folder` (those whose process is gone);
    return what was removed. A write still under way in a live process is left alone."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = TEMPORARY.match(path.name)
        if match is None or _alive(int(match.group(1))):
            continue
        try:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        except OSError as err:  # e.g. a read-only folder: left, and said
            log.warning("could not remove the stale temporary %s (%s)", path, err)
            continue
        removed.append(path)
        log.info("removed %s, left by a write that was killed (process %s)", path, match.group(1))
    return removed
