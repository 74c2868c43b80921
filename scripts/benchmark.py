"""Speed, side by side: pytorch/examples' VAE loop against `vae-lightning fit`, and both against the GEMM roofline.

In one process, on one machine, with the same model (784-400-20-400-784 MLP), batch, optimizer
(Adam, lr 1e-3) and continuous pixels:

  (a) `reference_vae.py`: pytorch/examples' `vae/main.py` as written there (torchvision MNIST,
      DataLoader, ToTensor, `.item()` every batch);
  (b) the package: `vae-lightning fit --config configs/vanilla.yaml` in-process through the CLI,
      with the experiments off, a stopwatch callback and the config's own logger (CSV); the
      config trains with `speed.train_matmul_precision: medium` (float32 matmuls on bfloat16 inputs), so
      (b32), the same with `--speed.train_matmul_precision highest`, shows the full-float32 speed;
  (c) a float32 matrix-multiply probe: this machine's GEMM peak at full precision ("highest"), and
      at (b)'s training precision.

Times are seconds of training per epoch of 60,000 images (the package holds 5,000 out for
validation and trains on 55,000, so its time is scaled by 60,000/55,000), the median over every
epoch but each run's first (warm-up), over `--repeats` runs of each, run alternately. The
evaluation passes (the reference's test set, the package's validation and checkpoints) are timed
apart. The roofline fraction is (b)'s matrix-multiply FLOPs per epoch / (its seconds x the GEMM
peak): against the full-precision peak, and against the peak of the precision it trains with.
Then `test/nll` (k importance samples on the 10,000 test images, in float32) is timed on (b)'s
last checkpoint, with its peak memory. The last line printed is JSON with every number.

`--paper-nll` times instead (d): `test/nll` of the IWAE paper's model (`configs/paper/vae_k1.yaml`,
784-200-200-50, k = 5000, full float32) against the same GEMM roofline: its decoder's matrix-multiply
FLOPs (k x 10,000 passes) / (the test's seconds x the float32 GEMM peak), both measured in this run,
on `--nll-checkpoint` (default: the config's model after a short fit).

    python scripts/benchmark.py                     # CPU: a few minutes on 2 cores
    python scripts/benchmark.py --device cuda
    python scripts/benchmark.py --paper-nll --nll-checkpoint RUN/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import REPO, machine, relative, writable
from lightning.pytorch import Callback

PIXELS, EPOCH_IMAGES = 784, 60_000
VANILLA_CONFIG = REPO / "configs" / "vanilla.yaml"
PAPER_CONFIG = REPO / "configs" / "paper" / "vae_k1.yaml"


# ---------------------------------------------------------------------------------------------- (c)
def gemm_peak(
    device: torch.device, sizes: list[int], precision: str = "highest", repeats: int = 5, dtype=torch.float32
) -> dict:
    """Best median GFLOP/s of square matmuls of `dtype` at `torch.set_float32_matmul_precision(precision)`
    ("highest": the full-precision float32 peak; "medium": bfloat16 inputs allowed, float32 accumulation;
    `dtype=torch.bfloat16`: bfloat16 in and out, what the processor's bfloat16 units give, if it has any)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        return _gemm_peak(device, sizes, repeats, dtype)
    finally:
        torch.set_float32_matmul_precision(before)


def _gemm_peak(device: torch.device, sizes: list[int], repeats: int, dtype=torch.float32) -> dict:
    best = {"gflops": 0.0, "size": 0}
    for n in sizes:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        out = torch.empty(n, n, device=device, dtype=dtype)
        times = []
        for _ in range(repeats + 1):  # the first is warm-up
            sync(device)
            start = time.perf_counter()
            torch.mm(a, b, out=out)
            sync(device)
            times.append(time.perf_counter() - start)
        gflops = 2 * n**3 / statistics.median(times[1:]) / 1e9
        if gflops > best["gflops"]:
            best = {"gflops": gflops, "size": n}
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_flops_per_image(layers: list[tuple[int, int]]) -> int:
    """Matrix-multiply FLOPs of one training step per image for a chain of Linear layers (fan_in, fan_out):
    forward 2*in*out, backward 2*in*out for the weight gradient and 2*in*out for the input gradient,
    except the first encoder layer (its input, the pixels, needs no gradient)."""
    return sum(2 * i * o * (3 if n else 2) for n, (i, o) in enumerate(layers))


# 784-400, 400-(20+20), 20-400, 400-784: the reference's layers, and the package's MLPEncoder/MLPDecoder.
VANILLA_LAYERS = [(PIXELS, 400), (400, 40), (20, 400), (400, PIXELS)]
# The paper model's decoder, 50-200-200-784: what test/nll runs k times per image.
PAPER_DECODER_LAYERS = [(50, 200), (200, 200), (200, PIXELS)]


def decode_flops(layers: list[tuple[int, int]]) -> int:
    """Matrix-multiply FLOPs of one forward pass through a chain of Linear layers (2*in*out each)."""
    return sum(2 * i * o for i, o in layers)


# ---------------------------------------------------------------------------------------------- (b)
class Stopwatch(Callback):
    """Per epoch: training seconds (to the end of the last batch), evaluation seconds, images seen;
    per test: seconds and peak memory (CUDA allocator, or the process's resident set on a CPU)."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []
        self.test: dict = {}
        self.test_images = 0

    def _now(self, pl_module) -> float:
        sync(pl_module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs.append({"start": self._now(pl_module), "images": 0})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.epochs[-1]["images"] += len(batch[0])

    def _train_done(self, pl_module) -> None:
        epoch = self.epochs[-1]
        if "train_s" not in epoch:
            epoch["train_s"] = self._now(pl_module) - epoch["start"]

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._train_done(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._train_done(pl_module)
        self.epochs[-1]["epoch_s"] = self._now(pl_module) - self.epochs[-1]["start"]

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.test_images += len(batch[0])

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.test_images = 0
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        else:
            reset_peak_rss()
        self.test = {"start": self._now(pl_module), "memory_at_start_mb": current_rss_mb()}

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.test["seconds"] = self._now(pl_module) - self.test.pop("start")
        if pl_module.device.type == "cuda":
            self.test["peak_memory_mb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**20
            self.test["memory"] = "CUDA allocator peak"
            self.test["memory_at_start_mb"] = 0.0
        else:
            self.test["peak_memory_mb"] = peak_rss_mb()
            self.test["memory"] = "peak resident set of the process during the test"


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError):  # resets VmHWM to the current RSS (Linux)
        Path("/proc/self/clear_refs").write_text("5")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def current_rss_mb() -> float:
    return _status_mb("VmRSS")


def package_args(args, workdir: Path, subcommand: str = "fit", config: Path = VANILLA_CONFIG) -> list[str]:
    limits = []
    if args.limit_batches:
        limits = [f"--trainer.limit_{stage}_batches={args.limit_batches}" for stage in ("train", "val", "test")]
    return [
        subcommand,
        "--config",
        str(config),
        *limits,
        "--trainer.callbacks",
        json.dumps([{"class_path": "benchmark.Stopwatch"}]),
        "--experiments.names",
        "[]",
        "--trainer.accelerator",
        "gpu" if args.device == "cuda" else "cpu",
        "--trainer.logger.init_args.save_dir",
        str(workdir),
        "--data.data_dir",
        str(args.data_dir),
        *(("--data.batch_size", str(args.batch_size)) if config == VANILLA_CONFIG else ()),
    ]


def config_precision() -> str:
    """The vanilla config's resolved `speed.train_matmul_precision` (null: torch's default, "highest")."""
    from vae_lightning.cli import cli

    speed = cli(["--config", str(VANILLA_CONFIG)], run=False).config_init.speed
    return (speed.train_matmul_precision if speed is not None else None) or "highest"


def run_package(args, workdir: Path, seed: int, precision: str | None = None) -> tuple[list[dict], float, str]:
    """One `fit`; `precision` overrides the config's `train_matmul_precision`."""
    from vae_lightning.cli import cli

    extra = ["--speed.train_matmul_precision", precision] if precision else []
    done = cli(
        package_args(args, workdir) + ["--trainer.max_epochs", str(args.epochs), "--seed_everything", str(seed), *extra]
    )
    watch = next(cb for cb in done.trainer.callbacks if type(cb).__name__ == "Stopwatch")
    loss = float(done.trainer.callback_metrics["train/loss_epoch"])
    return watch.epochs, loss, last_checkpoint(done.trainer)


def last_checkpoint(trainer) -> str:
    """The run's last.ckpt (the CLI's `last_checkpoint` piece)."""
    return next(
        str(Path(cb.dirpath) / "last.ckpt") for cb in trainer.callbacks if type(cb).__name__ == "LastCheckpoint"
    )


def likelihood_of(trainer):
    return next(cb for cb in trainer.callbacks if type(cb).__name__ == "TestLikelihood")


def run_nll(args, workdir: Path, checkpoint: str) -> dict:
    from vae_lightning.cli import cli

    done = cli(
        package_args(args, workdir, "test")
        + ["--ckpt_path", checkpoint, "--test_likelihood.samples", str(args.nll_samples)]
    )
    watch = next(cb for cb in done.trainer.callbacks if type(cb).__name__ == "Stopwatch")
    likelihood = likelihood_of(done.trainer)
    return {
        **watch.test,
        "k": likelihood.samples,
        "images": watch.test_images,
        "chunk_size": likelihood.chunk_size,
        "test_nll": float(done.trainer.callback_metrics["test/nll"]),
    }


def run_paper_nll(args, workdir: Path, gemm: dict) -> dict:
    """(d): `vae-lightning test` of the paper config at k = `--paper-nll-samples` on `--nll-checkpoint` (default:
    the config's model after `--epochs` short epochs), against the float32 GEMM roofline `gemm`."""
    from vae_lightning.cli import cli

    checkpoint = args.nll_checkpoint
    if checkpoint is None:
        done = cli(
            package_args(args, workdir, config=PAPER_CONFIG)
            + ["--trainer.max_epochs", str(args.epochs), "--trainer.limit_train_batches", "50"]
        )
        checkpoint = last_checkpoint(done.trainer)
    done = cli(
        package_args(args, workdir, "test", config=PAPER_CONFIG)
        + ["--ckpt_path", str(checkpoint), "--test_likelihood.samples", str(args.paper_nll_samples)]
    )
    watch = next(cb for cb in done.trainer.callbacks if type(cb).__name__ == "Stopwatch")
    likelihood, metrics = likelihood_of(done.trainer), done.trainer.callback_metrics
    flops = decode_flops(PAPER_DECODER_LAYERS) * likelihood.samples * watch.test_images
    roofline_s = flops / (gemm["gflops"] * 1e9)
    return {
        **watch.test,
        "checkpoint": relative(checkpoint),
        "k": likelihood.samples,
        "images": watch.test_images,
        "chunk_size": likelihood.chunk_size,
        "test_nll": float(metrics["test/nll"]),
        "test_nll_mc_se": float(metrics["test/nll_mc_se"]),
        "decoder_gflop": flops / 1e9,
        "roofline_s": roofline_s,
        "roofline_fraction": roofline_s / watch.test["seconds"],
    }


def softplus_ns(device: torch.device, repeats: int = 50) -> dict:
    """Nanoseconds per element of sum_d softplus(l_d) over a (1024, 784) chunk of logits (one evaluation chunk):
    torch's softplus kernel against `objectives.softplus_sum`, the median of `repeats` calls each."""
    from vae_lightning.objectives import softplus_sum

    logits = torch.randn(1024, PIXELS, device=device) * 4
    result = {}
    for name, function in (("torch_softplus", lambda: torch.nn.functional.softplus(logits).sum(-1)),
                           ("softplus_sum", lambda: softplus_sum(logits))):  # fmt: skip
        times = []
        with torch.inference_mode():
            for _ in range(repeats + 1):
                sync(device)
                start = time.perf_counter()
                function()
                sync(device)
                times.append(time.perf_counter() - start)
        result[f"{name}_ns_per_element"] = statistics.median(times[1:]) / logits.numel() * 1e9
    return result


def emit(result: dict, path: Path | None) -> None:
    """Print the result as the last line, JSON; also write it to `path` if given."""
    line = json.dumps(result)
    print(line)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line + "\n")


def run_header(device: torch.device) -> dict:
    """What every result record starts with: when, on what, with how many threads."""
    return {
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }


def gemm_sizes(device: torch.device) -> list[int]:
    """The square matmul sizes the GEMM peak is taken over."""
    return [1024, 2048, 4096] if device.type == "cpu" else [4096, 8192, 16384]


def paper_nll_main(args, device: torch.device) -> None:
    """`--paper-nll`: the GEMM peak, then (d), in one process; prints a line and the JSON."""
    gemm = gemm_peak(device, gemm_sizes(device))
    print(f"(c) GEMM peak: {gemm['gflops']:.1f} GFLOP/s (float32, {gemm['size']}^3, full precision)", flush=True)
    softplus = softplus_ns(device)
    print(
        f"softplus summed over a (1024, 784) chunk: torch's kernel {softplus['torch_softplus_ns_per_element']:.2f}, "
        f"objectives.softplus_sum {softplus['softplus_sum_ns_per_element']:.2f} ns per element",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        nll = run_paper_nll(args, Path(tmp), gemm)
    result = {
        **run_header(device),
        "limit_batches": args.limit_batches,
        "data": "test images binarized once (data seed), Bernoulli decoder, nats per image summed over pixels",
        "gemm_peak_gflops": gemm["gflops"],
        "softplus": softplus,
        "paper_test_nll": nll,
    }
    print(
        f"(d) test/nll of the paper model, k={nll['k']} on {nll['images']:,} images: {nll['seconds']:.1f} s; "
        f"{nll['decoder_gflop']:.0f} GFLOP of decoder matmuls / {gemm['gflops']:.1f} GFLOP/s = "
        f"{nll['roofline_s']:.1f} s: {nll['roofline_fraction']:.0%} of the float32 GEMM roofline; "
        f"nll {nll['test_nll']:.3f} +- {nll['test_nll_mc_se']:.4f} (Monte-Carlo standard error)"
    )
    emit(result, args.json)


# ---------------------------------------------------------------------------------------------- (a)
def run_reference(args, seed: int) -> list[dict]:
    import reference_vae

    with tempfile.TemporaryDirectory() as results:
        return reference_vae.run(
            str(args.data_dir),
            args.epochs,
            args.batch_size,
            args.device,
            seed,
            results_dir=results,
            verbose=False,
            max_batches=args.limit_batches,
        )


def run_pythae(args, seed: int) -> list[dict]:
    """(p): pythae's BaseTrainer on the same model and data split (`pythae_vae.py`; the `bench` extra)."""
    import pythae_vae

    return pythae_vae.run(args.data_dir, args.epochs, args.batch_size, args.device, seed, args.limit_batches)


# ---------------------------------------------------------------------------------------------- main
def train_s_per_epoch(epoch: dict) -> float:
    """An epoch's training seconds per 60,000 images (the package trains on 55,000)."""
    return epoch["train_s"] * EPOCH_IMAGES / epoch["images"]


def summarise(runs: list[list[dict]]) -> tuple[float, float]:
    """Medians, over every epoch but each run's first (warm-up), of the training seconds per 60,000 images
    and of the evaluation seconds per epoch."""
    epochs = [e for run in runs for e in run[1:]]
    train = statistics.median(train_s_per_epoch(e) for e in epochs)
    return train, statistics.median(e["epoch_s"] - e["train_s"] for e in epochs)


def run_medians(runs: list[list[dict]]) -> list[float]:
    """Each run's median training seconds per 60,000 images, its first epoch left out: the spread over rounds."""
    return [statistics.median(train_s_per_epoch(e) for e in run[1:]) for run in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first of each is warm-up")
    parser.add_argument(
        "--repeats", type=int, default=None, help="rounds: runs of each loop, alternated (default 2; 5 with --peers)"
    )
    parser.add_argument(
        "--peers", action="store_true", help="also time (p), pythae's BaseTrainer (the `bench` extra), in every round"
    )
    parser.add_argument("--skip-reference", action="store_true", help="time (b) and (c) only")
    parser.add_argument(
        "--skip-full-precision",
        action="store_true",
        help="leave out (b32), the package at speed.train_matmul_precision highest",
    )
    parser.add_argument("--nll-samples", type=int, default=1000, help="k for the test/nll timing; 0 skips it")
    parser.add_argument("--paper-nll", action="store_true", help="time (d), the paper model's test/nll, alone")
    parser.add_argument("--paper-nll-samples", type=int, default=5000, help="k for (d)")
    parser.add_argument("--nll-checkpoint", type=Path, default=None, help="the checkpoint (d) tests")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding MNIST/raw (default: $VAE_LIGHTNING_DATA_DIR or the user cache)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON result to this file")
    parser.add_argument(
        "--limit-batches",
        type=int,
        default=None,
        help="at most this many batches per epoch and evaluation (a quick check of the script)",
    )
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI runs from `package_args` alone
    args.repeats = args.repeats or (5 if args.peers else 2)
    if args.peers and importlib.util.find_spec("pythae") is None:
        parser.error('--peers needs pythae: pip install -e ".[bench]"')
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch of every run is warm-up")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if args.json is not None:
        writable(parser, "--json", file=args.json)
    if args.nll_checkpoint is not None and not args.nll_checkpoint.is_file():
        parser.error(f"--nll-checkpoint {args.nll_checkpoint}: no such file")

    from vae_lightning.data.files import default_data_dir, ensure_mnist

    args.data_dir = args.data_dir or default_data_dir()
    ensure_mnist(args.data_dir, field="--data-dir")
    device = torch.device(args.device)
    print(f"machine: {machine()}; torch threads {torch.get_num_threads()}", flush=True)
    if args.paper_nll:
        return paper_nll_main(args, device)

    precision = config_precision()
    arms = {"package": None}  # arm -> the train_matmul_precision it overrides the config's with
    if precision != "highest" and not args.skip_full_precision:
        arms["package_full_float32"] = "highest"
    loops = ([] if args.skip_reference else ["reference"]) + (["pythae"] if args.peers else []) + list(arms)
    runs: dict[str, list[list[dict]]] = {loop: [] for loop in loops}
    losses: dict[str, list[float]] = {loop: [] for loop in loops}
    names = {
        "reference": "(a) pytorch/examples vae loop",
        "pythae": "(p) pythae BaseTrainer",
        "package": f"(b) vae-lightning fit ({precision})",
        "package_full_float32": "(b32) the same at highest",
    }

    def record(arm: str, repeat: int, epochs: list[dict], loss: float) -> None:
        runs[arm].append(epochs)
        losses[arm].append(loss)
        seconds = [round(train_s_per_epoch(e), 2) for e in epochs]
        print(f"{names[arm]}, run {repeat + 1}: {seconds} s/epoch", flush=True)

    checkpoint = None
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            shift = repeat % len(loops)  # each loop opens a round in turn: none always meets the machine first
            for arm in loops[shift:] + loops[:shift]:
                if arm == "reference":
                    epochs = run_reference(args, seed=1 + repeat)
                    record(arm, repeat, epochs, epochs[-1]["train_loss"])
                elif arm == "pythae":
                    epochs = run_pythae(args, seed=1 + repeat)
                    record(arm, repeat, epochs, epochs[-1]["train_loss"])
                else:
                    epochs, loss, last = run_package(args, Path(tmp), seed=42 + repeat, precision=arms[arm])
                    record(arm, repeat, epochs, loss)
                    checkpoint = last if arm == "package" else checkpoint
        sizes = gemm_sizes(device)
        gemm = gemm_train = gemm_peak(device, sizes)
        print(f"(c) GEMM peak: {gemm['gflops']:.1f} GFLOP/s (float32, {gemm['size']}^3, full precision)", flush=True)
        if precision != "highest":
            gemm_train = gemm_peak(device, sizes, precision)
            print(
                f"(c) GEMM peak at (b)'s train_matmul_precision {precision}: {gemm_train['gflops']:.1f} GFLOP/s "
                f"(float32 in and out, {gemm_train['size']}^3)",
                flush=True,
            )
        # a CPU without bfloat16 units emulates them (about 1 GFLOP/s on an AVX2 EPYC): one size there
        gemm_bf16 = gemm_peak(device, sizes if device.type == "cuda" else sizes[:1], dtype=torch.bfloat16)
        print(f"(c) GEMM peak in bfloat16: {gemm_bf16['gflops']:.1f} GFLOP/s ({gemm_bf16['size']}^3)", flush=True)
        nll = run_nll(args, Path(tmp), checkpoint) if args.nll_samples else None

    flops = train_flops_per_image(VANILLA_LAYERS) * EPOCH_IMAGES
    roofline_s = flops / (gemm["gflops"] * 1e9)
    roofline_train_s = flops / (gemm_train["gflops"] * 1e9)
    timed = {arm: summarise(epochs) for arm, epochs in runs.items() if epochs}
    b = timed["package"][0]
    b32 = timed["package_full_float32"][0] if "package_full_float32" in timed else None
    result = {
        **run_header(device),
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "limit_batches": args.limit_batches,
        "repeats": args.repeats,
        "data": "continuous pixels x/255, BCE summed over pixels + KL, mean per image",
        "train_matmul_precision": precision,
        **{
            arm: {
                "train_s_per_epoch": train,
                "train_s_per_epoch_by_round": run_medians(runs[arm]),
                "eval_s_per_epoch": evaluation,
                "final_train_loss": losses[arm],
            }
            for arm, (train, evaluation) in timed.items()
        },
        "gemm_peak_bfloat16_gflops": gemm_bf16["gflops"],
        "gemm_peak_gflops": gemm["gflops"],
        "model_gflop_per_epoch": flops / 1e9,
        "roofline_s_per_epoch": roofline_s,
        "roofline_fraction": roofline_s / b,
        "gemm_peak_train_precision_gflops": gemm_train["gflops"],
        "roofline_fraction_train_precision": roofline_train_s / b,
    }
    if "reference" in timed:
        result["speedup"] = timed["reference"][0] / b
    if "pythae" in timed:
        result["speedup_over_pythae"] = timed["pythae"][0] / b
    if b32:
        result["roofline_fraction_full_float32"] = roofline_s / b32
    if nll:
        result["test_nll"] = nll

    print()
    print(f"machine: {machine()}; {args.repeats} rounds, medians of epochs 2-{args.epochs} of each run")
    print(f"{'':34}{'s/epoch':>9}{'rounds, min-max':>18}{'eval s':>9}{'final train loss':>20}")
    for arm, (train, evaluation) in timed.items():
        low, high = min(run_medians(runs[arm])), max(run_medians(runs[arm]))
        loss = statistics.fmean(losses[arm])
        print(f"{names[arm]:34}{train:9.2f}{f'{low:.2f}-{high:.2f}':>18}{evaluation:9.2f}{loss:20.2f}")
    if "reference" in timed:
        a = timed["reference"][0]
        print(f"speed-up (a)/(b): {a / b:.2f}x" + (f", (a)/(b32): {a / b32:.2f}x" if b32 else ""))
    if "pythae" in timed:
        print(f"speed-up (p)/(b): {timed['pythae'][0] / b:.2f}x")
    print(f"GEMM peaks: float32 {gemm['gflops']:.0f}, bfloat16 {gemm_bf16['gflops']:.0f} GFLOP/s")
    print(
        f"roofline: {flops / 1e9:.1f} GFLOP per epoch / {gemm['gflops']:.1f} GFLOP/s (full precision) = "
        f"{roofline_s:.2f} s; (b) reaches {roofline_s / b:.0%} of it"
        + (f", (b32) {roofline_s / b32:.0%}" if b32 else "")
    )
    if precision != "highest":
        print(
            f"roofline at {precision}: {flops / 1e9:.1f} GFLOP / {gemm_train['gflops']:.1f} GFLOP/s = "
            f"{roofline_train_s:.2f} s; (b) reaches {roofline_train_s / b:.0%} of it"
        )
    if nll:
        extra = nll["peak_memory_mb"] - nll["memory_at_start_mb"]
        print(
            f"test/nll, k={nll['k']} on {nll['images']:,} images: {nll['seconds']:.1f} s, peak memory "
            f"{nll['peak_memory_mb']:.0f} MB ({nll['memory']}; {extra:.0f} MB above its start); "
            f"nll {nll['test_nll']:.2f}"
        )
    emit(result, args.json)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.chdir(REPO)
    main()
