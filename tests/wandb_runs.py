"""Reading what a W&B offline run wrote: the records of its `.wandb` transaction log."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import CONFIGS

WANDB = CONFIGS / "logger" / "wandb.yaml"


def finished_records(path: Path, timeout: float = 30.0) -> list:
    """The records of a run's transaction log once it holds the run's exit record: W&B's service process
    writes the file, and may still be writing it when `wandb.finish()` has returned (seen: 0 records)."""
    deadline = time.monotonic() + timeout
    while True:
        records = wandb_records(path) if path.stat().st_size > 7 else []
        if any(r.HasField("exit") for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def wandb_records(path: Path) -> list:
    """The protobuf records of a `.wandb` transaction log (LevelDB log framing in 32 KiB blocks)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    block, pos, partial, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        partial += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = Record()
            record.ParseFromString(partial)
            records.append(record)
            partial = b""
    return records
