"""Collectives that work the same on one process and under DDP (call them on every rank); the launchers'
process counts checked against the Trainer's; a lost peer told apart from a bug."""

from __future__ import annotations

import os
import traceback

import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor
from torch.distributed import DistStoreError

from vae_lightning.errors import ConfigError, RunStopped, first_line

TORCH_DISTRIBUTED = os.path.dirname(torch.distributed.__file__)  # where torch's collectives are called


def attached_trainer(module: LightningModule) -> Trainer | None:
    """The Trainer running `module`, or None when it runs outside one (`module.trainer` raises then)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def gather_rows(module: LightningModule, rows: Tensor) -> Tensor:
    """Concatenate every rank's `rows` (N_r, ...) along dim 0, ranks in order; N_r may differ.

    Pads each rank's rows to the longest, all-gathers on the module's device, trims the padding.
    Returns the rows on the module's device; on a single process returns `rows` unchanged.
    """
    trainer = attached_trainer(module)
    if trainer is None or trainer.world_size == 1:
        return rows
    rows = rows.to(module.device)
    lengths = module.all_gather(torch.tensor(len(rows), device=module.device)).tolist()  # (world,)
    padded = rows.new_zeros(max(lengths), *rows.shape[1:])
    padded[: len(rows)] = rows
    gathered = module.all_gather(padded)  # (world, max_len, ...)
    return torch.cat([gathered[r, :n] for r, n in enumerate(lengths)])


def release_process_group() -> None:
    """Destroy this process's default process group, if there is one (call it on every rank when the
    run is over). Lightning does this at exit for NCCL alone; a gloo group left to the interpreter's
    finalization can abort a process whose run succeeded ("terminate called without an active
    exception", SIGABRT: gloo's worker threads still hold tensors while Python is torn down)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def launched_processes(environ: dict[str, str] | None = None) -> tuple[str, int, int] | None:
    """(launcher, nodes, processes per node) of the torchrun or Slurm job this process belongs to, read from
    the environment each sets for its processes (as Lightning's cluster environments detect them); None
    when neither started it."""
    env = os.environ if environ is None else environ
    if "TORCHELASTIC_RUN_ID" in env and "WORLD_SIZE" in env and "LOCAL_WORLD_SIZE" in env:
        world, local = int(env["WORLD_SIZE"]), int(env["LOCAL_WORLD_SIZE"])
        return "torchrun", world // max(local, 1), local
    if "SLURM_NTASKS" in env and "SLURM_NNODES" in env and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        nodes, tasks = int(env["SLURM_NNODES"]), int(env["SLURM_NTASKS"])
        return "srun", nodes, tasks // max(nodes, 1)
    return None


def check_launch(num_nodes: int, devices: object, environ: dict[str, str] | None = None) -> None:
    """Refuse, before anything starts, a `trainer.num_nodes` or `trainer.devices` that does not match the
    processes torchrun or Slurm started (Lightning stops with a traceback there, or the ranks wait on
    each other). `devices` is checked when it is a count or a list; "auto" and -1 are Lightning's."""
    launched = launched_processes(environ)
    if launched is None:
        return
    launcher, nodes, per_node = launched
    count = len(devices) if isinstance(devices, (list, tuple)) else devices
    wrong_devices = isinstance(count, int) and not isinstance(count, bool) and count > 0 and count != per_node
    if num_nodes == nodes and not wrong_devices:
        return
    flags = "--nnodes and --nproc-per-node" if launcher == "torchrun" else "sbatch --nodes and --ntasks-per-node"
    raise ConfigError(
        f"trainer.num_nodes={num_nodes} and trainer.devices={devices} do not match the {nodes * per_node} "
        f"processes {launcher} started ({nodes} node(s) x {per_node} per node, its {flags}): set "
        f"--trainer.num_nodes {nodes} --trainer.devices {per_node}."
    )


def distributed_failure(err: BaseException) -> Exception | None:
    """What a distributed run that failed in torch.distributed says, by where the error arose: while joining the
    process group (`init_process_group`: a rendezvous nobody answered), a setting to fix (ConfigError); in a
    collective later (a `DistError`, or gloo's RuntimeError), a peer gone or silent (RunStopped); None for any
    other error."""
    link: BaseException | None = err
    seen: list[BaseException] = []
    while link is not None and link not in seen:
        seen.append(link)
        frames = traceback.extract_tb(link.__traceback__)
        in_torch_distributed = bool(frames) and frames[-1].filename.startswith(TORCH_DISTRIBUTED)
        if isinstance(link, torch.distributed.DistError) or (isinstance(link, RuntimeError) and in_torch_distributed):
            if "init_process_group" in {frame.name for frame in frames} or isinstance(link, DistStoreError):
                where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
                return ConfigError(
                    f"cannot reach the rendezvous at {where} ({first_line(link)[:160]}): start the node of rank 0 "
                    "(it hosts it) and check that this node reaches that address and port (MASTER_ADDR and "
                    "MASTER_PORT: torchrun --master-addr and --master-port)."
                )
            return RunStopped(
                f"another process of this distributed run is gone or stopped answering ({first_line(link)[:200]}): "
                "see its node's log; then start every node again with --ckpt_path last to resume."
            )
        link = link.__cause__ or link.__context__
    return None
