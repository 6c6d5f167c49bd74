"""Tests of mer_utils.config: the one seed call makes runs repeatable."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from mer_utils.config import set_seed

# A fresh interpreter (TensorFlow not yet imported, as at the top of a notebook or `mer train`)
# seeds, builds a small Keras network, trains it one step and prints a checksum of its weights.
KERAS_RUN = """
import sys
from mer_utils.config import set_seed
set_seed(int(sys.argv[1]), keras=True)
import keras
import numpy as np
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dropout(0.5),
                          keras.layers.Dense(3, activation="softmax")])
model.compile("adam", "sparse_categorical_crossentropy")
x = np.linspace(-1, 1, 64 * 8, dtype="float32").reshape(64, 8)
model.fit(x, np.arange(64) % 3, epochs=1, batch_size=16, verbose=0)
print(repr(float(sum(np.abs(w).sum() for w in model.get_weights()))))
"""


def test_set_seed_repeats_python_and_numpy_draws():
    assert set_seed(11) == 11
    first = (random.random(), np.random.rand(3).tolist())
    set_seed(11)
    assert (random.random(), np.random.rand(3).tolist()) == first
    set_seed(12)
    assert random.random() != first[0]


@pytest.mark.slow
def test_set_seed_makes_keras_training_repeat_in_a_fresh_process():
    def weights(seed: int) -> str:
        done = subprocess.run(
            [sys.executable, "-c", KERAS_RUN, str(seed)],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        return done.stdout.strip().splitlines()[-1]

    first = weights(5)
    assert weights(5) == first
    assert weights(6) != first
