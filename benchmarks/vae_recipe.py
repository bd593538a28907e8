"""The VAE recipe users would otherwise copy: pytorch/examples `vae/main.py`, on the CPU path.

Written from that recipe's description, not copied: torchvision's dataset class with a
per-sample ToTensor through DataLoaders of batch 128 (training shuffled), the 784-400-20
VAE with a Bernoulli decoder, Adam lr 1e-3, seed 1, 10 epochs, and the loss per image: the
summed binary cross-entropy plus KL divergence over a split, divided by its images. Only the
dataset class changes (FashionMNIST for MNIST), to run where MNIST cannot be downloaded.

The recipe samples the latent in evaluation too; reprogrid's tasks/vae_idx.py decodes the
mean there. So the test loss is printed both ways: `test_loss` as the recipe computes it,
`test_loss_mean` with the mean decoded, which is what config/experiments/vae.md compares.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F
from examples_recipe import torchvision_root
from torch import nn
from torchvision import datasets, transforms


class VAE(nn.Module):
    """The recipe's VAE; `sample` says whether the latent is drawn or its mean decoded."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(self, x, sample: bool = True):
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def loss_function(recon, mu, logvar, x):
    bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def test(model, loader, sample: bool) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for x, _ in loader:
            total += loss_function(*model(x, sample), x).item()
    return total / len(loader.dataset)


def run(raw_dir: str, scratch: str, threads: int, epochs: int, seed: int = 1) -> list[dict]:
    """Train the recipe on Fashion-MNIST; one row per epoch with both test losses."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    root = torchvision_root(raw_dir, scratch)
    transform = transforms.ToTensor()
    train_set = datasets.FashionMNIST(root, train=True, download=False, transform=transform)
    test_set = datasets.FashionMNIST(root, train=False, download=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=128, shuffle=True)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=128)
    model = VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        tick, train_total = time.perf_counter(), 0.0
        for x, _ in train_loader:
            optimizer.zero_grad()
            loss = loss_function(*model(x), x)
            loss.backward()
            train_total += loss.item()
            optimizer.step()
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_total / len(train_set),
                "test_loss": test(model, test_loader, sample=True),
                "test_loss_mean": test(model, test_loader, sample=False),
                "epoch_seconds": time.perf_counter() - tick,
            }
        )
        print(history[-1], flush=True)
    return history


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run(args.raw_dir, folder, args.threads, args.epochs, args.seed)
