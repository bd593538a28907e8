"""28x28 grey-scale 10-class classification of IDX files (MNIST, Fashion-MNIST, KMNIST).

The task every config runs unless it names another. The data job checks the raw files
against the data set `data.dataset` names (and downloads them when `data.raw_dir` is
null) before `load` reads them. The images stay uint8 in the prepared data and on the
device until `inputs` normalises a whole split once, so a batch is an index slice.
"""

from pathlib import Path

import torch
import torch.nn.functional as F

from reprogrid.datasets import catalog, data
from reprogrid.train import models

ARCHS = ("mlp", "cnn", "speedcnn", "examples_cnn")
PARAMS = {}
METRICS = {"acc": "max", "loss": "min"}

NUM_CLASSES = 10


def load(raw_dir):
    """The four IDX files of `raw_dir` as uint8 images and int64 labels, with the training
    images' mean and standard deviation (of pixels scaled to [0, 1]) that `inputs` uses."""
    folder, split = Path(raw_dir), {}
    for name in ("train", "test"):
        images_file = catalog.find_idx_file(folder, catalog.IDX_FILES[f"{name}_images"])
        labels_file = catalog.find_idx_file(folder, catalog.IDX_FILES[f"{name}_labels"])
        images = data.read_idx(images_file, data.IMAGE_MAGIC)
        labels = data.read_idx(labels_file, data.LABEL_MAGIC)
        data.check_split(images, labels, NUM_CLASSES, (images_file, labels_file))
        split[name] = images, labels
    pixels = split["train"][0].astype("float64") / 255.0
    return {
        "train_x": torch.from_numpy(split["train"][0].copy()),
        "train_y": torch.from_numpy(split["train"][1].astype("int64")),
        "test_x": torch.from_numpy(split["test"][0].copy()),
        "test_y": torch.from_numpy(split["test"][1].astype("int64")),
        "mean": float(pixels.mean()),
        "std": float(pixels.std()),
        "num_classes": NUM_CLASSES,
    }


def inputs(x, data):
    """uint8 (n, 28, 28) to normalised float (n, 1, 28, 28), in one pass on the device."""
    return x.float().div_(255.0).sub_(data["mean"]).div_(data["std"]).unsqueeze(1)


def build(params, data):
    return models.build_model(params["arch"], data["num_classes"])


def describe(data):
    return {"num_classes": data["num_classes"]}


def loss(model, x, y, params):
    """Cross-entropy, smoothed as `train.label_smoothing` says, and the batch's correct count."""
    logits = model(x)
    value = F.cross_entropy(logits, y, label_smoothing=params["label_smoothing"])
    return value, {"acc": (logits.detach().argmax(1) == y).sum()}


def evaluate(model, x, y, params):
    """Mean cross-entropy (never smoothed) and accuracy, in batches of `eval_batch_size`."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    batch = params["eval_batch_size"]
    for start in range(0, x.shape[0], batch):
        logits = model(x[start : start + batch]).float()
        target = y[start : start + batch]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        correct += (logits.argmax(1) == target).sum()
    n = x.shape[0]
    return {"loss": loss_sum.item() / n, "acc": correct.item() / n}
