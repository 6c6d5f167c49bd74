"""Benchmark of the faces branch on this machine: decoding, training and inference images/s.

Decodes a labelled face-image folder (cold, then from the cache), then times training steps of
each face model with the full run's settings (batch 64, augmentation on) and inference, and
extrapolates the default `mer train faces` time on FER2013 (25,838 training images per epoch).
Without ``--data`` it times the models on random images. Not a test: numbers depend on the
machine and on what else runs on it (a shared CPU gives pessimistic figures).

    .venv/bin/python scripts/benchmark_faces.py [--data ../shared/data/faces/fer2013] [--models cnn resnet50] [--steps 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

# Training images per epoch of the default run on FER2013 (train/ minus the 10% selection part).
FER2013_TRAIN_IMAGES = 25_838
# Images decoded for the cold / cached decoding timings.
DECODE_IMAGES = 4_000


def time_decoding(data: Path) -> dict[str, float]:
    """Images/s of decoding a folder without and with the decoded-image cache."""
    from mer_utils.face_images import index_face_images, load_face_images

    index = index_face_images(data).head(DECODE_IMAGES)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        load_face_images(index, 48, cache_dir=cache, progress=False)
        cold = len(index) / (time.perf_counter() - start)
        start = time.perf_counter()
        load_face_images(index, 48, cache_dir=cache, progress=False)
        cached = len(index) / (time.perf_counter() - start)
    return {"decode (cold)": cold, "decode (cached)": cached}


def sample_images(data: Path | None, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` uint8 faces and labels from ``data`` (or random ones without it)."""
    rng = np.random.default_rng(0)
    if data is None:
        return rng.integers(0, 256, (count, size, size, 1), dtype=np.uint8), rng.integers(0, 7, count)
    from mer_utils.face_images import index_face_images, load_face_images
    from mer_utils.training import encode_labels

    index = index_face_images(data)
    index = index.iloc[rng.permutation(len(index))[:count]]
    decoded = load_face_images(index, size, progress=False)
    return decoded.images, encode_labels(decoded.index["label"], list(_labels()))


def _labels():
    from mer_utils.config import RAVDESS_EMOTIONS

    return RAVDESS_EMOTIONS


def time_model(model: str, data: Path | None, steps: int) -> dict[str, float]:
    """Training and inference images/s of one face model with the full run's settings."""
    from mer_utils.pipelines import faces

    settings = faces.FULL_SETTINGS
    size = faces.MODELS[model]["input_size"]
    batch = settings["batch_size"]
    images, y = sample_images(data, batch * (steps + 2), size)
    x = faces.prepare_images(images)
    present = [True] * len(_labels())
    network, _ = faces.build_face_model(model, size, len(present), seed=0)
    common = dict(
        batch_size=batch,
        learning_rate=settings["learning_rate"],
        label_smoothing=settings["label_smoothing"],
        class_weight_power=settings["class_weight_power"],
        patience=99,
    )
    # One short fit traces the graph; the timed fit then runs at steady speed.
    faces.fit_face_model(
        network, x[: batch * 2], y[: batch * 2], x[:batch], y[:batch], present, epochs=1, **common
    )
    start = time.perf_counter()
    network.fit(
        x[batch * 2 :], faces.smoothed_targets(y[batch * 2 :], present, 0.1), batch_size=batch, verbose=0
    )
    train = batch * steps / (time.perf_counter() - start)
    network.predict(x[:256], batch_size=256, verbose=0)
    start = time.perf_counter()
    network.predict(x, batch_size=256, verbose=0)
    infer = len(x) / (time.perf_counter() - start)
    epochs = settings["epochs"]
    return {
        "parameters": network.count_params(),
        "train images/s": train,
        "inference images/s": infer,
        f"extrapolated {epochs}-epoch FER2013 run (min)": epochs * FER2013_TRAIN_IMAGES / train / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a labelled face-image folder (e.g. FER2013)")
    parser.add_argument("--models", nargs="+", default=["cnn"], help="face models to time (cnn, resnet50)")
    parser.add_argument("--steps", type=int, default=40, help="training steps timed per model")
    args = parser.parse_args()
    import os

    print(
        f"CPU cores visible: {os.cpu_count()}  (load average {os.getloadavg()[0]:.1f}: shared CPUs slow every figure)"
    )
    if args.data is not None:
        for name, rate in time_decoding(args.data).items():
            print(f"{name:32s} {rate:9.0f} images/s")
    for model in args.models:
        for name, value in time_model(model, args.data, args.steps).items():
            print(f"{model:9s} {name:48s} {value:12,.1f}")


if __name__ == "__main__":
    main()
