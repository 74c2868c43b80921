"""DDP: collectives the same on one process (call them on every rank), launchers' counts checked, lost peers named."""

import os
import traceback

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from torch.distributed import DistStoreError
from torchmetrics.utilities.distributed import gather_all_tensors

from vae_lightning.errors import ConfigError, RunStopped, first_line

TORCH_DISTRIBUTED = os.path.dirname(torch.distributed.__file__)  # where torch's collectives are called


def gather_rows(module: LightningModule, rows: Tensor) -> Tensor:
    """Every rank's `rows` (N_r, ...; N_r may differ) concatenated in rank order; on one process, `rows` unchanged."""
    return rows if module.trainer.world_size == 1 else torch.cat(gather_all_tensors(rows.to(module.device)))


def release_process_group() -> None:
    """Destroy the process group, if any (every rank, at the end): a gloo one left to teardown can SIGABRT a process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def check_launch(num_nodes: int, devices: object) -> None:
    """Refuse `trainer.num_nodes` or `trainer.devices` other than torchrun's or Slurm's counts, and several nodes
    without a launcher (or NODE_RANK set by hand): else the ranks wait forever."""
    env = os.environ
    if {"TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_WORLD_SIZE"} <= set(env):
        launcher, flags, per_node = "torchrun", "--nnodes and --nproc-per-node", int(env["LOCAL_WORLD_SIZE"])
        nodes = int(env["WORLD_SIZE"]) // max(per_node, 1)
    elif {"SLURM_NTASKS", "SLURM_NNODES"} <= set(env) and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        launcher, flags, nodes = "srun", "sbatch --nodes and --ntasks-per-node", int(env["SLURM_NNODES"])
        per_node = int(env["SLURM_NTASKS"]) // max(nodes, 1)
    elif num_nodes > 1 and "NODE_RANK" not in env:  # else every rank would wait for nodes nobody started
        raise ConfigError(
            f"trainer.num_nodes={num_nodes}, but no launcher started this process: start one per node with "
            f"torchrun --nnodes {num_nodes} or srun (README, 'Many nodes'), or set --trainer.num_nodes 1."
        )
    else:
        return
    count = len(devices) if isinstance(devices, (list, tuple)) else devices
    wrong_devices = isinstance(count, int) and not isinstance(count, bool) and count > 0 and count != per_node
    if num_nodes != nodes or wrong_devices:
        raise ConfigError(
            f"trainer.num_nodes={num_nodes} and trainer.devices={devices} do not match the {nodes * per_node} "
            f"processes {launcher} started ({nodes} node(s) x {per_node} per node, its {flags}): set "
            f"--trainer.num_nodes {nodes} --trainer.devices {per_node}."
        )


def distributed_failure(err: BaseException) -> Exception | None:
    """A torch.distributed failure by where it arose: the rendezvous (ConfigError), a peer gone later (RunStopped)."""
    link, seen = err, []
    while link is not None and link not in seen:  # `err`, then what it was raised from or during
        seen.append(link)
        frames = traceback.extract_tb(link.__traceback__)
        in_torch = bool(frames) and frames[-1].filename.startswith(TORCH_DISTRIBUTED)
        if isinstance(link, torch.distributed.DistError) or isinstance(link, RuntimeError) and in_torch:
            if isinstance(link, DistStoreError) or any(frame.name == "init_process_group" for frame in frames):
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
