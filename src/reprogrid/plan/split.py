"""How the training images are split into a training and a validation part.

Planning checks the split's sizes before any job runs, and training carves the split;
both count it here. This module imports nothing: planning must stay light.
"""


def validation_count(train_count: int, val_fraction: float) -> int:
    """How many of `train_count` training images the validation split holds out (at least 1)."""
    return max(1, round(train_count * val_fraction))
