"""Keras model builders: one module per branch (video, audio, spectrogram, text).

Models import Keras inside their builder functions; nothing here imports the CLI.
"""
