"""mer_utils: helpers shared by the mer notebooks and the ``mer`` command.

Importing the package is cheap and has no side effects: heavy libraries
(TensorFlow, MTCNN, librosa) are imported inside the functions that need them.
"""

__version__ = "0.1.0"
