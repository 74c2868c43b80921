"""`VAELitModule`: one LightningModule for every variant; the networks and loss weights are injected."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from vae_lightning.data.loaders import mix_seed
from vae_lightning.errors import ConfigError
from vae_lightning.nets.contract import check_networks
from vae_lightning.speed import MATMUL_PRECISIONS, FastPath, TrainingMatmulPrecision
from vae_lightning.objectives import (
    bernoulli_nll,
    bernoulli_nll_mean,
    gaussian_kl,
    importance_weighted_bound,
    log_importance_weights,
    log_prior_over_posterior,
    reparameterize,
)

try:  # set while LightningCLI instantiates the model; then the hparams hold class_path dicts
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
except ImportError:  # pragma: no cover - an older/newer Lightning without it: keep everything
    _given_hyperparameters = None

Stage = Literal["train", "val", "test"]
TERMS = ("loss", "recon", "kl", "nelbo")
NLL_NOISE_BLOCK = 128  # importance samples per seeded block of test/nll noise (its memory: B x 128 x L floats)


class NonFiniteLossError(RuntimeError):
    """Training met a non-finite loss (with model.nonfinite: stop)."""


def last_good_checkpoint(trainer) -> str:
    """This run's last.ckpt (its latest state), else its best checkpoint, else a note that there is none."""
    for attribute in ("path", "best_model_path"):  # LastCheckpoint.path, then ModelCheckpoint.best_model_path
        for callback in trainer.callbacks:
            path = getattr(callback, attribute, None)
            if path and Path(path).is_file():
                return str(path)
    return "none written yet in this run"


def check_architecture(module: nn.Module, checkpoint: dict) -> None:
    """Raise ConfigError when a checkpoint's weights do not fit `module`, naming each difference."""
    saved, own = checkpoint.get("state_dict", {}), module.state_dict()
    problems = [f"{k}: {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
                for k, v in saved.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]  # fmt: skip
    missing, unexpected = sorted(set(own) - set(saved)), sorted(set(saved) - set(own))
    problems += [f"{k}: missing from the checkpoint" for k in missing[:5]]
    problems += [f"{k}: in the checkpoint, not in the model" for k in unexpected[:5]]
    if not problems:
        return
    hparams = checkpoint.get("hyper_parameters", {})
    differences = [f"{key}={hparams[key]!r} in the checkpoint, {getattr(module, key, None)!r} in the config"
                   for key in ("latent_dim",) if key in hparams and hparams[key] != getattr(module, key, None)]  # fmt: skip
    for key in ("encoder", "decoder"):
        saved_class = (hparams.get(key) or {}).get("class_path", "") if isinstance(hparams.get(key), dict) else ""
        if saved_class and saved_class.rsplit(".", 1)[-1] != type(getattr(module, key)).__name__:
            differences.append(f"{key} {saved_class.rsplit('.', 1)[-1]} in the checkpoint, "
                               f"{type(getattr(module, key)).__name__} in the config")  # fmt: skip
    raise ConfigError(
        "the checkpoint's architecture does not fit the model built from the config"
        + (f" ({'; '.join(differences)})" if differences else "")
        + f": {'; '.join(problems[:8])}. Use the config the checkpoint was trained with (its config.yaml), "
        "or load it without a config: VAELitModule.load_from_checkpoint(path)."
    )


class VAEOutput(NamedTuple):
    logits: Tensor  # (B, 1, 28, 28) Bernoulli logits of p(x | z)
    mu: Tensor  # (B, L)
    logvar: Tensor  # (B, L)
    z: Tensor  # (B, L) one reparameterised sample


def _weighted(weight: float, term: Tensor) -> Tensor:
    return term if weight == 1.0 else weight * term


def _nonnegative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ConfigError(f"model.{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"model.{name} must be a positive integer, got {value!r}.")
    return value


class VAELitModule(LightningModule):
    """A VAE: q(z|x) = N(mu, diag sigma^2) from the encoder, p(z) = N(0, I), Bernoulli p(x|z) from the decoder.

    Training minimises, per image and averaged over the batch,
    `recon_weight * BCE(logits, x) summed over pixels + kl_weight * KL(q(z|x) || N(0, I))`.

    Logged (nats per image): `<stage>/loss` (that weighted objective), `<stage>/recon`,
    `<stage>/kl`, `<stage>/nelbo` (recon + kl, the negative ELBO whatever the weights), for
    train (per step, on the steps the Trainer writes to its loggers, every `log_every_n_steps`;
    exact epoch means over every image as `train/<term>_epoch`), val and test; and `test/nll`, the
    importance-sampled negative log-likelihood with `nll_samples` samples. Validation and test
    draw their noise per image from `eval_seed`, so their numbers do not depend on the batch
    size, the number of processes or the epoch.

    Args:
        encoder: (B, 1, 28, 28) -> (mu, logvar), each (B, latent_dim).
        decoder: (B, latent_dim) -> logits (B, 1, 28, 28).
        latent_dim: size of z; the CLI links it into the encoder and decoder.
        recon_weight: weight of the reconstruction term (0 trains the KL term alone).
        kl_weight: weight of the KL term (0 trains the reconstruction term alone).
        optimizer: optimizer class and arguments (default Adam, lr 1e-3).
        lr_scheduler: optional learning-rate scheduler (stepped per `lr_scheduler_interval`,
            `val/nelbo` monitored for ReduceLROnPlateau).
        lr_scheduler_interval: `epoch` or `step`.
        nll_samples: importance samples per test image for `test/nll`.
        nll_chunk_size: at most this many (sample, image) pairs are decoded at once in `test/nll`,
            which bounds its memory. On a CPU small chunks are also the fastest (the vanilla MLP, k =
            1000 on 10,000 images: 256 pairs 38.8 s and +33 MB; 2048 pairs, measured before the noise
            came in blocks, 40.0 s and +2.3 GB, most of it freed memory the allocator keeps); the conv
            decoder holds ~90 KB per pair: use ~128.
        eval_seed: seeds the per-image noise of validation and test.
        nonfinite: what a non-finite training loss does: `stop` the run (naming the step, the batch
            and the last good checkpoint) or `skip` that batch's update (with a warning). It is
            checked before the update, so the weights never take a non-finite step.
        objective: what training maximises. `elbo`: the ELBO, its reconstruction term averaged over
            `train_samples` draws of z (the KL term is analytic), with the weights above. `iwae`: the
            importance-weighted bound of Burda et al. (2015), log (1/k sum_i p(x, z_i) / q(z_i | x)) with
            k = `train_samples` draws; it equals the ELBO in expectation for k = 1 and tightens towards
            log p(x) as k grows (weights must be 1). Logged `loss` is minus that bound per image;
            `recon`, `kl`, `nelbo` stay the ELBO's terms.
        train_samples: draws of z per training image (k).
        flush_subnormals: on a CPU, flush subnormal floats (below 1.2e-38) to zero while the Trainer
            runs (restored after): x86 cores process them on a slow path, and a VAE's saturated
            border pixels make many (see `vae_lightning.speed`).
        train_matmul_precision: `torch.set_float32_matmul_precision` for the training steps alone
            (validation, test and predict keep torch's setting, by default "highest": full float32).
            "medium" lets float32 matmuls round their inputs to bfloat16 and accumulate in float32 (AMX
            on recent Xeons, tensor cores on GPUs), "high" use TF32 on GPUs. None leaves torch's
            setting alone. The MLP configs set "medium" (see the README's Performance section).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int = 20,
        recon_weight: float = 1.0,
        kl_weight: float = 1.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["epoch", "step"] = "epoch",
        nll_samples: int = 1000,
        nll_chunk_size: int = 256,
        eval_seed: int = 0,
        nonfinite: Literal["stop", "skip"] = "stop",
        flush_subnormals: bool = True,
        objective: Literal["elbo", "iwae"] = "elbo",
        train_samples: int = 1,
        train_matmul_precision: Literal["highest", "high", "medium"] | None = None,
    ) -> None:
        super().__init__()
        self.latent_dim = _positive("latent_dim", latent_dim)
        self.recon_weight = _nonnegative("recon_weight", recon_weight)
        self.kl_weight = _nonnegative("kl_weight", kl_weight)
        if self.recon_weight == 0 and self.kl_weight == 0:
            raise ConfigError(
                "model.recon_weight and model.kl_weight are both 0: the objective is constant and nothing "
                "would train. Set at least one of them above 0."
            )
        self.nll_samples = _positive("nll_samples", nll_samples)
        self.nll_chunk_size = _positive("nll_chunk_size", nll_chunk_size)
        self.train_samples = _positive("train_samples", train_samples)
        if objective not in ("elbo", "iwae"):
            raise ConfigError(f"model.objective must be 'elbo' or 'iwae', got {objective!r}.")
        if objective == "iwae" and (self.recon_weight, self.kl_weight) != (1.0, 1.0):
            raise ConfigError(
                f"model.objective: iwae bounds log p(x) as a whole and has no separate terms to weight, but "
                f"model.recon_weight={self.recon_weight:g} and model.kl_weight={self.kl_weight:g}: set both to 1, "
                "or use objective: elbo."
            )
        self.objective = objective
        if train_matmul_precision not in (None, *MATMUL_PRECISIONS):
            raise ConfigError(
                f"model.train_matmul_precision must be one of {', '.join(MATMUL_PRECISIONS)} or null, "
                f"got {train_matmul_precision!r}."
            )
        self.train_matmul_precision = train_matmul_precision
        if nonfinite not in ("stop", "skip"):
            raise ConfigError(f"model.nonfinite must be 'stop' or 'skip', got {nonfinite!r}.")
        if lr_scheduler_interval not in ("epoch", "step"):
            raise ConfigError(f"model.lr_scheduler_interval must be 'epoch' or 'step', got {lr_scheduler_interval!r}.")
        check_networks(encoder, decoder, latent_dim)

        # Under the CLI the hparams are class_path dicts, so load_from_checkpoint rebuilds everything.
        # Objects built in Python (networks, optimizer factories) are not pickled into the hparams, so
        # checkpoints stay loadable with weights_only=True: pass the networks again when loading.
        from_cli = _given_hyperparameters is not None and _given_hyperparameters.get() is not None
        self.save_hyperparameters(ignore=[] if from_cli else ["encoder", "decoder", "optimizer", "lr_scheduler"])
        self.encoder, self.decoder = encoder, decoder
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.lr_scheduler_interval, self.eval_seed, self.nonfinite = lr_scheduler_interval, eval_seed, nonfinite
        self.flush_subnormals = bool(flush_subnormals)
        self._sums: dict[str, Tensor] = {}
        self._counts: dict[str, int] = {}

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
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        return self.decode(z)

    def forward(self, x: Tensor, eps: Tensor | None = None) -> VAEOutput:
        """Encode, draw z = mu + eps * sigma (eps ~ N(0, I) unless given), decode to logits."""
        mu, logvar = self.encoder(x)
        z = reparameterize(mu, logvar, torch.randn_like(mu) if eps is None else eps)
        return VAEOutput(self.decoder(z), mu, logvar, z)

    # ------------------------------------------------------------------ objective
    def _terms(self, x: Tensor, eps: Tensor | None = None) -> tuple[VAEOutput, dict[str, Tensor]]:
        """The per-image terms (B,) of the objective for a batch."""
        out = self(x, eps)
        recon, kl = bernoulli_nll(out.logits, x), gaussian_kl(out.mu, out.logvar)  # (B,) each
        return out, {"loss": self._weighted_loss(recon, kl), "recon": recon, "kl": kl, "nelbo": recon + kl}

    def _weighted_loss(self, recon: Tensor, kl: Tensor) -> Tensor:
        """recon_weight * recon + kl_weight * kl, without the multiplications by a weight of 1."""
        return _weighted(self.recon_weight, recon) + _weighted(self.kl_weight, kl)

    def _train_terms(self, x: Tensor) -> dict[str, Tensor]:
        """Batch means (scalars) of the training objective and its parts (recon averaged over the samples)."""
        k = self.train_samples
        if k == 1 and self.objective == "elbo":  # the common case, without a sample dimension
            out = self(x)
            recon, kl = bernoulli_nll_mean(out.logits, x), gaussian_kl(out.mu, out.logvar).mean()
        else:
            mu, logvar = self.encoder(x)
            eps = torch.randn(k, *mu.shape, device=mu.device, dtype=mu.dtype)
            z = reparameterize(mu, logvar, eps)  # (k, B, L)
            log_px_z = -bernoulli_nll(self.decoder(z.flatten(0, 1)).unflatten(0, (k, len(x))), x)  # (k, B)
            recon, kl = -log_px_z.mean(), gaussian_kl(mu, logvar).mean()
        if self.objective == "iwae":
            loss = -importance_weighted_bound(log_px_z + log_prior_over_posterior(eps, z, logvar)).mean()
        else:
            loss = self._weighted_loss(recon, kl)
        unweighted = self.objective == "elbo" and self.recon_weight == self.kl_weight == 1.0
        return {"loss": loss, "recon": recon, "kl": kl, "nelbo": loss if unweighted else recon + kl}

    @torch.no_grad()
    def _accumulate(self, stage: str, values: Sequence[Tensor], count: int, weight: int = 1) -> None:
        """Add `weight * values` (this batch's sums over images, one scalar per name) to the epoch's
        sums, kept in float64 so long epochs stay exact, in two small ops a step (stack and add)."""
        sums = self._sums.get(stage)
        if sums is None:
            sums = self._sums[stage] = torch.zeros(len(values), dtype=torch.float64, device=values[0].device)
        sums.add_(torch.stack(list(values)), alpha=weight)
        self._counts[stage] = self._counts.get(stage, 0) + count

    def _log_means(self, stage: str, names: Sequence[str], suffix: str = "") -> None:
        """Log exact means over every image of the epoch on every rank (sums and counts all-reduced)."""
        sums = self._sums.pop(stage, None)
        count = self._counts.pop(stage, 0)
        if sums is None:
            sums = torch.zeros(len(names), dtype=torch.float64, device=self.device)
        totals = torch.cat([sums, sums.new_tensor([count])])
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum") if self.trainer.world_size > 1 else totals
        if totals[-1] == 0:
            return
        means = (totals[:-1] / totals[-1]).float()
        for name, value in zip(names, means):
            self.log(f"{stage}/{name}{suffix}", value, sync_dist=True)  # values already identical on all ranks

    def eval_noise(self, index: Tensor, num_samples: int, stream: int, block: int = 0) -> Tensor:
        """Standard-normal noise (num_samples, B, L), a fixed function of each image's dataset index
        (and of `block`, so the samples of a large k can be drawn block by block)."""
        noise = torch.empty(len(index), num_samples, self.latent_dim, device=self.device)
        generator = torch.Generator(self.device)
        for row, item in enumerate(index.tolist()):
            generator.manual_seed(mix_seed(self.eval_seed, stream, item, *([block] if block else [])))
            torch.randn(num_samples, self.latent_dim, generator=generator, device=self.device, out=noise[row])
        return noise.transpose(0, 1)

    def log_importance_weights(self, x: Tensor, mu: Tensor, logvar: Tensor, index: Tensor) -> Tensor:
        """log w (nll_samples, B) of `test/nll`, the samples drawn per image from `eval_seed` in blocks of
        `NLL_NOISE_BLOCK`, so memory stays bounded by the block and `nll_chunk_size`, whatever k is."""
        blocks = []
        for block, start in enumerate(range(0, self.nll_samples, NLL_NOISE_BLOCK)):
            eps = self.eval_noise(index, min(NLL_NOISE_BLOCK, self.nll_samples - start), stream=1, block=block)
            blocks.append(log_importance_weights(x, mu, logvar, eps, self.decoder, self.nll_chunk_size))
        return torch.cat(blocks)

    # ------------------------------------------------------------------ Lightning hooks
    def __setattr__(self, name: str, value: object) -> None:
        # Lightning sets `_current_fx_name` around every hook it calls, ~45 times a training step;
        # nn.Module.__setattr__'s checks (parameter? module? buffer?) made that ~0.05 s an epoch of the
        # vanilla MLP on a CPU (scripts/benchmark.py). It is a plain string attribute: write it directly.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: torch.optim.Optimizer) -> None:
        """`optimizer.zero_grad()` (set_to_none) without its per-call profiler record, for torch's own
        `zero_grad`; an optimizer that overrides `zero_grad` gets its own."""
        if type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad:
            optimizer.zero_grad()
            return
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's clipping, skipped outright when none is configured (it runs every step)."""
        if gradient_clip_val is None and not self.trainer.gradient_clip_val:
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_callbacks(self) -> list[Callback]:
        """The fast path (`vae_lightning.speed`) for as long as the Trainer runs, and the training
        steps' matmul precision when one is asked for."""
        callbacks: list[Callback] = [FastPath(flush_subnormals=self.flush_subnormals)]
        if self.train_matmul_precision is not None:
            callbacks.append(TrainingMatmulPrecision(self.train_matmul_precision))
        return callbacks

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor | None:
        x = batch[0]
        means = self._train_terms(x)
        if self._nonfinite(means, batch_idx):
            return None  # skip: no backward, no optimizer step (on every rank alike)
        if self._logging_step():
            self.log_dict({f"train/{n}": means[n] for n in TERMS}, prog_bar=False)
            self.log("loss", means["loss"], prog_bar=True, logger=False)
        self._accumulate("train", [means[n] for n in TERMS], len(x), weight=len(x))
        return means["loss"]

    def _logging_step(self) -> bool:
        """Whether the Trainer writes this step's metrics to the loggers (every `log_every_n_steps`).

        Logging the five per-step values on every step cost ~1.3 ms a step on a 2-core CPU (the
        vanilla MLP at batch 128: 2.2 s an epoch against 1.6 s), so they are logged only on the steps
        that reach a logger; the epoch means (`train/<term>_epoch`) still count every image."""
        trainer = self.trainer
        connector = getattr(trainer, "_logger_connector", None)
        if connector is None or trainer.fast_dev_run:  # pragma: no cover - Lightning internals moved
            return True
        return bool(connector.should_update_logs)

    def _nonfinite(self, means: dict[str, Tensor], batch_idx: int) -> bool:
        """True when this step's loss is not finite on any rank (all ranks agree); stops the run under `stop`."""
        bad = not math.isfinite(means["loss"].item())  # one op and the sync that any check on the host needs
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return False
        values = ", ".join(f"{n}={means[n].item():.4g}" for n in TERMS)
        where = f"global step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx} of the epoch; {values})"
        if self.nonfinite == "skip":
            rank_zero_warn(f"non-finite loss at {where}: skipped this batch's update (model.nonfinite: skip).")
            return True
        raise NonFiniteLossError(
            f"non-finite loss at {where}; stopped before it could update the weights. Last good checkpoint: "
            f"{last_good_checkpoint(self.trainer)}. Lower the learning rate, or set model.nonfinite: skip "
            f"to skip such batches."
        )

    def on_train_epoch_end(self) -> None:
        self._log_means("train", TERMS, suffix="_epoch")

    def _evaluate(self, batch: Sequence[Tensor], stage: Stage) -> None:
        x, _, index = batch
        eps = self.eval_noise(index, 1, stream=0)[0]
        out, terms = self._terms(x, eps)
        sums = [terms[n].sum() for n in TERMS]
        if stage == "test":
            log_w = self.log_importance_weights(x, out.mu, out.logvar, index)
            sums.append(-importance_weighted_bound(log_w).sum())
        self._accumulate(stage, sums, len(x))

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_means("val", TERMS)

    def test_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_means("test", (*TERMS, "nll"))

    def predict_step(self, batch: Sequence[Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, labels, index = batch
        mu, logvar = self.encode(x)
        return {"mu": mu, "logvar": logvar, "label": labels, "index": index}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Save every rank's random state (the reparameterisation noise), so a resumed run continues
        exactly: data order and binarization are already functions of (seed, epoch, batch)."""
        states = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        if self._trainer is not None and self.trainer.world_size > 1:  # every rank is here: gather
            states = {k: self.all_gather(v.to(self.device)).cpu() for k, v in states.items()}  # (world, ...)
        else:
            states = {k: v.unsqueeze(0) for k, v in states.items()}
        checkpoint["rng_states"] = states

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse weights that do not fit this model (naming the differences); restore random states."""
        check_architecture(self, checkpoint)
        states = checkpoint.get("rng_states")
        if states is None or self._trainer is None:
            return
        rank = self.trainer.global_rank
        if len(states["cpu"]) == self.trainer.world_size:  # same process count: each rank its own stream
            # .clone(): torch 2.15 segfaults on a state tensor that is a view with a storage offset
            torch.set_rng_state(states["cpu"][rank].clone())
            if "cuda" in states and self.device.type == "cuda":
                torch.cuda.set_rng_state(states["cuda"][rank].clone(), self.device)
        else:
            rank_zero_warn(f"checkpoint saved by {len(states['cpu'])} processes, resumed by {self.trainer.world_size}: "
                           "the noise streams start afresh, so the run will not repeat an uninterrupted one exactly.")  # fmt: skip

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.lr_scheduler_interval, "monitor": "val/nelbo"},
        }
