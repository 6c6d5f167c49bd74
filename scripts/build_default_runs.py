"""Rebuild the run folders that ship inside the package (mer_utils/default_runs/) and record their scores.

The bundled audio run is the default audio model (``mer train audio --model whisper``: frozen
Whisper-base embeddings + logistic regression) trained on every shared speech corpus: RAVDESS
actors 01-18, URDU and TurEV-DB (``--speech-dir``, the shared data folder holding
``ravdess_speech_16k`` and ``speech/``), speaker-disjoint train / val / test inside each corpus
(seed 42), with the recipe chosen on validation by ``scripts/benchmark_cross_corpus.py``
(:data:`mer_utils.default_runs.AUDIO_RECIPE`: model, normalisation, class weights, audio preprocessing);
scored on each corpus's test speakers.

The bundled faces run is the video branch's offline start (`mer train video --init`, notebook 02
without ImageNet weights): the default faces CNN trained on FER2013's train/ for
``BUNDLED_FACE_EPOCHS`` epochs (a short version of the recorded 30-epoch run, so the package stays
small and the rebuild takes well under an hour on 2 cores), scored on validation/ (PublicTest).

    .venv/bin/python scripts/build_default_runs.py --runs audio [--speech-dir ../shared/data] [--results default_runs]
    .venv/bin/python scripts/build_default_runs.py [--data ../shared/data/faces/fer2013] [--epochs 5]
        [--from-run RUN]        # package a finished `mer train faces` run instead of training one
        [--results default_runs]
    .venv/bin/python scripts/build_default_runs.py --val-predictions [--data ...]   # predictions_val.csv only

Only the files needed to load, describe and fuse a run are copied (model.keras or model.skops
with the files run.json's ``model_files`` lists, run.json, metrics.json, history.json,
predictions_val.csv: `mer predict` fits its fusion on every run's validation predictions);
run.json's ``data`` and the tables' paths name the data by its placeholder
(``DATA_DIR/faces/fer2013``), never a path of this machine. ``--val-predictions``
only rewrites predictions_val.csv of the bundled run from its own seeded split of ``--data``. The run is loaded back through
:func:`mer_utils.default_runs.default_run` (checksum checked) before anything is recorded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mer_utils.default_runs import DEFAULT_RUNS_DIR, default_run
from mer_utils.results import (
    command_line,
    load_results,
    placeholder_path,
    real_data_root,
    update_results,
    with_placeholders,
    write_results,
)
from mer_utils.runs import (
    FINGERPRINT_KEY,
    MODEL_FILES_KEY,
    model_file_hashes,
    model_fingerprint,
    save_model,
    stamp_model_labels,
)

# Epochs of the bundled faces run (the recorded default run trains 30).
BUNDLED_FACE_EPOCHS = 5
# Files of a run folder the package carries (besides the model files run.json lists).
KEPT_FILES = ("model.keras", "run.json", "metrics.json", "history.json", "predictions_val.csv")
SEED = 42
# The bundled audio run's shared speech corpora (folders under --speech-dir); its recipe is
# mer_utils.default_runs.AUDIO_RECIPE.
AUDIO_CORPORA = ("ravdess_speech_16k", "speech/urdu", "speech/turev-db")
# The bundled runs this script can build.
BUILDABLE = ("faces", "audio")


def train_audio(speech_dir: Path, out: Path) -> float:
    """Train the default audio model on every shared speech corpus into ``out``; return the seconds."""
    from mer_utils.default_runs import AUDIO_RECIPE
    from mer_utils.pipelines import base

    sources = [speech_dir / name for name in AUDIO_CORPORA]
    missing = [str(s) for s in sources if not s.is_dir()]
    if missing:
        raise FileNotFoundError(
            f"speech corpora not found: {missing} (give --speech-dir, the shared data folder)"
        )
    start = time.perf_counter()
    base.train("audio", [str(s) for s in sources], out, seed=SEED, **AUDIO_RECIPE)
    return time.perf_counter() - start


def train_faces(data: Path, epochs: int, out: Path) -> float:
    """Train the default faces model on ``data`` into ``out``; return the seconds it took."""
    from mer_utils.pipelines import base

    start = time.perf_counter()
    base.train("faces", data, out, seed=SEED, epochs=epochs)
    return time.perf_counter() - start


def package_run(run: Path, target: Path) -> Path:
    """Copy the kept files of ``run`` into ``target`` (replaced), with run.json's data as a placeholder."""
    if not (run / "run.json").is_file():
        raise FileNotFoundError(f"{run}: not a run folder (no run.json)")
    partial = target.with_name(f"{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    listed = json.loads((run / "run.json").read_text()).get(MODEL_FILES_KEY, {})
    for name in dict.fromkeys([*KEPT_FILES, *listed]):
        if (run / name).is_file():
            shutil.copy2(run / name, partial / name)
    info = json.loads((partial / "run.json").read_text())
    info["data"] = with_placeholders(str(info["data"]))
    if (partial / "predictions_val.csv").is_file():
        _placeholder_paths(partial / "predictions_val.csv")
    if not (partial / "model.keras").is_file():
        # A scikit-learn model (model.skops) is already only its weights: kept byte for byte, hashes too.
        (partial / "run.json").write_text(json.dumps(info, indent=1) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)
        return target
    # The package carries the weights, not the optimizer's state (two more copies of every weight):
    # re-saved uncompiled, label-stamped and hashed again as write_run does.
    import keras

    network = keras.models.load_model(partial / "model.keras", compile=False, safe_mode=True)
    (partial / "model.keras").unlink()
    save_model(partial, network, "keras")
    stamp_model_labels(partial / "model.keras", info["labels"])
    info[MODEL_FILES_KEY] = model_file_hashes(partial)
    info[FINGERPRINT_KEY] = model_fingerprint(info["labels"], info[MODEL_FILES_KEY])
    (partial / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def _placeholder_paths(table_file: Path) -> None:
    """Rewrite the ``path`` column of a prediction table with the data placeholder (no path of this machine)."""
    import pandas as pd

    table = pd.read_csv(table_file, dtype={"true_label": str, "pred_label": str})
    table["path"] = [placeholder_path(str(path)) for path in table["path"]]
    table.to_csv(table_file, index=False)


def write_val_predictions(folder: Path, data: Path) -> Path:
    """predictions_val.csv of the faces run in ``folder``: its model on the validation images of its own
    seeded split of ``data`` (the images that chose its epoch), paths as placeholders."""
    from mer_utils.face_images import load_face_images
    from mer_utils.pipelines import base, faces

    info = json.loads((folder / "run.json").read_text())
    settings = faces.FacesSettings(**info["settings"])
    parts = faces.split(faces.index(data, settings), settings, int(info["seed"]))
    val = parts[parts["split"] == "val"]
    if len(val) != info["split"]["val"]:
        raise ValueError(
            f"{data}: {len(val)} validation images, but the run in {folder} chose its epoch on "
            f"{info['split']['val']}: not the data it was trained on"
        )
    decoded = load_face_images(val, int(info["input_size"]), bool(info["grayscale"]), progress=False)
    present = [label in info["present_labels"] for label in info["labels"]]
    table = faces.image_table(
        base.load_model(folder), decoded.images, decoded.index, list(info["labels"]), present, data
    )
    out = folder / "predictions_val.csv"
    table.to_csv(out, index=False)
    _placeholder_paths(out)
    return out


def result_row(folder: Path, epochs: int, seconds: float | None) -> dict:
    """The results row of a bundled faces run: test metrics, validation accuracy, size and training time."""
    metrics = json.loads((folder / "metrics.json").read_text())
    size_mb = sum(path.stat().st_size for path in folder.iterdir()) / 1e6
    values = {"val accuracy": metrics["val"]["accuracy"], "size MB": round(size_mb, 1)}
    if seconds is not None:
        values["training min (shared CPU)"] = round(seconds / 60, 1)
    return {
        "name": f"bundled faces run (faces CNN, {epochs} epochs)",
        "key": "faces",
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "n": metrics["n"],
        "values": values,
    }


def audio_row(folder: Path, seconds: float | None) -> dict:
    """The results row of the bundled audio run: test speakers of every corpus, each corpus's own figures."""
    metrics = json.loads((folder / "metrics.json").read_text())
    size_mb = sum(path.stat().st_size for path in folder.iterdir()) / 1e6
    values = {"val accuracy": metrics["val"]["accuracy"], "size MB": round(size_mb, 1)}
    for corpus, entry in metrics["per_corpus"].items():
        values[f"{corpus} test accuracy"] = round(entry["accuracy"], 3)
    if seconds is not None:
        values["training min (shared CPU)"] = round(seconds / 60, 1)
    return {
        "name": "bundled audio run (Whisper-base + logistic regression, RAVDESS 01-18 + URDU + TurEV-DB)",
        "key": "audio",
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "n": metrics["n"],
        "values": values,
        "source": (
            "trained on DATA_DIR/ravdess_speech_16k, DATA_DIR/speech/urdu and DATA_DIR/speech/turev-db, "
            "speaker-disjoint split inside each corpus (seed 42); scored on every corpus's test speakers, "
            "8 classes (each corpus's own labels)"
        ),
    }


# What results/default_runs.json says its data are (one file for every bundled run).
RESULTS_DATA = {
    "path": "DATA_DIR",
    "description": (
        "faces: FER2013 (DATA_DIR/faces/fer2013), 48x48 grey faces, 7 labels (no calm); train/ = Training, "
        "validation/ = PublicTest; research and non-commercial use. audio: RAVDESS actors 01-18 (CC BY-NC-SA "
        "4.0), URDU (research use) and TurEV-DB (CC BY-NC-ND 4.0): research, non-commercial use"
    ),
}


def record(name: str, row: dict, argv: list[str] | None) -> None:
    """Write ``row`` into results/NAME.json (rows of the other bundled runs kept)."""
    update_results(
        name,
        [row],
        command_line(__file__, argv),
        {
            "title": "Runs bundled with the package",
            "data": RESULTS_DATA,
            "protocol": {
                "split": "faces: a stratified 10% of train/ picks the epoch, the rest trains; audio: "
                "speaker-disjoint train / val / test inside each corpus",
                "test": "faces: validation/ (FER2013 PublicTest), never seen in training or selection; "
                "audio: the test speakers of each corpus",
            },
        },
    )
    # A file first written for the faces run alone names only FER2013: name every bundled run's data.
    written = load_results(name)
    if written["data"] != RESULTS_DATA:
        written["data"] = RESULTS_DATA
        written["protocol"]["split"] = (
            "faces: a stratified 10% of train/ picks the epoch, the rest trains; audio: speaker-disjoint "
            "train / val / test inside each corpus"
        )
        written["protocol"]["test"] = (
            "faces: validation/ (FER2013 PublicTest), never seen in training or selection; audio: the "
            "test speakers of each corpus"
        )
        write_results(name, written)


def build_audio(args: argparse.Namespace, argv: list[str] | None) -> None:
    """Train (or package ``--from-run``) the bundled audio run and record it."""
    seconds = None
    with tempfile.TemporaryDirectory(prefix="mer-default-run-") as scratch:
        run = args.from_run
        if run is None:
            run = Path(scratch) / "audio"
            seconds = train_audio(args.speech_dir, run)
        package_run(run, DEFAULT_RUNS_DIR / "audio")
    row = audio_row(default_run("audio"), seconds)
    print(json.dumps(row, indent=1))
    if args.results:
        record(args.results, row, argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", choices=BUILDABLE, default=list(BUILDABLE), help="runs to build")
    parser.add_argument("--data", type=Path, default=real_data_root() / "faces" / "fer2013")
    parser.add_argument(
        "--speech-dir", type=Path, default=real_data_root(), help="the folder holding the speech corpora"
    )
    parser.add_argument("--epochs", type=int, default=BUNDLED_FACE_EPOCHS)
    parser.add_argument(
        "--from-run", type=Path, help="package this finished run instead of training (one --runs)"
    )
    parser.add_argument("--results", help="write results/NAME.json (e.g. default_runs)")
    parser.add_argument(
        "--val-predictions", action="store_true", help="only rewrite predictions_val.csv of the bundled run"
    )
    args = parser.parse_args(argv)
    if args.val_predictions:
        print(write_val_predictions(default_run("faces"), args.data))
        return 0
    if args.from_run is not None and len(args.runs) != 1:
        raise SystemExit("--from-run packages one run: give --runs faces or --runs audio")
    if "audio" in args.runs:
        build_audio(args, argv)
    if "faces" not in args.runs:
        return 0
    seconds = None
    with tempfile.TemporaryDirectory(prefix="mer-default-run-") as scratch:
        run = args.from_run
        if run is None:
            if not args.data.is_dir():
                raise SystemExit(
                    f"{args.data}: FER2013 not found (give --data DIR with train/ and validation/)"
                )
            run = Path(scratch) / "faces"
            seconds = train_faces(args.data, args.epochs, run)
        epochs = int(
            json.loads((run / "run.json").read_text()).get("settings", {}).get("epochs", args.epochs)
        )
        package_run(run, DEFAULT_RUNS_DIR / "faces")
    folder = default_run("faces")
    row = result_row(folder, epochs, seconds)
    print(json.dumps(row, indent=1))
    if args.results:
        record(args.results, row, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
