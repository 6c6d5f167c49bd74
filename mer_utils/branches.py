"""The one branch registry: a :class:`Branch` descriptor per branch, and nothing else to edit to add one.

Every list of branches derives from :data:`REGISTRY`: the CLI's ``mer train`` choices, options and
help, the branches ``mer predict`` can ask about a clip (:func:`clip_branches`), the run.json keys
:mod:`mer_utils.runs` requires of each branch, the degradations ``pipelines.base`` accepts, the
cache sub-folders a branch writes, the run-schema test and notebook 06. Adding a branch = one
module holding its hooks (``mer_utils.pipelines.<name>``, see :mod:`mer_utils.pipelines.base`),
its tests, and one :func:`register` line below.

This module is a data module: it imports only :mod:`mer_utils.config`, :mod:`mer_utils.cache` and
the standard library, so :mod:`mer_utils.runs` and the CLI read it without loading any branch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from mer_utils import cache
from mer_utils.config import RAVDESS_EMOTIONS, TEXT_LABELS

# What a branch reads from --data (and so which kind of file `mer predict` / `mer evaluate` gives it).
READS = ("clips", "face images", "text")
# `mer train` options beyond --data/--out/--model/--seed/--smoke that a branch may take.
TRAIN_OPTIONS = ("epochs", "init", "text_column", "label_column")
# Degradations a branch's input may accept besides "missing", which every branch takes.
DEGRADATIONS = ("noise", "occlusion")


@dataclass(frozen=True)
class Branch:
    """What one branch is: its name, input, run.json keys, model variants, CLI options and degradations.

    ``module`` is the import path of the branch's hooks (default ``mer_utils.pipelines.<name>``);
    ``run_keys`` maps each run.json key the branch needs to predict to its JSON type;
    ``options`` are the extra ``mer train`` options it takes (:data:`TRAIN_OPTIONS`);
    ``reads_clip`` says whether ``mer predict`` can give it a video clip; ``several_sources`` whether
    its ``--data`` takes several sources (text files; speech corpora and clip manifest CSVs,
    :mod:`mer_utils.corpora`, for a branch that reads clips); ``caches`` names the
    sub-folders of :mod:`mer_utils.cache` it writes; ``model_types`` lists the exact, fully
    qualified names of further types its ``model.skops`` holds beyond mer's own allow-list
    (:data:`mer_utils.runs.SKOPS_ALLOWED_NAMES`; names only, no prefixes).
    """

    name: str
    reads: str
    data_help: str
    labels: tuple[str, ...]
    models: tuple[str, ...]
    default_model: str
    run_keys: Mapping[str, type] = field(default_factory=dict)
    options: tuple[str, ...] = ()
    degradations: tuple[str, ...] = ()
    reads_clip: bool = False
    several_sources: bool = False
    caches: tuple[str, ...] = ()
    model_types: tuple[str, ...] = ()
    module: str = ""

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or not self.name.islower():
            raise ValueError(f"a branch name is a lower-case identifier, got {self.name!r}")
        if self.reads not in READS:
            raise ValueError(f"branch {self.name!r}: reads must be one of {READS}, got {self.reads!r}")
        if self.default_model not in self.models:
            raise ValueError(
                f"branch {self.name!r}: default model {self.default_model!r} is not one of {list(self.models)}"
            )
        for what, given, known in (
            ("options", self.options, TRAIN_OPTIONS),
            ("degradations", self.degradations, DEGRADATIONS),
            ("caches", self.caches, cache.KINDS),
        ):
            unknown = sorted(set(given) - set(known))
            if unknown:
                raise ValueError(f"branch {self.name!r}: unknown {what} {unknown}; expected some of {known}")
        for name in self.model_types:
            parts = str(name).split(".")
            if len(parts) < 2 or not all(part.isidentifier() for part in parts):
                raise ValueError(
                    f"branch {self.name!r}: model type {name!r} is not a fully qualified name (module.Class)"
                )
        object.__setattr__(self, "labels", tuple(self.labels))
        object.__setattr__(self, "run_keys", MappingProxyType(dict(self.run_keys)))
        object.__setattr__(self, "module", self.module or f"mer_utils.pipelines.{self.name}")


# The registry: branch name -> descriptor, in the order tables and help list them.
REGISTRY: dict[str, Branch] = {}


def register(branch: Branch) -> Branch:
    """Add (or replace) a branch in the registry; returns it."""
    REGISTRY[branch.name] = branch
    return branch


def unregister(name: str) -> None:
    """Remove a branch from the registry (tests that register a toy branch)."""
    REGISTRY.pop(name, None)


def branch_names() -> tuple[str, ...]:
    """The registered branches' names, in registry order."""
    return tuple(REGISTRY)


def get_branch(name: str) -> Branch:
    """The descriptor of a registered branch; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown branch {name!r}; expected one of {list(REGISTRY)}") from None


def clip_branches() -> tuple[str, ...]:
    """The branches that can read a video clip (the ones `mer predict` and `mer fuse --data` ask)."""
    return tuple(name for name, branch in REGISTRY.items() if branch.reads_clip)


def several_source_branches() -> tuple[str, ...]:
    """The branches whose ``--data`` takes several sources: the text readers first, then registry order."""
    names = [name for name, branch in REGISTRY.items() if branch.several_sources]
    return tuple(sorted(names, key=lambda name: REGISTRY[name].reads != "text"))


def corpus_branches() -> tuple[str, ...]:
    """The branches that read speech corpora: clips from several sources and clip manifest CSVs."""
    return tuple(name for name in several_source_branches() if REGISTRY[name].reads == "clips")


def branches_with_option(option: str) -> tuple[str, ...]:
    """The branches whose ``mer train`` takes ``option`` (one of :data:`TRAIN_OPTIONS`)."""
    return tuple(name for name, branch in REGISTRY.items() if option in branch.options)


# --- ranges of the numbers a run.json and a branch's settings hold -------------------------------

# Inclusive (low, high) of every numeric preprocessing parameter and setting, by name: checked
# when a run.json is read (:func:`parameter_problems`, from mer_utils.runs) and when a settings
# dataclass is made (:func:`check_settings`). A value outside would fail somewhere deeper (a
# negative sample rate, a 58 TiB allocation for n_mfcc 1e9), so it is refused at the door.
PARAMETER_RANGES: dict[str, tuple[float, float]] = {
    # audio front end (Hz, samples, seconds, dB)
    "sr": (1_000, 384_000),
    "sample_rate": (1_000, 384_000),
    "duration": (0.05, 3_600),
    "top_db": (0, 300),
    "db_range": (1, 300),
    "fmax": (1, 192_000),
    "n_mfcc": (1, 512),
    "n_mels": (1, 1_024),
    "n_fft": (16, 1 << 20),
    "win_length": (1, 1 << 20),
    "hop_length": (1, 1 << 20),
    # frames and images (counts, pixels, shares of a clip)
    "num_frames": (1, 10_000),
    "frames": (1, 10_000),
    "size": (4, 4_096),
    "input_size": (4, 4_096),
    "image_size": (4, 4_096),
    "start": (0, 1),
    "stop": (0, 1),
    "margin": (0, 5),
    # training
    "epochs": (1, 100_000),
    "frozen_epochs": (0, 100_000),
    "fine_tune_epochs": (0, 100_000),
    "batch_size": (1, 1 << 20),
    "learning_rate": (1e-12, 10),
    "fine_tune_learning_rate": (1e-12, 10),
    "scratch_learning_rate": (1e-12, 10),
    "patience": (0, 100_000),
    "dropout": (0, 0.99),
    "label_smoothing": (0, 0.99),
    "width": (1, 4_096),
    "augmented_copies": (0, 1_000),
    "ensemble_size": (1, 100),
    "cv_folds": (2, 100),
    "class_weight_power": (0, 4),
    "val_share": (0, 0.9),
    "test_share": (0, 0.9),
    "max_images_per_label": (1, 1 << 31),
    "clips_per_actor": (1, 1 << 31),
}
# run.json objects whose numbers are checked too (besides the top level).
PARAMETER_GROUPS = ("features", "faces", "settings")


def _number_problem(key: str, value) -> str | None:
    """Why ``value`` is not an acceptable ``key`` (None when it is, or when ``key`` has no range)."""
    if key not in PARAMETER_RANGES or value is None:
        return None
    low, high = PARAMETER_RANGES[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{key!r} must be a number in [{low!r}, {high!r}], found {value!r}"
    if not low <= value <= high:
        return f"{key!r} = {value!r} is outside [{low!r}, {high!r}]"
    return None


def parameter_problems(info: Mapping) -> list[str]:
    """The out-of-range numbers of a run.json (top level and :data:`PARAMETER_GROUPS`), one message each."""
    problems = []
    places = [("", info)] + [
        (f"{group}.", info[group]) for group in PARAMETER_GROUPS if isinstance(info.get(group), Mapping)
    ]
    for prefix, values in places:
        for key, value in values.items():
            problem = _number_problem(key, value)
            if problem is not None:
                problems.append(problem.replace(repr(key), repr(prefix + key), 1))
    return problems


def check_settings(settings, what: str = "settings") -> None:
    """Raise ``ValueError`` naming the field when a settings dataclass holds a number out of its range."""
    from dataclasses import fields

    for item in fields(settings):
        problem = _number_problem(item.name, getattr(settings, item.name))
        if problem is not None:
            raise ValueError(f"{what}: {problem}")


# --- the branches --------------------------------------------------------------------------------

register(
    Branch(
        name="video",
        reads="clips",
        data_help="a folder of RAVDESS clips",
        labels=RAVDESS_EMOTIONS,
        models=("resnet50", "resnet50-scratch"),
        default_model="resnet50",
        run_keys={"faces": dict},
        options=("init",),
        degradations=("occlusion",),
        reads_clip=True,
        caches=(cache.FACES,),
    )
)
register(
    Branch(
        name="audio",
        reads="clips",
        data_help="a folder of RAVDESS clips",
        labels=RAVDESS_EMOTIONS,
        models=(
            "whisper",
            "logreg",
            "svm",
            "egemaps",
            "whisper+egemaps",
            "cnn",
            "lstm",
            "bilstm",
            "attention",
            "stats",
            "ensemble",
        ),
        default_model="whisper",
        run_keys={"features": dict, "normalisation": str, "seed": int},
        degradations=("noise",),
        reads_clip=True,
        several_sources=True,
        caches=(cache.AUDIO, cache.WHISPER),
    )
)
register(
    Branch(
        name="spectrogram",
        reads="clips",
        data_help="a folder of RAVDESS clips",
        labels=RAVDESS_EMOTIONS,
        models=("resnet18", "resnet18_speaker_norm", "resnet18_imagenet"),
        default_model="resnet18",
        degradations=("noise",),
        reads_clip=True,
        several_sources=True,
        caches=(cache.AUDIO,),
    )
)
register(
    Branch(
        name="text",
        reads="text",
        data_help="a CSV file with text and emotion columns (or several: CSV / TSV, ISEAR, MELD)",
        labels=TEXT_LABELS,
        models=(
            "best",
            "lr",
            "dt",
            "rf",
            "nb",
            "svm",
            "lr+svm",
            "bilstm",
            "minilm",
            "svm+minilm",
            "tfidf+minilm",
            "minilm-ft",
            "svm+minilm-ft",
            "mpnet",
            "svm+mpnet",
        ),  # fmt: skip
        default_model="best",
        options=("text_column", "label_column"),
        several_sources=True,
        caches=(cache.TEXT_EMBEDDINGS, cache.TEXT_ENCODERS),
    )
)
register(
    Branch(
        name="faces",
        reads="face images",
        data_help="a folder of labelled face images (one subfolder per emotion)",
        labels=RAVDESS_EMOTIONS,
        models=("cnn", "resnet50"),
        default_model="cnn",
        run_keys={"faces": dict, "input_size": int},
        options=("epochs",),
        reads_clip=True,
        caches=(cache.FACE_IMAGES, cache.FACES),
    )
)
