"""`VAELitModule`: the VAE itself; how a machine runs it is the business of `vae_lightning.callbacks`."""

import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from jsonargparse.typing import NonNegativeFloat, PositiveInt
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import Metric

from vae_lightning import objectives
from vae_lightning.data import seeded_normal
from vae_lightning.nets import check_networks

TERMS = objectives.Terms._fields  # loss, recon, kl, nelbo
# What the module logs, in nats per image: what a checkpoint callback, early stopping or a scheduler can watch.
METRICS = (*(f"{s}/{t}" for s in ("val", "train") for t in TERMS), *(f"train/{t}_epoch" for t in TERMS))
EVAL_SEED = 0  # validation and test draw one z per image, a fixed function of this seed and the image's index


def logged_step(trainer: Trainer) -> bool:
    """Whether per-step values are logged this step: on the logger's steps and each epoch's last (monitors see it);
    each `self.log` costs Lightning's bookkeeping on the hot path, so the other steps skip it."""
    return trainer.is_last_batch or (trainer.global_step + 1) % trainer.log_every_n_steps == 0


class TermMeans(Metric):
    """Exact means over images of the four terms, summed in float64 and reduced across processes. With
    `skip_nonfinite`, a batch with a non-finite term is left out (its update was skipped, `NonFiniteGuard`)."""

    full_state_update = False

    def __init__(self, skip_nonfinite: bool = False) -> None:
        super().__init__()
        self.skip_nonfinite = skip_nonfinite
        self.add_state("sums", torch.zeros(len(TERMS), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, terms: objectives.Terms) -> None:
        sums, images = torch.stack(terms).detach().sum(1, dtype=torch.float64), len(terms[0])  # (4,), B
        if self.skip_nonfinite:  # without a sync: a batch's share is multiplied in as 0 or 1
            finite = sums.isfinite().all()
            sums, images = torch.where(finite, sums, 0.0), finite * images
        self.sums += sums
        self.images += images

    def compute(self) -> Tensor:
        return self.sums / self.images  # (4,) in TERMS order


class VAELitModule(LightningModule):
    """A VAE: q(z|x) = N(mu, diag sigma^2) from the encoder, p(z) = N(0, I), Bernoulli p(x|z) from the decoder.

    Logs, in nats per image, `<stage>/loss` (the objective), `/recon`, `/kl` and `/nelbo` (recon + kl): train per
    step and as exact epoch means (`train/<term>_epoch`), val and test as means over every image (one seeded z each).

    Args:
        encoder: (B, 1, 28, 28) -> (mu, logvar), each (B, latent_dim).
        decoder: (B, latent_dim) -> logits (B, 1, 28, 28).
        latent_dim: size of z; the CLI links it into the encoder and decoder.
        recon_weight: weight of the reconstruction term (0 trains the KL term alone).
        kl_weight: weight of the KL term (0 trains the reconstruction term alone).
        objective: what training minimises: `elbo` (recon_weight * recon + kl_weight * kl) or `iwae` (Burda et al.).
        train_samples: draws of z per training image (k): `elbo` averages recon over them, `iwae` bounds with them.
        gradient_estimator: `iwae`'s gradient: `standard` or `dreg` (Tucker et al. 2018: a less noisy encoder's).
        optimizer: optimizer class and arguments.
        lr_scheduler: optional, stepped once per epoch (a ReduceLROnPlateau watches `val/nelbo`).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: PositiveInt = 20,
        recon_weight: NonNegativeFloat = 1.0,
        kl_weight: NonNegativeFloat = 1.0,
        objective: Literal["elbo", "iwae"] = "elbo",
        train_samples: PositiveInt = 1,
        gradient_estimator: Literal["standard", "dreg"] = "standard",
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        objectives.check_objective(objective, recon_weight, kl_weight, gradient_estimator)
        check_networks(encoder, decoder, latent_dim)
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim
        self.recon_weight, self.kl_weight, self.objective = recon_weight, kl_weight, objective
        self.train_samples, self.gradient_estimator = train_samples, gradient_estimator
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        # Checkpoints keep the CLI's class_path dicts, not objects built in Python: pass those to load_from_checkpoint.
        with warnings.catch_warnings():  # Lightning warns of nn.Module values, which are dropped just below
            warnings.simplefilter("ignore", UserWarning)
            self.save_hyperparameters()
        for key in ("encoder", "decoder", "optimizer", "lr_scheduler"):
            if not isinstance(self.hparams.get(key), (dict, type(None))):
                del self.hparams[key]
        self.train_means, self.val_means, self.test_means = TermMeans(skip_nonfinite=True), TermMeans(), TermMeans()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x)  # (mu, logvar), each (B, latent_dim), of images (B, 1, 28, 28)

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
        """The per-image terms (B,) of images x for draws eps (K, B, L) (default: `train_samples` fresh draws);
        `objective` overrides the model's (evaluation scores the weighted ELBO)."""
        mu, logvar = self.encoder(x)
        if eps is None:
            eps = torch.randn(self.train_samples, *mu.shape, device=mu.device, dtype=mu.dtype)
        weights = self.recon_weight, self.kl_weight, self.gradient_estimator
        return objectives.vae_terms(x, mu, logvar, eps, self.decoder, objective or self.objective, *weights)

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        terms = self.terms(batch[0])
        with torch.no_grad():
            if logged_step(self.trainer):
                self.log_dict({f"train/{name}": value.mean() for name, value in zip(TERMS, terms)})
                self.log("loss", terms.loss.mean(), prog_bar=True, logger=False)
            self.train_means.update(terms)
        return terms.loss.mean()

    def _evaluate(self, batch: Sequence[Tensor], stage: str) -> None:
        x, _, index = batch
        eps = seeded_normal(EVAL_SEED, index, 1, self.latent_dim, 0)  # (1, B, L)
        getattr(self, f"{stage}_means").update(self.terms(x, eps, objective="elbo"))

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Sequence[Tensor], batch_idx: int) -> dict[str, Tensor]:
        mu, logvar = self.encode(batch[0])
        return {"mu": mu, "logvar": logvar, "label": batch[1], "index": batch[2]}

    def on_fit_start(self) -> None:  # a validate or test before leaves states training cannot add to (inference)
        for metric in (self.train_means, self.val_means, self.test_means):
            metric.reset()

    def _log_means(self, stage: str, suffix: str = "") -> None:
        metric = getattr(self, f"{stage}_means")
        means = metric.compute().float()  # equal on every rank
        self.log_dict({f"{stage}/{name}{suffix}": mean for name, mean in zip(TERMS, means)}, sync_dist=True)
        metric.reset()

    def on_train_epoch_end(self) -> None:
        self._log_means("train", suffix="_epoch")

    def on_validation_epoch_end(self) -> None:
        self._log_means("val")

    def on_test_epoch_end(self) -> None:
        self._log_means("test")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        schedule = {"scheduler": self.lr_scheduler_factory(optimizer), "interval": "epoch", "monitor": "val/nelbo"}
        return {"optimizer": optimizer, "lr_scheduler": schedule}
