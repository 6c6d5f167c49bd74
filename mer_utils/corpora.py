"""Any speech-emotion corpus as the index table the audio branches read: layouts, label aliases, speakers.

A *source* is a folder or a manifest CSV; its layout is recognised from its file names:

* ``ravdess``: RAVDESS names ``MM-VV-EE-II-SS-RR-AA`` (read by :func:`mer_utils.ravdess.index_dataset`,
  so one RAVDESS folder gives exactly the RAVDESS index, plus the ``speaker`` and ``corpus`` columns);
* ``crema-d``: ``1001_DFA_ANG_XX`` (speaker 1001, emotion ANG);
* ``emo-db``: ``03a01Fa`` (speaker 03, text a01, German emotion letter F = Freude, version a);
* ``tess``: ``OAF_back_angry`` (speaker OAF, word, emotion; ``ps`` = pleasant surprise);
* ``urdu``: ``<label>/SM1_F10_A010`` (speaker SM1: S + gender + number);
* ``turev-db``: ``<label>/1157_kz_word`` (speaker 1157, Turkish emotion code);
* ``label-folders``: any ``DIR/<label>/*`` (no speaker ids: every clip is its own speaker);
* ``manifest``: a CSV with ``path,label[,speaker][,corpus]``, paths relative to the CSV.

Labels go through one alias table (:data:`LABEL_ALIASES`) onto the eight RAVDESS names; a label
with no RAVDESS counterpart (boredom, guilt, ...) is skipped and listed with the reason in
``attrs["skipped"]`` as ``(path, reason)``, where RAVDESS files that do not parse go too.

Speakers: the ``speaker`` column is ``<corpus>:<id>`` (``urdu:SM1``, ``ravdess:07``), so two corpora's
speaker 1 never merge. The splits, speaker normalisation and out-of-fold folds key on the integer
``actor`` column, so every speaker also gets a dense integer id: RAVDESS actors keep their number
(1-24, odd male, even female); every other corpus gets a block of its own above the ids before it
(1001..., 2001..., in the order the sources are given), where known men get odd and known women
even numbers, as RAVDESS does, so the gender-balanced draw of
:func:`mer_utils.ravdess.actor_disjoint_split` stays meaningful; speakers of unknown gender are
numbered after them (their parity means nothing). The ``speaker`` string is the stable name; the
integer may change when other sources are given with it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils.config import DEFAULT_SEED, RAVDESS_EMOTIONS
from mer_utils.walk import files_under

log = logging.getLogger(__name__)

# Label name (lower case) -> RAVDESS name: English names and forms, short codes (CREMA-D ANG...,
# TESS ps), German (EMO-DB) and Turkish (TurEV-DB) names.
LABEL_ALIASES: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral", "neu", "neutrality", "neutral_", "notr", "nötr"),
    "calm": ("calm", "calmness", "sakin", "sk"),
    "happy": ("happy", "happiness", "joy", "hap", "freude", "mutlu", "mt"),
    "sad": ("sad", "sadness", "trauer", "huzunlu", "hüzünlü", "hl"),
    "angry": ("angry", "anger", "ang", "wut", "ärger", "kizgin", "kızgın", "kz"),
    "fearful": ("fearful", "fear", "fea", "afraid", "angst"),
    "disgust": ("disgust", "disgusted", "dis", "ekel"),
    "surprised": ("surprised", "surprise", "sur", "ps", "pleasant_surprise", "pleasant_surprised"),
}
# Every alias -> its RAVDESS name.
_ALIAS_OF = {alias: name for name, aliases in LABEL_ALIASES.items() for alias in aliases}
# EMO-DB's emotion letter -> the German word (W anger, L boredom, E disgust, A fear, F happiness,
# T sadness, N neutral); the word then goes through the alias table (Langeweile has no match).
EMODB_LETTERS = {
    "W": "wut",
    "L": "langeweile",
    "E": "ekel",
    "A": "angst",
    "F": "freude",
    "T": "trauer",
    "N": "neutral",
}
# EMO-DB speakers' genders (the corpus documentation: 03, 10, 11, 12, 15 male; the rest female).
EMODB_MALE = {"03", "10", "11", "12", "15"}
# URDU's emotion letter (the third field's first letter), used when the folder is not a label.
URDU_LETTERS = {"A": "angry", "H": "happy", "N": "neutral", "S": "sad"}
# File suffixes read as clips (matched case-insensitively); the video ones carry an audio track.
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus")
VIDEO_SUFFIXES = (".mp4", ".flv", ".avi", ".mov", ".mkv", ".webm")
CLIP_SUFFIXES = AUDIO_SUFFIXES + VIDEO_SUFFIXES
# Columns a manifest CSV must have and may have.
MANIFEST_REQUIRED = ("path", "label")
MANIFEST_OPTIONAL = ("speaker", "corpus")
# Speaker-id blocks of non-RAVDESS corpora start at multiples of this (even: parity is kept).
ID_BLOCK = 1000
# Name patterns of the layouts recognised from file names (on the stem).
PATTERNS = {
    "ravdess": re.compile(r"^\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}$"),
    "crema-d": re.compile(
        r"^(?P<speaker>\d{4})_(?P<sentence>[A-Z]{3})_(?P<code>[A-Z]{3})_(?P<level>[A-Z]{2})$"
    ),
    "emo-db": re.compile(r"^(?P<speaker>\d{2})(?P<text>[a-z]\d{2})(?P<code>[A-Z])(?P<version>[a-z]?)$"),
    "tess": re.compile(r"^(?P<speaker>[A-Z]{2,3})_(?P<word>[A-Za-z]+)_(?P<code>[a-z]+)$"),
    "urdu": re.compile(r"^(?P<speaker>S(?P<gender>[MF])\d+)_F\d+_(?P<code>[AHNS])\d+$"),
    "turev-db": re.compile(r"^(?P<speaker>\d+)_(?P<code>[a-z]{2})_(?P<word>\w+)$"),
}
# How each layout's name looks, for error messages.
LAYOUT_EXAMPLES = {
    "ravdess": "03-01-05-01-02-01-12.wav",
    "crema-d": "1001_DFA_ANG_XX.wav",
    "emo-db": "03a01Fa.wav",
    "tess": "OAF_back_angry.wav",
    "urdu": "Angry/SM1_F10_A010.wav",
    "turev-db": "Angry/1157_kz_kelime.wav",
    "label-folders": "angry/any_name.wav",
    "manifest": "a CSV with columns path,label[,speaker][,corpus]",
}
# Layouts whose files carry no speaker id: each clip counts as its own (lone) speaker.
NO_SPEAKER_LAYOUTS = ("label-folders",)
# Columns of the index besides the RAVDESS ones.
EXTRA_COLUMNS = ("speaker", "corpus")


def canonical_label(name: str) -> str | None:
    """The RAVDESS name of a label (any case, any alias of :data:`LABEL_ALIASES`), or None."""
    key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    return _ALIAS_OF.get(key)


def _unmatched(path: Path | str, label: str) -> tuple[str, str]:
    return (
        str(path),
        f"{path}: label {label!r} has no RAVDESS counterpart (known: {', '.join(RAVDESS_EMOTIONS)} "
        "and their aliases in mer_utils.corpora.LABEL_ALIASES); skipped",
    )


def _clip_files(root: Path) -> list[Path]:
    return sorted(
        p for p in files_under(root) if not p.name.startswith(".") and p.suffix.lower() in CLIP_SUFFIXES
    )


def detect_layout(root: str | Path) -> str:
    """The layout of a source (a key of :data:`LAYOUT_EXAMPLES`); ``ValueError`` naming it when none fits."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() == ".csv":
            return "manifest"
        raise ValueError(
            f"{root}: is a file; a corpus source is a folder of clips or a manifest CSV "
            "(columns path,label[,speaker][,corpus])"
        )
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: data folder does not exist (nor a manifest CSV); run `mer demo-data {root}` "
            f"or `mer download {root}`, or give a corpus folder"
        )
    files = _clip_files(root)
    counts = {name: sum(bool(pattern.match(p.stem)) for p in files) for name, pattern in PATTERNS.items()}
    found = {name: count for name, count in counts.items() if count}
    if len(found) == 1:
        return next(iter(found))
    labelled = [p for p in files if len(p.relative_to(root).parts) >= 2]
    if not found and any(canonical_label(p.relative_to(root).parts[0]) for p in labelled):
        return "label-folders"
    recognised = [sub.name for sub in sorted(root.iterdir()) if sub.is_dir() and _quiet_layout(sub)]
    hint = (
        f"; its subfolders {', '.join(recognised)} are: give them as separate sources" if recognised else ""
    )
    if len(found) > 1:
        mixed = ", ".join(f"{name} ({count} files)" for name, count in found.items())
        raise ValueError(f"{root}: mixes the layouts of several corpora: {mixed}{hint}")
    raise ValueError(
        f"{root}: no known corpus layout among its {len(files)} clip file(s){hint}; expected "
        + "; ".join(f"{name} ({example})" for name, example in LAYOUT_EXAMPLES.items())
    )


def _quiet_layout(folder: Path) -> str | None:
    try:
        return detect_layout(folder)
    except (ValueError, OSError):
        return None


def _clip_row(path: Path, root: Path, corpus: str, label: str, speaker: str, gender: str) -> dict:
    """One non-RAVDESS index row: RAVDESS columns with neutral values where the name says nothing."""
    try:
        key = path.relative_to(root).with_suffix("").as_posix()
    except ValueError:
        key = path.with_suffix("").as_posix()
    clip = f"{corpus}:{key}"
    return {
        "path": str(path),
        "clip_id": clip,
        # One file per recording in these corpora: the clip is its own take.
        "take": clip,
        "modality": "audio-video" if path.suffix.lower() in VIDEO_SUFFIXES else "audio-only",
        "vocal_channel": "speech",
        "emotion": label,
        "intensity": "",
        "statement": 0,
        "repetition": 0,
        "actor": 0,
        "gender": gender,
        "speaker": speaker,
        "corpus": corpus,
    }


def _named_rows(root: Path, layout: str) -> tuple[list[dict], list[tuple[str, str]]]:
    """Rows of a folder whose file names carry the speaker (crema-d, emo-db, tess, urdu, turev-db)."""
    pattern = PATTERNS[layout]
    rows, skipped = [], []
    for path in _clip_files(root):
        match = pattern.match(path.stem)
        if not match:
            reason = (
                f"{path}: name does not follow the {layout} scheme (e.g. {LAYOUT_EXAMPLES[layout]}); skipped"
            )
            skipped.append((str(path), reason))
            continue
        code = match.group("code")
        gender = "unknown"
        if layout == "emo-db":
            raw = EMODB_LETTERS.get(code, code)
            gender = "male" if match.group("speaker") in EMODB_MALE else "female"
        elif layout in ("urdu", "turev-db"):
            # The label folder says the emotion; the code in the name stands in when it does not.
            folder = path.parent.name if path.parent != root else ""
            raw = (
                folder
                if canonical_label(folder)
                else (URDU_LETTERS.get(code, code) if layout == "urdu" else code)
            )
            if layout == "urdu":
                gender = "male" if match.group("gender") == "M" else "female"
        else:
            raw = code
            if layout == "tess":
                gender = "female"  # TESS: two actresses, aged 26 (YAF) and 64 (OAF)
        label = canonical_label(raw)
        if label is None:
            skipped.append(_unmatched(path, raw))
            continue
        rows.append(_clip_row(path, root, layout, label, match.group("speaker"), gender))
    return rows, skipped


def _label_folder_rows(root: Path) -> tuple[list[dict], list[tuple[str, str]]]:
    """Rows of ``DIR/<label>/*``: the first folder under the root is the label; no speaker ids."""
    corpus = root.name.lower() or "clips"
    rows, skipped = [], []
    for path in _clip_files(root):
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            skipped.append((str(path), f"{path}: not inside a label folder ({root}/<label>/); skipped"))
            continue
        label = canonical_label(parts[0])
        if label is None:
            skipped.append(_unmatched(path, parts[0]))
            continue
        row = _clip_row(path, root, corpus, label, "", "unknown")
        row["speaker"] = row["clip_id"].split(":", 1)[1]  # a lone speaker per clip
        rows.append(row)
    return rows, skipped


def is_manifest(csv: str | Path) -> bool:
    """Whether a CSV's header holds the manifest columns ``path`` and ``label``."""
    try:
        header = pd.read_csv(csv, nrows=0).columns
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return False
    return set(MANIFEST_REQUIRED) <= {str(c).strip().lower() for c in header}


def _manifest_rows(csv: Path) -> tuple[list[dict], list[tuple[str, str]], bool]:
    """Rows of a manifest CSV (paths relative to it); whether it gave speaker ids."""
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{csv}: not a readable manifest CSV ({error})") from error
    table.columns = [str(c).strip().lower() for c in table.columns]
    missing = [c for c in MANIFEST_REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(
            f"{csv}: manifest lacks the column(s) {missing}; expected path,label[,speaker][,corpus] "
            f"(found {list(table.columns)})"
        )
    has_speakers = "speaker" in table.columns and bool((table["speaker"].str.strip() != "").any())
    rows, skipped = [], []
    for number, record in enumerate(table.to_dict("records"), start=2):
        given = record["path"].strip()
        path = Path(given) if Path(given).is_absolute() else csv.parent / given
        where = f"{csv} line {number}"
        if not given or not path.is_file():
            skipped.append((str(path), f"{where}: {path}: no such file; skipped"))
            continue
        label = canonical_label(record["label"])
        if label is None:
            skipped.append((str(path), _unmatched(f"{where}: {path}", record["label"])[1]))
            continue
        corpus = (record.get("corpus") or "").strip().lower() or csv.stem.lower()
        row = _clip_row(path, csv.parent, corpus, label, (record.get("speaker") or "").strip(), "unknown")
        if not row["speaker"]:
            row["speaker"] = row["clip_id"].split(":", 1)[1]
        rows.append(row)
    return rows, skipped, has_speakers


def read_source(source: str | Path) -> pd.DataFrame:
    """The index of one source (all its files) with ``speaker`` (not yet prefixed) and ``corpus``.

    ``attrs``: ``skipped`` ((path, reason) pairs), ``layout`` and ``speaker_ids`` (False when the
    source names no speakers: every clip is then its own speaker).
    """
    from mer_utils.ravdess import INDEX_COLUMNS, index_dataset

    source = Path(source)
    layout = detect_layout(source)
    speaker_ids = layout not in NO_SPEAKER_LAYOUTS
    if layout == "ravdess":
        index = index_dataset(source)
        skipped = list(index.attrs.get("skipped", []))
        index["speaker"] = [f"{int(a):02d}" for a in index["actor"]]
        index["corpus"] = "ravdess"
    else:
        if layout == "manifest":
            rows, skipped, speaker_ids = _manifest_rows(source)
        elif layout == "label-folders":
            rows, skipped = _label_folder_rows(source)
        else:
            rows, skipped = _named_rows(source, layout)
        index = pd.DataFrame(rows, columns=[*INDEX_COLUMNS, *EXTRA_COLUMNS])
        if index.empty:
            reasons = "; ".join(reason for _, reason in skipped[:3])
            raise ValueError(
                f"{source}: no usable clip in this {layout} source ({reasons or 'no clip files'})"
            )
    for _path, reason in skipped:
        log.warning("skipping %s", reason)
    index.attrs.update(skipped=skipped, layout=layout, speaker_ids=speaker_ids, source=str(source))
    return index


def _numbered(speakers: pd.DataFrame, start: int) -> dict[str, int]:
    """Dense ids from ``start`` (a multiple of ID_BLOCK): men odd, women even, unknown after them."""
    ids: dict[str, int] = {}
    for gender, first in (("male", 1), ("female", 2)):
        names = sorted(speakers.loc[speakers["gender"] == gender, "speaker"], key=_natural)
        ids.update({name: start + first + 2 * i for i, name in enumerate(names)})
    following = max(ids.values(), default=start) + 1
    others = sorted(speakers.loc[~speakers["speaker"].isin(ids), "speaker"], key=_natural)
    ids.update({name: following + i for i, name in enumerate(others)})
    return ids


def _natural(name: str) -> tuple:
    """Sort key that puts SM2 before SM10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(name)))


def read_corpora(sources: str | Path | Sequence[str | Path]) -> pd.DataFrame:
    """One index of every file of one or more sources: RAVDESS columns plus ``speaker`` and ``corpus``.

    ``speaker`` is ``<corpus>:<id>``; ``actor`` the dense integer id (see the module docstring).
    ``attrs``: ``skipped`` ((path, reason) pairs of every source), ``layouts`` (source -> layout)
    and ``no_speaker_ids`` (corpora whose clips are all lone speakers).
    """
    if isinstance(sources, str | Path):
        sources = [sources]
    sources = [Path(s) for s in sources]
    if not sources:
        raise ValueError("no data source given")
    parts, skipped, layouts, lone = [], [], {}, []
    seen: set[str] = set()
    for source in sources:
        part = read_source(source)
        skipped += part.attrs["skipped"]
        layouts[str(source)] = part.attrs["layout"]
        repeated = part["path"].isin(seen)
        for path in part.loc[repeated, "path"]:
            skipped.append((path, f"{path}: already read from another source; kept the first"))
        part = part[~repeated]
        seen.update(part["path"])
        if not part.attrs["speaker_ids"]:
            lone += sorted(set(part["corpus"]) - set(lone))
        parts.append(part)
    index = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].copy()
    index["speaker"] = index["corpus"] + ":" + index["speaker"].astype(str)
    ids: dict[str, int] = {}
    taken = (
        int(index.loc[index["corpus"] == "ravdess", "actor"].max())
        if (index["corpus"] == "ravdess").any()
        else 0
    )
    for corpus in dict.fromkeys(index["corpus"]):
        if corpus == "ravdess":
            continue
        speakers = index.loc[index["corpus"] == corpus, ["speaker", "gender"]].drop_duplicates("speaker")
        start = (max(taken, 0) // ID_BLOCK + 1) * ID_BLOCK
        block = _numbered(speakers, start)
        ids.update(block)
        taken = max(block.values())
    others = index["corpus"] != "ravdess"
    if others.any():
        index.loc[others, "actor"] = index.loc[others, "speaker"].map(ids)
        index["actor"] = index["actor"].astype(int)
    if len(parts) > 1 or others.any():
        index = index.sort_values(["actor", "clip_id"], kind="stable").reset_index(drop=True)
    index.attrs = {"skipped": skipped, "layouts": layouts, "no_speaker_ids": lone}
    return index


def audio_index(data) -> pd.DataFrame:
    """One clip with sound per take of ``data``: the index of the audio and spectrogram branches.

    ``data`` is a source, a list of sources, or an index DataFrame (a RAVDESS index without
    ``speaker`` / ``corpus`` columns gets them). One RAVDESS folder gives exactly
    :func:`mer_utils.ravdess.audio_takes` of it, plus the two columns.
    """
    from mer_utils.ravdess import AUDIO_MODALITIES, take_index

    if isinstance(data, pd.DataFrame):
        index = data.copy()
        index.attrs = dict(data.attrs)
        if "speaker" not in index.columns and "actor" in index.columns:
            index["speaker"] = [f"ravdess:{int(a):02d}" for a in index["actor"]]
        if "corpus" not in index.columns:
            index["corpus"] = "ravdess"
    else:
        index = read_corpora(data)
    attrs = dict(index.attrs)
    kept = take_index(index, AUDIO_MODALITIES, "audio track")
    for key in ("layouts", "no_speaker_ids"):
        if key in attrs:
            kept.attrs[key] = attrs[key]
    return kept


def _fixed(actors: Iterable[int] | None, present: set[int]) -> list[int] | None:
    if actors is None:
        return None
    mine = [int(a) for a in actors if int(a) in present]
    return mine or None


def speaker_disjoint_split(
    index: pd.DataFrame,
    sizes: Sequence[int] | None = None,
    seed: int = DEFAULT_SEED,
    test_actors: Iterable[int] | None = None,
    val_actors: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Train / val / test by speaker inside each corpus: :func:`~mer_utils.ravdess.actor_disjoint_split` per corpus.

    One corpus (or an index without ``corpus``) is split exactly as ``actor_disjoint_split``
    splits it. With several, each corpus is split on its own with the same seed (a sixth of each
    corpus's speakers go to val and to test; ``sizes`` is refused unless both parts are fixed),
    so each part holds every corpus and no speaker is on two sides. Fixed ``test_actors`` /
    ``val_actors`` (actor ids) go to the corpus that has them; a corpus with both fixed trains on
    the rest of its speakers. A corpus with fewer than 3 speakers raises
    ``ValueError`` naming it.
    """
    from mer_utils.ravdess import actor_disjoint_split

    if "corpus" not in index.columns or index["corpus"].nunique() <= 1:
        return actor_disjoint_split(index, sizes, seed=seed, test_actors=test_actors, val_actors=val_actors)
    if sizes is not None and (test_actors is None or val_actors is None):
        # With both parts fixed a caller's sizes only restate them; each corpus's follow from its own.
        raise ValueError(
            f"split sizes {tuple(sizes)} fit one corpus; several corpora are each split by sixths"
        )
    known = set(int(a) for a in index["actor"])
    for name, actors in (("test", test_actors), ("val", val_actors)):
        unknown = sorted(set(int(a) for a in actors or ()) - known)
        if unknown:
            raise ValueError(f"{name} actors {unknown} are not in the index")
    split_of: dict[int, str] = {}
    for corpus in dict.fromkeys(index["corpus"]):
        part = index[index["corpus"] == corpus]
        present = set(int(a) for a in part["actor"])
        test, val = _fixed(test_actors, present), _fixed(val_actors, present)
        part_sizes = None
        if test is not None and val is not None:
            part_sizes = (len(present) - len(test) - len(val), len(val), len(test))
        try:
            done = actor_disjoint_split(part, part_sizes, seed=seed, test_actors=test, val_actors=val)
        except ValueError as error:
            raise ValueError(f"corpus {corpus!r}: {error}") from error
        split_of.update(dict(zip(done["actor"].astype(int), done["split"], strict=True)))
    result = index.copy()
    result["split"] = result["actor"].astype(int).map(split_of)
    return result


def count_table(index: pd.DataFrame, by: str) -> pd.DataFrame:
    """Clips per ``by`` (``corpus`` or ``speaker``) and label, with a total column (``mer index``)."""
    table = index.groupby([by, "emotion"]).size().unstack(fill_value=0)
    table = table[[label for label in RAVDESS_EMOTIONS if label in table.columns]]
    table["total"] = table.sum(axis=1)
    if by == "corpus":
        table.insert(0, "speakers", index.groupby("corpus")["speaker"].nunique())
    return table


def speaker_summary(index: pd.DataFrame) -> pd.DataFrame:
    """Per corpus: clips, speakers, and how many clips a speaker has (min / median / max)."""
    per_speaker = index.groupby(["corpus", "speaker"]).size()
    grouped = per_speaker.groupby(level="corpus")
    return pd.DataFrame(
        {
            "clips": grouped.sum(),
            "speakers": grouped.size(),
            "min_clips": grouped.min(),
            "median_clips": grouped.median().astype(float).map(lambda v: float(np.round(v, 1))),
            "max_clips": grouped.max(),
        }
    )


def scored_speakers(table: pd.DataFrame) -> dict:
    """``mer evaluate``'s ``actors`` (RAVDESS actor numbers of RAVDESS-named paths) and, when the
    prediction table has a ``speaker`` column, its ``speakers``."""
    from mer_utils.ravdess import parse_filename

    actors = set()
    for path in table["path"].astype(str):
        try:
            actors.add(parse_filename(path).actor)
        except ValueError:
            continue
    result: dict = {"actors": sorted(actors)}
    if "speaker" in table.columns:
        result["speakers"] = sorted(set(table["speaker"].astype(str)), key=_natural)
    return result
