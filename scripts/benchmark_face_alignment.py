"""Measure how the faces branch answers clips with box crops against eye-aligned grey crops.

Each clip's frames are read and their faces detected once (the faces run's own detector chain
and frames); the same boxes are then cropped three ways and classified by the faces run:

- ``box, colour``: today's square box crop with the run's margin, in colour;
- ``box, grey``: the same crop made grey (the FER2013 network was trained on grey faces);
- ``aligned, grey``: MTCNN faces rotated so the eyes are level and framed like FER2013
  (:func:`mer_utils.faces.align_face`), grey; Haar and centre crops keep the box crop.

For each, the clip label is the mean of the frame probabilities weighted by detection confidence
and face size (:func:`mer_utils.faces.frame_weights`); ``aligned, grey, plain mean`` repeats the
aligned crops with the unweighted mean. A clip counts as right when that label is the acted
emotion of its file name (RAVDESS or CREMA-D naming); clips acting calm (which FER2013 has no
label for) are left out of the counts.

    .venv/bin/python scripts/benchmark_face_alignment.py ../shared/data/real_video \\
        --run mer_utils/default_runs/faces [--per-clip] [--results faces_alignment --set real]
    .venv/bin/python scripts/benchmark_face_alignment.py data/demo --run mer_utils/default_runs/faces \\
        --limit 60 --results faces_alignment --set demo
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

# Video containers the clips come in.
VIDEO_SUFFIXES = {".mp4", ".flv", ".avi", ".mov", ".mkv", ".webm"}
# The crop variants compared: (column name, align, grey, weighted clip mean).
VARIANTS = (
    ("box, colour", False, False, True),
    ("box, grey", False, True, True),
    ("aligned, grey", True, True, True),
    ("aligned, grey, plain mean", True, True, False),
)


def clip_answers(clip: Path, run_dir: Path, info: dict, network) -> dict:
    """Per variant: the clip's label and its probabilities (detection runs once for all variants)."""
    from mer_utils.faces import crops_from_boxes, detect_faces, frame_weights, weighted_clip_mean
    from mer_utils.media import read_frames
    from mer_utils.models.faces import face_probabilities
    from mer_utils.pipelines.faces import _present, clip_face_params

    base_params = clip_face_params(info)
    frames = read_frames(clip, base_params.num_frames, start=base_params.start, stop=base_params.stop)
    boxes = detect_faces(list(frames), base_params.detectors)
    labels, present = list(info["labels"]), _present(info)
    answers = {}
    for name, align, gray, weighted in VARIANTS:
        crops = crops_from_boxes(frames, boxes, replace(base_params, align=align, gray=gray))
        keep = np.array([d != "none" for d in crops.detectors])
        frame_probabilities = face_probabilities(network, crops.faces[keep], present, batch_size=64)
        weights = frame_weights(crops)[keep] if weighted else np.ones(int(keep.sum()))
        probabilities = weighted_clip_mean(frame_probabilities, weights)
        answers[name] = {
            "label": labels[int(np.argmax(probabilities))],
            "probabilities": probabilities,
            "aligned": int(crops.aligned.sum()),
            "frames": len(crops.detectors),
        }
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of video clips (searched recursively)")
    parser.add_argument("--run", type=Path, required=True, help="a `mer train faces` run folder")
    parser.add_argument("--limit", type=int, help="at most this many clips (every k-th, in name order)")
    parser.add_argument("--per-clip", action="store_true", help="also write one row per clip")
    parser.add_argument("--results", help="write the rows into results/RESULTS.json")
    parser.add_argument("--set", default="clips", help="name of this clip set in the rows (e.g. real, demo)")
    args = parser.parse_args(argv)

    from predict_real_clips import acted_emotion  # this folder is on sys.path when run as a script

    from mer_utils.pipelines import base
    from mer_utils.pipelines.faces import BRANCH
    from mer_utils.runs import read_run_info

    clips = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not clips:
        parser.error(f"{args.folder}: no video clips ({sorted(VIDEO_SUFFIXES)})")
    if args.limit and len(clips) > args.limit:
        clips = clips[:: int(np.ceil(len(clips) / args.limit))]
    info = read_run_info(args.run)
    if info.get("branch") != BRANCH:
        parser.error(f"{args.run}: not a faces run (branch {info.get('branch')!r})")
    network = base.load_model(args.run, BRANCH)
    labels = list(info["labels"])
    names = [name for name, *_ in VARIANTS]
    right = dict.fromkeys(names, 0)
    truth_probability = {name: [] for name in names}
    rows, counted, aligned_frames, all_frames = [], 0, 0, 0
    started = time.perf_counter()
    for clip in clips:
        truth = acted_emotion(clip)
        try:
            answers = clip_answers(clip, args.run, info, network)
        except (ValueError, OSError) as error:
            print(f"{clip}: skipped: {error}", file=sys.stderr)
            continue
        aligned_frames += answers["aligned, grey"]["aligned"]
        all_frames += answers["aligned, grey"]["frames"]
        scored = truth is not None and truth in info.get("present_labels", labels)
        if scored:
            counted += 1
            for name in names:
                right[name] += answers[name]["label"] == truth
                truth_probability[name].append(float(answers[name]["probabilities"][labels.index(truth)]))
        values = {"truth": truth or "?"}
        for name in names:
            label = answers[name]["label"]
            values[name] = f"**{label}**" if label == truth else label
            if scored:
                values[f"p(truth) {name}"] = round(truth_probability[name][-1], 3)
        print(clip.relative_to(args.folder), " | ".join(f"{k} {v}" for k, v in values.items()), flush=True)
        if args.per_clip:
            key = f"{args.set}/{clip.relative_to(args.folder).as_posix()}"
            rows.append({"key": key, "name": key, "values": values})
    if not counted:
        print("no clip with a known acted emotion the run can name")
        return 1
    summary = {"clips": counted, "aligned frames": f"{aligned_frames}/{all_frames}"}
    for name in names:
        summary[f"right {name}"] = f"{right[name]}/{counted}"
        summary[f"mean p(truth) {name}"] = round(float(np.mean(truth_probability[name])), 3)
    print(" | ".join(f"{k} {v}" for k, v in summary.items()))
    print(f"{time.perf_counter() - started:.0f} s")
    if args.results:
        from mer_utils.results import command_line, update_results

        rows.insert(
            0, {"key": f"{args.set}/all", "name": f"{args.set}: all {counted} clips", "values": summary}
        )
        defaults = {
            "title": "Faces branch on clips: box crops against eye-aligned crops",
            "data": {
                "path": "DATA_DIR/real_video and data/demo",
                "description": "real acted clips; demo clips",
            },
            "protocol": {
                "split": f"the faces run {args.run} (never trained on these clips); one detection per frame",
                "test": "the acted emotion of the file name; calm clips left out (FER2013 has no calm); "
                "a set's summary row counts its clips",
            },
            "row_label": "clips",
        }
        path = update_results(args.results, rows, command_line(__file__, argv), defaults)
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
