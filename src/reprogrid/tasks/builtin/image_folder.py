"""Image classification from folders of PNG or JPEG files, as torchvision's ImageFolder reads them.

`data.raw_dir` holds `train/` and `test/`, each with one sub-folder per class (the classes
are the sub-folder names of `train/`, sorted); every `.png`, `.jpg` or `.jpeg` file in a
class folder is one image of that class. Images of any size, grey or colour: all are read
as RGB if any of them has colour (grey otherwise), and, if their sizes differ, resized to
the smallest height and width among them (bilinear, with antialiasing), so the data stay
one tensor on the device. They are stored as uint8; `inputs` scales and normalises a whole
split once, with the training images' per-channel mean and standard deviation.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ARCHS = ("linear", "cnn")
PARAMS = {"width": 16}
METRICS = {"acc": "max", "loss": "min"}

EXTENSIONS = (".png", ".jpg", ".jpeg")


def _files(folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        found = sorted(
            path
            for path in (folder / name).iterdir()
            if path.is_file() and path.suffix.lower() in EXTENSIONS
        )
        files += [(path, label) for path in found]
    if not files:
        raise ValueError(f"{folder} holds no {', '.join(EXTENSIONS)} images in class folders")
    return files


def load(raw_dir):
    """`train/` and `test/` of `raw_dir` as uint8 (n, channels, height, width) images."""
    from PIL import Image

    root = Path(raw_dir)
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise ValueError(f"{root} has no {split}/ folder of class folders; add one")
    classes = sorted(path.name for path in (root / "train").iterdir() if path.is_dir())
    unknown = sorted(
        path.name
        for path in (root / "test").iterdir()
        if path.is_dir() and path.name not in classes
    )
    if unknown:
        raise ValueError(f"{root / 'test'} has classes {unknown} that train/ lacks")
    listed = {split: _files(root / split, classes) for split in ("train", "test")}
    images = {split: [Image.open(path) for path, _ in files] for split, files in listed.items()}
    everything = images["train"] + images["test"]
    mode = (
        "RGB"
        if any(image.mode not in ("L", "1", "I", "I;16", "F") for image in everything)
        else "L"
    )
    height = min(image.height for image in everything)
    width = min(image.width for image in everything)
    out = {}
    for split, opened in images.items():
        arrays = []
        for image in opened:
            pixels = torch.from_numpy(np.asarray(image.convert(mode), dtype=np.uint8).copy())
            pixels = pixels.unsqueeze(-1) if pixels.dim() == 2 else pixels
            pixels = pixels.permute(2, 0, 1)
            if pixels.shape[1:] != (height, width):
                resized = F.interpolate(
                    pixels[None].float(), size=(height, width), mode="bilinear", antialias=True
                )
                pixels = resized[0].round().clamp(0, 255).to(torch.uint8)
            arrays.append(pixels)
        out[f"{split}_x"] = torch.stack(arrays)
        out[f"{split}_y"] = torch.tensor([label for _, label in listed[split]], dtype=torch.int64)
    scaled = out["train_x"].double() / 255.0
    out["mean"] = scaled.mean(dim=(0, 2, 3)).float()
    out["std"] = scaled.std(dim=(0, 2, 3)).float().clamp_min(1e-6)
    out["classes"] = ",".join(classes)
    return out


def inputs(x, data):
    mean = data["mean"].to(x.device).view(1, -1, 1, 1)
    std = data["std"].to(x.device).view(1, -1, 1, 1)
    return x.float().div_(255.0).sub_(mean).div_(std)


class SmallCNN(nn.Module):
    """Two 3x3 convolution blocks and a linear head over a 4x4 pooled map, for any size."""

    def __init__(self, channels: int, classes: int, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, classes))

    def forward(self, x):
        return self.head(self.features(x))


def build(params, data):
    channels, height, width = data["train_x"].shape[1:]
    classes = len(data["classes"].split(","))
    if params["arch"] == "linear":
        return nn.Sequential(nn.Flatten(), nn.Linear(channels * height * width, classes))
    return SmallCNN(channels, classes, params["width"])


def describe(data):
    return {"classes": data["classes"]}


def loss(model, x, y):
    logits = model(x)
    return F.cross_entropy(logits, y), {"acc": (logits.detach().argmax(1) == y).sum()}


def evaluate(model, x, y):
    loss_sum, correct = 0.0, 0
    for start in range(0, x.shape[0], 1000):
        logits = model(x[start : start + 1000]).float()
        target = y[start : start + 1000]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
        correct += int((logits.argmax(1) == target).sum())
    return {"loss": loss_sum / x.shape[0], "acc": correct / x.shape[0]}
