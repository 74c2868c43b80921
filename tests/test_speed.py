"""vae_lightning.speed: subnormals flushed on every CPU thread while a Trainer runs and restored after,
torch's CUDA probe answered once, the training steps' matmul precision (and only theirs), the clock-driven
progress bar, `--speed false`; per-step logging only on logging steps, gradient clipping as configured.
Speed itself is measured by scripts/benchmark.py, not here."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import pytest
import torch
from builders import quiet_trainer, tiny_data, tiny_model
from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger

from vae_lightning import MLPDecoder, MLPEncoder, VAELitModule
from vae_lightning.objectives import vae_terms
from vae_lightning.speed import (
    TimedProgressBar,
    map_one_core_each,
    remember_no_cuda_device,
    set_flush_subnormals,
    subnormals_flushed,
)


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


@pytest.mark.parametrize("flush", [True, False])
def test_each_part_runs_on_a_thread_of_its_own_with_the_caller_s_modes_and_one_core(flush):
    before, flushed_before = torch.get_num_threads(), subnormals_flushed()
    torch.set_num_threads(2)
    set_flush_subnormals(flush)
    try:
        together = threading.Barrier(3, timeout=30)  # broken, an error, unless the three parts run at once

        def state(item: int) -> tuple:
            together.wait()
            return item, threading.get_ident(), torch.get_num_threads(), torch.is_grad_enabled(), subnormals_flushed()

        with torch.no_grad():
            states = map_one_core_each(state, [0, 1, 2])
        assert [s[0] for s in states] == [0, 1, 2]  # in the items' order
        assert len({s[1] for s in states} | {threading.get_ident()}) == 4  # three workers at once, none the caller
        assert all(s[2:] == (1, False, flush) for s in states)
        assert torch.get_num_threads() == 2 and torch.is_grad_enabled()
    finally:
        torch.set_num_threads(before)
        set_flush_subnormals(flushed_before)


def test_the_cuda_probe_keeps_torch_s_answer():
    assert hasattr(torch.cuda, "_cached_device_count")  # the private cache speed.py fills (torch 2.14, 2.15)
    before = (torch.cuda.is_available(), torch.cuda.device_count())
    remember_no_cuda_device()
    assert (torch.cuda.is_available(), torch.cuda.device_count()) == before
    if before == (False, 0):  # no device: the answer is now cached, so optimizer.step() stops probing NVML
        assert torch.cuda._cached_device_count == 0


def tiny_run(tiny_mnist, tmp_path, log_every_n_steps=4, **model_kwargs):
    model, data = tiny_model(**model_kwargs), tiny_data(tiny_mnist, eval_batch_size=40)

    class Probe(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.during = subnormals_flushed()

    probe = Probe()
    trainer = quiet_trainer(
        max_epochs=3, log_every_n_steps=log_every_n_steps, logger=CSVLogger(tmp_path), callbacks=[probe]
    )
    trainer.fit(model, datamodule=data)
    return trainer, probe.during


@pytest.mark.parametrize("flush", [True, False])
def test_a_fit_flushes_subnormals_only_while_it_runs_and_only_when_asked(tiny_mnist, tmp_path, flush):
    _, during = tiny_run(tiny_mnist, tmp_path, flush_subnormals=flush)
    assert during is flush
    assert not subnormals_flushed()  # the process is left as it was


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

    with pytest.raises(ConfigError, match="model.train_matmul_precision must be 'highest', 'high', 'medium' or null"):
        tiny_model(train_matmul_precision="bf16")


def test_per_step_values_reach_the_logger_every_n_steps_and_epoch_means_count_every_image(tiny_mnist, tmp_path):
    trainer, _ = tiny_run(tiny_mnist, tmp_path)
    rows = list(csv.DictReader(Path(trainer.logger.log_dir, "metrics.csv").read_text().splitlines()))
    logged_steps = [int(r["step"]) for r in rows if r["train/loss"]]
    assert logged_steps == [3, 7, 11, 15, 19, 23, 27]  # 3 epochs x 10 steps, every 4th (0-based step)
    epoch_means = [float(r["train/nelbo_epoch"]) for r in rows if r["train/nelbo_epoch"]]
    assert len(epoch_means) == 3 and epoch_means[2] < epoch_means[0]


def test_log_every_n_steps_0_logs_no_per_step_values_and_still_the_epoch_means(tiny_mnist, tmp_path):
    trainer, _ = tiny_run(tiny_mnist, tmp_path, log_every_n_steps=0)
    rows = list(csv.DictReader(Path(trainer.logger.log_dir, "metrics.csv").read_text().splitlines()))
    assert not [r for r in rows if r.get("train/loss")]
    assert len([r for r in rows if r["train/nelbo_epoch"]]) == 3


def test_the_training_loss_is_the_batch_mean_of_the_per_image_objective():
    torch.manual_seed(0)
    model = VAELitModule(MLPEncoder(3, [32]), MLPDecoder(3, [32]), latent_dim=3, recon_weight=0.5, kl_weight=2.0)
    x = torch.rand(16, 1, 28, 28)
    torch.manual_seed(1)
    loss = model.terms(x).loss.mean()  # what training_step returns: eps ~ N(0, I) of shape (1, 16, 3)
    torch.manual_seed(1)
    mu, logvar = model.encode(x)
    expected = vae_terms(x, mu, logvar, torch.randn(1, 16, 3), model.decoder, "elbo", 0.5, 2.0).loss.mean()
    torch.testing.assert_close(loss, expected)


def test_a_run_that_fails_leaves_the_float_state_as_it_was(tiny_mnist):
    from probes import NaNAfter

    from vae_lightning.checkpointing import NonFiniteLossError

    model = tiny_model(encoder=NaNAfter(latent_dim=2, after=3), train_matmul_precision="medium")
    probe = PrecisionProbe()
    with pytest.raises(NonFiniteLossError):
        quiet_trainer(max_epochs=1, callbacks=[probe]).fit(model, datamodule=tiny_data(tiny_mnist))
    assert probe.seen["train"] == {"medium"}
    assert not subnormals_flushed() and torch.get_float32_matmul_precision() == "highest"


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
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=0,
        callbacks=[grads],
        gradient_clip_val=value,
        gradient_clip_algorithm=algorithm,
    )
    trainer.fit(model, datamodule=data)
    assert len(grads.norms) == 4
    if clip is None:
        assert min(grads.norms) > 0.5 and min(grads.largest) > 0.01  # so the clipped runs below have work to do
    elif algorithm == "norm":
        assert max(grads.norms) <= 0.5 * (1 + 1e-5)
    else:
        assert max(grads.largest) <= 0.01


def test_the_timed_bar_redraws_at_most_every_refresh_seconds_and_always_at_the_end():
    slow, every = TimedProgressBar(refresh_seconds=3600), TimedProgressBar(refresh_rate=2, refresh_seconds=0)
    assert [n for n in range(1, 11) if slow.due(n, 10)] == [1, 10]  # the first, then the last
    assert [n for n in range(1, 8) if every.due(n, 7)] == [2, 4, 6, 7]  # Lightning's rule
    assert not TimedProgressBar(refresh_rate=0).due(1, 1)  # hidden
    with pytest.raises(ValueError, match="progress_bar.refresh_seconds must be a number of seconds >= 0"):
        TimedProgressBar(refresh_seconds=-1)


def test_the_timed_bar_draws_every_batch_of_a_real_fit_only_when_due(tiny_mnist):
    class Counting(TimedProgressBar):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.drawn = []

        def due(self, current, total):
            answer = super().due(current, total)
            self.drawn.append(answer)
            return answer

    bar = Counting(refresh_seconds=3600)
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0, enable_progress_bar=True, callbacks=[bar])
    trainer.fit(tiny_model(hidden=16), datamodule=tiny_data(tiny_mnist))
    assert bar.drawn == [True] + [False] * 8 + [True]  # 10 training batches: the first and the last drawn
    assert bar.train_progress_bar.n == 10


def test_speed_false_turns_every_measure_off(run_cli):
    from conftest import CONFIGS

    fast = run_cli("--config", CONFIGS / "vanilla.yaml", run=False)
    plain = run_cli("--config", CONFIGS / "vanilla.yaml", "--speed", "false", run=False)
    assert (fast.model.speed.flush_subnormals, fast.model.speed.train_matmul_precision) == (True, "medium")
    assert fast.config["model"]["optimizer"]["init_args"]["fused"] is True
    assert (plain.model.speed.flush_subnormals, plain.model.speed.train_matmul_precision) == (False, None)
    assert plain.config["model"]["optimizer"]["init_args"]["fused"] is None  # torch's own choice
    assert plain.model.configure_callbacks() == []  # no Speed callback at all
    [bar] = [c for c in plain.trainer.callbacks if isinstance(c, TimedProgressBar)]
    assert bar.refresh_seconds == 0  # Lightning's rule: every refresh_rate-th batch


def test_without_a_profiler_hooks_enter_one_shared_context_and_idle_callbacks_stay_out(run_cli, tiny_config):
    from conftest import CONFIGS
    from lightning.pytorch.profilers import PassThroughProfiler

    from vae_lightning.experiments import Experiments
    from vae_lightning.predict import LatentWriter
    from vae_lightning.speed import NoProfiler

    args = ("fit", "--config", CONFIGS / "two_latent.yaml", "--config", tiny_config, "--trainer.fast_dev_run", "true")
    fast = run_cli(*args, "--experiments.names", "[]")
    assert type(fast.trainer.profiler) is NoProfiler and isinstance(fast.trainer.profiler, PassThroughProfiler)
    assert fast.trainer.profiler.profile("a") is fast.trainer.profiler.profile("b")  # one shared no-op
    kinds = {type(c) for c in fast.trainer.callbacks}
    assert LatentWriter not in kinds and Experiments not in kinds  # predict's writer, and no experiments to run
    assert Experiments in {type(c) for c in run_cli(*args).trainer.callbacks}  # the config's experiments
    plain = run_cli(*args, "--speed", "false")
    assert type(plain.trainer.profiler) is PassThroughProfiler  # Lightning's own


def test_under_a_profiler_every_callback_hook_is_called_and_recorded(tiny_mnist, tmp_path):
    from lightning.pytorch.profilers import SimpleProfiler

    class Counter(Callback):  # overrides one batch hook and leaves the others as Callback's no-ops
        calls = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            Counter.calls += 1

    profiler = SimpleProfiler(dirpath=tmp_path, filename="profile")
    trainer = quiet_trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        callbacks=[Counter()],
        profiler=profiler,
    )
    trainer.fit(tiny_model(hidden=16), datamodule=tiny_data(tiny_mnist, eval_batch_size=25))
    assert Counter.calls == 3
    [recorded] = [v for k, v in profiler.recorded_durations.items() if k.endswith("Counter.on_before_backward")]
    assert len(recorded) == 3  # the no-op hook too
