"""The fast path (issue: speed): subnormals flushed on every CPU thread while a Trainer runs and restored
after, torch's CUDA probe answered once, callbacks' no-op batch hooks skipped while nothing is profiled,
the training steps' matmul precision (and
only theirs), per-step logging only on logging steps, the cheaper training objective equal to the per-image one,
gradient clipping skipped only when none is configured. Speed itself is measured by
scripts/benchmark.py, not here."""

from __future__ import annotations

import csv

import pytest
import torch
from builders import quiet_trainer, tiny_data, tiny_model
from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger

from vae_lightning import MLPDecoder, MLPEncoder, VAELitModule
from vae_lightning.speed import BATCH_HOOKS, remember_no_cuda_device, set_flush_subnormals, subnormals_flushed


def flushed_share() -> float:
    """Share of a multi-threaded elementwise product of 1e-20 * 1e-20 (subnormal) that comes out as 0."""
    a = torch.full((1_000_000,), 1e-20)  # 1M elements: torch splits the product across its threads
    return float((a * a == 0).float().mean())


def test_subnormals_are_flushed_on_every_intra_op_thread_and_restored():
    flushed_share()  # the OpenMP pool exists from here on, as in any process that has run torch
    assert flushed_share() == 0.0 and not subnormals_flushed()
    assert set_flush_subnormals(True)
    assert flushed_share() == 1.0 and subnormals_flushed()  # every thread's share, not only the caller's
    set_flush_subnormals(False)
    assert flushed_share() == 0.0 and not subnormals_flushed()


def test_the_cuda_probe_keeps_torch_s_answer():
    before = (torch.cuda.is_available(), torch.cuda.device_count())
    remember_no_cuda_device()
    assert (torch.cuda.is_available(), torch.cuda.device_count()) == before
    if before == (False, 0):  # no device: the answer is now cached, so optimizer.step() stops probing NVML
        assert torch.cuda._cached_device_count == 0


def tiny_run(tiny_mnist, tmp_path, **model_kwargs):
    model, data = tiny_model(**model_kwargs), tiny_data(tiny_mnist, eval_batch_size=40)

    class Probe(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.during = subnormals_flushed()

    probe = Probe()
    trainer = quiet_trainer(max_epochs=3, log_every_n_steps=4, logger=CSVLogger(tmp_path), callbacks=[probe])
    trainer.fit(model, datamodule=data)
    return trainer, probe.during


@pytest.mark.parametrize("flush", [True, False])
def test_a_fit_flushes_subnormals_only_while_it_runs_and_only_when_asked(tiny_mnist, tmp_path, flush):
    _, during = tiny_run(tiny_mnist, tmp_path, flush_subnormals=flush)
    assert during is flush
    assert not subnormals_flushed()  # the process is left as it was


class HookCounter(Callback):
    """Overrides two batch hooks (counted) and leaves the other ten as Callback's no-ops."""

    def __init__(self):
        self.calls = {"on_train_batch_start": 0, "on_validation_batch_end": 0}
        self.seen: dict[str, object] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.calls["on_train_batch_start"] += 1
        self.seen = {hook: vars(self).get(hook, "class") for hook in BATCH_HOOKS}  # the instance mid-run

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.calls["on_validation_batch_end"] += 1


def counted_fit(tiny_mnist, **trainer_kwargs):
    counter = HookCounter()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2, num_sanity_val_steps=0,
                            callbacks=[counter], **trainer_kwargs)  # fmt: skip
    trainer.fit(tiny_model(hidden=16), datamodule=tiny_data(tiny_mnist, eval_batch_size=25))
    return counter


def test_no_op_batch_hooks_are_skipped_during_a_run_and_overridden_ones_still_run(tiny_mnist):
    counter = counted_fit(tiny_mnist)
    assert counter.calls == {"on_train_batch_start": 3, "on_validation_batch_end": 2}
    overridden = {"on_train_batch_start", "on_validation_batch_end"}
    assert counter.seen == {hook: "class" if hook in overridden else None for hook in BATCH_HOOKS}
    assert not set(BATCH_HOOKS) & set(vars(counter))  # after the run the instance is as it was
    assert counter.on_before_backward(None, None, None) is None  # Callback's no-op again


def test_under_a_profiler_every_callback_hook_is_called_and_recorded(tiny_mnist, tmp_path):
    from lightning.pytorch.profilers import SimpleProfiler

    profiler = SimpleProfiler(dirpath=tmp_path, filename="profile")
    counter = counted_fit(tiny_mnist, profiler=profiler)
    assert counter.calls == {"on_train_batch_start": 3, "on_validation_batch_end": 2}
    assert all(value == "class" for value in counter.seen.values())  # nothing skipped
    assert len(profiler.recorded_durations["[Callback]HookCounter.on_before_backward"]) == 3


class PrecisionProbe(Callback):
    """Records torch's float32 matmul precision in every training and validation batch."""

    def __init__(self):
        self.seen: dict[str, set[str]] = {"train": set(), "sanity": set(), "val": set()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen["train"].add(torch.get_float32_matmul_precision())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.seen["sanity" if trainer.sanity_checking else "val"].add(torch.get_float32_matmul_precision())


@pytest.mark.parametrize("precision", [None, "medium", "high"])
def test_the_matmul_precision_applies_to_the_training_steps_alone(tiny_mnist, precision):
    assert torch.get_float32_matmul_precision() == "highest"
    probe = PrecisionProbe()
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=2, callbacks=[probe])
    trainer.fit(tiny_model(hidden=16, train_matmul_precision=precision), datamodule=tiny_data(tiny_mnist))
    assert probe.seen == {"train": {precision or "highest"}, "sanity": {"highest"}, "val": {"highest"}}
    assert torch.get_float32_matmul_precision() == "highest"  # the process is left as it was
    trainer.validate(trainer.lightning_module, datamodule=tiny_data(tiny_mnist), verbose=False)
    assert probe.seen["val"] == {"highest"}


def test_an_unknown_matmul_precision_is_refused_by_name():
    from vae_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match="model.train_matmul_precision must be one of highest, high, medium"):
        tiny_model(train_matmul_precision="bf16")


def test_per_step_values_reach_the_logger_every_n_steps_and_epoch_means_count_every_image(tiny_mnist, tmp_path):
    trainer, _ = tiny_run(tiny_mnist, tmp_path)
    rows = list(csv.DictReader(open(trainer.logger.log_dir + "/metrics.csv")))
    logged_steps = [int(r["step"]) for r in rows if r["train/loss"]]
    assert logged_steps == [3, 7, 11, 15, 19, 23, 27]  # 3 epochs x 10 steps, every 4th (0-based step)
    epoch_means = [float(r["train/nelbo_epoch"]) for r in rows if r["train/nelbo_epoch"]]
    assert len(epoch_means) == 3 and epoch_means[2] < epoch_means[0]


def test_the_training_objective_is_the_batch_mean_of_the_per_image_terms():
    torch.manual_seed(0)
    model = VAELitModule(MLPEncoder(3, [32]), MLPDecoder(3, [32]), latent_dim=3, recon_weight=0.5, kl_weight=2.0)
    x = torch.rand(16, 1, 28, 28)
    torch.manual_seed(1)
    fast = model._train_terms(x)  # draws eps ~ N(0, I) of shape (16, 3) after encoding
    torch.manual_seed(1)
    _, per_image = model._terms(x, torch.randn(16, 3))
    for name in ("loss", "recon", "kl", "nelbo"):
        torch.testing.assert_close(fast[name], per_image[name].mean(), rtol=1e-6, atol=1e-4)


def test_a_run_that_fails_leaves_the_float_state_and_the_callbacks_as_they_were(tiny_mnist):
    from probes import NaNAfter

    from vae_lightning.module import NonFiniteLossError

    model = tiny_model(encoder=NaNAfter(latent_dim=2, after=3), train_matmul_precision="medium")
    counter, probe = HookCounter(), PrecisionProbe()
    with pytest.raises(NonFiniteLossError):
        quiet_trainer(max_epochs=1, callbacks=[counter, probe]).fit(model, datamodule=tiny_data(tiny_mnist))
    assert probe.seen["train"] == {"medium"}
    assert not subnormals_flushed() and torch.get_float32_matmul_precision() == "highest"
    assert counter.seen["on_train_batch_end"] is None  # skipped while it ran
    assert not set(BATCH_HOOKS) & set(vars(counter))  # and restored when it failed


def test_train_epoch_means_weight_every_batch_by_its_images(tiny_mnist):
    """The epoch mean is over images, so a short last batch counts for its size (250 images in batches of 40)."""
    model, data = tiny_model(), tiny_data(tiny_mnist, batch_size=40)

    class Record(Callback):
        def __init__(self):
            self.batches: list[tuple[float, int]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.batches.append((float(outputs["loss"]), len(batch[0])))

    record = Record()
    trainer = quiet_trainer(max_epochs=1, callbacks=[record])
    trainer.fit(model, datamodule=data)
    sizes = [n for _, n in record.batches]
    assert sizes == [40] * 6 + [10]
    expected = sum(loss * n for loss, n in record.batches) / sum(sizes)
    unweighted = sum(loss for loss, _ in record.batches) / len(sizes)
    assert float(trainer.callback_metrics["train/loss_epoch"]) == pytest.approx(expected, rel=1e-6)
    assert abs(expected - unweighted) > 1e-3  # the weighting is what the comparison checks


def test_optimizer_zero_grad_sets_none_and_respects_an_optimizer_s_own_zero_grad():
    model = VAELitModule(MLPEncoder(2, [8]), MLPDecoder(2, [8]), latent_dim=2)

    def with_grads():
        for p in model.parameters():
            p.grad = torch.ones_like(p)

    with_grads()
    model.optimizer_zero_grad(0, 0, torch.optim.Adam(model.parameters()))
    assert all(p.grad is None for p in model.parameters())

    class ZeroingSGD(torch.optim.SGD):  # an optimizer with its own zero_grad: it must be the one called
        def zero_grad(self, set_to_none: bool = True) -> None:
            super().zero_grad(set_to_none=False)

    with_grads()
    model.optimizer_zero_grad(0, 0, ZeroingSGD(model.parameters(), lr=0.1))
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_the_direct_write_of_lightning_s_hook_name_leaves_module_registration_alone():
    model = VAELitModule(MLPEncoder(2, [8]), MLPDecoder(2, [8]), latent_dim=2)
    model._current_fx_name = "training_step"
    assert model._current_fx_name == "training_step" and "_current_fx_name" in vars(model)
    model.extra = torch.nn.Linear(2, 2)  # every other attribute still goes through nn.Module
    model.scale = torch.nn.Parameter(torch.ones(1))
    assert "extra" in dict(model.named_modules()) and "scale" in dict(model.named_parameters())


@pytest.mark.parametrize("clip", [None, ("norm", 0.5), ("value", 0.01)])
def test_gradient_clipping_is_applied_when_configured_and_skipped_when_not(tiny_mnist, clip):
    model, data = tiny_model(), tiny_data(tiny_mnist)

    class Grads(Callback):  # the gradients the update used (after Lightning's clipping; Adam leaves them as they are)
        def on_train_start(self, trainer, pl_module):
            self.norms, self.largest = [], []
            trainer.optimizers[0].register_step_post_hook(self.record)

        def record(self, optimizer, args, kwargs):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
            self.norms.append(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))))
            self.largest.append(max(float(g.abs().max()) for g in grads))

    grads = Grads()
    algorithm, value = clip or (None, None)
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=0, callbacks=[grads],
                            gradient_clip_val=value, gradient_clip_algorithm=algorithm)  # fmt: skip
    trainer.fit(model, datamodule=data)
    assert len(grads.norms) == 4
    if clip is None:
        assert min(grads.norms) > 0.5 and min(grads.largest) > 0.01  # so the clipped runs below have work to do
    elif algorithm == "norm":
        assert max(grads.norms) <= 0.5 * (1 + 1e-5)
    else:
        assert max(grads.largest) <= 0.01
