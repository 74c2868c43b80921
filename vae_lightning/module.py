"""`VAELitModule`: one LightningModule for every variant; the networks, the weights and the objective are injected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from vae_lightning import checkpointing, objectives
from vae_lightning.data.loaders import seeded_normal
from vae_lightning.errors import ConfigError, check_choice, check_int
from vae_lightning.nets.contract import check_networks
from vae_lightning.objectives import check_objective
from vae_lightning.speed import Speed, map_one_core_each

try:  # Lightning sets it while LightningCLI instantiates the model; the hparams are then class_path dicts.
    # No public way tells a CLI-built model from a Python-built one (checked with Lightning 2.6.6);
    # tests/test_module.py fails if this import stops working.
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
except ImportError:  # pragma: no cover
    _given_hyperparameters = None

TERMS = ("loss", "recon", "kl", "nelbo")
# How to run and evaluate a model, not what it is: never saved in its checkpoint, so under `--ckpt_path`
# the config's and the command line's values stand.
# What the module logs (besides `test/*` and the experiments' `exp/<experiment>/<measure>`): what a checkpoint
# callback, early stopping or a scheduler can watch during a fit.
METRICS = (
    *(f"{stage}/{term}" for stage in ("val", "train") for term in TERMS),
    *(f"train/{term}_epoch" for term in TERMS),
)
RUN_SETTINGS = ("nll_samples", "nll_chunk_size", "eval_seed", "nonfinite", "flush_subnormals", "train_matmul_precision")


class VAELitModule(LightningModule):
    """A VAE: q(z|x) = N(mu, diag sigma^2) from the encoder, p(z) = N(0, I), Bernoulli p(x|z) from the decoder.

    Logged, in nats per image: `<stage>/loss` (the objective), `<stage>/recon`, `<stage>/kl` and
    `<stage>/nelbo` (recon + kl whatever the weights) for train (per step on the Trainer's logging
    steps, exact epoch means as `train/<term>_epoch`), val and test (one draw of z per image,
    seeded by `eval_seed` and the image's index); `test/nll`, the importance-sampled negative
    log-likelihood with `nll_samples` samples, and `test/nll_mc_se`, its Monte-Carlo standard error
    (`objectives.monte_carlo_variance` of each image's estimate, summed).

    Args:
        encoder: (B, 1, 28, 28) -> (mu, logvar), each (B, latent_dim).
        decoder: (B, latent_dim) -> logits (B, 1, 28, 28).
        latent_dim: size of z; the CLI links it into the encoder and decoder.
        recon_weight: weight of the reconstruction term (0 trains the KL term alone).
        kl_weight: weight of the KL term (0 trains the reconstruction term alone).
        objective: what training minimises. `elbo`: recon_weight * recon + kl_weight * kl, recon
            averaged over `train_samples` draws of z. `iwae`: minus the importance-weighted bound of
            Burda et al. (2015) with k = `train_samples` draws (weights must be 1).
        train_samples: draws of z per training image (k).
        gradient_estimator: how `iwae` training estimates its gradient: `standard` (the bound's own) or
            `dreg` (doubly reparameterized, Tucker et al. 2018: the same expected gradient, with an encoder
            gradient whose signal-to-noise ratio does not fall as k grows).
        optimizer: optimizer class and arguments.
        lr_scheduler: optional learning-rate scheduler (`val/nelbo` monitored for ReduceLROnPlateau).
        lr_scheduler_interval: step the scheduler every `epoch` or `step`.
        nll_samples: importance samples per test image for `test/nll`.
        nll_chunk_size: at most this many (sample, image) pairs are decoded at once in `test/nll`,
            which bounds its memory; the conv decoder holds ~90 KB per pair: use ~128.
        eval_seed: seeds the per-image noise of validation and test.
        nonfinite: what a non-finite training loss does, checked before the update: `stop` the run
            (naming the step, the batch and the last good checkpoint) or `skip` that batch's update
            (the run still stops once over half of an epoch's batches were skipped). A non-finite
            validation mean always stops the run.
        flush_subnormals: flush subnormal floats to zero on every CPU thread while a Trainer runs.
        train_matmul_precision: `torch.set_float32_matmul_precision` for the training steps alone
            ("medium": bfloat16 inputs, float32 sums); evaluation keeps torch's setting. None: torch's.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int = 20,
        recon_weight: float = 1.0,
        kl_weight: float = 1.0,
        objective: Literal["elbo", "iwae"] = "elbo",
        train_samples: int = 1,
        gradient_estimator: Literal["standard", "dreg"] = "standard",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["epoch", "step"] = "epoch",
        nll_samples: int = 1000,
        nll_chunk_size: int = 2048,
        eval_seed: int = 0,
        nonfinite: Literal["stop", "skip"] = "stop",
        flush_subnormals: bool = True,
        train_matmul_precision: Literal["highest", "high", "medium"] | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim = check_int("model.latent_dim", latent_dim)
        self.objective, self.recon_weight, self.kl_weight, self.gradient_estimator = check_objective(
            objective, recon_weight, kl_weight, gradient_estimator
        )
        self.train_samples = check_int("model.train_samples", train_samples)
        self.lr_scheduler_interval = check_choice(
            "model.lr_scheduler_interval", lr_scheduler_interval, ("epoch", "step")
        )
        self.nll_samples = check_int("model.nll_samples", nll_samples)
        self.nll_chunk_size = check_int("model.nll_chunk_size", nll_chunk_size)
        self.eval_seed = eval_seed
        self.nonfinite = check_choice("model.nonfinite", nonfinite, ("stop", "skip"))
        self.speed = Speed(flush_subnormals, train_matmul_precision)
        check_networks(encoder, decoder, latent_dim)
        # What the model is goes into its checkpoint. Under the CLI the networks and the optimizer are
        # class_path dicts there, so load_from_checkpoint rebuilds them; objects built in Python are left
        # out (a checkpoint holds no pickled code): pass them again to load_from_checkpoint.
        from_cli = _given_hyperparameters is not None and _given_hyperparameters.get() is not None
        python_objects = [] if from_cli else ["encoder", "decoder", "optimizer", "lr_scheduler"]
        self.save_hyperparameters(ignore=[*RUN_SETTINGS, *python_objects])
        self.encoder, self.decoder = encoder, decoder
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self._sums: dict[str, Tensor] = {}  # per stage, the epoch's sums over images of each term,
        self._counts: dict[str, int] = {}  # and its number of images
        self.skipped_steps = 0  # non-finite batches skipped this epoch (checkpointing.nonfinite_step)

    # ------------------------------------------------------------------ public API
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters (mu, logvar), each (B, latent_dim), of images (B, 1, 28, 28)."""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """Pixel probabilities (B, 1, 28, 28) of latents (B, latent_dim)."""
        return torch.sigmoid(self.decoder(z))

    def reconstruct(self, x: Tensor) -> Tensor:
        """Pixel probabilities of the posterior means' decodings, (B, 1, 28, 28)."""
        return self.decode(self.encode(x)[0])

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Pixel probabilities (n, 1, 28, 28) of z ~ N(0, I)."""
        return self.decode(torch.randn(n, self.latent_dim, generator=generator, device=self.device))

    def terms(self, x: Tensor, eps: Tensor | None = None, objective: str | None = None) -> objectives.Terms:
        """The per-image terms (B,) of images x for draws eps (K, B, L) (default: `train_samples` fresh
        draws); `objective` overrides the model's (evaluation scores the weighted ELBO)."""
        mu, logvar = self.encoder(x)
        if eps is None:
            eps = torch.randn(self.train_samples, *mu.shape, device=mu.device, dtype=mu.dtype)
        objective = objective or self.objective
        return objectives.vae_terms(
            x, mu, logvar, eps, self.decoder, objective, self.recon_weight, self.kl_weight, self.gradient_estimator
        )

    def test_nll(self, x: Tensor, index: Tensor) -> objectives.NLLEstimate:
        """`test/nll` per image (B,) and its Monte-Carlo variance, the `nll_samples` samples seeded by `eval_seed`
        and each image's index. On a CPU the images are split between torch's threads, one core per part
        (`speed.map_one_core_each`); each image's value does not depend on the split."""
        mu, logvar = self.encoder(x)

        def estimate(part: slice) -> objectives.NLLEstimate:
            def noise(block: int, n: int) -> Tensor:  # block 0 is the stream of a k below one block
                stream = (1, block) if block else (1,)
                return seeded_normal(self.eval_seed, index[part], n, self.latent_dim, *stream)

            return objectives.importance_weighted_nll(
                x[part], mu[part], logvar[part], self.decoder, noise, self.nll_samples, self.nll_chunk_size
            )

        parts = min(torch.get_num_threads() if x.device.type == "cpu" else 1, len(x))
        if parts <= 1:  # one core, one image, or none (a rank's empty share of the last batch under DDP)
            return estimate(slice(None))
        step = -(-len(x) // parts)
        estimates = map_one_core_each(estimate, [slice(start, start + step) for start in range(0, len(x), step)])
        return objectives.NLLEstimate(*(torch.cat(values) for values in zip(*estimates)))

    # ------------------------------------------------------------------ training
    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor | None:
        x = batch[0]
        terms = self.terms(x)
        loss = terms.loss.mean()
        with torch.no_grad():
            means = torch.stack(terms).mean(1)  # (4,) batch means of TERMS, outside the graph
        if checkpointing.nonfinite_step(self, means, TERMS, batch_idx, self.nonfinite):
            return None  # skip: no backward, no optimizer step (on every rank alike)
        every = self.trainer.log_every_n_steps  # per-step values only on the steps the Trainer writes to its loggers
        if (every and (self.global_step + 1) % every == 0) or self.trainer.fast_dev_run:
            self.log_dict({f"train/{n}": m for n, m in zip(TERMS, means)})
            self.log("loss", means[0], prog_bar=True, logger=False)
        self._accumulate("train", means, len(x), weight=len(x))
        return loss

    def on_train_epoch_start(self) -> None:
        self.skipped_steps = 0  # non-finite batches skipped this epoch (checkpointing.nonfinite_step)

    def on_train_epoch_end(self) -> None:
        self._log_means("train", TERMS, suffix="_epoch")

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, batch: Sequence[Tensor], stage: str) -> None:
        x, _, index = batch
        eps = seeded_normal(self.eval_seed, index, 1, self.latent_dim, 0)  # (1, B, L)
        sums = torch.stack(self.terms(x, eps, objective="elbo")).sum(1)  # (4,)
        if stage == "test":
            sums = torch.cat([sums, torch.stack(self.test_nll(x, index)).sum(1)])  # + nll, its variance
        self._accumulate(stage, sums, len(x))

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_means("val", TERMS)

    def test_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_means("test", (*TERMS, "nll", "nll_variance"))

    def predict_step(self, batch: Sequence[Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, labels, index = batch
        mu, logvar = self.encode(x)
        return {"mu": mu, "logvar": logvar, "label": labels, "index": index}

    # ------------------------------------------------------------------ epoch-exact means
    @torch.no_grad()
    def _accumulate(self, stage: str, values: Tensor, count: int, weight: int = 1) -> None:
        """Add `weight * values` (this batch's sums over images, one per term) to the epoch's sums, in
        float64 so long epochs stay exact, and `count` images to its count."""
        if stage not in self._sums:
            self._sums[stage] = torch.zeros(len(values), dtype=torch.float64, device=values.device)
            self._counts[stage] = 0
        self._sums[stage].add_(values, alpha=weight)
        self._counts[stage] += count

    def _log_means(self, stage: str, names: Sequence[str], suffix: str = "") -> None:
        """Log the means over every image of the epoch, on every rank (sums and counts all-reduced)."""
        sums = self._sums.pop(stage, torch.zeros(len(names), dtype=torch.float64, device=self.device))
        totals = torch.cat([sums, sums.new_tensor([self._counts.pop(stage, 0)])])
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        if totals[-1] > 0:
            means = dict(zip(names, (totals[:-1] / totals[-1]).float()))
            if "nll_variance" in means:  # the mean's Monte-Carlo standard error: sqrt(sum of variances) / n
                means["nll_mc_se"] = (means.pop("nll_variance") / totals[-1]).sqrt().float()
            if stage == "val" and not self.trainer.sanity_checking:
                checkpointing.check_finite_validation(self, {n: m.item() for n, m in means.items()})
            for name, value in means.items():
                self.log(f"{stage}/{name}{suffix}", value, sync_dist=True)  # already identical on all ranks

    # ------------------------------------------------------------------ optimizers, callbacks, checkpoints
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        self._check_schedule_length(scheduler)
        schedule = {"scheduler": scheduler, "interval": self.lr_scheduler_interval, "monitor": "val/nelbo"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def _check_schedule_length(self, scheduler) -> None:
        """Refuse a OneCycleLR shorter than the run, before training: torch raises once it is stepped past its
        `total_steps`, at the end of the run's budget rather than its start."""
        if not isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
            return
        per_epoch = self.lr_scheduler_interval == "epoch"
        needed = self.trainer.max_epochs if per_epoch else self.trainer.estimated_stepping_batches
        if needed is None or needed < 0 or needed > scheduler.total_steps:
            unit, limit = ("epochs", "trainer.max_epochs") if per_epoch else ("optimizer steps", "the run")
            raise ConfigError(
                f"model.lr_scheduler: OneCycleLR has total_steps={scheduler.total_steps} but {limit} takes {needed} "
                f"{unit} (lr_scheduler_interval: {self.lr_scheduler_interval}): set total_steps to {needed}."
            )

    def configure_callbacks(self) -> list[Callback]:
        """`vae_lightning.speed.Speed` while the Trainer runs, unless every speed setting is off."""
        return [self.speed] if self.speed.active else []

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpointing.save_random_states(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse weights that do not fit this model (naming the differences); restore random states."""
        checkpointing.check_architecture(self, checkpoint)
        checkpointing.restore_random_states(self, checkpoint)
