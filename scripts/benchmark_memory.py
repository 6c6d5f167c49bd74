"""Peak memory of frame sampling and audio reading on a long clip (default: 10 minutes of 720p).

Writes a synthetic H.264 + AAC clip into a scratch folder (frames made and encoded one at a
time, as ``mer_utils.media.write_mp4`` does for short clips), then measures in fresh child
processes the peak resident memory (``ru_maxrss``) that each step adds:

* ``frames``: ``media.read_frames(clip, 8, start=0.2, stop=0.8)`` (what the video branch samples),
* ``audio``: ``audio.load_clip_audio(clip)`` (bounded to ``audio.MAX_AUDIO_SECONDS``),
* ``audio-full``: ``media.read_audio(clip)`` with no bound (the whole track),
* ``frames-all``: the former approach, every frame decoded into memory before 8 are picked; run
  on a short clip only (``--before-seconds``), because on the long one it needs tens of GB.

    python scripts/benchmark_memory.py                      # 10 min 720p, a few minutes to write
    python scripts/benchmark_memory.py --minutes 2 --keep   # shorter; keep the clip
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Frame rate (fps) and audio rate (Hz) of the written clip.
FPS = 25
SAMPLE_RATE = 16_000


def write_long_clip(path: Path, seconds: float, width: int, height: int, fps: int = FPS) -> Path:
    """Write a synthetic clip (moving gradient, tone bursts) frame by frame: memory stays flat."""
    import av

    frames = int(round(seconds * fps))
    base = np.zeros((height, width * 2, 3), np.uint8)
    base[..., 0] = np.linspace(0, 255, width * 2, dtype=np.uint8)[None, :]
    base[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    base[..., 2] = 96
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        # ultrafast: this is a memory benchmark, the encoding quality does not matter.
        video.options = {"crf": "30", "preset": "ultrafast"}
        audio = container.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        samples_per_frame = SAMPLE_RATE // fps
        for i in range(frames):
            shift = (i * 4) % width
            image = np.ascontiguousarray(base[:, shift : shift + width])
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
            t = (np.arange(samples_per_frame) + i * samples_per_frame) / SAMPLE_RATE
            # A 180 Hz tone, on for 0.6 s of every second: voice-like energy bursts.
            tone = 0.2 * np.sin(2 * np.pi * 180 * t) * ((t % 1.0) < 0.6)
            sound = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None], format="flt", layout="mono")
            sound.sample_rate = SAMPLE_RATE
            sound.pts = i * samples_per_frame
            for packet in audio.encode(sound):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    return path


def _rss_mb() -> float:
    with open("/proc/self/statm") as stream:
        pages = int(stream.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def measure(mode: str, clip: str) -> dict:
    """Run one step in this (fresh) process; peak RSS it added above the state before it, in MB."""
    from mer_utils import audio, media

    before = _rss_mb()
    start = time.perf_counter()
    if mode == "frames":
        shape = media.read_frames(clip, 8, start=0.2, stop=0.8).shape
    elif mode == "audio":
        shape = audio.load_clip_audio(clip).shape
    elif mode == "audio-full":
        shape = media.read_audio(clip, max_seconds=None).shape
    elif mode == "frames-all":
        import av

        with av.open(clip) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
        positions = media.frame_positions(len(decoded), 8, 0.2, 0.8)
        shape = np.stack([decoded[i] for i in positions]).shape
    else:
        raise ValueError(f"unknown mode {mode!r}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "result_shape": list(shape),
        "seconds": round(time.perf_counter() - start, 1),
        "rss_before_mb": round(before, 1),
        "peak_mb": round(peak, 1),
        "added_mb": round(peak - before, 1),
    }


def run_child(mode: str, clip: Path) -> dict:
    """:func:`measure` in a fresh interpreter, so each figure starts from the same state."""
    output = subprocess.run(
        [sys.executable, __file__, "--measure", mode, str(clip)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    """Write the clips, measure every step, print a table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the long clip")
    parser.add_argument("--height", type=int, default=720, help="frame height (width = 16/9 of it)")
    parser.add_argument("--before-seconds", type=float, default=20.0, help="clip length for frames-all")
    parser.add_argument("--out", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the written clips")
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "CLIP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    width = int(round(args.height * 16 / 9 / 2)) * 2
    folder = args.out or Path(tempfile.mkdtemp(prefix="mer_benchmark_memory_"))
    folder.mkdir(parents=True, exist_ok=True)
    long_clip, short_clip = folder / "long.mp4", folder / "short.mp4"
    start = time.perf_counter()
    write_long_clip(long_clip, args.minutes * 60, width, args.height)
    write_seconds = time.perf_counter() - start
    write_long_clip(short_clip, args.before_seconds, width, args.height)
    print(
        f"wrote {args.minutes:g} min of {width}x{args.height} at {FPS} fps "
        f"({long_clip.stat().st_size / 2**20:.0f} MB) in {write_seconds:.0f} s"
    )
    rows = [
        ("long", run_child("frames", long_clip)),
        ("long", run_child("audio", long_clip)),
        ("long", run_child("audio-full", long_clip)),
        ("short", run_child("frames", short_clip)),
        ("short", run_child("frames-all", short_clip)),
    ]
    print(f"{'clip':6s} {'step':11s} {'added peak MB':>13s} {'seconds':>8s}  result")
    for clip, row in rows:
        print(
            f"{clip:6s} {row['mode']:11s} {row['added_mb']:13.1f} {row['seconds']:8.1f}  {row['result_shape']}"
        )
    per_minute = rows[-1][1]["added_mb"] / (args.before_seconds / 60)
    print(
        f"frames-all (every frame decoded first) grows by about {per_minute:.0f} MB per minute of "
        f"{width}x{args.height} video: {per_minute * args.minutes / 1024:.1f} GB for {args.minutes:g} min"
    )
    if not args.keep:
        long_clip.unlink()
        short_clip.unlink()


if __name__ == "__main__":
    main()
