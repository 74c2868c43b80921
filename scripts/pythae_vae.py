"""The peer: pythae's `VAE` trained by its `BaseTrainer`, on the vanilla model, for `benchmark.py --peers`.

Same model as `configs/vanilla.yaml` (784-400-20-400-784, ReLU, sigmoid output), same loss (BCE summed over
pixels + KL, pythae's `reconstruction_loss="bce"`, mean over the batch), Adam at 1e-3, continuous pixels x/255,
and the package's data split: the 55,000 training images of `MNISTDataModule` (seed 0), evaluated on its 5,000
validation images after every epoch, as `vae-lightning fit` does. pythae runs as its README shows: tensors wrapped
in its `BaseDataset`, its DataLoader (no worker processes), its evaluation, best-model copy and final save. Needs
the `bench` extra (`pip install -e ".[bench]"`).

    python scripts/pythae_vae.py --epochs 3
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import torch
from torch import nn


def run(data_dir, epochs=3, batch_size=128, device="cpu", seed=1, max_batches=None) -> list[dict]:
    """Train as pythae does; one dict per epoch: training and whole-epoch seconds, images, mean train loss."""
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    from vae_lightning.data import MNISTDataModule

    class Encoder(BaseEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.mu, self.logvar = (
                nn.Sequential(nn.Linear(784, 400), nn.ReLU()),
                nn.Linear(400, 20),
                nn.Linear(400, 20),
            )

        def forward(self, x):
            h = self.body(x.reshape(len(x), -1))
            return ModelOutput(embedding=self.mu(h), log_covariance=self.logvar(h))

    class Decoder(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784), nn.Sigmoid())

        def forward(self, z):
            return ModelOutput(reconstruction=self.net(z).view(-1, 1, 28, 28))

    class Stopwatch(TrainingCallback):
        def __init__(self) -> None:
            self.epochs: list[dict] = []

        def on_epoch_begin(self, training_config, **kwargs) -> None:
            self.epochs.append({"start": time.perf_counter(), "images": len(train)})

        def on_eval_step_begin(self, training_config, **kwargs) -> None:
            self.epochs[-1]["train_s"] = time.perf_counter() - self.epochs[-1]["start"]

        def on_log(self, training_config, logs, **kwargs) -> None:
            epoch = self.epochs[-1]
            epoch["epoch_s"] = time.perf_counter() - epoch.pop("start")
            epoch["train_loss"] = logs["train_epoch_loss"]

    datamodule = MNISTDataModule(data_dir, download=False)
    datamodule.setup()
    (train, _), (val, _) = datamodule.splits["train"], datamodule.splits["val"]
    if max_batches:
        train, val = train[: max_batches * batch_size], val[: max_batches * batch_size]
    train, val = (BaseDataset(x.float().div(255).unsqueeze(1), torch.zeros(len(x))) for x in (train, val))
    torch.manual_seed(seed)
    model = VAE(VAEConfig(input_dim=(1, 28, 28), latent_dim=20, reconstruction_loss="bce"), Encoder(), Decoder())
    watch = Stopwatch()
    for name in ("pythae", "pythae.trainers.base_trainer.base_trainer"):  # its banners; the second sets its own level
        logging.getLogger(name).setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as output_dir:
        config = BaseTrainerConfig(
            output_dir=output_dir,
            num_epochs=epochs,
            learning_rate=1e-3,
            per_device_train_batch_size=batch_size,
            per_device_eval_batch_size=1000,
            optimizer_cls="Adam",
            steps_saving=None,
            no_cuda=device != "cuda",
        )
        BaseTrainer(model, train, val, config, callbacks=[watch]).train()
    return watch.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: the package's)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    for number, epoch in enumerate(run(args.data_dir, args.epochs, args.batch_size, args.device), 1):
        train, whole, loss = epoch["train_s"], epoch["epoch_s"], epoch["train_loss"]
        print(f"epoch {number}: training {train:.2f} s, with evaluation {whole:.2f} s, train loss {loss:.2f}")


if __name__ == "__main__":
    main()
