"""Many nodes, for real on one machine: two "nodes" on 127.0.0.1, each started by its own `torchrun` as on two
machines (gloo, one process each), and a real single-node Slurm (Debian's slurm-wlm and munge, started here)
running the shipped `scripts/slurm/train.sbatch` with two tasks; the launchers' counts checked against the
Trainer's, a lost node and an unreachable rendezvous stopped with one line each, in bounded time."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from browser import free_port
from conftest import CONFIGS, REPO, cli_subprocess, configs, read_metrics, subprocess_env

from vae_lightning.distributed import check_launch
from vae_lightning.errors import ConfigError

MULTINODE = CONFIGS / "trainer" / "multinode.yaml"
ACTIVATED = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # `vae-lightning` found
ON_CPU = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.num_nodes", "2"]


def torchrun_nodes(args: list, cwd: Path, ranks=(0, 1), port: int | None = None, timeout: float = 240) -> list:
    """`torchrun --nnodes 2 --nproc-per-node 1 --node-rank R ... -m vae_lightning ARGS` for each R, started
    together as on two machines; [(exit status, output)] per node. A node still running after `timeout`
    seconds fails the test (a hang)."""
    port = port or free_port()
    env = {**subprocess_env(cwd), "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "torchrun"),
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(rank),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "-m",
                "vae_lightning",
                *map(os.fspath, args),
            ],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        for rank in ranks
    ]
    results, deadline = [], time.monotonic() + timeout
    for node in nodes:
        try:
            out, _ = node.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in nodes:
                if other.poll() is None:
                    os.killpg(other.pid, signal.SIGKILL)  # torchrun and its worker share the session
            pytest.fail(f"a node still ran after {timeout} s (a hang): {args}")
        results.append((node.returncode, out))
    return results


def errors(out: str) -> list[str]:
    """The package's own one-line messages in a node's output."""
    return [line for line in out.splitlines() if line.startswith("vae-lightning: ")]


@pytest.mark.slow
def test_two_torchrun_nodes_cover_the_training_set_once_an_epoch_and_test_like_one_process(tiny_config, tmp_path):
    from probes import image_codes

    from vae_lightning.data import MNISTDataModule

    probe = tmp_path / "probe.yaml"
    probe.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "probes.SeenImages", "init_args": {"out_dir": str(tmp_path / "seen")}}]}}))  # fmt: skip
    base = configs(CONFIGS / "two_latent.yaml", tiny_config)
    fit = ["fit", *base, "--config", MULTINODE, "--config", probe, *ON_CPU, "--trainer.max_epochs", "2"]
    fit = torchrun_nodes([*fit, "--experiments.names", "[]", "--trainer.logger.init_args.name", "fit"], tmp_path)
    assert [status for status, _ in fit] == [0, 0], fit[0][1][-3000:] + fit[1][1][-3000:]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in fit[0][1] and "GLOBAL_RANK: 1, MEMBER: 2/2" in fit[1][1]
    seen = [json.loads((tmp_path / "seen" / f"rank{r}.json").read_text()) for r in (0, 1)]
    datamodule = MNISTDataModule(**yaml.safe_load(tiny_config.read_text())["data"])
    datamodule.setup("fit")
    training_images = sorted(image_codes(datamodule.splits["train"][0]))
    for epoch in ("0", "1"):
        one, two = seen[0][epoch], seen[1][epoch]
        assert not set(one) & set(two) and sorted(one + two) == training_images  # each image once, on one node

    checkpoint = tmp_path / "logs" / "fit" / "version_0" / "checkpoints" / "last.ckpt"
    evaluate = ["test", *base, "--ckpt_path", checkpoint, "--data.eval_batch_size", "30"]
    two_nodes = torchrun_nodes([*evaluate, "--config", MULTINODE, *ON_CPU, "--trainer.logger.init_args.name",
                                "test_two"], tmp_path)  # fmt: skip
    assert [status for status, _ in two_nodes] == [0, 0], two_nodes[0][1][-3000:]
    cli_subprocess([*evaluate, "--trainer.logger.init_args.name", "test_one"], tmp_path)
    one, two = (read_metrics(tmp_path / "logs" / name, "test/") for name in ("test_one", "test_two"))
    assert set(one) >= {"test/nelbo", "test/nll", "test/kl"}
    for key, value in one.items():
        assert two[key] == pytest.approx(value, rel=1e-5), key


@pytest.mark.slow
def test_a_killed_node_stops_the_other_with_one_line_and_both_resume_from_last(tiny_config, tmp_path):
    kill = tmp_path / "kill.yaml"  # node 1's process dies at step 7 (of 5 a epoch), as a lost machine would
    kill.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "probes.KillAt", "init_args": {"step": 7, "rank": 1}}]}}))  # fmt: skip
    run = ["fit", *configs(CONFIGS / "two_latent.yaml", tiny_config, MULTINODE), *ON_CPU, "--trainer.max_epochs", "3",
           "--experiments.names", "[]", "--last_checkpoint.every_n_train_steps", "2"]  # fmt: skip
    (zero, out_zero), (one, _) = torchrun_nodes([*run, "--config", kill], tmp_path, timeout=180)
    assert one != 0 and zero == 1, out_zero[-3000:]  # node 0: stopped, not crashed, not hanging
    (line,) = errors(out_zero)
    assert line.startswith("vae-lightning: stopped: another process of this distributed run is gone or stopped")
    assert "--ckpt_path last" in line
    last = tmp_path / "logs" / "two_latent" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 6  # the last one written before the loss

    resumed = torchrun_nodes([*run, "--ckpt_path", "last"], tmp_path)
    assert [status for status, _ in resumed] == [0, 0], resumed[0][1][-3000:]
    assert "version_0/checkpoints/last.ckpt" in resumed[0][1]  # resumed from the checkpoint before the loss
    final = torch.load(tmp_path / "logs" / "two_latent" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (final["epoch"], final["global_step"]) == (2, 15)  # all 3 epochs of 5 steps: the run went on to the end


@pytest.mark.slow
def test_counts_that_do_not_match_the_launcher_and_a_batch_that_does_not_divide_are_refused(tiny_config, tmp_path):
    base = ["fit", *configs(CONFIGS / "two_latent.yaml", tiny_config, MULTINODE), *ON_CPU, "--trainer.max_epochs", "1"]
    for status, out in torchrun_nodes([*base, "--trainer.num_nodes", "1"], tmp_path):
        assert status != 0 and errors(out) == [
            "vae-lightning: error: trainer.num_nodes=1 and trainer.devices=1 do not match the 2 processes torchrun "
            "started (2 node(s) x 1 per node, its --nnodes and --nproc-per-node): set --trainer.num_nodes 2 "
            "--trainer.devices 1."
        ], out[-2000:]
    for status, out in torchrun_nodes([*base, "--data.batch_size", "49"], tmp_path):
        (line,) = errors(out)
        assert (
            status != 0
            and "data.batch_size=49 must split across 2 processes" in line
            and "global batch size" in line
            and "2 processes" in line
        )


@pytest.mark.slow
def test_an_unreachable_rendezvous_is_named_within_a_bounded_wait(tiny_config, tmp_path):
    # node 1 alone, its environment as torchrun sets it, the rendezvous (node 0's port) unanswered
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound and never listening: connections are refused until the timeout
        short = tmp_path / "short.yaml"
        short.write_text(yaml.safe_dump({"trainer": {"strategy": {"init_args": {"timeout": "0:00:05"}}}}))
        env = {**subprocess_env(tmp_path), "TORCHELASTIC_RUN_ID": "test", "RANK": "1", "LOCAL_RANK": "0",
               "GROUP_RANK": "1", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port)}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "vae_lightning", "fit",
             *map(str, configs(CONFIGS / "two_latent.yaml", tiny_config, MULTINODE, short)), *ON_CPU],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2
    (line,) = errors(done.stderr)
    assert line.startswith(f"vae-lightning: error: cannot reach the rendezvous at 127.0.0.1:{port} (")
    assert "(MASTER_ADDR and MASTER_PORT: torchrun --master-addr and --master-port)." in line


@pytest.mark.parametrize(
    ("environ", "counts", "expected"),
    [
        ({}, (1, 1), None),  # no launcher: nothing to match
        ({}, (2, 1), "no launcher started this process"),  # several nodes nobody starts: refused, never a wait
        ({"NODE_RANK": "0", "MASTER_ADDR": "10.0.0.1"}, (2, 1), None),  # each node started by hand
        ({"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}, (2, 4), None),
        ({"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}, (2, "auto"), None),
        ({"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}, (1, 4), "--trainer.num_nodes 2"),
        ({"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"}, (2, [0, 1]), "--trainer.devices 4"),
        ({"SLURM_NTASKS": "6", "SLURM_NNODES": "3", "SLURM_JOB_NAME": "train"}, (3, 2), None),
        ({"SLURM_NTASKS": "6", "SLURM_NNODES": "3", "SLURM_JOB_NAME": "train"}, (2, 2), "sbatch --nodes"),
        ({"SLURM_NTASKS": "6", "SLURM_NNODES": "3", "SLURM_JOB_NAME": "bash"}, (1, 1), None),  # interactive
    ],
)
def test_the_trainer_s_counts_are_checked_against_the_launcher_s(monkeypatch, environ, counts, expected):
    monkeypatch.setattr(os, "environ", environ)
    if expected is None:
        check_launch(*counts)
    else:
        with pytest.raises(ConfigError, match=expected.replace(" ", r"\s")):
            check_launch(*counts)


# ------------------------------------------------------------------------------------------------ Slurm
SLURM_CONF = """ClusterName=vaetest
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmdSpoolDir={dir}/spool
StateSaveLocation={dir}/state
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd.log
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=local Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A real single-node Slurm cluster on this machine (slurmctld, slurmd, munged as Debian packages them,
    root needed): the environment that points its commands at it. Stopped again after the module."""
    needed = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "sinfo")
    assert all(shutil.which(tool) for tool in needed), (
        "the Slurm test needs a local Slurm: apt-get install slurm-wlm munge (.ci/run installs them)"
    )
    assert os.geteuid() == 0, "the Slurm test starts slurmctld and slurmd, which needs root"
    folder = tmp_path_factory.mktemp("slurm")
    for sub in ("spool", "state"):
        (folder / sub).mkdir()
    host = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=host, dir=folder, cpus=os.cpu_count()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    if not munge_answers():  # a socket file can outlive its daemon (a restored machine): ask for a credential
        Path("/run/munge").mkdir(exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["su", "-s", "/bin/sh", "munge", "-c", "munged --force"], check=True, timeout=30)
        assert munge_answers(), "munged started but gives no credential: see /var/log/munge/munged.log"
    try:
        for daemon in ("slurmctld", "slurmd"):
            try:
                subprocess.run([daemon, "-c"], env=env, check=True, timeout=30)
            except subprocess.SubprocessError as error:
                raise AssertionError(f"{daemon} did not start: {error}\n{slurm_logs(folder)}") from error
        deadline = time.monotonic() + 60
        while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout:
            assert time.monotonic() < deadline, slurm_logs(folder)
            time.sleep(0.5)
        yield env
    finally:  # stopped even when the set-up failed half way, so no daemon outlives the tests
        for daemon in ("slurmd", "slurmctld"):
            pid = folder / f"{daemon}.pid"
            if pid.exists():
                os.kill(int(pid.read_text()), signal.SIGTERM)


def munge_answers() -> bool:
    """Whether a munged is serving: it encodes a credential for us (exit 0), not only has a socket file."""
    return subprocess.run(["munge", "-n"], input=b"", capture_output=True, timeout=10, check=False).returncode == 0


def slurm_logs(folder: Path) -> str:
    """The tail of each daemon's log, for a failure message."""
    logs = [folder / f"{daemon}.log" for daemon in ("slurmctld", "slurmd")]
    return "\n".join(f"--- {log.name}\n{log.read_text()[-2000:]}" for log in logs if log.exists())


@pytest.mark.slow
def test_the_shipped_sbatch_script_trains_two_tasks_on_a_real_slurm(slurm, tiny_config, tmp_path):
    output = tmp_path / "slurm-%j.out"
    done = subprocess.run(
        ["sbatch", "--wait", "--nodes", "1", "--ntasks-per-node", "2", "--cpus-per-task", "1", "--gpus-per-node", "0",
         "--output", str(output), str(REPO / "scripts" / "slurm" / "train.sbatch"), str(CONFIGS / "two_latent.yaml"),
         "--config", str(tiny_config), "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1",
         "--experiments.names", "[]"],
        cwd=REPO, env={**slurm, **subprocess_env(tmp_path), "PATH": ACTIVATED}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    (log,) = tmp_path.glob("slurm-*.out")
    out = log.read_text()
    assert done.returncode == 0, done.stdout + done.stderr + out[-4000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in out  # two srun tasks, one DDP run
    checkpoint = tmp_path / "logs" / "two_latent" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 5  # 250 images, global batch 50
