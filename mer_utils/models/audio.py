"""Keras models on MFCC sequences (frames, features): CNN, LSTM, BiLSTM and BiLSTM with attention.

One builder per model, all with the same signature and a softmax output; all are trained by
the one shared routine :func:`mer_utils.training.fit_classifier` (Adam, categorical
cross-entropy on integer labels, early stopping). Keras is imported inside the builders.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

# Dropout before the classifier of every model: RAVDESS has few speakers, so all models overfit fast.
HEAD_DROPOUT = 0.4
# L2 weight decay on the convolution / dense kernels (light; dropout does most of the work).
L2 = 1e-4
# The recurrent models first average groups of 4 frames (10 ms -> 40 ms steps): a quarter of the
# time steps makes LSTMs 4x faster on a CPU and keeps the syllable-scale prosody emotions live on.
RECURRENT_FRAME_POOL = 4


def _regulariser():
    import keras

    return keras.regularizers.l2(L2)


def _inputs(input_shape: tuple[int, int]):
    import keras

    if len(input_shape) != 2:
        raise ValueError(f"MFCC models take (frames, features) inputs, got shape {input_shape}")
    return keras.Input(shape=tuple(input_shape), name="mfcc")


def _head(x, num_classes: int, hidden: int = 64):
    from keras import layers

    x = layers.Dropout(HEAD_DROPOUT)(x)
    x = layers.Dense(hidden, activation="relu", kernel_regularizer=_regulariser())(x)
    x = layers.Dropout(HEAD_DROPOUT / 2)(x)
    return layers.Dense(num_classes, activation="softmax", name="emotion", dtype="float32")(x)


def build_cnn(input_shape: tuple[int, int], num_classes: int, width: int = 64) -> keras.Model:
    """1-D CNN over time: three conv blocks (conv, batch norm, ReLU, max-pool), global average + max pooling."""
    import keras
    from keras import layers

    inputs = _inputs(input_shape)
    x = layers.SpatialDropout1D(0.1)(inputs)
    for filters, kernel in ((width, 5), (2 * width, 5), (2 * width, 3)):
        x = layers.Conv1D(filters, kernel, padding="same", use_bias=False, kernel_regularizer=_regulariser())(
            x
        )
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling1D(2)(x)
    x = layers.Concatenate()([layers.GlobalAveragePooling1D()(x), layers.GlobalMaxPooling1D()(x)])
    return keras.Model(inputs, _head(x, num_classes), name="mfcc_cnn")


def _recurrent_input(input_shape: tuple[int, int]):
    from keras import layers

    inputs = _inputs(input_shape)
    x = layers.AveragePooling1D(RECURRENT_FRAME_POOL)(inputs) if RECURRENT_FRAME_POOL > 1 else inputs
    x = layers.SpatialDropout1D(0.1)(x)
    return inputs, x


def build_lstm(input_shape: tuple[int, int], num_classes: int, width: int = 64) -> keras.Model:
    """Two stacked LSTM layers; the last state summarises the clip."""
    import keras
    from keras import layers

    inputs, x = _recurrent_input(input_shape)
    x = layers.LSTM(2 * width, return_sequences=True)(x)
    x = layers.LSTM(width)(x)
    return keras.Model(inputs, _head(x, num_classes), name="mfcc_lstm")


def build_bilstm(input_shape: tuple[int, int], num_classes: int, width: int = 64) -> keras.Model:
    """Two stacked bidirectional LSTM layers; forward and backward final states summarise the clip."""
    import keras
    from keras import layers

    inputs, x = _recurrent_input(input_shape)
    x = layers.Bidirectional(layers.LSTM(width, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(width))(x)
    return keras.Model(inputs, _head(x, num_classes), name="mfcc_bilstm")


def build_attention(input_shape: tuple[int, int], num_classes: int, width: int = 64) -> keras.Model:
    """BiLSTM whose per-frame outputs are pooled by learned attention weights (softmax over time).

    The attention weights show which frames the model listened to; the layer is named
    ``attention_weights`` so :func:`attention_model` can expose them.
    """
    import keras
    from keras import layers

    inputs, x = _recurrent_input(input_shape)
    sequence = layers.Bidirectional(layers.LSTM(width, return_sequences=True))(x)
    scores = layers.Dense(width, activation="tanh")(sequence)
    scores = layers.Dense(1, use_bias=False)(scores)
    weights = layers.Softmax(axis=1, name="attention_weights")(scores)
    pooled = layers.Dot(axes=1)([weights, sequence])
    pooled = layers.Flatten()(pooled)
    return keras.Model(inputs, _head(pooled, num_classes), name="mfcc_attention")


def _statistics_pooling_layer():
    """The StatisticsPooling layer class (defined lazily so Keras is imported only when needed)."""
    global _STATISTICS_POOLING
    if _STATISTICS_POOLING is None:
        import keras

        @keras.saving.register_keras_serializable(package="mer_audio")
        class StatisticsPooling(keras.layers.Layer):
            """Mean and standard deviation of every feature over time: (batch, frames, f) -> (batch, 2 f)."""

            def call(self, inputs):
                mean = keras.ops.mean(inputs, axis=1)
                std = keras.ops.sqrt(keras.ops.var(inputs, axis=1) + 1e-6)
                return keras.ops.concatenate([mean, std], axis=-1)

            def compute_output_shape(self, input_shape):
                return (input_shape[0], 2 * input_shape[-1])

        _STATISTICS_POOLING = StatisticsPooling
    return _STATISTICS_POOLING


_STATISTICS_POOLING = None


def build_stats_mlp(input_shape: tuple[int, int], num_classes: int, width: int = 64) -> keras.Model:
    """Statistics pooling (mean and std of each feature over time) followed by a two-layer MLP.

    Ignores the order of frames, like the classic MFCC-statistics classifiers, and has little to
    overfit with; an extension beyond the four sequence models, suggested by the SVC baseline.
    """
    import keras
    from keras import layers

    inputs = _inputs(input_shape)
    x = _statistics_pooling_layer()(name="statistics_pooling")(inputs)
    x = layers.GaussianNoise(0.1)(x)
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(4 * width, activation="relu", kernel_regularizer=_regulariser())(x)
    return keras.Model(inputs, _head(x, num_classes, hidden=2 * width), name="mfcc_stats_mlp")


def register_custom_layers() -> None:
    """Register the custom layers with Keras (call before loading a saved model that uses them)."""
    _statistics_pooling_layer()


# The MFCC models by the names `mer train audio --model` accepts (the four sequence models first).
BUILDERS: dict[str, Callable] = {
    "cnn": build_cnn,
    "lstm": build_lstm,
    "bilstm": build_bilstm,
    "attention": build_attention,
    "stats": build_stats_mlp,
}
# The four sequence models of the issue (the ensemble averages these).
SEQUENCE_MODELS = ("cnn", "lstm", "bilstm", "attention")


def build_model(name: str, input_shape: tuple[int, int], num_classes: int, width: int = 64):
    """Build one of the MFCC models by name (cnn, lstm, bilstm, attention)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown audio model {name!r}; expected one of {sorted(BUILDERS)}")
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    return BUILDERS[name](tuple(input_shape), num_classes, width=width)


def attention_model(model):
    """A model mapping the same input to the attention weights (frames_after_pooling,) of an attention model."""
    import keras

    try:
        layer = model.get_layer("attention_weights")
    except ValueError as error:
        raise ValueError(f"model {model.name!r} has no attention layer") from error
    return keras.Model(model.inputs, keras.ops.squeeze(layer.output, axis=-1))
