"""Text sources: read the seed CSV, ISEAR, MELD or any CSV / TSV with text and label columns into one frame.

Every reader returns the frame of :func:`mer_utils.text.load_text_csv` (``row_id, emotion, text``)
plus ``source`` (the data set a row came from) and ``group`` (rows that must stay on one side
of a split: a MELD dialogue; empty for independent texts). Labels are mapped onto
:data:`mer_utils.config.TEXT_LABELS` by one alias table (:data:`LABEL_ALIASES`); rows whose
label has no match (ISEAR's guilt, love, worry...) or whose text is empty are kept out and
counted per source, never dropped silently. Several sources are joined by
:func:`read_text_sources`, de-duplicated across sources by :func:`prepare_text_sources`
(a text seen with two labels, in any sources, is dropped) and split by :func:`source_split`:
stratified by source and label, and by group where a source has groups, so no MELD
conversation sits on two sides. Read on its own, the seed CSV gives exactly the rows, row ids
and split of :mod:`mer_utils.text`.

Formats (found from the header; ``text_column`` / ``label_column`` override the columns):

* ``seed``: the public text-emotion CSV, ``Emotion`` and ``Text`` (and an unnamed index);
* ``isear``: pipe-separated, label ``Field1``, text ``SIT`` (texts may hold ``|``; the stray
  ``á`` that stands for a line break of the original is removed);
* ``meld``: ``Utterance``, ``Emotion``, ``Speaker``, ``Dialogue_ID`` (group = file + dialogue);
* ``generic``: any other CSV / TSV / pipe file with one column named like a text
  (:data:`TEXT_COLUMN_NAMES`) and one like a label (:data:`LABEL_COLUMN_NAMES`).
A folder reads every ``.csv`` / ``.tsv`` / ``.txt`` file in it (MELD's ``train`` and ``dev``); the CLI
takes files (``mer train text --data meld/train_sent_emo.csv meld/dev_sent_emo.csv``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils import text as text_data
from mer_utils.config import DEFAULT_SEED, TEXT_LABELS

# Columns of every source frame, in order.
SOURCE_COLUMNS = ("row_id", "emotion", "text", "source", "group")
# Label spellings of other data sets -> the 8 text labels. Matched after stripping and
# lower-casing; a label missing here (guilt, love, worry, boredom...) is skipped and counted.
LABEL_ALIASES: dict[str, str] = {
    **{label: label for label in TEXT_LABELS},
    "happiness": "joy",
    "happy": "joy",
    "joyful": "joy",
    "angry": "anger",
    "anger/annoyance": "anger",
    "annoyance": "anger",
    "rage": "anger",
    "mad": "anger",
    "sad": "sadness",
    "sorrow": "sadness",
    "grief": "sadness",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "surprised": "surprise",
    "disgusted": "disgust",
    "ashamed": "shame",
    "embarrassment": "shame",
    "calm": "neutral",
    "none": "neutral",
    "no emotion": "neutral",
}
# Column names taken as the text / the label of a generic file (lower-cased, in order of preference).
TEXT_COLUMN_NAMES = ("text", "utterance", "sentence", "content", "sit", "tweet", "comment", "body")
LABEL_COLUMN_NAMES = ("emotion", "label", "emotions", "labels", "field1", "class", "category")
# Encodings tried in turn (UTF-8 with or without a byte-order mark, then Windows-1252, which
# decodes the curly quotes of scraped subtitles; latin-1 last because it never fails).
ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
# UTF-8 read as Windows-1252 ('â€™' for '’'): repaired when it is found in a text.
_MOJIBAKE = ("â€", "Ã")
# ISEAR's stand-in for a line break of the original questionnaire.
ISEAR_BREAK = " á "


def _read_lines(path: Path) -> tuple[str, str]:
    """The file's text and the encoding that decoded it."""
    data = path.read_bytes()
    for encoding in ENCODINGS:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise ValueError(f"{path}: cannot decode the file")  # pragma: no cover (latin-1 decodes anything)


def _separator(path: Path, header: str) -> str:
    if path.suffix.lower() == ".tsv" or "\t" in header:
        return "\t"
    if "|" in header and "," not in header:
        return "|"
    return ","


def _split_pipes(content: str, text_position: int, width: int) -> list[list[str]]:
    """Rows of a pipe-separated file whose text field may itself hold pipes (ISEAR's do)."""
    rows = []
    for line in content.splitlines()[1:]:
        if not line.strip():
            continue
        parts = line.split("|")
        extra = len(parts) - width
        if extra > 0:
            parts = [
                *parts[:text_position],
                "|".join(parts[text_position : text_position + extra + 1]),
                *parts[text_position + extra + 1 :],
            ]
        rows.append((parts + [""] * width)[:width])
    return rows


def _find_column(
    columns: Sequence[str], wanted: str | None, names: Sequence[str], what: str, path: Path
) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{path}: no {what} column {wanted!r} (found {list(columns)})")
        return wanted
    lowered = {str(c).strip().lower(): c for c in columns}
    for name in names:
        if name in lowered:
            return lowered[name]
    option = "--text-column" if what == "text" else "--label-column"
    raise ValueError(
        f"{path}: no {what} column found among {list(columns)}; name it with {option} "
        f"(columns recognised: {list(names)})"
    )


def source_format(columns: Sequence[str]) -> str:
    """'seed', 'isear', 'meld' or 'generic', from a file's column names."""
    present = set(map(str, columns))
    if {"Utterance", "Emotion", "Dialogue_ID"} <= present:
        return "meld"
    if {"Field1", "SIT"} <= present:
        return "isear"
    if {text_data.LABEL_COLUMN, text_data.TEXT_COLUMN} <= present:
        return "seed"
    return "generic"


def _read_table(path: Path) -> tuple[pd.DataFrame, str]:
    """The raw table of a delimited file, every cell a string, and the encoding used."""
    content, encoding = _read_lines(path)
    if not content.strip():
        raise ValueError(f"{path}: the file is empty; expected a header line with text and label columns")
    header = content.splitlines()[0]
    separator = _separator(path, header)
    if separator == "|":
        columns = header.split("|")
        text_position = next(
            (i for i, c in enumerate(columns) if c.strip().lower() in TEXT_COLUMN_NAMES), len(columns) - 1
        )
        rows = _split_pipes(content, text_position, len(columns))
        raw = pd.DataFrame(rows, columns=columns)
    else:
        import io

        try:
            raw = pd.read_csv(io.StringIO(content), sep=separator, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
            raise ValueError(f"{path}: not a readable CSV ({error})") from error
    return raw.loc[:, [c for c in raw.columns if str(c) != "" or separator != "|"]], encoding


def _repair_mojibake(text: str) -> str:
    if any(mark in text for mark in _MOJIBAKE):
        try:
            return text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return text
    return text


def read_text_source(
    path: str | Path,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    labels: Sequence[str] = TEXT_LABELS,
) -> pd.DataFrame:
    """Read one source file (or a folder of them) into ``row_id, emotion, text, source, group``.

    The counts are in ``attrs["report"]`` (rows, empty_texts, unknown_labels,
    unknown_label_values, relabelled, kept, plus format, path, text_column, label_column,
    encoding) and the rows left out in ``attrs["removed"]`` ({row_id, reason}), as
    :func:`mer_utils.text.load_text_csv` gives them. The source is named ``isear`` or
    ``meld`` for those formats, else after the file (or folder).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".tsv", ".txt"))
        if not files:
            raise FileNotFoundError(
                f"{path}: a folder without .csv / .tsv files; give text files or a folder of them"
            )
        parts = [
            read_text_source(p, text_column=text_column, label_column=label_column, labels=labels)
            for p in files
        ]
        for part, file in zip(parts, files, strict=True):
            if part.attrs["report"]["format"] != "meld":  # MELD row ids name their file already
                part["row_id"] = file.stem + ":" + part["row_id"]
        frame = _concat(parts)
        frame.attrs["report"]["path"] = str(path)
        frame["source"] = (
            parts[0]["source"].iloc[0] if parts[0]["source"].iloc[0] in ("meld", "isear") else path.name
        )
        return frame
    if not path.is_file():
        raise FileNotFoundError(f"{path}: text source not found")
    raw, encoding = _read_table(path)
    kind = source_format(raw.columns)
    # The known formats' columns unless the caller names others.
    known = {"seed": (text_data.TEXT_COLUMN, text_data.LABEL_COLUMN), "isear": ("SIT", "Field1")}
    known["meld"] = ("Utterance", "Emotion")
    default_text, default_label = known.get(kind, (None, None))
    text_column = text_column or default_text
    label_column = label_column or default_label
    text_column = _find_column(raw.columns, text_column, TEXT_COLUMN_NAMES, "text", path)
    label_column = _find_column(raw.columns, label_column, LABEL_COLUMN_NAMES, "label", path)
    index_columns = [c for c in raw.columns if c == "" or str(c).startswith("Unnamed:")]
    row_ids = raw[index_columns[0]] if index_columns else pd.Series(range(len(raw))).astype(str)
    if kind == "meld":
        # MELD comes as train and dev files with their own numbering: the file keeps row ids apart.
        row_ids = path.stem + ":" + row_ids.astype(str)
    given = raw[label_column].astype(str).str.strip().str.lower()
    emotion = given.map(LABEL_ALIASES)
    text = raw[text_column].astype(str).map(_repair_mojibake)
    if kind == "isear":
        text = text.str.replace(ISEAR_BREAK, " ", regex=False).str.replace("á", " ", regex=False)
    empty = text.str.strip() == ""
    unknown = emotion.isna() | ~emotion.isin(list(labels))
    removed = [
        {"row_id": str(row_ids.iloc[i]), "reason": "empty text"} for i in np.flatnonzero(empty.to_numpy())
    ]
    removed += [
        {"row_id": str(row_ids.iloc[i]), "reason": f"unknown label {given.iloc[i]!r}"}
        for i in np.flatnonzero((unknown & ~empty).to_numpy())
    ]
    keep = ~empty & ~unknown
    source = kind if kind in ("isear", "meld") else path.stem
    group = (
        (path.stem + ":" + raw["Dialogue_ID"].astype(str)) if kind == "meld" else pd.Series([""] * len(raw))
    )
    frame = pd.DataFrame(
        {
            "row_id": row_ids[keep].astype(str),
            "emotion": emotion[keep].astype(str),
            "text": text[keep],
            "source": source,
            "group": group[keep].astype(str),
        }
    ).reset_index(drop=True)
    if frame["row_id"].duplicated().any():
        # A repeated index column cannot identify rows: fall back to row numbers.
        frame["row_id"] = np.flatnonzero(keep.to_numpy()).astype(str)
    unknown_counts = given[unknown & ~empty].value_counts().to_dict()
    frame.attrs["report"] = {
        "rows": int(len(raw)),
        "empty_texts": int(empty.sum()),
        "unknown_labels": int((unknown & ~empty).sum()),
        "unknown_label_values": {str(k): int(v) for k, v in unknown_counts.items()},
        "relabelled": int((keep & (given != emotion)).sum()),
        "kept": int(len(frame)),
        "format": kind,
        "path": str(path),
        "text_column": str(text_column),
        "label_column": str(label_column),
        "encoding": encoding,
    }
    frame.attrs["removed"] = removed
    if frame.empty:
        raise ValueError(
            f"{path}: no usable rows ({int(empty.sum())} empty texts, {int((unknown & ~empty).sum())} "
            f"unknown labels {sorted(unknown_counts)[:5]}; expected labels {list(labels)} or their aliases)"
        )
    return frame


# Report counts that add up over the files of one source.
_COUNTS = ("rows", "empty_texts", "unknown_labels", "relabelled", "kept")


def _merge_reports(reports: Iterable[dict]) -> dict:
    merged: dict = {key: 0 for key in _COUNTS}
    merged["unknown_label_values"] = {}
    paths = []
    for report in reports:
        for key in _COUNTS:
            merged[key] += int(report.get(key, 0))
        for label, count in report.get("unknown_label_values", {}).items():
            merged["unknown_label_values"][label] = merged["unknown_label_values"].get(label, 0) + count
        paths.append(report.get("path"))
        merged.setdefault("format", report.get("format"))
    merged["paths"] = paths
    return merged


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].copy()
    frame.attrs["report"] = _merge_reports(f.attrs["report"] for f in frames)
    frame.attrs["removed"] = [r for f in frames for r in f.attrs["removed"]]
    return frame


def as_paths(data: str | Path | Sequence[str | Path]) -> list[Path]:
    """One path or several as a list of paths (``mer train text --data A B`` gives several)."""
    paths = [data] if isinstance(data, str | Path) else list(data)
    if not paths:
        raise ValueError("no text source given; pass a CSV, a folder of CSVs or several of them")
    return [Path(p) for p in paths]


def read_text_sources(
    paths: str | Path | Sequence[str | Path],
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    labels: Sequence[str] = TEXT_LABELS,
) -> pd.DataFrame:
    """Read several sources into one frame; the report keeps the totals and ``"sources"`` per source.

    With more than one file, row ids become ``<source>:<row id>`` so they stay unique (one file
    keeps its own ids, as :mod:`mer_utils.text` gives them).
    """
    paths = as_paths(paths)
    frames = [
        read_text_source(p, text_column=text_column, label_column=label_column, labels=labels) for p in paths
    ]
    if len(frames) > 1:
        for frame in frames:
            prefix = frame["source"] + ":"
            frame["row_id"] = prefix + frame["row_id"]
            for record in frame.attrs["removed"]:
                record["row_id"] = f"{frame['source'].iloc[0]}:{record['row_id']}"
    frame = _concat(frames)
    by_source: dict[str, list[dict]] = {}
    for part in frames:
        # Every file gives one source name (a folder too).
        by_source.setdefault(str(part["source"].iloc[0]), []).append(part.attrs["report"])
    frame.attrs["report"]["sources"] = {name: _merge_reports(reports) for name, reports in by_source.items()}
    frame.attrs["report"].pop("paths", None)
    frame.attrs["report"].pop("format", None)
    return frame


def prepare_text_sources(paths, **options) -> pd.DataFrame:
    """Read sources and de-duplicate across them (:func:`mer_utils.text.deduplicate`); per-source kept counts added."""
    frame = text_data.deduplicate(read_text_sources(paths, **options))
    kept = frame["source"].value_counts()
    for name, report in frame.attrs["report"]["sources"].items():
        report["kept_after_deduplication"] = int(kept.get(name, 0))
    return frame


def source_weights(sources: Sequence[str] | pd.Series, power: float) -> np.ndarray:
    """One sample weight per row: ``(n / (S x n_source)) ** power``, scaled to a mean of 1.

    0 weighs every row alike (a big source dominates), 1 gives every source the same total
    weight, 0.5 sits between (as :func:`mer_utils.models.text.partial_class_weights` does for classes).
    """
    if power < 0:
        raise ValueError(f"the source-weight power must be >= 0, got {power}")
    sources = pd.Series(np.asarray(sources, dtype=str))
    if sources.empty:
        return np.zeros(0)
    counts = sources.map(sources.value_counts()).to_numpy(dtype=float)
    weights = (len(sources) / (sources.nunique() * counts)) ** float(power)
    return weights / weights.mean()


def _grouped_split(frame: pd.DataFrame, sizes: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Whole groups to train / val / test: groups in random order, each to the part that most needs its labels."""
    parts = text_data.SPLIT_NAMES
    labels = sorted(frame["emotion"].unique())
    counts = pd.crosstab(frame["group"], frame["emotion"]).reindex(columns=labels, fill_value=0)
    total = counts.sum(axis=0).to_numpy(dtype=float)
    targets = {part: total * fraction for part, fraction in zip(parts, sizes, strict=True)}
    filled = {part: np.zeros(len(labels)) for part in parts}
    names = counts.index.to_numpy()[rng.permutation(len(counts))]
    assigned = {}
    for name in names:
        row = counts.loc[name].to_numpy(dtype=float)
        # How far each part is below its target for this group's labels (relative to the target).
        need = {
            part: float(np.sum(row * (targets[part] - filled[part]) / np.maximum(targets[part], 1.0)))
            for part in parts
            if sizes[parts.index(part)] > 0
        }
        part = max(need, key=need.get)
        assigned[name] = part
        filled[part] += row
    return frame["group"].map(assigned).to_numpy()


def source_split(
    frame: pd.DataFrame, sizes: Sequence[float] = text_data.SPLIT_SIZES, seed: int = DEFAULT_SEED
) -> pd.DataFrame:
    """Add ``split`` (train / val / test): stratified by source and label; grouped rows keep their group together.

    Each source is split on its own with ``seed``: one without groups by
    :func:`mer_utils.text.stratified_split` (so the seed CSV alone splits exactly as before), one
    with groups (MELD dialogues) group by group, so no group has rows on two sides.
    """
    if len(sizes) != 3 or any(s < 0 for s in sizes) or not np.isclose(sum(sizes), 1.0):
        raise ValueError(f"sizes must be three non-negative fractions summing to 1, got {sizes}")
    if "source" not in frame.columns:
        return text_data.stratified_split(frame, sizes, seed)
    split = pd.Series("", index=frame.index, dtype=object)
    for source in sorted(frame["source"].unique()):
        rows = frame["source"] == source
        part = frame[rows]
        grouped = "group" in part.columns and (part["group"].astype(str) != "").any()
        if grouped:
            part = part.assign(group=part["group"].where(part["group"] != "", "row:" + part["row_id"]))
            split[rows] = _grouped_split(part, sizes, np.random.default_rng(seed))
        else:
            split[rows] = text_data.stratified_split(part.reset_index(drop=True), sizes, seed)[
                "split"
            ].to_numpy()
    result = frame.copy()
    result["split"] = split.astype(str)
    return result
