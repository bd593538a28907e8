"""The architecture registry: every registered model builds and maps images to class logits."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from reprogrid.datasets import catalog
from reprogrid.train import models


@pytest.mark.parametrize("arch", sorted(catalog.ARCHITECTURES))
def test_every_registered_architecture_maps_images_to_logits(arch):
    torch.manual_seed(0)
    model = models.build_model(arch)
    model.eval()
    with torch.no_grad():
        for n in (1, 3):
            logits = model(torch.rand(n, 1, 28, 28))
            assert logits.shape == (n, 10)
            assert torch.isfinite(logits).all()
    assert models.count_parameters(model) > 0


@pytest.mark.parametrize("arch", sorted(catalog.ARCHITECTURES))
def test_models_honour_the_number_of_classes_and_learn(arch):
    torch.manual_seed(0)
    model = models.build_model(arch, num_classes=3)
    images, labels = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 0])
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    assert model(images).shape == (4, 3)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("arch", sorted(catalog.ARCHITECTURES))
def test_the_same_seed_builds_the_same_weights(arch):
    torch.manual_seed(1)
    first = models.build_model(arch).state_dict()
    torch.manual_seed(1)
    second = models.build_model(arch).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_every_model_class_is_registered_and_every_name_has_a_class():
    defined = {
        name
        for name, value in vars(models).items()
        if inspect.isclass(value)
        and issubclass(value, nn.Module)
        and value.__module__ == models.__name__
    }
    assert defined == set(catalog.ARCHITECTURES.values())


def test_an_unknown_architecture_is_refused_by_name():
    with pytest.raises(KeyError, match="unknown architecture 'resnet'"):
        models.build_model("resnet")
