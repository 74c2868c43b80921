"""Helpers shared by the scripts: run the CLI as a user would, find its output, describe the machine."""

from __future__ import annotations

import csv
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def relative(path: str | os.PathLike) -> str:
    """A path as a results file names it: relative to the repository when inside it, so the file reads the same
    on every machine; as given otherwise."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def writable(parser, flag: str, folder: Path | None = None, file: Path | None = None) -> None:
    """Refuse (parser.error, exit 2) an output `folder`, or the folder of an output `file`, that cannot be created
    or written, before any long step: a run must not end by finding out. Nothing is created."""
    from vae_lightning.errors import ConfigError
    from vae_lightning.runs import check_writable

    try:
        if file is not None and Path(file).is_dir():
            raise ConfigError(f"{flag}: {str(file)!r} is a folder; name a file")
        check_writable(folder if folder is not None else Path(file).resolve().parent, flag)
    except ConfigError as err:
        parser.error(str(err))


def command(name: str) -> str:
    """A console script of the package, from the same environment as this Python."""
    return str(Path(sys.executable).parent / name)


def config_args(config: str, extra: list[str], save_dir: Path, name: str) -> list[str]:
    """`vae-lightning` arguments for `configs/<config>.yaml` with `extra`, its run logged (CSV, no progress
    bar) under `<save_dir>/<name>/version_N`."""
    return [
        *("--config", f"configs/{config}.yaml", *extra, "--trainer.enable_progress_bar", "false"),
        *("--trainer.logger.init_args.save_dir", str(save_dir), "--trainer.logger.init_args.name", name),
    ]


def run(args: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run a command from the repository root (in `env`, default this one), output to `log`; exit on failure.
    Returns seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(args)}; see {log}")
    return time.perf_counter() - start


def latest_version(folder: Path) -> Path:
    """The newest `version_N` folder a CSVLogger made under `folder`."""
    return max(folder.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def logged_metrics(version_dir: Path) -> dict[str, float]:
    """The last logged value of every metric in a CSVLogger's metrics.csv."""
    merged: dict[str, float] = {}
    with open(version_dir / "metrics.csv") as rows:
        for row in csv.DictReader(rows):
            merged.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return merged


def machine() -> str:
    """The processor (its name, the vector instructions torch's kernels use, bfloat16 units), cores, GPU, torch."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        info = []
    names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    flags = next((set(line.split(":", 1)[1].split()) for line in info if line.startswith("flags")), set())
    model = names[0] if names else platform.processor() or platform.machine()
    import torch

    units = [name for flag, name in (("avx512_bf16", "AVX-512 bfloat16"), ("amx_bf16", "AMX")) if flag in flags]
    model += f" ({', '.join([torch.backends.cpu.get_cpu_capability(), *units])})"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{model}, {os.cpu_count()} cores, {device}, torch {torch.__version__}"
