"""The run pieces of `vae_lightning.callbacks`, each with a real Trainer on the tiny set: the speed measures, the
test likelihood, the non-finite guard, exact resume's random states."""

from __future__ import annotations

import csv
import os
import threading
from pathlib import Path

import pytest
import torch
from builders import quiet_trainer, tiny_data, tiny_model
from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from vae_lightning import MLPDecoder, MLPEncoder, VAELitModule
from vae_lightning.callbacks import CPUSpeed, NonFiniteGuard, TestLikelihood
from vae_lightning.callbacks.speed import map_one_core_each, subnormals_flushed
from vae_lightning.data import seeded_normal
from vae_lightning.errors import RunStopped
from vae_lightning.objectives import vae_terms


def flushed_share() -> float:
    """Share of a multi-threaded elementwise product of 1e-20 * 1e-20 (subnormal) that comes out as 0."""
    a = torch.full((1_000_000,), 1e-20)  # 1M elements: torch splits the product across its threads
    return float((a * a == 0).float().mean())


SHARE = """
import torch
def share():  # of a 2-thread product of subnormals that comes out as 0
    a = torch.full((1_000_000,), 1e-20)
    return float((a * a == 0).float().mean())
torch.set_num_threads(2)
{before}share()  # torch's CPU threads start here
torch.set_flush_denormal(True)
print(share())
"""


@pytest.mark.parametrize(("before", "flushed"), [("", 0.5), ("torch.set_flush_denormal(True); ", 1.0)])
def test_torch_s_threads_take_the_flushing_only_from_before_they_exist(before, flushed):
    """Why the CLI flushes at start-up: a thread of torch's pool copies the setting when it starts."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", SHARE.format(before=before)], capture_output=True, text=True)
    assert float(out.stdout) == flushed, out.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("speed", "flushed"), [((), True), (("--speed", "null"), False)])
def test_the_cli_flushes_subnormals_on_every_thread_unless_speed_is_off(tiny_config, tmp_path, speed, flushed):
    from conftest import CONFIGS, cli_subprocess, configs

    args = ["fit", *configs(CONFIGS / "two_latent.yaml", tiny_config), "--trainer.max_steps", "1"]
    out = cli_subprocess([*args, "--trainer.callbacks+=probes.FlushProbe", *speed], tmp_path)
    assert f"every thread flushes subnormals: {flushed}" in out


@pytest.mark.parametrize("flush", [True, False])
def test_each_part_runs_on_a_thread_of_its_own_with_the_caller_s_modes_and_one_core(flush):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.set_flush_denormal(flush)
    try:
        together = threading.Barrier(3, timeout=30)  # broken, an error, unless the three parts run at once

        def state(item: int) -> tuple:
            together.wait()
            one = torch.full((4,), 1e-39).mul_(1.0).eq(0).all().item()  # this thread's own flushing
            return item, threading.get_ident(), torch.get_num_threads(), torch.is_grad_enabled(), one

        with torch.no_grad():
            states = map_one_core_each(state, [0, 1, 2])
        assert [s[0] for s in states] == [0, 1, 2]  # in the items' order
        assert len({s[1] for s in states} | {threading.get_ident()}) == 4  # three workers at once, none the caller
        assert all(s[2:] == (1, False, flush) for s in states)
        assert torch.get_num_threads() == 2 and torch.is_grad_enabled()
    finally:
        torch.set_num_threads(before)
        torch.set_flush_denormal(False)


class Probe(Callback):
    """Records subnormal flushing and torch's float32 matmul precision in every training and validation batch."""

    def __init__(self):
        self.flushed: set[bool] = set()
        self.seen: dict[str, set[str]] = {"train": set(), "sanity": set(), "val": set()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.flushed.add(subnormals_flushed())
        self.seen["train"].add(torch.get_float32_matmul_precision())
        self.nvml_check = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.seen["sanity" if trainer.sanity_checking else "val"].add(torch.get_float32_matmul_precision())


@pytest.mark.parametrize("flush", [True, False])
def test_a_fit_flushes_subnormals_only_while_it_runs_and_only_when_asked(tiny_mnist, flush):
    probe = Probe()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=3, callbacks=[CPUSpeed(flush_subnormals=flush), probe])
    trainer.fit(tiny_model(hidden=16), datamodule=tiny_data(tiny_mnist))
    assert probe.flushed == {flush}
    assert not subnormals_flushed()  # the process is left as it was


def test_without_a_gpu_training_uses_torch_s_own_cuda_check_not_an_nvml_probe_per_step(tiny_mnist):
    import lightning  # noqa: F401 - sets PYTORCH_NVML_BASED_CUDA_CHECK=1 on import

    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
    probe = Probe()
    trainer = quiet_trainer(max_epochs=1, limit_train_batches=2, callbacks=[CPUSpeed(), probe])
    trainer.fit(tiny_model(hidden=16), datamodule=tiny_data(tiny_mnist))
    assert probe.nvml_check == ("1" if torch.cuda.device_count() else "0")  # a visible GPU keeps Lightning's
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"  # put back at the end


@pytest.mark.parametrize("precision", [None, "medium", "high"])
def test_the_matmul_precision_applies_to_the_training_steps_alone(tiny_mnist, precision):
    assert torch.get_float32_matmul_precision() == "highest"
    probe = Probe()
    speed = CPUSpeed(train_matmul_precision=precision)
    trainer = quiet_trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=2, callbacks=[speed, probe])
    trainer.fit(tiny_model(hidden=16), datamodule=tiny_data(tiny_mnist))
    assert probe.seen == {"train": {precision or "highest"}, "sanity": {"highest"}, "val": {"highest"}}
    assert torch.get_float32_matmul_precision() == "highest"  # the process is left as it was


def test_a_run_that_fails_leaves_the_float_state_as_it_was(tiny_mnist):
    from probes import NaNAfter

    probe = Probe()
    model = tiny_model(encoder=NaNAfter(latent_dim=2, after=3))
    callbacks = [CPUSpeed(train_matmul_precision="medium"), NonFiniteGuard(), probe]
    with pytest.raises(RunStopped, match="non-finite loss at global step 2 .epoch 0, batch 2 "):
        quiet_trainer(max_epochs=1, callbacks=callbacks).fit(model, datamodule=tiny_data(tiny_mnist))
    assert probe.seen["train"] == {"medium"} and probe.flushed == {True}
    assert not subnormals_flushed() and torch.get_float32_matmul_precision() == "highest"


def test_skip_leaves_the_weights_of_a_bad_batch_as_they_were_and_counts_it(tiny_mnist):
    from probes import NaNAfter

    class Changed(Callback):  # per training batch: whether the update changed the decoder's weights
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.before = [p.detach().clone() for p in pl_module.decoder.parameters()]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            after = list(pl_module.decoder.parameters())
            self.changed.append(not all(torch.equal(a, b) for a, b in zip(self.before, after)))

    changed, guard = Changed(), NonFiniteGuard(policy="skip")
    changed.changed = []
    model = tiny_model(encoder=NaNAfter(latent_dim=2, after=3, until=4))  # the third batch only
    with pytest.warns(UserWarning, match="skipped this batch's update"):
        trainer = quiet_trainer(max_steps=5, limit_val_batches=0, callbacks=[guard, changed])
        trainer.fit(model, datamodule=tiny_data(tiny_mnist))
    assert changed.changed == [True, True, False, True, True] and guard.skipped == 1
    assert all(p.isfinite().all() for p in model.parameters())


def test_per_step_values_reach_the_logger_every_n_steps_and_epoch_means_count_every_image(tiny_mnist, tmp_path):
    trainer = quiet_trainer(max_epochs=3, log_every_n_steps=4, logger=CSVLogger(tmp_path))
    trainer.fit(tiny_model(), datamodule=tiny_data(tiny_mnist, eval_batch_size=40))
    rows = list(csv.DictReader(Path(trainer.logger.log_dir, "metrics.csv").read_text().splitlines()))
    logged_steps = [int(r["step"]) for r in rows if r["train/loss"]]
    assert logged_steps == [3, 7, 11, 15, 19, 23, 27]  # 3 epochs x 10 steps, every 4th (0-based step)
    epoch_means = [float(r["train/nelbo_epoch"]) for r in rows if r["train/nelbo_epoch"]]
    assert len(epoch_means) == 3 and epoch_means[2] < epoch_means[0]


def test_train_epoch_means_weight_every_batch_by_its_images(tiny_mnist):
    """The epoch mean is over images, so a short last batch counts for its size (250 images in batches of 40)."""

    class Record(Callback):
        def __init__(self):
            self.batches: list[tuple[float, int]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.batches.append((float(outputs["loss"]), len(batch[0])))

    record = Record()
    trainer = quiet_trainer(max_epochs=1, callbacks=[record])
    trainer.fit(tiny_model(), datamodule=tiny_data(tiny_mnist, batch_size=40))
    sizes = [n for _, n in record.batches]
    assert sizes == [40] * 6 + [10]
    expected = sum(loss * n for loss, n in record.batches) / sum(sizes)
    unweighted = sum(loss for loss, _ in record.batches) / len(sizes)
    assert float(trainer.callback_metrics["train/loss_epoch"]) == pytest.approx(expected, rel=1e-6)
    assert abs(expected - unweighted) > 1e-3  # the weighting is what the comparison checks


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


# ------------------------------------------------------------------------------------------ the test likelihood
def test_test_nll_counts_every_image_once_with_per_image_noise(tiny_mnist):
    model, data = tiny_model(), tiny_data(tiny_mnist, eval_batch_size=40)
    likelihood = TestLikelihood(samples=16, seed=3)
    (metrics,) = quiet_trainer(callbacks=[likelihood]).test(model, datamodule=data, verbose=False)
    images, _ = data.splits["test"]
    images, index = images.float().div(255).unsqueeze(1), torch.arange(len(images))
    with torch.no_grad():
        nll, variance = likelihood.estimate(model, images, index)
        terms = model.terms(images, seeded_normal(0, index, 1, model.latent_dim, 0))
    assert metrics["test/nll"] == pytest.approx(nll.mean().item(), rel=1e-5)
    assert metrics["test/nll_mc_se"] == pytest.approx(variance.sum().sqrt().item() / len(images), rel=1e-4)
    assert metrics["test/nelbo"] == pytest.approx(terms.nelbo.mean().item(), rel=1e-5)
    assert metrics["test/nll"] < metrics["test/nelbo"]


def test_one_sample_reports_no_standard_error_and_zero_samples_no_nll(tiny_mnist):
    for samples, keys in ((1, {"test/nll"}), (0, set())):
        trainer = quiet_trainer(callbacks=[TestLikelihood(samples=samples)])
        (metrics,) = trainer.test(tiny_model(), datamodule=tiny_data(tiny_mnist), verbose=False)
        assert {k for k in metrics if k.startswith("test/nll")} == keys


def test_test_nll_per_image_does_not_depend_on_how_the_images_are_split_between_cores():
    model, likelihood = tiny_model(latent_dim=3).eval(), TestLikelihood(samples=300, chunk_size=128, seed=1)
    images, index = torch.rand(7, 1, 28, 28), torch.arange(10, 17)
    before = torch.get_num_threads()
    estimates = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            with torch.no_grad():
                estimates.append(likelihood.estimate(model, images, index))
    finally:
        torch.set_num_threads(before)
    for other in estimates[1:]:
        torch.testing.assert_close(other.nll, estimates[0].nll, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_an_empty_test_batch_leaves_the_test_metrics_as_they_are(threads):
    """Under DDP a rank's share of a last batch smaller than the process count is empty."""
    x = torch.rand(6, 1, 28, 28)
    batch = (x, torch.zeros(6, dtype=torch.long), torch.arange(6))
    empty = (x[:0], torch.zeros(0, dtype=torch.long), torch.arange(0))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        results = []
        for batches in ([batch], [batch, empty]):
            trainer = quiet_trainer(callbacks=[TestLikelihood(samples=8)])
            (metrics,) = trainer.test(tiny_model(), DataLoader(batches, batch_size=None), verbose=False)
            results.append(metrics)
    finally:
        torch.set_num_threads(before)
    assert results[0] == results[1]


def test_evaluation_numbers_do_not_depend_on_the_batch_size(tiny_mnist):
    results = []
    for eval_batch_size in (7, 100):
        trainer = quiet_trainer(callbacks=[TestLikelihood(samples=16)])
        data = tiny_data(tiny_mnist, eval_batch_size=eval_batch_size)
        (metrics,) = trainer.test(tiny_model(), datamodule=data, verbose=False)
        results.append(metrics)
    assert results[0] == pytest.approx(results[1], rel=1e-5)
