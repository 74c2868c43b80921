"""`KLWarmup`: the KL term's weight rising linearly from 0 at the start of training."""

from jsonargparse.typing import NonNegativeInt
from lightning.pytorch import Callback, LightningModule, Trainer

from vae_lightning.errors import ConfigError
from vae_lightning.module import logged_step


class KLWarmup(Callback):
    """Trains with the KL weight `model.kl_weight * min(1, step / length)` over the first `epochs` epochs or `steps`
    optimizer steps (both 0, the default: none), logged as `train/kl_weight`; `<stage>/nelbo` stays recon + kl. A
    function of the global step, so a resumed run continues it. `elbo` only: `iwae`'s bound has no KL term.

    Args:
        epochs: length of the warm-up in epochs (of the training set as this run batches it).
        steps: length in optimizer steps; give one of the two.
    """

    def __init__(self, epochs: NonNegativeInt = 0, steps: NonNegativeInt = 0) -> None:
        if epochs and steps:
            raise ConfigError(f"kl_warmup: epochs={epochs} and steps={steps}: give one length, the other 0.")
        self.epochs, self.steps = int(epochs), int(steps)
        self.idle = not (epochs or steps)  # the CLI leaves an idle piece out of the Trainer
        self.target: float | None = None  # the configured weight, while the warm-up changes the model's

    def check(self, model: LightningModule) -> None:
        if not self.idle and getattr(model, "objective", "elbo") != "elbo":
            raise ConfigError(
                f"kl_warmup: model.objective is {model.objective!r}, whose bound has no separate KL term to warm "
                "up: use objective elbo, or --kl_warmup null."
            )

    def length(self, trainer: Trainer) -> int:
        return self.steps or max(1, self.epochs * trainer.num_training_batches // trainer.accumulate_grad_batches)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.check(pl_module)
        self.target = None if self.idle else pl_module.kl_weight

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        if self.target is not None:
            pl_module.kl_weight = self.target * min(1.0, trainer.global_step / self.length(trainer))
            if logged_step(trainer):
                pl_module.log("train/kl_weight", pl_module.kl_weight, on_step=True, on_epoch=False)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.target is not None:  # the model leaves the fit with the weight it was configured with
            pl_module.kl_weight, self.target = self.target, None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, pl_module, "")
