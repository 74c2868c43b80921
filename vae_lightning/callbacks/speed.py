"""How a run is made fast: `CPUSpeed`, `NoProfiler`, evaluation split between cores (gains: docs/performance.md)."""

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from threading import Event
from typing import Literal, TypeVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.profilers import PassThroughProfiler

_Item, _Result = TypeVar("_Item"), TypeVar("_Result")
NVML = "PYTORCH_NVML_BASED_CUDA_CHECK"  # "1" (Lightning sets it): torch.cuda.is_available() asks NVML each time


def subnormals_flushed(every_thread: bool = False) -> bool:
    """Whether float operations flush subnormals now: on this thread, or with `every_thread` on every thread of
    torch's CPU pool (a product of 2^20 subnormals, split between them, is zero only where each flushes)."""
    return bool(torch.full((1 << 20 if every_thread else 4,), 1e-39).mul_(1.0).eq(0).all())


class CPUSpeed(Callback):
    """While a Trainer runs: on a CPU, subnormal floats flushed to zero (saturated pixels make many: slow on x86);
    training's float32 matmuls at `train_matmul_precision` (evaluation keeps full float32); without a GPU, torch's CUDA
    check for Lightning's NVML one, which probes NVML in every optimizer step. All put back at the end. New CPU threads
    copy the flushing: the CLI sets it first (`flush_at_start_up`); in Python, call `torch.set_flush_denormal` first.

    Args:
        flush_subnormals: flush subnormal floats to zero (`torch.set_flush_denormal`).
        train_matmul_precision: `torch.set_float32_matmul_precision` for the training steps; null: torch's.
    """

    def __init__(
        self, flush_subnormals: bool = True, train_matmul_precision: Literal["highest", "high", "medium"] | None = None
    ) -> None:
        self.flush_subnormals, self.train_matmul_precision = flush_subnormals, train_matmul_precision
        self.before: tuple | None = None  # flushing, matmul precision and NVML check to restore, while the run lasts

    @staticmethod
    def flush_at_start_up(settings) -> None:
        """Before torch's CPU threads exist: flush subnormals if the parsed `speed` setting asks for it."""
        if settings is not None and settings.init_args.get("flush_subnormals", True):
            torch.set_flush_denormal(True)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.before = self.before or (subnormals_flushed(), torch.get_float32_matmul_precision(), os.getenv(NVML))
        if self.flush_subnormals and trainer.strategy.root_device.type == "cpu":
            torch.set_flush_denormal(True)
        if not torch.cuda.device_count():  # no GPU: nothing to poison by a fork, Lightning's reason for the NVML check
            os.environ[NVML] = "0"

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.train_matmul_precision is not None:
            torch.set_float32_matmul_precision(self.train_matmul_precision)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.before is not None:
            torch.set_float32_matmul_precision(self.before[1])

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit":  # training goes on after this validation
            self.on_train_start(trainer, pl_module)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.before is not None:
            torch.set_flush_denormal(self.before[0])
            torch.set_float32_matmul_precision(self.before[1])
            if self.before[2] is None:
                os.environ.pop(NVML, None)
            else:
                os.environ[NVML] = self.before[2]
            self.before = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "")


class NoProfiler(PassThroughProfiler):
    """`PassThroughProfiler` (no profiling) with one shared no-op context, not a new generator-based one for each of
    the ~60 hook calls of a training step. The CLI's `trainer.profiler`; any other profiler replaces it."""

    NO_OP = nullcontext()  # stateless, so one instance serves every call, nested ones too

    def profile(self, action_name: str) -> AbstractContextManager:
        return self.NO_OP


def map_one_core_each(
    function: Callable[[_Item], _Result], items: Sequence[_Item], stop: Event | None = None
) -> list[_Result]:
    """[function(item) for item in items], each on its own thread with one intra-op thread: each core runs whole chunks
    alone, not syncing on every small product. Workers take the caller's grad and inference modes and subnormal
    flushing; the thread count is set back. An exception in the caller (Ctrl-C) sets `stop`, for `function` to check."""
    threads = torch.get_num_threads()
    grad, inference, flushed = torch.is_grad_enabled(), torch.is_inference_mode_enabled(), subnormals_flushed()

    def start_worker() -> None:
        torch.set_num_threads(1)
        torch.set_flush_denormal(flushed)

    def run(item: _Item) -> _Result:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return function(item)

    pool = ThreadPoolExecutor(len(items), initializer=start_worker)
    try:
        return list(pool.map(run, items))
    except BaseException:
        if stop is not None:  # before the pool waits for its workers
            stop.set()
        raise
    finally:
        pool.shutdown()
        torch.set_num_threads(threads)
