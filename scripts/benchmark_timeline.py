"""Peak memory and time of `mer predict CLIP --timeline` on a long clip (default: 2 minutes).

Builds the clip by joining real clips (by default the six CREMA-D clips of
``DATA_DIR/real_video/crema-d``, one emotion each) over and over until it is long enough, written
frame by frame and block by block so the script itself holds one source clip at a time. Then
runs ``mer predict CLIP --timeline`` in a fresh process and records its peak resident memory
(``ru_maxrss`` of the child), its wall-clock seconds and the number of windows, beside the same
figures of the one-label ``mer predict CLIP``, into results/NAME.json (default ``timeline``). The target of issue #23 is a peak under 1.5 GB.

    python scripts/benchmark_timeline.py --models runs/faces runs/audio --data ../shared/data
    python scripts/benchmark_timeline.py --models RUN... --clip long.mp4   # an existing clip

``--figure PNG`` also copies the timeline plot there (and its CSV beside it): the reference figure
of the README is the six clips joined once (``--seconds 12.6``) with the bundled runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Frame rate (fps), audio rate (Hz) and frame size (width, height) of the joined clip.
FPS = 30
SAMPLE_RATE = 16_000
SIZE = (480, 360)
# Target of issue #23 for a 2-minute clip (MB).
TARGET_PEAK_MB = 1536


def join_clips(sources: list[Path], out: Path, seconds: float) -> Path:
    """Write ``sources`` one after another, again and again, until ``seconds`` of video; returns ``out``."""
    import av
    import cv2

    from mer_utils import media

    frames_needed = int(round(seconds * FPS))
    written = samples = 0
    with av.open(str(out), mode="w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        video.options = {"crf": "26", "preset": "veryfast"}
        sound = container.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "mono"
        turn = 0
        while written < frames_needed:
            source = sources[turn % len(sources)]
            turn += 1
            info = media.probe(source)
            count = max(1, int(round((info["duration"] or 1.0) * FPS)))
            frames = media.read_frames(source, count)[: frames_needed - written]
            # The sound of exactly the frames written, so both streams end together.
            length = int(len(frames) / FPS * SAMPLE_RATE)
            audio = media.read_audio(source, SAMPLE_RATE)[:length]
            audio = np.pad(audio, (0, length - audio.size))
            for image in frames:
                frame = av.VideoFrame.from_ndarray(cv2.resize(image, SIZE), format="rgb24")
                frame.pts = written
                written += 1
                for packet in video.encode(frame):
                    container.mux(packet)
            for offset in range(0, audio.size, 1024):
                block = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(audio[None, offset : offset + 1024]), format="flt", layout="mono"
                )
                block.sample_rate = SAMPLE_RATE
                block.pts = samples
                samples += block.samples
                for packet in sound.encode(block):
                    container.mux(packet)
        for stream in (video, sound):
            for packet in stream.encode():
                container.mux(packet)
    return out


def run_mer(arguments: list[str]) -> dict:
    """One fresh `mer` process: its printed JSON, wall-clock seconds and its own peak RSS (MiB, from wait4)."""
    import os

    command = [sys.executable, "-m", "mer_utils.cli", *arguments]
    start = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as errors:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        stdout = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed ({code}): {errors.read().strip()[-2000:]}")
    return {"output": json.loads(stdout), "seconds": seconds, "peak_mb": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="run folders for mer predict")
    parser.add_argument("--data", type=Path, help="DATA_DIR holding real_video/crema-d (to build the clip)")
    parser.add_argument("--clip", type=Path, help="an existing long clip instead of building one")
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the built clip (default 120)")
    parser.add_argument("--window", type=float, help="--window of mer predict (default: its own)")
    parser.add_argument("--hop", type=float, help="--hop of mer predict (default: its own)")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--results", default="timeline", help="results/NAME.json to write (default timeline)")
    parser.add_argument(
        "--figure", type=Path, help="also copy the timeline plot here (.png) and its CSV beside it"
    )
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="mer_benchmark_timeline_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.clip is not None:
        clip, description = args.clip, f"the clip {args.clip.name}"
    else:
        if args.data is None:
            parser.error("give --data DATA_DIR (with real_video/crema-d) or --clip")
        folder = args.data / "real_video" / "crema-d"
        sources = sorted(folder.glob("*.flv"))
        if not sources:
            raise FileNotFoundError(f"{folder}: no CREMA-D .flv clips to join")
        clip = join_clips(sources, work / "joined.mp4", args.seconds)
        description = (
            f"the {len(sources)} CREMA-D clips of real_video/crema-d joined in turn into {args.seconds:g} s "
            f"({SIZE[0]}x{SIZE[1]}, {FPS} fps, H.264 + AAC 16 kHz)"
        )
    extra = [
        *(["--window", str(args.window)] if args.window else []),
        *(["--hop", str(args.hop)] if args.hop else []),
    ]
    models = ["--models", *map(str, args.models)]
    # The one-label answer on the same clip first: what loading the models costs without windows.
    single = run_mer(["predict", str(clip), *models, "--json"])
    measured = run_mer(
        ["predict", str(clip), *models, "--timeline", "--out", str(work / "timeline.csv"), "--json", *extra]
    )
    summary = measured["output"]
    print(
        f"{summary['windows']} windows over {summary['duration']:.1f} s: peak {measured['peak_mb']:.0f} MiB "
        f"(target < {TARGET_PEAK_MB}), {measured['seconds']:.0f} s; one label: peak {single['peak_mb']:.0f} MiB, "
        f"{single['seconds']:.0f} s; plot {summary['plot']}"
    )
    from mer_utils.results import command_line, update_results
    from mer_utils.runs import read_run_info

    runs = ", ".join(
        f"{info['branch']} {info.get('model')}{' (smoke)' if info.get('smoke') else ''}"
        for info in (read_run_info(run) for run in args.models)
    )
    row = {
        "name": f"{summary['duration']:.0f} s clip, {runs}",
        "key": f"{summary['duration']:.0f}s {runs}",
        "values": {
            "windows": summary["windows"],
            "window s": summary["window"],
            "hop s": summary["hop"],
            "peak MB": round(measured["peak_mb"]),
            "target MB": TARGET_PEAK_MB,
            "seconds": round(measured["seconds"], 1),
            "one-label peak MB": round(single["peak_mb"]),
            "one-label seconds": round(single["seconds"], 1),
        },
    }
    defaults = {
        "title": "Emotion over time (`mer predict --timeline`), memory and time",
        "row_label": "clip and runs",
        "value_decimals": {
            "windows": 0,
            "window s": 1,
            "hop s": 1,
            "peak MB": 0,
            "target MB": 0,
            "seconds": 0,
            "one-label peak MB": 0,
            "one-label seconds": 0,
        },
        "data": {"path": "DATA_DIR/real_video/crema-d", "description": description},
        "protocol": {
            "split": "no split: prediction only, with runs trained beforehand",
            "test": "one fresh `mer predict CLIP --timeline` process; peak = its own ru_maxrss in MB of 2^20 "
            "bytes (resident memory, TensorFlow and the models included); seconds = wall clock including "
            "loading; one-label = `mer predict CLIP` on the same clip and runs (models loaded and warmed up, "
            "no windows); 2 CPU cores shared with other jobs while measured",
        },
    }
    path = update_results(args.results, [row], command_line(__file__, argv), defaults)
    print(f"written to {path}")
    if args.figure is not None:
        import shutil

        args.figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(summary["plot"], args.figure.with_suffix(".png"))
        shutil.copyfile(work / "timeline.csv", args.figure.with_suffix(".csv"))
        print(f"timeline plot copied to {args.figure.with_suffix('.png')}")


if __name__ == "__main__":
    main()
