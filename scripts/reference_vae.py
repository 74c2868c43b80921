"""The reference: pytorch/examples' `vae/main.py`, kept as it is written there, to benchmark against.

Same model (784-400-20-400-784, ReLU, sigmoid output), same loss (BCE summed over pixels + KL,
summed over the batch), same loop: torchvision MNIST with `ToTensor`, a `DataLoader` (no worker
processes on a CPU), `optimizer.zero_grad(); loss.backward(); train_loss += loss.item();
optimizer.step()` every batch, a test pass and 64 samples saved after every epoch. The only
changes: the data folder and the output folder are options, the MNIST files must already be
there (no download), `max_batches` can cut an epoch short (for smoke runs), and `run()` returns
each epoch's times and losses for `benchmark.py`.

    python scripts/reference_vae.py --data-dir ~/.cache/vae-lightning --epochs 10
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.utils.data
from torch import nn, optim
from torch.nn import functional as F
from torchvision import datasets, transforms
from torchvision.utils import save_image


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


# Reconstruction + KL divergence losses summed over all elements and batch
def loss_function(recon_x, x, mu, logvar):
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    # see Appendix B from VAE paper: Kingma and Welling. Auto-Encoding Variational Bayes. ICLR, 2014
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return BCE + KLD


def run(
    data_dir,
    epochs=10,
    batch_size=128,
    device="cpu",
    seed=1,
    log_interval=10,
    results_dir=None,
    verbose=True,
    max_batches=None,
):
    """Train and test as pytorch/examples does; returns one dict per epoch (seconds and mean losses)."""
    torch.manual_seed(seed)
    device = torch.device(device)
    kwargs = {"num_workers": 1, "pin_memory": True} if device.type == "cuda" else {}
    train_loader = torch.utils.data.DataLoader(
        datasets.MNIST(data_dir, train=True, download=False, transform=transforms.ToTensor()),
        batch_size=batch_size,
        shuffle=True,
        **kwargs,
    )
    test_loader = torch.utils.data.DataLoader(
        datasets.MNIST(data_dir, train=False, transform=transforms.ToTensor()),
        batch_size=batch_size,
        shuffle=False,
        **kwargs,
    )
    model = VAE().to(device)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    say = print if verbose else (lambda *a, **k: None)

    def train(epoch):
        model.train()
        train_loss = 0
        images = 0
        for batch_idx, (data, _) in enumerate(train_loader):
            if batch_idx == max_batches:
                break
            images += len(data)
            data = data.to(device)
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
            if batch_idx % log_interval == 0:
                say(
                    f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(train_loader.dataset)} "
                    f"({100.0 * batch_idx / len(train_loader):.0f}%)]\tLoss: {loss.item() / len(data):.6f}"
                )
        say(f"====> Epoch: {epoch} Average loss: {train_loss / images:.4f}")
        return train_loss / images, images

    def test(epoch):
        model.eval()
        test_loss = 0
        with torch.no_grad():
            for i, (data, _) in enumerate(test_loader):
                if i == max_batches:
                    break
                data = data.to(device)
                recon_batch, mu, logvar = model(data)
                test_loss += loss_function(recon_batch, data, mu, logvar).item()
                if i == 0 and results_dir is not None:
                    n = min(data.size(0), 8)
                    comparison = torch.cat([data[:n], recon_batch.view(batch_size, 1, 28, 28)[:n]])
                    save_image(comparison.cpu(), os.path.join(results_dir, f"reconstruction_{epoch}.png"), nrow=n)
        test_loss /= len(test_loader.dataset)
        say(f"====> Test set loss: {test_loss:.4f}")
        return test_loss

    epochs_done = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        train_loss, images = train(epoch)
        trained = time.perf_counter()
        test_loss = test(epoch)
        with torch.no_grad():
            sample = torch.randn(64, 20).to(device)
            sample = model.decode(sample).cpu()
            if results_dir is not None:
                save_image(sample.view(64, 1, 28, 28), os.path.join(results_dir, f"sample_{epoch}.png"))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epochs_done.append(
            {
                "train_s": trained - start,
                "epoch_s": time.perf_counter() - start,
                "images": images,
                "train_loss": train_loss,
                "test_loss": test_loss,
            }
        )
    return epochs_done


def main() -> None:
    parser = argparse.ArgumentParser(description="VAE MNIST Example (pytorch/examples), the benchmark's reference")
    parser.add_argument("--data-dir", required=True, help="folder holding MNIST/raw/ with the four IDX files")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--results-dir", default="results", help="reconstructions and samples, as PNGs")
    args = parser.parse_args()
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    run(args.data_dir, args.epochs, args.batch_size, args.device, args.seed, args.log_interval, args.results_dir)


if __name__ == "__main__":
    main()
