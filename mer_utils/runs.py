"""Run folders: the public on-disk interface of every trained model.

A run folder holds ``model.*``: ``model.keras`` (Keras, loaded with ``safe_mode``) or
``model.skops`` (scikit-learn text and audio models, in skops format: loading it rebuilds only
allow-listed types and runs no code), ``run.json`` (branch, label order and the preprocessing
parameters the model was trained with, so ``mer predict`` / ``mer evaluate`` need nothing else,
plus the SHA-256 of every model file and a fingerprint binding them to the label order),
``metrics.json`` and ``predictions_val.csv`` / ``predictions_test.csv`` (see
:mod:`mer_utils.evaluation`). Every branch saves and loads its model through :func:`save_model`
and :func:`load_model_file`, and reads run.json through :func:`read_run_info`, which validates it.
Runs written before skops hold ``model.joblib`` (a pickle): refused unless ``MER_TRUST_PICKLE=1``;
runs without checksums are refused unless ``MER_TRUST_RUN=1`` (``--trust-run``). The label order
is also stored inside the model file and compared with run.json on load. Whether a model.skops
is trusted is decided from the type names in its schema alone, before anything is imported.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mer_utils import branches as branch_registry

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
KERAS_MODEL_FILE = "model.keras"

log = logging.getLogger(__name__)
# os.umask can only be read by setting it: one thread at a time.
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's file-mode creation mask (read by setting it and putting it back)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file and rename, so readers never see half a file.

    The file gets the mode a plain ``open(path, "w")`` would give it (0666 minus the umask), not
    the private 0600 of the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_npz(path: str | Path, compressed: bool = False, **arrays: Any) -> Path:
    """Write NumPy arrays as one .npz file atomically (``compressed`` uses ``savez_compressed``)."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (indented, keys in insertion order)."""
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    return atomic_write_bytes(path, text.encode())


def read_json(path: str | Path) -> Any:
    """Read a JSON file, with an error naming the file when it is missing or broken."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def check_run_dir(run_dir: str | Path) -> Path:
    """Return ``run_dir`` as a Path after checking it is a run folder (has run.json)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder does not exist")
    if not (run_dir / RUN_FILE).is_file():
        raise ValueError(f"{run_dir}: not a run folder (no {RUN_FILE}); train one with `mer train`")
    return run_dir


def write_run_info(
    run_dir: str | Path, branch: str, labels: list[str], extra_model_files: Sequence[str] = (), **params: Any
) -> Path:
    """Write ``run.json``: branch, labels, parameters, and the SHA-256 of the model files saved so far.

    Call it after the model is saved. ``extra_model_files`` names further files or folders the
    model needs (a vocabulary, normalisation statistics, fine-tuned weights); they are hashed too.
    The label order is also written into model.keras / model.skops (:func:`stamp_model_labels`),
    so it travels with the weights and a changed run.json is caught even with its hashes recomputed.
    """
    for path in sorted(Path(run_dir).glob("model.*")):
        if path.suffix in (".keras", ".skops"):
            stamp_model_labels(path, labels)
    hashes = model_file_hashes(run_dir, extra_model_files)
    info = {
        "branch": branch,
        "labels": list(labels),
        **params,
        MODEL_FILES_KEY: hashes,
        FINGERPRINT_KEY: model_fingerprint(labels, hashes),
    }
    return write_json(Path(run_dir) / RUN_FILE, info)


def read_run_info(run_dir: str | Path, complete: bool = False) -> dict:
    """Read and validate a run folder's ``run.json`` (clear errors for a missing or bad key).

    ``complete`` also requires the keys the branch needs to predict (:data:`BRANCH_KEYS`);
    without it (fusion, listing) only branch, labels and the checksums are required.
    """
    run_dir = check_run_dir(run_dir)
    return validate_run_info(read_json(run_dir / RUN_FILE), run_dir, complete=complete)


def write_metrics(run_dir: str | Path, metrics: dict) -> Path:
    """Write ``metrics.json`` into a run folder."""
    return write_json(Path(run_dir) / METRICS_FILE, metrics)


def write_predictions(run_dir: str | Path, split: str, table: pd.DataFrame) -> Path:
    """Write ``predictions_<split>.csv`` atomically."""
    path = Path(run_dir) / f"predictions_{split}.csv"
    return atomic_write_bytes(path, table.to_csv(index=False).encode())


def read_predictions(run_dir: str | Path, split: str) -> pd.DataFrame:
    """Read ``predictions_<split>.csv`` of a run folder."""
    path = Path(run_dir) / f"predictions_{split}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions for split '{split}' in this run")
    return pd.read_csv(path, dtype={"clip_id": str, "true_label": str})


# --- model files: safe formats, checksums, the label fingerprint ------------------------------


class _BranchKeys(Mapping):
    """Keys (and their JSON types) each branch reads from run.json besides branch and labels.

    A live view of the branch registry (:mod:`mer_utils.branches`, each ``Branch.run_keys``).
    """

    def __getitem__(self, branch: str) -> dict[str, type]:
        if branch not in branch_registry.REGISTRY:
            raise KeyError(branch)
        return dict(branch_registry.REGISTRY[branch].run_keys)

    def __iter__(self) -> Iterator[str]:
        return iter(branch_registry.branch_names())

    def __len__(self) -> int:
        return len(branch_registry.REGISTRY)


BRANCH_KEYS: Mapping[str, dict[str, type]] = _BranchKeys()
# scikit-learn models are written with skops, which rebuilds objects without running their code.
SKOPS_MODEL_FILE = "model.skops"
# Runs written before skops: pickles, which run arbitrary code on load; refused unless trusted.
PICKLE_MODEL_FILE = "model.joblib"
# Set to 1 to load an old model.joblib that you made yourself (never one you were sent).
TRUST_PICKLE_ENV = "MER_TRUST_PICKLE"
# run.json keys written at training: SHA-256 per model file, and one hash binding them to the labels.
MODEL_FILES_KEY = "model_files"
FINGERPRINT_KEY = "model_fingerprint"
# Set to 1 to load a run whose run.json has no checksums (a run you made yourself, before they existed).
TRUST_RUN_ENV = "MER_TRUST_RUN"
# Zip member written into model.keras / model.skops holding the label order the model was trained with.
LABELS_MEMBER = "mer_labels.json"
# Node kinds of a skops schema whose imports are all named by the node's "__module__" and
# "__class__" (MethodNode adds its method name). A file using any other kind is refused.
SKOPS_KNOWN_LOADERS = frozenset(
    {
        "BytesNode",
        "CachedNode",
        "DTypeNode",
        "DictNode",
        "FunctionNode",
        "JsonNode",
        "ListNode",
        "LossNode",
        "NdArrayNode",
        "ObjectNode",
        "RandomStateNode",
        "SetNode",
        "TreeNode",
        "TupleNode",
        "TypeNode",
    }
)
# Every type and function a skops model of this project may name, fully qualified. Trust is
# decided from these names alone (no prefix rule, no import) before skops reads the file;
# tests/test_hostile_inputs.py checks that every scikit-learn model `mer train` writes stays
# within this list. A new model type is added here by its full name.
SKOPS_ALLOWED_NAMES = frozenset(
    {
        # containers and scalars
        "builtins.bool",
        "builtins.bytes",
        "builtins.dict",
        "builtins.float",
        "builtins.int",
        "builtins.list",
        "builtins.set",
        "builtins.str",
        "builtins.tuple",
        "numpy.bool_",
        "numpy.dtype",
        "numpy.float32",
        "numpy.float64",
        "numpy.int32",
        "numpy.int64",
        "numpy.ndarray",
        "numpy.str_",
        "numpy.random.mtrand.RandomState",
        # scikit-learn estimators and their fitted parts (audio and text models)
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn.calibration.CalibratedClassifierCV",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.feature_extraction.text.TfidfTransformer",
        "sklearn.feature_extraction.text.TfidfVectorizer",
        "sklearn.feature_selection._univariate_selection.SelectKBest",
        "sklearn.linear_model._logistic.LogisticRegression",
        "sklearn.linear_model._stochastic_gradient.SGDClassifier",
        "sklearn.naive_bayes.ComplementNB",
        "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
        "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.pipeline.FeatureUnion",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._function_transformer.FunctionTransformer",
        "sklearn.preprocessing._label.LabelBinarizer",
        "sklearn.svm._classes.LinearSVC",
        "sklearn.svm._classes.SVC",
        "sklearn.tree._classes.DecisionTreeClassifier",
        "sklearn.tree._tree.Tree",
        # library functions a model refers to (feature-selection scores)
        "sklearn.feature_selection._univariate_selection.chi2",
        "sklearn.feature_selection._univariate_selection.f_classif",
        # mer's own model classes and the text cleaning function
        "mer_utils.models.text.AveragedProbabilities",
        "mer_utils.models.text.SentenceEmbeddings",
        "mer_utils.models.text.SoftmaxScores",
        "mer_utils.models.text_finetune.FineTunedMiniLM",
        "mer_utils.text.clean_texts",
    }
)
_HEX = frozenset("0123456789abcdef")


class UnsafeModelError(ValueError):
    """A model file that could run code on load, or whose checksum is not the recorded one."""


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file, read in blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model(run_dir: str | Path, model: Any, kind: str) -> Path:
    """Write a run's model atomically: ``kind`` "keras" -> model.keras, "sklearn" -> model.skops."""
    run_dir = Path(run_dir)
    if kind not in ("keras", "sklearn"):
        raise ValueError(f"unknown model kind {kind!r}; expected 'keras' or 'sklearn'")
    run_dir.mkdir(parents=True, exist_ok=True)
    # The folder stops being a run until write_run_info writes run.json again (after every other
    # file), so training cut short leaves no folder that looks like a finished run.
    (run_dir / RUN_FILE).unlink(missing_ok=True)
    target = run_dir / (SKOPS_MODEL_FILE if kind == "sklearn" else KERAS_MODEL_FILE)
    for name in (KERAS_MODEL_FILE, SKOPS_MODEL_FILE, PICKLE_MODEL_FILE):
        # A run folder trained again with another model type must not keep the old model beside the new.
        if name != target.name:
            (run_dir / name).unlink(missing_ok=True)
    if kind == "sklearn":
        import skops.io

        return atomic_write_bytes(target, skops.io.dumps(model))
    partial = run_dir / f".{target.stem}.{os.getpid()}.partial.keras"
    try:
        model.save(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def model_file_hashes(run_dir: str | Path, extra: Sequence[str] = ()) -> dict[str, str]:
    """SHA-256 of the run's ``model.*`` files and of ``extra`` files or folders (relative paths)."""
    run_dir = Path(run_dir)
    files = [p for p in run_dir.glob("model.*") if p.is_file()]
    for name in extra:
        path = run_dir / name
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {p.relative_to(run_dir).as_posix(): file_sha256(p) for p in sorted(set(files)) if p.is_file()}


def model_fingerprint(labels: Sequence[str], hashes: dict[str, str]) -> str:
    """One SHA-256 over the label order and the model files' hashes: binds labels to weights."""
    payload = json.dumps({"labels": list(labels), "model_files": dict(sorted(hashes.items()))})
    return hashlib.sha256(payload.encode()).hexdigest()


def validate_run_info(info: Any, run_dir: str | Path, complete: bool = True) -> dict:
    """Check a run.json's structure (branch, labels, checksums); return it or raise a clear ValueError.

    ``complete`` also requires the branch's own keys (:data:`BRANCH_KEYS`); their types are checked
    whenever they are present.
    """
    where = Path(run_dir) / RUN_FILE
    fix = "retrain the run with `mer train` (or restore the original run.json)"
    if not isinstance(info, dict):
        raise ValueError(f"{where}: expected a JSON object, found {type(info).__name__}; {fix}")
    for key in ("branch", "labels"):
        if key not in info:
            raise ValueError(f"{where}: the key {key!r} is missing; {fix}")
    if info["branch"] not in branch_registry.REGISTRY:
        raise ValueError(
            f"{where}: unknown branch {info['branch']!r}; expected one of {list(branch_registry.branch_names())}"
        )
    labels = info["labels"]
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise ValueError(f"{where}: 'labels' must be a list of label names, found {labels!r}; {fix}")
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"{where}: 'labels' must hold at least two distinct names, found {labels}; {fix}")
    for key, kind in BRANCH_KEYS[info["branch"]].items():
        if key not in info:
            if not complete:
                continue
            raise ValueError(f"{where}: the key {key!r} ({info['branch']} runs) is missing; {fix}")
        if not isinstance(info[key], kind) or isinstance(info[key], bool):
            raise ValueError(
                f"{where}: {key!r} must be a JSON {kind.__name__}, found {type(info[key]).__name__}; {fix}"
            )
    problems = branch_registry.parameter_problems(info)
    if problems:
        raise ValueError(f"{where}: {problems[0]}; {fix}")
    hashes = info.get(MODEL_FILES_KEY)
    if hashes is not None and not (
        isinstance(hashes, dict)
        and all(isinstance(v, str) and len(v) == 64 and set(v) <= _HEX for v in hashes.values())
    ):
        raise ValueError(f"{where}: {MODEL_FILES_KEY!r} must map file names to SHA-256 hex digests; {fix}")
    fingerprint = info.get(FINGERPRINT_KEY)
    if fingerprint is not None and not isinstance(fingerprint, str):
        raise ValueError(f"{where}: {FINGERPRINT_KEY!r} must be a string; {fix}")
    return info


def verify_model_files(run_dir: str | Path, info: dict) -> None:
    """Refuse a run whose model files or label order differ from those recorded at training."""
    run_dir = Path(run_dir)
    hashes = info.get(MODEL_FILES_KEY)
    if hashes is None or info.get(FINGERPRINT_KEY) is None:
        if not run_trusted():
            raise UnsafeModelError(
                f"{run_dir / RUN_FILE}: no {MODEL_FILES_KEY!r} / {FINGERPRINT_KEY!r} (the checksums that tie "
                "the model files to the labels), so mer cannot tell whether the model or its labels were "
                "changed; retrain the run, or, only for a run you made yourself, pass --trust-run "
                f"(or set {TRUST_RUN_ENV}=1)"
            )
        log.warning("%s: loading a run without checksums because %s=1", run_dir, TRUST_RUN_ENV)
        return
    if info.get(FINGERPRINT_KEY) != model_fingerprint(info["labels"], hashes):
        raise UnsafeModelError(
            f"{run_dir / RUN_FILE}: the labels {info['labels']} (or the recorded checksums) are not the "
            "ones the model was trained with; restore the original run.json or retrain the run"
        )
    for name, expected in hashes.items():
        path = run_dir / name
        if not path.resolve().is_relative_to(run_dir.resolve()):
            raise UnsafeModelError(f"{run_dir / RUN_FILE}: model file {name!r} lies outside the run folder")
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: model file missing from the run folder; copy the whole run folder or retrain the run"
            )
        if file_sha256(path) != expected:
            raise UnsafeModelError(
                f"{path}: SHA-256 differs from the one recorded in run.json at training; the file was "
                "changed or damaged, so it is not loaded; restore it or retrain the run"
            )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def pickle_trusted() -> bool:
    """True when the user opted in to loading old pickled models (``MER_TRUST_PICKLE=1``)."""
    return _env_flag(TRUST_PICKLE_ENV)


def run_trusted() -> bool:
    """True when the user opted in to runs without checksums (``MER_TRUST_RUN=1``, or a trusted pickle).

    Trusting a pickle (which can run any code) includes trusting its run.json: such runs predate
    the checksums.
    """
    return _env_flag(TRUST_RUN_ENV) or pickle_trusted()


def stamp_model_labels(path: str | Path, labels: Sequence[str]) -> None:
    """Write the label order into a model zip (model.keras / model.skops) as :data:`LABELS_MEMBER`.

    Keras and skops ignore the extra member; :func:`model_file_labels` reads it back. A file that is
    not a zip archive is left alone (loading it fails as corrupt anyway).
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(buffer, "w") as target:
        for member in source.infolist():
            if member.filename != LABELS_MEMBER:
                target.writestr(member, source.read(member))
        target.writestr(LABELS_MEMBER, json.dumps({"labels": list(labels)}))
    atomic_write_bytes(path, buffer.getvalue())


def model_file_labels(path: str | Path) -> list[str] | None:
    """The label order stored inside a model zip by :func:`stamp_model_labels` (None: not stored)."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            if LABELS_MEMBER not in archive.namelist():
                return None
            labels = json.loads(archive.read(LABELS_MEMBER)).get("labels")
    except (zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError) as error:
        raise ValueError(f"{path}: corrupt model file ({LABELS_MEMBER}: {error}); retrain the run") from error
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ValueError(f"{path}: corrupt model file ({LABELS_MEMBER} holds no label list); retrain the run")
    return labels


def check_model_labels(path: Path, labels: Sequence[str], run_dir: Path) -> None:
    """Refuse a model whose stored label order differs from run.json's (see :func:`stamp_model_labels`)."""
    stored = model_file_labels(path)
    if stored is None:
        log.info("%s: no label order stored in the model file (a run from before it was)", path)
        return
    if stored != list(labels):
        raise UnsafeModelError(
            f"{run_dir / RUN_FILE}: lists the labels {list(labels)}, but {path.name} was trained with "
            f"{stored} (in this order); restore the original run.json or retrain the run"
        )


def skops_schema_names(data: bytes, path: str | Path = SKOPS_MODEL_FILE) -> list[str]:
    """Every name a skops file's schema would import, read from the zip's schema.json by hand.

    Nothing is imported and skops is not used: the file is a zip and its schema plain JSON. A node
    of an unknown kind is returned as ``<loader NAME>`` (so it is refused). Raises ValueError
    naming ``path`` when the file is not a skops archive.
    """
    import io

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise ValueError(f"{path}: corrupt or unreadable model file ({error}); retrain the run") from error
    names: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        if "__loader__" not in node and "__module__" not in node and "__class__" not in node:
            continue
        loader, module, name = node.get("__loader__"), node.get("__module__"), node.get("__class__")
        if not all(isinstance(x, str) for x in (loader, module, name)):
            raise ValueError(
                f"{path}: corrupt model file (a schema node without __loader__, __module__ and __class__); "
                "retrain the run"
            )
        if loader not in SKOPS_KNOWN_LOADERS:
            names.add(f"<loader {loader}>")
        names.add(f"{module}.{name}")
        if loader == "MethodNode":
            content = node.get("content")
            method = content.get("func") if isinstance(content, dict) else None
            names.add(f"{module}.{name}.{method}")
    return sorted(names)


def skops_refused_names(data: bytes, path: str | Path = SKOPS_MODEL_FILE) -> list[str]:
    """The names in a skops file's schema that are not on :data:`SKOPS_ALLOWED_NAMES` (empty: trusted).

    The decision reads the names only: no import, no subprocess, no network.
    """
    allowed = skops_allowed_names()
    return [name for name in skops_schema_names(data, path) if name not in allowed]


def skops_allowed_names() -> frozenset[str]:
    """:data:`SKOPS_ALLOWED_NAMES` plus the exact type names registered branches declare (``Branch.model_types``)."""
    declared = {name for branch in branch_registry.REGISTRY.values() for name in branch.model_types}
    return SKOPS_ALLOWED_NAMES | declared


def skops_trusted_types(untrusted: Sequence[str]) -> list[str]:
    """The names among ``untrusted`` that are on the allow-list (by exact name; nothing is imported)."""
    allowed = skops_allowed_names()
    return [name for name in untrusted if name in allowed]


def _load_skops(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{path}: corrupt or unreadable model file ({error}); retrain the run") from error
    # Trust is decided before skops (or anything the file names) is imported.
    refused = skops_refused_names(data, path)
    if refused:
        raise UnsafeModelError(
            f"{path}: refusing to load types that are not on the allow-list: {refused}; "
            "only the scikit-learn, NumPy and SciPy types of mer's own models are loaded; retrain the run"
        )
    import skops.io

    try:
        untrusted = skops.io.get_untrusted_types(data=data)
    except (ValueError, KeyError, TypeError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: corrupt or unreadable model file ({error}); retrain the run") from error
    beyond = sorted(set(untrusted) - skops_allowed_names())
    if beyond:  # skops reads the same schema; a difference means a file built to confuse the check
        raise UnsafeModelError(f"{path}: refusing to load types that are not on the allow-list: {beyond}")
    try:
        return skops.io.loads(data, trusted=list(untrusted))
    except MemoryError:
        raise
    except Exception as error:  # a damaged skops archive fails in many ways; all mean "corrupt"
        raise ValueError(f"{path}: corrupt or unreadable model file ({error}); retrain the run") from error


def _load_keras(path: Path) -> Any:
    import keras

    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: corrupt Keras model (not a .keras zip archive); retrain the run")
    try:
        return keras.models.load_model(path, safe_mode=True)
    except MemoryError:
        raise
    except Exception as error:  # Keras raises many types for a damaged archive; all mean "corrupt"
        raise ValueError(f"{path}: corrupt or unreadable Keras model ({error}); retrain the run") from error


def load_model_file(run_dir: str | Path, info: dict | None = None) -> Any:
    """Load a run's model (model.keras or model.skops) after checking run.json and the checksums.

    An old ``model.joblib`` (a pickle) is refused unless ``MER_TRUST_PICKLE=1``. Keras models are
    loaded with ``safe_mode=True`` and their output size is checked against run.json's labels.
    """
    run_dir = check_run_dir(run_dir)
    info = info if info is not None else read_run_info(run_dir, complete=True)
    branch = info["branch"]
    keras_path, skops_path, pickle_path = (
        run_dir / n for n in (KERAS_MODEL_FILE, SKOPS_MODEL_FILE, PICKLE_MODEL_FILE)
    )
    if not any(p.is_file() for p in (keras_path, skops_path, pickle_path)):
        raise FileNotFoundError(
            f"{run_dir}: the run folder has no model (model.keras or model.skops); "
            f"train one with `mer train {branch}`"
        )
    chosen = next(p for p in (keras_path, skops_path, pickle_path) if p.is_file())
    if chosen == pickle_path and not pickle_trusted():
        raise UnsafeModelError(
            f"{pickle_path}: a pickled model, which can run any code when loaded, so mer does not load "
            f"it; retrain the run with `mer train {branch}` (writes model.skops), or, only for a run you "
            f"made yourself, set {TRUST_PICKLE_ENV}=1 (or pass --trust-pickle)"
        )
    verify_model_files(run_dir, info)
    if info.get(MODEL_FILES_KEY) is not None and chosen.name not in info[MODEL_FILES_KEY]:
        raise UnsafeModelError(
            f"{chosen}: not among the model files recorded in run.json at training "
            f"({sorted(info[MODEL_FILES_KEY])}); it was added later, so it is not loaded"
        )
    check_model_labels(chosen, info["labels"], run_dir)
    if keras_path.is_file():
        model = _load_keras(keras_path)
        outputs = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
        if outputs is not None and outputs != len(info["labels"]):
            raise ValueError(
                f"{run_dir / RUN_FILE}: lists {len(info['labels'])} labels but {keras_path.name} has "
                f"{outputs} outputs; restore the original run.json or retrain the run"
            )
        return model
    if skops_path.is_file():
        model = _load_skops(skops_path)
        _check_classes(model, info["labels"], run_dir)
        return model
    import joblib

    log.warning("%s: loading a pickled model because %s=1", pickle_path, TRUST_PICKLE_ENV)
    model = joblib.load(pickle_path)
    _check_classes(model, info["labels"], run_dir)
    return model


def _check_classes(model: Any, labels: Sequence[str], run_dir: Path) -> None:
    """A classifier's classes must all be among run.json's labels (probabilities are mapped by name)."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        return
    unknown = sorted({str(c) for c in classes} - set(labels))
    if unknown:
        raise ValueError(
            f"{run_dir / RUN_FILE}: the model predicts {unknown}, which are not in the labels {list(labels)}; "
            "restore the original run.json or retrain the run"
        )
