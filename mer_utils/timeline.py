"""Emotion over time (`mer predict CLIP --timeline`): sliding windows over one clip, each predicted and fused.

Windows of ``window`` seconds start every ``hop`` seconds (defaults :data:`WINDOW_SECONDS` and
:data:`HOP_SECONDS`); the last one ends at the clip's end and may be shorter (:func:`window_grid`).
The clip is decoded once and streamed (:func:`mer_utils.media.iter_window_frames` and
:func:`~mer_utils.media.iter_window_audio`), so memory does not grow with its length. Each window
goes through every run's single-clip prediction (:func:`mer_utils.pipelines.base.predict_segment`:
faces from the window's frames, voice check and audio features from the window's sound), with the
reason when a modality has nothing to read in that window (no face, no speech). The fused
probabilities come from the fusion of `mer predict --fusion` when a `mer fuse` folder is given,
else from the mean of the available modalities; the ``fusion`` column says which.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy, pandas and the branches load only when a timeline is made: `mer --help` stays fast
    import numpy as np
    import pandas as pd

    from mer_utils.pipelines.base import Segment

# Window length (s): long enough to hold a spoken phrase (a RAVDESS sentence lasts about 3 s).
WINDOW_SECONDS = 3.0
# Seconds between window starts: one answer a second, each window overlapping the next by 2 s.
HOP_SECONDS = 1.0
# Sample rate of the windows' sound: every audio branch's features work at 16 kHz.
SAMPLE_RATE = 16_000
# Frames sampled per window when no run states its own count (mer_utils.faces.NUM_FRAMES).
DEFAULT_FRAMES = 8
# What the ``fusion`` column says when no `mer fuse` folder is given.
MEAN_FUSION = "mean of the available modalities"
# First columns of the timeline CSV (then, per modality, <name>_available, <name>_reason and
# <name>_prob_<label>; then fused_prob_<label>).
TIMELINE_COLUMNS = ("window", "start", "end", "fused_label", "fused_probability", "fusion")


def check_window(window: float, hop: float) -> None:
    """Refuse window lengths and hops that cannot make a timeline, saying why."""
    for name, value in (("--window", window), ("--hop", hop)):
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if hop > window:
        raise ValueError(
            f"--hop {hop:g} s is longer than --window {window:g} s: the clip between windows would "
            "never be read; give a hop no longer than the window"
        )


def window_grid(
    duration: float, window: float = WINDOW_SECONDS, hop: float = HOP_SECONDS
) -> list[tuple[float, float]]:
    """(start, end) in seconds of the windows over a clip of ``duration`` seconds.

    Windows start every ``hop`` seconds until one reaches the clip's end; that last one is cut at
    the end (shorter than ``window`` unless the grid fits exactly). A clip shorter than one window
    is one window, the whole clip.
    """
    check_window(window, hop)
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"a clip of {duration!r} s has no windows")
    # A small tolerance keeps float noise (3.0000001 s) from adding a sliver of a window.
    count = 1 + max(0, math.ceil((duration - window) / hop - 1e-9))
    return [
        (float(round(k * hop, 6)), float(round(min(k * hop + window, duration), 6))) for k in range(count)
    ]


def clip_duration(path: str | Path) -> float:
    """A clip's length in seconds: the container's, else its audio counted as it streams (no frames kept)."""
    from mer_utils.media import MediaError, iter_audio, probe

    info = probe(path)
    if info["duration"]:
        return float(info["duration"])
    if info["has_audio"]:
        return sum(block.size for block in iter_audio(path, SAMPLE_RATE)) / SAMPLE_RATE
    raise MediaError(
        f"{path}: the container states no duration; re-encode it (e.g. ffmpeg -i IN -c copy OUT.mp4)"
    )


def iter_segments(
    clip: str | Path,
    windows: Sequence[tuple[float, float]],
    num_frames: int = DEFAULT_FRAMES,
    frames: bool = True,
    audio: bool = True,
) -> Iterator[Segment]:
    """Each window of ``clip`` decoded into a :class:`~mer_utils.pipelines.base.Segment`, streamed.

    ``frames`` / ``audio`` say which streams to decode at all; a stream that cannot be read (none
    in the file, corrupt) leaves every window without it, with the reason.
    """
    from mer_utils.media import MediaError, iter_window_audio, iter_window_frames
    from mer_utils.pipelines.base import Segment

    clip = Path(clip)

    def stream(make, wanted: bool):
        """Items of one stream per window, or (None, reason) for every window when it cannot be read."""
        if not wanted:
            yield from ((None, "not read") for _ in windows)
            return
        items = make()
        try:
            for item in items:
                yield item, None
        except (MediaError, FileNotFoundError) as error:
            reason = str(error).replace(f"{clip}: ", "", 1)
            yield from ((None, reason) for _ in windows)
        finally:
            items.close()

    video = stream(lambda: iter_window_frames(clip, windows, num_frames), frames)
    sound = stream(lambda: iter_window_audio(clip, windows, SAMPLE_RATE), audio)
    for (start, end), (images, frames_reason), (samples, audio_reason) in zip(
        windows, video, sound, strict=False
    ):
        yield Segment(
            clip,
            start,
            end,
            frames=images,
            audio=samples,
            sample_rate=SAMPLE_RATE,
            frames_reason=frames_reason,
            audio_reason=audio_reason,
        )


def _reads_frames(entry: dict) -> bool:
    return hasattr(entry["module"], "segment_prediction")


def _frames_per_window(loaded: dict) -> int:
    """Frames per window: the most any frame-reading run samples from a clip."""
    from mer_utils.runs import read_run_info

    counts = [
        int(read_run_info(entry["run_dir"]).get("faces", {}).get("num_frames", DEFAULT_FRAMES))
        for entry in loaded["models"].values()
        if _reads_frames(entry)
    ]
    return max(counts, default=DEFAULT_FRAMES)


def _fuse(loaded: dict, probabilities: dict, use_fusion: bool) -> np.ndarray | None:
    """A window's fused probabilities: `mer predict`'s fusion, or the mean of the available modalities."""
    import numpy as np

    present = [np.asarray(p, dtype=float) for p in probabilities.values() if p is not None]
    if not present:
        return None
    if not use_fusion:
        return np.mean(present, axis=0)
    from mer_utils.fusion.methods import fuse_single
    from mer_utils.fusion.parameters import single_clip_rule, trust_and_temperatures

    trust, temperatures = trust_and_temperatures(loaded["parameters"])
    rule = single_clip_rule(loaded["parameters"])
    fused = fuse_single(probabilities, trust, temperatures, labels=loaded["labels"], **rule)
    return np.asarray(fused["fused_probabilities"], dtype=float)


def predict_timeline(
    clip: str | Path,
    run_dirs: Sequence[str | Path] | None = None,
    fusion: str | Path | None = None,
    window: float = WINDOW_SECONDS,
    hop: float = HOP_SECONDS,
    loaded: dict | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per window of ``clip``: its times, each modality's answer and the fused answer.

    Columns: :data:`TIMELINE_COLUMNS`, then per modality ``<name>_available``, ``<name>_reason``
    and ``<name>_prob_<label>`` (empty when unavailable), then ``fused_prob_<label>``. With
    ``fusion`` (a `mer fuse` folder) windows are fused as `mer predict --fusion` fuses a clip; without
    it, by the mean of the available modalities. ``attrs`` hold clip, duration, window, hop,
    labels, modalities, fusion and seconds. Raises
    :class:`mer_utils.predict.NoModalityError` when no modality could read any window.
    """
    import numpy as np
    import pandas as pd

    from mer_utils.pipelines import base
    from mer_utils.predict import NoModalityError, load_models

    check_window(window, hop)
    clip = Path(clip)
    if not clip.is_file():
        raise FileNotFoundError(f"{clip}: no such file")
    started = time.perf_counter()
    if loaded is None:
        loaded = load_models(run_dirs or [], fusion=fusion, warm_up=False)
    duration = clip_duration(clip)
    windows = window_grid(duration, window, hop)
    labels, models = list(loaded["labels"]), loaded["models"]
    use_fusion = fusion is not None
    fusion_name = (
        f"{loaded['parameters'].get('method')} (the `mer fuse` folder {fusion})"
        if use_fusion
        else MEAN_FUSION
    )
    segments = iter_segments(
        clip,
        windows,
        _frames_per_window(loaded),
        frames=any(_reads_frames(entry) for entry in models.values()),
        audio=not all(_reads_frames(entry) for entry in models.values()),
    )
    if progress:
        from tqdm.auto import tqdm

        segments = tqdm(segments, total=len(windows), desc=f"{clip.name} windows", unit="window")
    rows, first_reasons = [], {}
    for number, segment in enumerate(segments):
        row: dict = {"window": number, "start": segment.start, "end": segment.end}
        probabilities = {}
        for name, entry in models.items():
            outcome = base.predict_segment(entry["run_dir"], segment, model=entry["model"])
            available = bool(outcome["available"])
            probabilities[name] = outcome["probabilities"] if available else None
            row[f"{name}_available"] = available
            row[f"{name}_reason"] = "" if available else str(outcome.get("reason") or "")
            for k, label in enumerate(labels):
                row[f"{name}_prob_{label}"] = float(outcome["probabilities"][k]) if available else np.nan
            if not available:
                first_reasons.setdefault(name, row[f"{name}_reason"])
        fused = _fuse(loaded, probabilities, use_fusion)
        row["fused_label"] = labels[int(np.argmax(fused))] if fused is not None else ""
        row["fused_probability"] = float(np.max(fused)) if fused is not None else np.nan
        row["fusion"] = fusion_name
        for k, label in enumerate(labels):
            row[f"fused_prob_{label}"] = float(fused[k]) if fused is not None else np.nan
        rows.append(row)
    if not any(row["fused_label"] for row in rows):
        reasons = "; ".join(f"{name}: {reason}" for name, reason in first_reasons.items())
        raise NoModalityError(f"{clip}: no modality could be used in any window ({reasons})")
    table = pd.DataFrame(rows, columns=timeline_columns(list(models), labels))
    table.attrs.update(
        {
            "clip": str(clip),
            "duration": duration,
            "window": window,
            "hop": hop,
            "labels": labels,
            "modalities": list(models),
            "fusion": fusion_name,
            "seconds": time.perf_counter() - started,
        }
    )
    return table


def timeline_columns(modalities: Sequence[str], labels: Sequence[str]) -> list[str]:
    """The columns of the timeline table, in order (see :func:`predict_timeline`)."""
    columns = list(TIMELINE_COLUMNS)
    for name in modalities:
        columns += [f"{name}_available", f"{name}_reason", *(f"{name}_prob_{label}" for label in labels)]
    return columns + [f"fused_prob_{label}" for label in labels]


def default_csv(clip: str | Path) -> Path:
    """Where the timeline of ``clip`` goes without ``--out``: ``<clip stem>_timeline.csv`` here."""
    return Path(f"{Path(clip).stem}_timeline.csv")


def write_timeline(table: pd.DataFrame, out: str | Path) -> tuple[Path, Path]:
    """Write the table as CSV at ``out`` and its plot beside it (same name, .png); returns both paths."""
    from mer_utils.plotting import plot_timeline, pyplot, save_figure
    from mer_utils.runs import atomic_write_bytes

    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise ValueError(f"{out}: the timeline is written as CSV; give --out a name ending in .csv")
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; give --out a file name ending in .csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, table.to_csv(index=False).encode())
    figure = plot_timeline(table, title=Path(table.attrs.get("clip", out.stem)).name)
    try:
        image = save_figure(figure, out.stem, out.parent)
    finally:
        pyplot().close(figure)
    return out, image


def format_timeline(table: pd.DataFrame, csv: Path, image: Path) -> str:
    """A short report of a timeline: one line per window, then where the files went."""
    lines = [
        f"{table.attrs.get('clip')}: {len(table)} windows of {table.attrs.get('window'):g} s every "
        f"{table.attrs.get('hop'):g} s; fused by {table.attrs.get('fusion')}"
    ]
    for row in table.to_dict("records"):
        missing = [name for name in table.attrs.get("modalities", []) if not row[f"{name}_available"]]
        answer = f"{row['fused_label']} {row['fused_probability']:.2f}" if row["fused_label"] else "no answer"
        note = f"  (unavailable: {', '.join(missing)})" if missing else ""
        lines.append(f"{row['start']:7.1f}-{row['end']:7.1f} s  {answer}{note}")
    lines.append(f"timeline written to {csv} and {image}")
    return "\n".join(lines)
