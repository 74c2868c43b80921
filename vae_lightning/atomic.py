"""Writes that a reader (or a crash) never sees half-done: write beside the target, then rename."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


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
