"""Predict every video clip of a folder with `mer predict`'s core and print (or record) a table.

The models are loaded once; each clip is predicted as a lone file (no RAVDESS folder around
it). For each clip: the acted emotion (from a RAVDESS or CREMA-D file name), the fused label and
its probability, each modality's label, the face detectors that found the faces, and the time.

    .venv/bin/python scripts/predict_real_clips.py ../shared/data/real_video --models runs/faces [runs/audio] \
        [--results faces_clips]   # write the rows into results/faces_clips.json

Then ``python scripts/render_results.py`` updates the README table.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

# Video containers the clips come in.
VIDEO_SUFFIXES = {".mp4", ".flv", ".avi", ".mov", ".mkv", ".webm"}
# CREMA-D's emotion codes (file names like 1001_DFA_ANG_XX.flv) -> the RAVDESS label names.
CREMA_D_EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}


def acted_emotion(path: Path) -> str | None:
    """The emotion a clip's file name says was acted (RAVDESS or CREMA-D naming), else None."""
    from mer_utils.ravdess import parse_filename

    try:
        return parse_filename(path).emotion
    except ValueError:
        pass
    match = re.match(r"^\d{4}_[A-Z]{3}_([A-Z]{3})_[A-Z]{2}$", path.stem)
    return CREMA_D_EMOTIONS.get(match.group(1)) if match else None


def face_detectors(result: dict) -> str:
    """Which detectors found the faces of the clip's frames, e.g. ``mtcnn 8/8`` (video-like runs)."""
    for outcome in result["modalities"].values():
        details = outcome.get("details") or {}
        counts, frames = details.get("detectors"), details.get("frames")
        if counts and frames:
            ranked = Counter({str(k): int(v) for k, v in counts.items()}).most_common()
            return ", ".join(f"{name} {count}/{frames}" for name, count in ranked)
    return ""


def clip_row(clip: Path, root: Path, result: dict) -> dict:
    """One results row of a predicted clip."""
    truth = acted_emotion(clip)
    label = result["label"]
    probability = result["fused_probabilities"][result["labels"].index(label)]
    per_modality = {
        name: (
            result["labels"][int(np.argmax(outcome["probabilities"]))]
            if outcome.get("available")
            else f"- ({outcome.get('reason')})"
        )
        for name, outcome in result["modalities"].items()
    }
    seconds = sum(v for k, v in result["timings"].items() if k.startswith("predict "))
    return {
        "key": clip.relative_to(root).as_posix(),
        "name": clip.relative_to(root).as_posix(),
        "values": {
            "truth": truth or "?",
            "predicted": f"**{label}**" if truth == label else label,
            "p": round(float(probability), 2),
            **{f"{name}": value for name, value in per_modality.items()},
            "faces found": face_detectors(result),
            "s per clip": round(seconds, 1),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of video clips (searched recursively)")
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="run folders, as `mer predict`")
    parser.add_argument("--results", help="write the rows into results/RESULTS.json")
    args = parser.parse_args(argv)

    from mer_utils.predict import NoModalityError, load_models, predict_clip

    clips = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        parser.error(f"{args.folder}: no video clips ({sorted(VIDEO_SUFFIXES)})")
    loaded = load_models(args.models)
    rows = []
    for clip in clips:
        try:
            result = predict_clip(clip, loaded=loaded)
        except (NoModalityError, ValueError, OSError) as error:
            print(f"{clip}: skipped: {error}", file=sys.stderr)
            continue
        row = clip_row(clip, args.folder, result)
        rows.append(row)
        print(row["name"], " | ".join(f"{k} {v}" for k, v in row["values"].items()), flush=True)
    right = sum(row["values"]["predicted"].startswith("**") for row in rows)
    print(f"{right} of {len(rows)} clips predicted as acted")
    if args.results:
        from mer_utils.results import command_line, update_results

        defaults = {
            "title": "Real clips predicted with `mer predict`",
            "data": {"path": str(args.folder), "description": f"{len(clips)} real acted-emotion video clips"},
            "protocol": {
                "split": "each clip predicted alone with the run folders "
                + ", ".join(str(m) for m in args.models),
                "test": "the label acted (from the file name); s per clip after the models are loaded",
                "n": len(rows),
            },
            "row_label": "clip",
            "value_decimals": {"p": 2, "s per clip": 1},
        }
        path = update_results(args.results, rows, command_line(__file__, argv), defaults)
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
