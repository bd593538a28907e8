"""The recipe users would otherwise copy: pytorch/examples `mnist/main.py`, on the CPU path.

Written from that recipe's description, not copied: torchvision's dataset class with a
per-sample ToTensor + Normalize((0.1307,), (0.3081,)) through a DataLoader of batch 64 (no
shuffling and no workers, as main.py configures the CPU), the 1.2M-weight CNN with log-softmax
and NLL loss, Adadelta lr 1.0, StepLR(step 1, gamma 0.7), seed 1, test batch 1000 under no_grad.
Only the dataset class changes (FashionMNIST for MNIST); the normalisation constants stay the
recipe's, as a user copying it would keep them.

`epoch_seconds` means what it means in reprogrid's history.csv: the training loop of one epoch,
data loading included, evaluation excluded.
"""

from __future__ import annotations

import gzip
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import StepLR
from torchvision import datasets, transforms

IDX_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class Net(nn.Module):
    """main.py's network: two 3x3 convolutions, max-pool, two dropouts, two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def torchvision_root(raw_dir: str | Path, scratch: str | Path) -> Path:
    """A root folder laid out as torchvision's FashionMNIST expects, made from `raw_dir`."""
    raw = Path(scratch) / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for stem in IDX_STEMS:
        source = Path(raw_dir) / f"{stem}.gz"
        if source.is_file():
            with gzip.open(source, "rb") as packed, open(raw / stem, "wb") as plain:
                shutil.copyfileobj(packed, plain)
        else:
            shutil.copyfile(Path(raw_dir) / stem, raw / stem)
    return Path(scratch)


def train_epoch(model, loader, optimizer) -> None:
    model.train()
    for data, target in loader:
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()


def test(model, loader) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for data, target in loader:
            correct += (model(data).argmax(dim=1) == target).sum().item()
    return correct / len(loader.dataset)


def run(
    raw_dir: str | Path,
    scratch: str | Path,
    *,
    threads: int,
    epochs: int = 14,
    stop_at: float | None = None,
    time_cap: float | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train the recipe on Fashion-MNIST; one row per epoch (epoch, test_acc, epoch_seconds).

    Stops after the epoch whose test accuracy reaches `stop_at`, or once the cumulative
    training time passes `time_cap` seconds.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    root = torchvision_root(raw_dir, scratch)
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    train_set = datasets.FashionMNIST(root, train=True, download=False, transform=transform)
    test_set = datasets.FashionMNIST(root, train=False, download=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=64)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=1000)

    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    history, total = [], 0.0
    for epoch in range(1, epochs + 1):
        tick = time.perf_counter()
        train_epoch(model, train_loader, optimizer)
        seconds = time.perf_counter() - tick
        total += seconds
        row = {
            "epoch": epoch,
            "test_acc": test(model, test_loader),
            "epoch_seconds": seconds,
            "images": len(train_set),
        }
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        scheduler.step()
        if (stop_at is not None and row["test_acc"] >= stop_at) or (
            time_cap is not None and total >= time_cap
        ):
            break
    return history


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=14)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        run(args.raw_dir, scratch, threads=args.threads, epochs=args.epochs, on_epoch=print)
