"""Run folders: the public on-disk interface of every trained model.

A run folder holds ``model.keras`` (or ``model.joblib`` for scikit-learn text and audio models),
``run.json`` (branch, label order and the preprocessing parameters the model was trained
with, so ``mer predict`` / ``mer evaluate`` need nothing else), ``metrics.json`` and
``predictions_val.csv`` / ``predictions_test.csv`` (see :mod:`mer_utils.evaluation`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
KERAS_MODEL_FILE = "model.keras"


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (indented, keys in insertion order)."""
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    return atomic_write_bytes(path, text.encode())


def read_json(path: str | Path) -> Any:
    """Read a JSON file, with an error naming the file when it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def check_run_dir(run_dir: str | Path) -> Path:
    """Return ``run_dir`` as a Path after checking it is a run folder (has run.json)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder does not exist")
    if not (run_dir / RUN_FILE).is_file():
        raise ValueError(f"{run_dir}: not a run folder (no {RUN_FILE}); train one with `mer train`")
    return run_dir


def write_run_info(run_dir: str | Path, branch: str, labels: list[str], **params: Any) -> Path:
    """Write ``run.json``: the branch (video, audio, spectrogram, text), labels and parameters."""
    info = {"branch": branch, "labels": list(labels), **params}
    return write_json(Path(run_dir) / RUN_FILE, info)


def read_run_info(run_dir: str | Path) -> dict:
    """Read a run folder's ``run.json``."""
    return read_json(check_run_dir(run_dir) / RUN_FILE)


def write_metrics(run_dir: str | Path, metrics: dict) -> Path:
    """Write ``metrics.json`` into a run folder."""
    return write_json(Path(run_dir) / METRICS_FILE, metrics)


def write_predictions(run_dir: str | Path, split: str, table: pd.DataFrame) -> Path:
    """Write ``predictions_<split>.csv`` atomically."""
    path = Path(run_dir) / f"predictions_{split}.csv"
    return atomic_write_bytes(path, table.to_csv(index=False).encode())


def read_predictions(run_dir: str | Path, split: str) -> pd.DataFrame:
    """Read ``predictions_<split>.csv`` of a run folder."""
    path = Path(run_dir) / f"predictions_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions for split '{split}' in this run")
    return pd.read_csv(path, dtype={"clip_id": str, "true_label": str})
