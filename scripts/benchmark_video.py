"""Benchmark of the video branch on this machine: face detection and ResNet50 training / inference speed.

Prints faces/s for MTCNN (batched per clip and frame by frame), the Haar fallback and the centre
crop on demo frames, then frames/s for training and inference of the ResNet50 video model
(weights=None, so it runs offline) at each input size. Not a test: numbers depend on the machine.

    .venv/bin/python scripts/benchmark_video.py [--data DIR] [--sizes 112 224] [--steps 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

# Clips and frames per clip used for the detector timings.
BENCH_CLIPS = 10
BENCH_FRAMES = 8
# Batch size of the training / inference timings (the env-probe measured batch 8).
BATCH_SIZE = 8


def load_frames(data: Path) -> list[np.ndarray]:
    """BENCH_FRAMES frames of each of the first BENCH_CLIPS clips below ``data``."""
    from mer_utils.media import read_frames

    paths = sorted(data.rglob("*.mp4"))[:BENCH_CLIPS]
    if not paths:
        raise FileNotFoundError(f"{data}: no .mp4 clips to benchmark on")
    return [read_frames(p, BENCH_FRAMES, start=0.2, stop=0.8) for p in paths]


def time_detectors(clips: list[np.ndarray]) -> dict[str, float]:
    """Faces per second of each detector (MTCNN warmed up first)."""
    from mer_utils import faces

    frames = [frame for clip in clips for frame in clip]
    faces.detect_faces_mtcnn(list(clips[0][:2]))  # load TensorFlow, build the detector
    faces.detect_face_haar(frames[0])
    timings = {}
    start = time.perf_counter()
    for clip in clips:
        faces.detect_faces_mtcnn(list(clip))
    timings["mtcnn (batch per clip)"] = len(frames) / (time.perf_counter() - start)
    start = time.perf_counter()
    for frame in frames:
        faces.detect_faces_mtcnn([frame])
    timings["mtcnn (one frame at a time)"] = len(frames) / (time.perf_counter() - start)
    start = time.perf_counter()
    for frame in frames:
        faces.detect_face_haar(frame)
    timings["haar"] = len(frames) / (time.perf_counter() - start)
    start = time.perf_counter()
    for frame in frames:
        faces.crop_face(frame, faces.center_box(frame.shape), size=224)
    timings["centre crop (+ crop/resize)"] = len(frames) / (time.perf_counter() - start)
    return timings


def time_model(size: int, steps: int) -> dict[str, float]:
    """First-step seconds and steady frames/s of training and inference at one input size."""
    from mer_utils.models.video import build_video_model
    from mer_utils.training import fit_classifier

    rng = np.random.default_rng(0)
    x = rng.normal(0, 50, (BATCH_SIZE * steps, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 8, len(x))
    model = build_video_model(weights=None, input_size=size)
    start = time.perf_counter()
    fit_classifier(model, x[:BATCH_SIZE], y[:BATCH_SIZE], epochs=1, batch_size=BATCH_SIZE, class_weight=False)
    first = time.perf_counter() - start
    start = time.perf_counter()
    fit_classifier(model, x, y, epochs=1, batch_size=BATCH_SIZE, learning_rate=None, class_weight=False)
    train = len(x) / (time.perf_counter() - start)
    model.predict(x[:BATCH_SIZE], batch_size=BATCH_SIZE, verbose=0)  # trace the predict function
    start = time.perf_counter()
    model.predict(x, batch_size=BATCH_SIZE, verbose=0)
    infer = len(x) / (time.perf_counter() - start)
    return {"first_step_s": first, "train_frames_per_s": train, "inference_frames_per_s": infer}


def main() -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="folder of .mp4 clips (default: the demo set)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224], help="model input sizes")
    parser.add_argument("--steps", type=int, default=5, help="timed training / inference batches per size")
    args = parser.parse_args()
    if args.data is None:
        from mer_utils.demo import ensure_demo_data

        args.data = Path(ensure_demo_data())
    clips = load_frames(args.data)
    height, width = clips[0].shape[1:3]
    print(f"face detection on {sum(len(c) for c in clips)} frames of {width}x{height} from {args.data}")
    for name, rate in time_detectors(clips).items():
        print(f"  {name:30s} {rate:8.1f} faces/s")
    print(f"ResNet50 (weights=None), batch {BATCH_SIZE}, {args.steps} timed batches")
    for size in args.sizes:
        result = time_model(size, args.steps)
        print(
            f"  input {size:3d}: first step {result['first_step_s']:5.1f} s, "
            f"train {result['train_frames_per_s']:6.1f} frames/s, "
            f"inference {result['inference_frames_per_s']:6.1f} frames/s"
        )


if __name__ == "__main__":
    main()
