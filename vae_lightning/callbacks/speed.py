"""How a run is made fast on the machine it runs on: the `CPUSpeed` callback and the evaluation's split of work
between CPU cores. What each measure gains, measured, is in docs/performance.md; the progress bar's refresh
rate and the fused Adam of the CLI's defaults are the other two."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, TypeVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

_Item, _Result = TypeVar("_Item"), TypeVar("_Result")


def subnormals_flushed(every_thread: bool = False) -> bool:
    """Whether float operations flush subnormals now: on this thread, or with `every_thread` on every thread of
    torch's CPU pool (a product of 2^20 subnormals, split between them, is zero only where each flushes)."""
    return bool(torch.full((1 << 20 if every_thread else 4,), 1e-39).mul_(1.0).eq(0).all())


class CPUSpeed(Callback):
    """While a Trainer runs on a CPU: subnormal floats flushed to zero (a VAE's saturated border pixels make
    many, and x86 cores take a slow path on each), and the training steps' float32 matmuls at
    `train_matmul_precision` ("medium": bfloat16 inputs, float32 sums); validation, test and predict keep
    torch's own setting, so every reported number is full float32. Put back when the run ends, normally or
    not. Off: `--speed null`.

    torch's CPU threads take the flushing only when it is set before torch's first parallel operation (they
    copy the setting of the thread that starts them): the CLI sets it at start-up (`flush_at_start_up`);
    in Python, call `torch.set_flush_denormal(True)` first, or this callback reaches the main thread alone.

    Args:
        flush_subnormals: flush subnormal floats to zero (`torch.set_flush_denormal`).
        train_matmul_precision: `torch.set_float32_matmul_precision` for the training steps; null: torch's.
    """

    def __init__(
        self, flush_subnormals: bool = True, train_matmul_precision: Literal["highest", "high", "medium"] | None = None
    ) -> None:
        self.flush_subnormals, self.train_matmul_precision = flush_subnormals, train_matmul_precision
        self._flushed_before: bool | None = None  # the state to restore, while flushing is on
        self._precision_before: str | None = None  # torch's setting to restore, while ours is on

    @staticmethod
    def flush_at_start_up(settings) -> None:
        """Before torch's CPU threads exist: flush subnormals if the parsed `speed` setting asks for it."""
        if settings is not None and settings.init_args.get("flush_subnormals", True):
            torch.set_flush_denormal(True)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.flush_subnormals and self._flushed_before is None and trainer.strategy.root_device.type == "cpu":
            self._flushed_before = subnormals_flushed()
            torch.set_flush_denormal(True)

    def _train_precision(self) -> None:
        if self.train_matmul_precision is not None and self._precision_before is None:
            self._precision_before = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision(self.train_matmul_precision)

    def _measure_precision(self) -> None:
        if self._precision_before is not None:
            torch.set_float32_matmul_precision(self._precision_before)
            self._precision_before = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._train_precision()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._measure_precision()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:  # back to the training steps
            self._train_precision()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._measure_precision()
        if self._flushed_before is not None:
            torch.set_flush_denormal(self._flushed_before)
            self._flushed_before = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "")


def map_one_core_each(function: Callable[[_Item], _Result], items: Sequence[_Item]) -> list[_Result]:
    """[function(item) for item in items], each on a thread of its own whose torch operations run on one core.

    For CPU work made of many small matrix products and element-wise passes (evaluation decodes thousands
    of draws per image in chunks): split between cores, each of these synchronises the cores and shares the
    caches; split by item instead, each core runs whole chunks alone. On each worker torch's intra-op
    threads are 1 and the caller's grad mode, inference mode and subnormal flushing hold (all are per thread
    in torch); the caller's thread count is set again afterwards, as `torch.set_num_threads` also records
    the count process-wide.
    """
    threads = torch.get_num_threads()
    grad, inference, flushed = torch.is_grad_enabled(), torch.is_inference_mode_enabled(), subnormals_flushed()

    def start_worker() -> None:
        torch.set_num_threads(1)
        torch.set_flush_denormal(flushed)

    def run(item: _Item) -> _Result:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return function(item)

    try:
        with ThreadPoolExecutor(len(items), initializer=start_worker) as pool:
            return list(pool.map(run, items))
    finally:
        torch.set_num_threads(threads)
