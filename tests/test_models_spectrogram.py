"""Tests for the spectrogram branch: ResNet18 builder, spectrogram images, pipeline end to end."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from mer_utils.models.spectrogram import (
    RESNET18_BLOCKS,
    PretrainedWeightsError,
    build_resnet18,
)


def _band_images(count: int, num_classes: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose class is the frequency band (row band) that holds the energy."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=count)
    images = rng.uniform(0, 80, size=(count, size, size, 1))
    band = size // num_classes
    for i, label in enumerate(labels):
        images[i, label * band : (label + 1) * band] += 150
    images = np.repeat(np.clip(images, 0, 255), 3, axis=-1).astype("float32")
    return images, labels


def test_resnet18_width64_has_resnet18_shape_and_size():
    model = build_resnet18(input_shape=(128, 128, 3), num_classes=8, width=64)
    assert model.output_shape == (None, 8)
    # ResNet18 with an 8-way head: 11.18 M parameters (11.69 M with the 1000-way ImageNet head).
    assert 10.5e6 < model.count_params() < 11.8e6
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    # 1 stem conv + 2 per basic block + 3 projection shortcuts = 17 convs (+ the dense layer = 18).
    assert len(convs) == 1 + 2 * sum(RESNET18_BLOCKS) + 3
    assert max(int(c.filters) for c in convs) == 512


def test_width_scales_parameters_quadratically():
    small = build_resnet18(input_shape=(64, 64, 3), num_classes=4, width=16).count_params()
    medium = build_resnet18(input_shape=(64, 64, 3), num_classes=4, width=32).count_params()
    assert 3.5 < medium / small < 4.2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weights": "places365"},
        {"input_shape": (64, 64, 1)},
        {"input_shape": (16, 16, 3)},
        {"num_classes": 1},
        {"width": 0},
        {"dropout": 1.0},
        {"weights": "imagenet", "width": 16},
    ],
)
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        build_resnet18(**kwargs)


def test_imagenet_weights_without_keras_hub_fail_fast_and_clearly(monkeypatch):
    import time

    # None in sys.modules makes `import keras_hub` raise ImportError, installed or not.
    monkeypatch.setitem(sys.modules, "keras_hub", None)
    start = time.perf_counter()
    with pytest.raises(PretrainedWeightsError, match=r"weights=None") as caught:
        build_resnet18(weights="imagenet")
    assert time.perf_counter() - start < 5
    assert "keras_hub is not installed" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_imagenet_weights_download_failure_is_reported(monkeypatch):
    def offline_preset(*args, **kwargs):
        raise OSError("URL fetch failure: Name or service not known")

    fake = types.ModuleType("keras_hub")
    fake.models = types.SimpleNamespace(ResNetBackbone=types.SimpleNamespace(from_preset=offline_preset))
    monkeypatch.setitem(sys.modules, "keras_hub", fake)
    with pytest.raises(PretrainedWeightsError, match=r"resnet_18_imagenet.*weights=None|weights=None"):
        build_resnet18(weights="imagenet")
    with pytest.raises(PretrainedWeightsError, match="URL fetch failure"):
        build_resnet18(weights="imagenet")


@pytest.mark.slow
def test_tiny_resnet18_learns_separable_images():
    from mer_utils.config import set_seed
    from mer_utils.training import fit_classifier, predict_probabilities

    set_seed(0)
    x_train, y_train = _band_images(96, 4, 32, seed=1)
    x_test, y_test = _band_images(48, 4, 32, seed=2)
    model = build_resnet18(input_shape=(32, 32, 3), num_classes=4, width=8, dropout=0.1)
    result = fit_classifier(model, x_train, y_train, epochs=12, batch_size=16, learning_rate=3e-3)
    assert result.history["loss"][-1] < result.history["loss"][0]
    accuracy = float((predict_probabilities(model, x_test).argmax(axis=1) == y_test).mean())
    # Chance is 0.25; a ResNet that learns finds the band easily.
    assert accuracy > 0.6, accuracy
