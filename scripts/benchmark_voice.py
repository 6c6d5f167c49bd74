"""Benchmark of the voice-activity check: speech kept per corpus, non-speech rejected per kind.

The audio models answer only for clips that hold speech (:mod:`mer_utils.voice`). This script
runs the check that ``mer predict`` runs (:func:`mer_utils.voice.clip_voice_activity`, the whole
clip read in blocks) on real speech corpora and on non-speech it generates: hiss (white, pink,
brown; with and without a second of digital silence before it), mains hum (50 / 60 Hz with
harmonics), pure tones, 1 kHz beeps, music-like signals (chords, melodies) and silence. Every
RAVDESS clip must count as speech: the audio models are trained on them.

    .venv/bin/python scripts/benchmark_voice.py --data ../shared/data [--limit 200] [--results voice]

``--data`` is a folder holding any of ``ravdess_speech_16k/``, ``speech/urdu/``,
``speech/turev-db/`` and ``real_video/`` (corpora that are missing are skipped); ``--demo DIR``
adds the demo set's clips. ``--limit N`` takes every k-th clip so that at most N are read per
corpus (0: all). ``--results voice`` writes the table into results/voice.json; then
``python scripts/render_results.py`` updates the README.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mer_utils import audio_augment

# Sample rate of the generated signals and of the check (the rate the audio models read).
SAMPLE_RATE = 16_000
# Length of each generated signal (s) and how many of each kind (levels, seeds, pitches vary).
SIGNAL_SECONDS = 4.0
VARIANTS_PER_KIND = 6
# Corpora under --data: (table name, sub-folder, file patterns).
CORPORA = (
    ("RAVDESS speech, actors 01-18 (English, acted)", "ravdess_speech_16k", ("*.wav",)),
    ("URDU (Urdu, natural, from talk shows)", "speech/urdu", ("*.wav",)),
    ("TurEV-DB (Turkish, acted single words)", "speech/turev-db", ("*.wav",)),
    ("real acted clips with sound (CREMA-D .flv, RAVDESS .mp4)", "real_video", ("*.flv", "*.mp4")),
)


# --- non-speech signals -------------------------------------------------------------------


def _seconds(seconds: float = SIGNAL_SECONDS) -> np.ndarray:
    return np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE


def _at_level(y: np.ndarray, rms_db: float) -> np.ndarray:
    """``y`` scaled to an RMS level of ``rms_db`` dB re full scale."""
    rms = np.sqrt(np.mean(y**2)) or 1.0
    return (y * 10 ** (rms_db / 20) / rms).astype(np.float32)


def coloured_noise(colour: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise of ``seconds`` at the benchmark's rate, unit RMS."""
    return audio_augment.coloured_noise(colour, seconds, SAMPLE_RATE, rng)


def _harmonic(frequency, t: np.ndarray, harmonics: int = 4) -> np.ndarray:
    """A tone with ``harmonics`` partials falling as 1/k (``frequency`` may vary over time)."""
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(frequency, t.shape)) / SAMPLE_RATE
    return sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))


def _melody(rng: np.random.Generator, vibrato: float = 0.0) -> np.ndarray:
    """Notes of a major scale, 0.2-0.5 s each, with attack and decay (and optional 5 Hz vibrato)."""
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    base = rng.uniform(180, 330)
    pieces, total = [], 0.0
    while total < SIGNAL_SECONDS:
        length = float(rng.uniform(0.2, 0.5))
        t = _seconds(length)
        frequency = base * 2 ** (rng.choice(scale) / 12) * (1 + vibrato * np.sin(2 * np.pi * 5 * t))
        envelope = np.minimum(1, t / 0.02) * np.exp(-2 * t)
        pieces.append(_harmonic(frequency, t, 6) * envelope)
        total += length
    return np.concatenate(pieces)[: int(SIGNAL_SECONDS * SAMPLE_RATE)]


def non_speech_signals(seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Generated non-speech, :data:`VARIANTS_PER_KIND` signals per kind (levels and seeds vary)."""
    rng = np.random.default_rng(seed)
    t = _seconds()
    levels = np.linspace(-45, -12, VARIANTS_PER_KIND)
    silence = np.zeros(SAMPLE_RATE, np.float32)
    kinds: dict[str, list[np.ndarray]] = {}
    for colour in ("white", "pink", "brown"):
        kinds[f"{colour} noise"] = [
            _at_level(coloured_noise(colour, SIGNAL_SECONDS, rng), db) for db in levels
        ]
        kinds[f"1 s of digital silence, then {colour} noise"] = [
            np.concatenate([silence, _at_level(coloured_noise(colour, SIGNAL_SECONDS - 1, rng), db)])
            for db in levels
        ]
    kinds["mains hum (50 / 60 Hz + harmonics, some with hiss)"] = [
        _at_level(_harmonic((50, 60)[i % 2], t, 8) + (0.05 * rng.standard_normal(t.size) if i % 2 else 0), db)
        for i, db in enumerate(levels)
    ]
    kinds["pure tones (100-1000 Hz)"] = [
        _at_level(np.sin(2 * np.pi * f * t), db)
        for f, db in zip(np.geomspace(100, 1000, VARIANTS_PER_KIND), levels, strict=True)
    ]
    kinds["1 kHz beeps (on / off)"] = [
        _at_level(np.sin(2 * np.pi * 1000 * t) * ((t % period) < period / 2), db)
        for period, db in zip(np.linspace(0.2, 1.0, VARIANTS_PER_KIND), levels, strict=True)
    ]
    kinds["chords (major triads, 6 partials)"] = [
        _at_level(
            sum(_harmonic(root * 2 ** (step / 12), t, 6) for step in (0, 4, 7)) * (0.6 + 0.4 * np.cos(t)),
            db,
        )
        for root, db in zip(np.geomspace(110, 330, VARIANTS_PER_KIND), levels, strict=True)
    ]
    kinds["melodies (steady notes)"] = [_at_level(_melody(rng), db) for db in levels]
    kinds["melodies with 5 Hz vibrato (sung-like)"] = [_at_level(_melody(rng, 0.02), db) for db in levels]
    kinds["silence (digital zero, dither)"] = [
        np.zeros(t.size, np.float32) if i % 2 == 0 else _at_level(rng.standard_normal(t.size), -90)
        for i in range(VARIANTS_PER_KIND)
    ]
    return kinds


# --- measurement --------------------------------------------------------------------------


def corpus_files(folder: Path, patterns: tuple[str, ...], limit: int) -> list[Path]:
    """The corpus's clips, sorted; every k-th one when ``limit`` asks for at most that many."""
    files = sorted(p for pattern in patterns for p in folder.rglob(pattern))
    if limit and len(files) > limit:
        step = int(np.ceil(len(files) / limit))
        files = files[::step]
    return files


def measure_files(files: list[Path]) -> dict:
    """Share of clips with speech, voice seconds, and the clips with and without speech."""
    from mer_utils.media import MediaError
    from mer_utils.voice import stream_voice_activity

    seconds, missed, found, unreadable = [], [], [], []
    for path in files:
        try:
            activity = stream_voice_activity(path, SAMPLE_RATE)
        except (MediaError, FileNotFoundError) as error:
            unreadable.append(f"{path.name}: {error}")
            continue
        seconds.append(activity.seconds)
        (found if activity.has_speech else missed).append(f"{path.name} ({activity.seconds:.2f} s)")
    seconds_array = np.array(seconds)
    return {
        "clips": len(seconds),
        "speech": float(np.mean([s >= 0.5 for s in seconds])) if seconds else float("nan"),
        "median_voice_seconds": float(np.median(seconds_array)) if seconds else float("nan"),
        "min_voice_seconds": float(seconds_array.min()) if seconds else float("nan"),
        "missed": missed,
        "found": found,
        "unreadable": unreadable,
    }


def measure_signals(signals: list[np.ndarray], folder: Path, name: str) -> dict:
    """As :func:`measure_files`, for generated signals written as 16-bit WAV files (as a user would)."""
    from mer_utils.media import write_wav

    files = [write_wav(folder / f"{name}_{i}.wav", y, SAMPLE_RATE) for i, y in enumerate(signals)]
    return measure_files(files)


def _rate(value: float) -> float:
    return round(float(value), 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="folder with the real corpora (../shared/data)")
    parser.add_argument("--demo", type=Path, help="also the demo set's clips (mer demo-data DIR)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many clips per corpus (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated non-speech")
    parser.add_argument("--results", help="write the table into results/NAME.json (e.g. voice)")
    args = parser.parse_args(argv)

    rows: list[dict] = []
    start = time.perf_counter()
    corpora = [(name, args.data / sub, patterns) for name, sub, patterns in CORPORA] if args.data else []
    if args.demo:
        corpora.append(("demo set (synthetic voices, `mer demo-data`)", args.demo, ("*.mp4",)))
    for name, folder, patterns in corpora:
        if not folder.is_dir():
            print(f"{name}: {folder} not found, skipped", file=sys.stderr)
            continue
        result = measure_files(corpus_files(folder, patterns, args.limit))
        print(
            f"speech  {name}: {result['speech']:.3f} kept of {result['clips']} clips "
            f"(voice median {result['median_voice_seconds']:.2f} s, min {result['min_voice_seconds']:.2f} s)"
            + (f"; missed: {', '.join(result['missed'][:10])}" if result["missed"] else "")
            + (f"; unreadable: {len(result['unreadable'])}" if result["unreadable"] else "")
        )
        rows.append(
            {
                "name": name,
                "key": f"speech: {folder.name}",
                "values": {
                    "clips": result["clips"],
                    "counted as speech": _rate(result["speech"]),
                    "voice s, median": round(result["median_voice_seconds"], 2),
                    "voice s, least": round(result["min_voice_seconds"], 2),
                },
                "details": {"missed": result["missed"], "unreadable": result["unreadable"]},
            }
        )
    with tempfile.TemporaryDirectory() as scratch:
        for index, (kind, signals) in enumerate(non_speech_signals(args.seed).items()):
            result = measure_signals(signals, Path(scratch), f"kind{index}")
            print(
                f"no speech  {kind}: {1 - result['speech']:.3f} rejected of {result['clips']} "
                f"(voice median {result['median_voice_seconds']:.2f} s)"
            )
            rows.append(
                {
                    "name": kind,
                    "key": f"non-speech: {kind}",
                    "values": {
                        "clips": result["clips"],
                        "rejected as no speech": _rate(1 - result["speech"]),
                        "voice s, median": round(result["median_voice_seconds"], 2),
                    },
                    "details": {"counted as speech": result["found"]},
                }
            )
    elapsed = time.perf_counter() - start
    print(f"{elapsed:.0f} s")
    if args.results:
        from mer_utils.results import command_line, update_results

        protocol = (
            "each clip read whole at 16 kHz and checked as `mer predict` checks it "
            "(mer_utils.voice.clip_voice_activity: at least 0.5 s of voice); generated non-speech: "
            f"{VARIANTS_PER_KIND} signals of {SIGNAL_SECONDS:.0f} s per kind at -45 to -12 dBFS RMS, "
            f"written as 16-bit WAV, seed {args.seed}"
        )
        defaults = {
            "title": "Voice activity",
            "data": {
                "path": str(args.data or args.demo),
                "description": "real speech corpora (RAVDESS, URDU, TurEV-DB, CREMA-D / RAVDESS clips) and generated non-speech",
            },
            "protocol": {"test": protocol},
            "protocol_update": {"test": protocol},
            "row_label": "signal",
            "value_decimals": {
                "counted as speech": 3,
                "rejected as no speech": 3,
                "voice s, median": 2,
                "voice s, least": 2,
            },
        }
        path = update_results(args.results, rows, command_line(__file__, argv), defaults)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
