"""Project paths, label orders and the one seed function."""

from __future__ import annotations

import os
import random
from pathlib import Path

# The folder holding the mer_utils package: the repository root in a checkout (or an editable
# install), site-packages when the package is installed like any other.
PACKAGE_PARENT = Path(__file__).resolve().parent.parent
# Files that sit next to mer_utils/ only in a checkout of the repository.
CHECKOUT_MARKERS: tuple[str, ...] = ("pyproject.toml", "notebooks")


def checkout_root(package_parent: Path = PACKAGE_PARENT) -> Path | None:
    """The repository folder when mer_utils lives in a checkout (its markers beside it), else None."""
    if all((package_parent / marker).exists() for marker in CHECKOUT_MARKERS):
        return package_parent
    return None


def project_root(environ: dict | None = None, package_parent: Path = PACKAGE_PARENT) -> Path:
    """Where data/, runs/, figures/ and .cache/ live: MER_HOME, else the checkout, else the working folder."""
    environ = os.environ if environ is None else environ
    if environ.get("MER_HOME"):
        return Path(environ["MER_HOME"]).expanduser().resolve()
    return checkout_root(package_parent) or Path.cwd().resolve()


# The repository checkout, or None for a package installed outside one (no notebooks then).
CHECKOUT_ROOT = checkout_root()
# The project folder: data/, runs/, figures/ and .cache/ resolve here (see project_root).
PROJECT_ROOT = project_root()
# Where data lives unless MER_DATA_DIR says otherwise (never committed to git).
DATA_DIR = Path(os.environ.get("MER_DATA_DIR") or PROJECT_ROOT / "data").expanduser()
# The embedded synthetic demo data set written by `mer demo-data` / `make demo-data`.
DEMO_DIR = PROJECT_ROOT / "data" / "demo"
# Figures written by the notebooks and the CLI on the current run (MER_FIGURES_DIR overrides).
FIGURES_DIR = Path(os.environ.get("MER_FIGURES_DIR") or PROJECT_ROOT / "figures").expanduser()
# Runs written by the notebooks (one folder per trained model); `mer notebooks` sets MER_RUNS_DIR
# to a folder of its own per mode, so its runs never mix with yours or with the other mode's.
RUNS_DIR = Path(os.environ.get("MER_RUNS_DIR") or PROJECT_ROOT / "runs").expanduser()
# Disk cache for faces and audio features, keyed by clip and parameters.
CACHE_DIR = Path(os.environ.get("MER_CACHE_DIR") or PROJECT_ROOT / ".cache").expanduser()

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
