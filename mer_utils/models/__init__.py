"""Keras model builders: one module per branch (video, audio, spectrogram, text).

Models import Keras inside their builder functions; nothing here imports the CLI.
"""


class PretrainedWeightsError(ValueError):
    """ImageNet weights were asked for but could not be loaded (offline, blocked download, no keras_hub)."""
