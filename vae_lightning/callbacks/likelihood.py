"""`TestLikelihood`: `test/nll`, the importance-sampled negative log-likelihood of the test images."""

from threading import Event

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor
from torchmetrics import SumMetric

from vae_lightning.callbacks.speed import map_one_core_each
from vae_lightning.data import seeded_normal
from vae_lightning.errors import attributed
from vae_lightning.objectives import NLLEstimate, importance_weighted_nll


class TestLikelihood(Callback):
    """Logs `test/nll` (nats per image, mean over the test set) from `samples` importance samples per image of q(z|x)
    and `test/nll_mc_se`, its Monte-Carlo standard error; each image's samples depend on `seed` and its index alone.

    Args:
        samples: importance samples per test image (k); 0: no `test/nll`.
        chunk_size: at most this many (sample, image) pairs decoded at once, which bounds memory for any k.
        seed: seeds the samples.
    """

    __test__ = False  # a Lightning callback, not a pytest class

    def __init__(self, samples: NonNegativeInt = 1000, chunk_size: PositiveInt = 2048, seed: int = 0) -> None:
        self.samples, self.chunk_size, self.seed = samples, chunk_size, seed

    def estimate(self, model: LightningModule, x: Tensor, index: Tensor, trainer: Trainer | None = None) -> NLLEstimate:
        """The estimate per image (B,) of images x (B, 1, 28, 28) at positions `index` (B,) of their split; a SIGTERM
        to the `trainer` or a Ctrl-C stops it within a block of draws, whatever `samples` is."""
        mu, logvar, stop = *model.encode(x), Event()

        def part_estimate(part: slice) -> NLLEstimate:
            def noise(block: int, n: int) -> Tensor:  # block 0 is the stream of a k below one block
                if trainer is not None and trainer.received_sigterm:
                    raise SIGTERMException  # Lightning's own stop, as between batches
                if stop.is_set():
                    raise InterruptedError("stopped by the caller")  # its caller is raising already
                stream = (1, block) if block else (1,)
                return seeded_normal(self.seed, index[part], n, model.latent_dim, *stream)

            return importance_weighted_nll(
                x[part], mu[part], logvar[part], model.decoder, noise, self.samples, self.chunk_size
            )

        parts = min(torch.get_num_threads() if x.device.type == "cpu" else 1, len(x))
        if parts <= 1:  # one core, one image, or none (a rank's empty share of the last batch under DDP)
            return part_estimate(slice(None))
        step = -(-len(x) // parts)
        estimates = map_one_core_each(part_estimate, [slice(i, i + step) for i in range(0, len(x), step)], stop)
        return NLLEstimate(*map(torch.cat, zip(*estimates)))

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.sums = [SumMetric().set_dtype(torch.float64).to(pl_module.device) for _ in range(3)]  # nll, variance, n

    @torch.no_grad()
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.samples:
            x, _, index = batch
            with attributed("test_likelihood", "lower test_likelihood.chunk_size (memory) or samples (time)"):
                nll, variance = self.estimate(pl_module, x, index, trainer)
            for metric, value in zip(self.sums, (nll.sum(), variance.sum(), len(x))):
                metric.update(value)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.samples:
            return
        nll, variance, images = (metric.compute() for metric in self.sums)  # over every process
        if images > 0:
            pl_module.log("test/nll", (nll / images).float(), sync_dist=True)
            if self.samples > 1:  # one sample has no spread to estimate an error from
                pl_module.log("test/nll_mc_se", (variance.sqrt() / images).float(), sync_dist=True)
