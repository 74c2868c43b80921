"""Settings that make training faster, found by profiling the vanilla MLP at batch 128 on a 2-core
Xeon (see the README's Performance section and `scripts/benchmark.py`). `VAELitModule` applies the
subnormal flush and the CUDA probe's cache while a Trainer runs on a CPU, and skips the no-op batch
hooks on any device (all three through `FastPath`); the CLI uses `NoProfiler`.

- Subnormal floats. As a VAE trains, the decoder's logits of the always-black border pixels go
  far below zero, their sigmoids and gradients become subnormal (below 1.2e-38), and x86 cores
  take a slow microcode path for every operation on them: a bare training loop of the vanilla MLP
  slowed from 1.52 s to 1.75 s per epoch over six epochs. Flushing subnormals to zero (the FTZ/DAZ
  flags, the default of TensorFlow and XLA on CPUs) removes that: 1.42-1.48 s, flat. Values that
  small are zero for every purpose here.
- Lightning's "no profiler". With `profiler=None` every hook call (~50 a training step: each
  callback's hooks, the module's, the strategy's) still enters `PassThroughProfiler.profile`, a
  generator-based context manager, ~0.75 us each in a micro-benchmark. `NoProfiler` answers with
  one shared `nullcontext` (~0.15 us); the CLI uses it when no profiler is configured.
- The CUDA probe. A CUDA build of torch on a machine without a GPU asks NVML for the device count
  on every `optimizer.step()` (its graph-capture health check, uncached until CUDA initialises),
  about 0.3 ms a step. Once torch has answered "no device", the answer is kept.
- No-op batch hooks. Lightning calls every callback's per-batch hooks (6 a training step), each in a
  profiler context, also where the callback leaves the hook as `Callback`'s no-op: ~0.5 us a call in a
  micro-benchmark; `vae-lightning fit --config configs/vanilla.yaml` has 12 callbacks (6 of them
  figures), so 72 calls a training step, 69 of them no-ops. Lightning skips a hook that is not
  callable, so while nothing is profiled those no-ops are set to None on the instance
  (`skip_noop_batch_hooks`). Vanilla MLP, batch 128, 2-core CPU, medians of 8 epochs (4 alternating
  runs of each): the vanilla config's callbacks 1.64 -> 1.60 s an epoch; the benchmark's 7 callbacks
  1.62 -> 1.60 s.
- Matrix-multiply precision of the training steps (`TrainingMatmulPrecision`, opt-in through
  `VAELitModule(train_matmul_precision=...)`; the MLP configs ask for "medium"). With "medium", float32
  matmuls may round their inputs to bfloat16 and accumulate in float32: AMX tiles on recent Xeons,
  tensor cores on GPUs ("high": TF32 on GPUs). Validation, test and predict keep torch's own setting
  (by default "highest"), so the numbers the package reports are computed in full float32. Vanilla
  MLP, batch 128, 2-core Xeon with AMX: 1.62 -> 1.43 s an epoch (`scripts/benchmark.py`, (b32)
  against (b)); test nelbo within seed-to-seed spread.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from lightning.pytorch import Callback
from lightning.pytorch.profilers import PassThroughProfiler

MATMUL_PRECISIONS = ("highest", "high", "medium")  # torch.set_float32_matmul_precision's choices

# The hooks Lightning calls on every callback for every batch (`lightning.pytorch.trainer.call._call_callback_hooks`).
BATCH_HOOKS = (
    "on_train_batch_start", "on_before_backward", "on_after_backward", "on_before_optimizer_step",
    "on_before_zero_grad", "on_train_batch_end", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_batch_start", "on_test_batch_end", "on_predict_batch_start", "on_predict_batch_end",
)  # fmt: skip


def subnormals_flushed() -> bool:
    """Whether this thread's float operations flush subnormal results to zero now."""
    tiny = torch.tensor([1e-37], dtype=torch.float32)
    return bool((tiny * 1e-3).item() == 0.0)  # 1e-40 is subnormal: zero only when flushed


@functools.cache
def _openmp_parallel() -> Callable | None:
    """libgomp's `GOMP_parallel`, the entry point of `#pragma omp parallel`, from the OpenMP runtime torch
    loaded (LLVM's and Intel's runtimes export it too); None where there is none."""
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


_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def set_flush_subnormals(on: bool) -> bool:
    """Flush subnormals to zero (or stop) on this thread AND on every thread of torch's intra-op
    OpenMP pool: the flag is per thread, and the pool's threads exist from torch's first parallel op,
    so setting it on the calling thread alone (`torch.set_flush_denormal`) leaves half the work of a
    2-thread op slow. Returns False where the CPU or the OpenMP runtime does not allow it."""
    done = []

    def body(_) -> None:
        done.append(torch.set_flush_denormal(on))

    parallel = _openmp_parallel()
    if parallel is None or torch.get_num_threads() == 1:
        return torch.set_flush_denormal(on)
    callback = _BODY(body)  # kept alive until the call returns
    parallel(callback, None, torch.get_num_threads(), 0)  # every thread of the team runs `body` once
    return bool(done) and all(done)


def remember_no_cuda_device() -> None:
    """When torch sees no CUDA device, keep that answer, so `optimizer.step()` stops re-probing NVML.

    Touches torch's own cache of the device count only where CUDA is compiled in, not initialised,
    and reports no device; on a machine with a GPU it does nothing.
    """
    cuda = torch.cuda
    if not hasattr(cuda, "_cached_device_count") or cuda._cached_device_count is not None:
        return
    if cuda.device_count() != 0:
        return
    cuda._cached_device_count = 0


def skip_noop_batch_hooks(callbacks: Iterable[Callback]) -> list[tuple[Callback, str]]:
    """Set to None, on each callback instance, the per-batch hooks its class leaves as `Callback`'s
    no-op, so Lightning skips them (it calls a callback's hook only when it is callable); returns the
    (callback, hook) pairs set, for `restore_batch_hooks`. Hooks a class overrides, at any level of
    its hierarchy, and hooks set on the instance are left alone."""
    skipped = []
    for callback in callbacks:
        for hook in BATCH_HOOKS:
            if hook not in vars(callback) and getattr(type(callback), hook, None) is getattr(Callback, hook):
                setattr(callback, hook, None)
                skipped.append((callback, hook))
    return skipped


def restore_batch_hooks(skipped: list[tuple[Callback, str]]) -> None:
    """Undo `skip_noop_batch_hooks`: the instances answer with their class's hooks again."""
    for callback, hook in skipped:
        if hook in vars(callback) and vars(callback)[hook] is None:
            delattr(callback, hook)


class FastPath(Callback):
    """While a Trainer runs: on a CPU, subnormals flushed (if `flush_subnormals`) and the CUDA probe
    answered once; on any device where nothing is profiled, the callbacks' no-op batch hooks skipped.
    Restored when the run ends, normally or by an exception. `VAELitModule` adds it."""

    def __init__(self, flush_subnormals: bool = True) -> None:
        self.flush_subnormals = flush_subnormals
        self._flushed_before: bool | None = None  # the state to restore, while flushing is on
        self._skipped: list[tuple[Callback, str]] = []

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Here every callback is attached (the module's `configure_callbacks` ones too). Under a real
        # profiler the no-op hooks stay, so its report lists every callback hook as before.
        if isinstance(trainer.profiler, PassThroughProfiler):  # Lightning's "nothing recorded", or NoProfiler
            self._skipped += skip_noop_batch_hooks(trainer.callbacks)
        if trainer.strategy.root_device.type != "cpu":
            return
        if self.flush_subnormals and self._flushed_before is None:
            self._flushed_before = subnormals_flushed()
            set_flush_subnormals(True)
        remember_no_cuda_device()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        restore_batch_hooks(self._skipped)
        self._skipped = []
        if self._flushed_before is not None:
            set_flush_subnormals(self._flushed_before)
            self._flushed_before = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "")  # a failed run skips `teardown`


class TrainingMatmulPrecision(Callback):
    """`torch.set_float32_matmul_precision(precision)` while the training steps run; torch's own setting
    while anything is measured (the sanity check, validation inside `fit`) and after the run, normally
    ended or not. `VAELitModule` adds it when `train_matmul_precision` is set."""

    def __init__(self, precision: str) -> None:
        if precision not in MATMUL_PRECISIONS:
            raise ValueError(f"precision must be one of {MATMUL_PRECISIONS}, got {precision!r}")
        self.precision = precision
        self._before: str | None = None  # torch's setting to restore, while ours is on

    def _train(self) -> None:
        if self._before is None:
            self._before = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision(self.precision)

    def _measure(self) -> None:
        if self._before is not None:
            torch.set_float32_matmul_precision(self._before)
            self._before = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._train()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._measure()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:  # back to the training steps
            self._train()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._measure()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._measure()


_NO_PROFILE = contextlib.nullcontext()  # stateless, so one instance serves every (nested) hook call


class NoProfiler(PassThroughProfiler):
    """Lightning's `PassThroughProfiler` (what `profiler=None` means: nothing recorded) with a
    cheaper `profile`: one shared no-op context instead of a new generator per hook call."""

    def profile(self, action_name: str) -> contextlib.AbstractContextManager:
        return _NO_PROFILE
