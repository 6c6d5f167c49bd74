"""ResNet18 for mel-spectrogram images, written in Keras (Keras has no ResNet18 of its own).

The network is the ResNet18 of He et al. (2016): a 7x7 stride-2 stem and max pooling, then
four stages of two *basic blocks* each (2-2-2-2; two 3x3 convolutions with batch
normalisation and ReLU, an identity shortcut, a 1x1 projection where the shape changes),
global average pooling, dropout and a softmax. ``width`` sets the filters of the first stage
(64 in the paper, doubling per stage to 512): 64 gives the real ResNet18 (about 11.2 M
parameters with 8 classes); 16 or 32 give the same depth at 1/16 or 1/4 of the parameters,
which is what trains in minutes on a CPU.

Inputs are spectrogram images as rendered by :func:`mer_utils.spectrograms.spectrogram_image`:
uint8-valued (0-255) arrays of shape (H, W, 3); the model rescales them itself.
"""

from __future__ import annotations

from collections.abc import Sequence

# One error for every branch whose ImageNet weights cannot be had (re-exported under its old name).
from mer_utils.models import PretrainedWeightsError  # noqa: F401

# Blocks per stage of ResNet18 (ResNet34 would be 3-4-6-3).
RESNET18_BLOCKS: tuple[int, ...] = (2, 2, 2, 2)
# Filters of the first stage in the paper; each later stage doubles them.
RESNET18_WIDTH = 64
# The KerasHub preset with ImageNet weights (timm port, 11.19 M parameters).
IMAGENET_PRESET = "resnet_18_imagenet"
# ImageNet channel means and standard deviations (RGB, 0-1 scale) the preset was trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Batch-norm momentum: 0.9 (PyTorch's 0.1) instead of Keras' 0.99, so the running statistics
# settle within the few hundred steps a small spectrogram set gives; with 0.99 validation
# predictions stay at chance for many epochs.
BN_MOMENTUM = 0.9
# Accepted values of ``weights``.
WEIGHT_CHOICES = (None, "imagenet")


def _basic_block(x, filters: int, stride: int, name: str):
    """Two 3x3 conv-BN(-ReLU) layers plus a shortcut (1x1 projection when the shape changes)."""
    from keras import layers

    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(y)
    if stride != 1 or int(x.shape[-1]) != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def resnet18_backbone(inputs, width: int = RESNET18_WIDTH, blocks: Sequence[int] = RESNET18_BLOCKS):
    """The ResNet18 feature extractor on an already rescaled input tensor; returns the last feature map."""
    from keras import layers

    x = layers.Conv2D(width, 7, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, count in enumerate(blocks):
        filters = width * 2**stage
        for block in range(count):
            # The first block of every stage after the first halves the resolution.
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, filters, stride, name=f"stage{stage + 1}_block{block + 1}")
    return x


def _imagenet_backbone(input_shape: tuple[int, int, int]):
    """The KerasHub ResNet-18 backbone with ImageNet weights, or a clear PretrainedWeightsError."""
    advice = (
        f"ImageNet weights for ResNet18 could not be loaded ({{reason}}). They come from the KerasHub "
        f"preset '{IMAGENET_PRESET}' (pip install keras-hub; the first use downloads the weights). "
        "Use weights=None to train from scratch."
    )
    try:
        import keras_hub
    except ImportError as error:
        raise PretrainedWeightsError(advice.format(reason=f"keras_hub is not installed: {error}")) from error
    try:
        return keras_hub.models.ResNetBackbone.from_preset(IMAGENET_PRESET, image_shape=tuple(input_shape))
    except Exception as error:  # network, cache and version errors all mean "no weights here"
        reason = f"loading the preset failed: {type(error).__name__}: {error}"
        raise PretrainedWeightsError(advice.format(reason=reason)) from error


def build_resnet18(
    input_shape: tuple[int, int, int] = (128, 128, 3),
    num_classes: int = 8,
    weights: str | None = None,
    width: int = RESNET18_WIDTH,
    dropout: float = 0.3,
    name: str = "resnet18_spectrogram",
):
    """Build a ResNet18 classifier (basic blocks 2-2-2-2) for spectrogram images.

    Args:
        input_shape: (height, width, 3) of the images; values 0-255.
        num_classes: size of the softmax.
        weights: None (random initialisation) or "imagenet" (KerasHub preset
            ``resnet_18_imagenet``, needs keras_hub and, once, internet; ``width`` must then be 64).
            Raises :class:`PretrainedWeightsError` (a ``ValueError``) when they cannot be loaded.
        width: filters of the first stage (64 = the real ResNet18; 16 or 32 for CPU and smoke runs).
        dropout: dropout rate before the softmax.
    Returns:
        An uncompiled ``keras.Model`` (compile it with :func:`mer_utils.training.fit_classifier`).
    """
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    if len(input_shape) != 3 or input_shape[-1] != 3 or min(input_shape[:2]) < 32:
        raise ValueError(f"input_shape must be (height, width, 3) with sides >= 32, got {tuple(input_shape)}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if int(width) < 1:
        raise ValueError(f"width must be a positive number of filters, got {width}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if weights == "imagenet" and int(width) != RESNET18_WIDTH:
        raise ValueError(f"ImageNet weights exist only for width {RESNET18_WIDTH}, got width={width}")

    # Load the pretrained backbone first so a missing preset fails before any graph is built.
    backbone = _imagenet_backbone(tuple(input_shape)) if weights == "imagenet" else None

    import keras
    from keras import layers

    inputs = keras.Input(shape=tuple(input_shape), name="spectrogram_image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    if backbone is not None:
        # The preset expects ImageNet-normalised RGB, exactly as it was trained.
        variance = [s**2 for s in IMAGENET_STD]
        x = layers.Normalization(mean=list(IMAGENET_MEAN), variance=variance, name="imagenet_norm")(x)
        x = backbone(x)
    else:
        x = resnet18_backbone(x, width=int(width))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(int(num_classes), activation="softmax", name="emotion")(x)
    return keras.Model(inputs, outputs, name=name)
