"""A variational autoencoder on 28x28 grey IDX images: which latent size models them best?

The model and loss are those of pytorch/examples `vae/main.py` (784-400-20-400-784, Bernoulli
decoder, the negative ELBO as the loss); reprogrid owns the loop, the seeds, the validation
split and the provenance. The metrics are per image, summed over its 784 pixels as that
recipe sums them, so they compare with its printed "loss" (divided by the number of images).
Lab book: config/experiments/vae.md.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reprogrid.datasets import catalog, data

ARCHS = ("vae",)
PARAMS = {"latent": 20, "hidden": 400}
METRICS = {"loss": "min", "bce": "min", "kld": "min"}


def load(raw_dir):
    """The four IDX files of `raw_dir` as uint8 images (the labels come along unused);
    without one (data.raw_dir null), MNIST as torchvision downloads it, as the recipe does."""
    if raw_dir is None:
        from torchvision import datasets

        raw_dir = Path("resources/downloads/MNIST/raw")
        datasets.MNIST(raw_dir.parents[1], download=True)
    splits = {}
    for split in ("train", "test"):
        images = catalog.find_idx_file(Path(raw_dir), catalog.IDX_FILES[f"{split}_images"])
        labels = catalog.find_idx_file(Path(raw_dir), catalog.IDX_FILES[f"{split}_labels"])
        splits[f"{split}_x"] = torch.from_numpy(data.read_idx(images, data.IMAGE_MAGIC).copy())
        splits[f"{split}_y"] = torch.from_numpy(
            data.read_idx(labels, data.LABEL_MAGIC).astype("int64")
        )
    return splits


def inputs(x, data):
    """uint8 (n, 28, 28) to pixels in [0, 1], flattened to (n, 784), once on the device."""
    return x.float().div_(255.0).flatten(1)


class VAE(nn.Module):
    """pytorch/examples' VAE: one hidden layer each way, a Gaussian latent."""

    def __init__(self, hidden: int, latent: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc21 = nn.Linear(hidden, latent)
        self.fc22 = nn.Linear(hidden, latent)
        self.fc3 = nn.Linear(latent, hidden)
        self.fc4 = nn.Linear(hidden, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h), self.fc22(h)
        # In training the latent is sampled (torch's generator, which reprogrid seeds and
        # checkpoints); in evaluation the mean is decoded, so the metrics do not draw noise.
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def build(params, data):
    return VAE(params["hidden"], params["latent"])


def _terms(model, x):
    """The reconstruction and KL terms of the negative ELBO, summed over the batch."""
    recon, mu, logvar = model(x)
    bce = F.binary_cross_entropy(recon, x, reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce, kld


def loss(model, x, y):
    """The negative ELBO per image, as the recipe trains it (its sum over the batch)."""
    bce, kld = _terms(model, x)
    return (bce + kld) / x.shape[0]


def evaluate(model, x, y):
    """The negative ELBO and its two terms per image, in batches of 1000."""
    bce_sum = kld_sum = 0.0
    for start in range(0, x.shape[0], 1000):
        bce, kld = _terms(model, x[start : start + 1000])
        bce_sum, kld_sum = bce_sum + bce.item(), kld_sum + kld.item()
    n = x.shape[0]
    return {"loss": (bce_sum + kld_sum) / n, "bce": bce_sum / n, "kld": kld_sum / n}
