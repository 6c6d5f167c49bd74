"""Project paths, label orders and the one seed function."""

from __future__ import annotations

import os
import random
from pathlib import Path

# The repository root (the folder holding mer_utils/, notebooks/, figures/).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Where data lives unless MER_DATA_DIR says otherwise (never committed to git).
DATA_DIR = Path(os.environ.get("MER_DATA_DIR", PROJECT_ROOT / "data")).expanduser()
# The embedded synthetic demo data set written by `mer demo-data` / `make demo-data`.
DEMO_DIR = PROJECT_ROOT / "data" / "demo"
# Figures written by the notebooks and the CLI on the current run.
FIGURES_DIR = PROJECT_ROOT / "figures"
# Runs written by the notebooks (one folder per trained model).
RUNS_DIR = PROJECT_ROOT / "runs"
# Disk cache for faces and audio features, keyed by clip and parameters.
CACHE_DIR = Path(os.environ.get("MER_CACHE_DIR", PROJECT_ROOT / ".cache")).expanduser()

# RAVDESS emotions in code order (code 01 = neutral ... 08 = surprised).
RAVDESS_EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)
# The text data set's labels, in the order every table and figure uses.
TEXT_LABELS: tuple[str, ...] = (
    "neutral",
    "joy",
    "sadness",
    "fear",
    "surprise",
    "anger",
    "shame",
    "disgust",
)
# Default seed for every split, model and augmentation.
DEFAULT_SEED = 42


def smoke_test() -> bool:
    """Return True when MER_SMOKE_TEST=1 asks for a fast, shrunken run (CI, quick checks)."""
    return os.environ.get("MER_SMOKE_TEST") == "1"


def set_seed(seed: int = DEFAULT_SEED, keras: bool = False) -> int:
    """Seed Python, NumPy and (if already imported, or ``keras=True``) TensorFlow / Keras and torch.

    One call at the top of a notebook or command makes the run repeatable. Code that is about to
    build a Keras network passes ``keras=True``: Keras is then imported first, because a seed set
    before TensorFlow is loaded never reaches its initialisers, dropout and shuffling (re-runs of
    the same network then differed by several points). With the seed in place the CPU kernels used
    here repeat exactly (BiLSTM, CNN, ResNet18 and ResNet50 re-runs measured identical), so
    TensorFlow's op-determinism mode (which can cost speed) is not switched on. Returns the seed.
    """
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    import numpy as np

    np.random.seed(seed)
    import sys

    # Only import Keras when asked: importing TensorFlow costs seconds.
    if keras or "keras" in sys.modules or "tensorflow" in sys.modules:
        import keras as keras_module

        keras_module.utils.set_random_seed(seed)
    # torch (the optional fine-tuned MiniLM) likewise; its models also seed torch themselves in fit().
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)
    return seed


def figures_dir() -> Path:
    """Return the figures folder, creating it if needed."""
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    return FIGURES_DIR
