"""How this package makes training fast: every speed measure in one place, on by default.

`vae-lightning ... --speed false` turns all of them off at once (`PLAIN_SETTINGS`, and Lightning's
own profiler); each is also a setting of its own. What each gains, measured, is in
docs/performance.md.

- `Speed` (a callback `VAELitModule` adds while a Trainer runs):
  - subnormal floats flushed to zero on every CPU thread (`model.flush_subnormals`): a VAE's
    saturated border pixels make many, and x86 cores take a slow path on each;
  - the training steps' float32 matmul precision (`model.train_matmul_precision`; "medium" rounds
    matmul inputs to bfloat16 and sums in float32: AMX on recent Xeons, tensor cores on GPUs);
    validation, test and predict keep torch's own setting, so every reported number is full float32;
  - on a CPU, torch's "no CUDA device" answer kept, so `optimizer.step()` stops re-probing NVML.
- `TimedProgressBar` (the CLI's `progress_bar.*`): Lightning's bar, redrawn by the clock.
- `NoProfiler` (the CLI's profiler when none is configured): Lightning wraps every hook call in
  `profiler.profile(...)`, with no profiler a new generator-based context each; here one shared
  no-op context.
- Fused Adam: the default optimizer of the CLI (`fused: true`, a torch option).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.profilers import PassThroughProfiler

from vae_lightning.errors import check_choice, check_number

MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision's choices

# What `--speed false` sets: every measure above at torch's and Lightning's plain behaviour.
PLAIN_SETTINGS = {
    "model.flush_subnormals": False,
    "model.train_matmul_precision": None,
    "model.optimizer.init_args.fused": None,  # torch's default choice of Adam implementation
    "progress_bar.refresh_seconds": 0.0,  # redraw on every `refresh_rate`-th batch, as Lightning's bar
}


# ------------------------------------------------------------------------------ subnormal floats
def subnormals_flushed() -> bool:
    """Whether this thread's float operations flush subnormal results to zero now."""
    tiny = torch.tensor([1e-37], dtype=torch.float32)
    return bool((tiny * 1e-3).item() == 0.0)  # 1e-40 is subnormal: zero only when flushed


_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


@functools.cache
def _openmp_parallel() -> Callable | None:
    """`GOMP_parallel`, the OpenMP runtime's public entry point of `#pragma omp parallel` (libgomp's ABI,
    which LLVM's and Intel's runtimes export too), from the runtime torch loaded; None where there is none."""
    candidates = [None] + sorted(str(p) for p in (Path(torch.__file__).parent / "lib").glob("lib*omp*.so*"))
    for name in candidates:
        try:
            function = ctypes.CDLL(name).GOMP_parallel
        except (OSError, AttributeError):
            continue
        function.argtypes = [_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        function.restype = None
        return function
    return None


def set_flush_subnormals(on: bool) -> bool:
    """Flush subnormals to zero (or stop) on this thread AND on every thread of torch's intra-op pool.

    The flag is per thread and the pool's threads exist from torch's first parallel op, so
    `torch.set_flush_denormal` alone reaches only the calling thread; torch has no call that runs
    code on each pool thread, so one OpenMP parallel region runs it there. Returns False where the
    CPU or the OpenMP runtime does not allow it.
    """
    done = []
    parallel = _openmp_parallel()
    if parallel is None or torch.get_num_threads() == 1:
        return torch.set_flush_denormal(on)
    body = _BODY(lambda _: done.append(torch.set_flush_denormal(on)))  # kept alive until the call returns
    parallel(body, None, torch.get_num_threads(), 0)  # every thread of the team runs `body` once
    return bool(done) and all(done)


# ------------------------------------------------------------------------------ one core per part
_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


def map_one_core_each(function: Callable[[_Item], _Result], items: Sequence[_Item]) -> list[_Result]:
    """[function(item) for item in items], each on a thread of its own whose torch operations run on one core.

    For CPU work made of many small matrix products and element-wise passes (evaluation decodes 5,000
    draws per image in chunks of about 1,000): split between cores, each of these synchronises the
    cores and shares the caches; split by item instead, each core runs whole chunks alone (measured in
    docs/performance.md). On each worker torch's intra-op threads are 1 and the caller's grad mode,
    inference mode and subnormal flushing hold (all are per thread in torch); the caller's thread
    count is set again afterwards, as `torch.set_num_threads` also records the count process-wide.
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


# ------------------------------------------------------------------------------ the CUDA probe
def remember_no_cuda_device() -> None:
    """When torch sees no CUDA device, keep that answer, so `optimizer.step()` stops re-probing NVML.

    A CUDA build of torch on a machine without a GPU asks NVML for the device count in every
    optimizer step (its graph-capture check) until CUDA initialises, which it never does here.
    torch has no public setting for this; it caches the count in `torch.cuda._cached_device_count`
    once CUDA is up, so the same cache is filled with torch's own answer (checked with torch 2.14
    and 2.15; tests/test_speed.py fails if the attribute goes away). Does nothing with a GPU.
    """
    cuda = torch.cuda
    if getattr(cuda, "_cached_device_count", 0) is None and cuda.device_count() == 0:
        cuda._cached_device_count = 0


# ------------------------------------------------------------------------------ the callback
class Speed(Callback):
    """While a Trainer runs: on a CPU, subnormals flushed (if `flush_subnormals`) and the CUDA probe
    answered once; the training steps at `train_matmul_precision` (if set), everything measured at
    torch's own setting. Everything is put back when the run ends, normally or by an exception.

    Args:
        flush_subnormals: flush subnormal floats to zero on every CPU thread.
        train_matmul_precision: `torch.set_float32_matmul_precision` for the training steps alone;
            None leaves torch's setting.
    """

    def __init__(self, flush_subnormals: bool = True, train_matmul_precision: str | None = None) -> None:
        self.flush_subnormals = flush_subnormals
        self.train_matmul_precision = check_choice(
            "model.train_matmul_precision", train_matmul_precision, (*MATMUL_PRECISIONS, None)
        )
        self._flushed_before: bool | None = None  # the state to restore, while flushing is on
        self._precision_before: str | None = None  # torch's setting to restore, while ours is on

    @property
    def active(self) -> bool:
        """Whether any measure is asked for (with none, the Trainer runs without this callback)."""
        return bool(self.flush_subnormals or self.train_matmul_precision)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer.strategy.root_device.type != "cpu":
            return
        remember_no_cuda_device()
        if self.flush_subnormals and self._flushed_before is None:
            self._flushed_before = subnormals_flushed()
            set_flush_subnormals(True)

    def _train_precision(self) -> None:
        if self.train_matmul_precision is not None and self._precision_before is None:
            self._precision_before = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision(self.train_matmul_precision)

    def _measure_precision(self) -> None:
        if self._precision_before is not None:
            torch.set_float32_matmul_precision(self._precision_before)
            self._precision_before = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._train_precision()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._measure_precision()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:  # back to the training steps
            self._train_precision()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._measure_precision()
        if self._flushed_before is not None:
            set_flush_subnormals(self._flushed_before)
            self._flushed_before = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "")  # a failed run skips `teardown`


# ------------------------------------------------------------------------------ the progress bar
class TimedProgressBar(TQDMProgressBar):
    """Lightning's `TQDMProgressBar`, redrawn at most every `refresh_seconds` (and on each loop's last
    batch), so it costs the same share of a run whatever the step rate: a redraw formats the bar and
    the metrics, which on every step is a noticeable part of a small model's step.

    Args:
        refresh_rate: redraw at most every this many batches (0 hides the bar), as Lightning's.
        process_position: as Lightning's (for several bars at once).
        leave: as Lightning's (keep each epoch's bar).
        refresh_seconds: and at most once in this many seconds; 0 redraws on every `refresh_rate`-th batch.
    """

    def __init__(
        self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False, refresh_seconds: float = 0.1
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.refresh_seconds = check_number("progress_bar.refresh_seconds", refresh_seconds, what="a number of seconds")
        self._last_redraw = -float("inf")

    def due(self, current: int, total: float) -> bool:
        """Whether to redraw at batch `current` of `total`: Lightning's rule (every `refresh_rate`-th
        batch and the last), and no sooner than `refresh_seconds` after the previous redraw but the last."""
        if not self.is_enabled or (current % self.refresh_rate and current != total):
            return False
        now = time.monotonic()
        if current == total or now - self._last_redraw >= self.refresh_seconds:
            self._last_redraw = now
            return True
        return False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.due(batch_idx + 1, self.train_progress_bar.total):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.due(batch_idx + 1, self.val_progress_bar.total):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.due(batch_idx + 1, self.test_progress_bar.total):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.due(batch_idx + 1, self.predict_progress_bar.total):
            super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)


# ------------------------------------------------------------------------------ the profiler
_NO_PROFILE = contextlib.nullcontext()  # stateless, so one instance serves every (nested) hook call


class NoProfiler(PassThroughProfiler):
    """Lightning's `PassThroughProfiler` (what `profiler=None` means: nothing recorded) with a cheaper
    `profile`: one shared no-op context instead of a new generator per hook call."""

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NO_PROFILE
