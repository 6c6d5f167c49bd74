"""Text emotion data: CSV loading with a cleaning report, text cleaning, de-duplication, splits.

The CSV format is the public "text emotion" data set's: columns ``Emotion`` and ``Text`` and an
optional unnamed index column. Rows with an empty text or a label outside
:data:`mer_utils.config.TEXT_LABELS` are kept out of the data but counted in the report, never
dropped silently. Duplicate texts are removed *before* splitting so that no sentence sits in
both train and test (on the real CSV that leak inflates accuracy by about 4.6 points).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils.config import DEFAULT_SEED, TEXT_LABELS

# Column names of the CSV format (the public data set's spelling).
LABEL_COLUMN = "Emotion"
TEXT_COLUMN = "Text"
# Train / validation / test fractions of the stratified split.
SPLIT_SIZES: tuple[float, float, float] = (0.7, 0.2, 0.1)
# Names of the three parts, in the order of SPLIT_SIZES.
SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")
# Default cleaning of new runs: every step on (each is documented in clean_text). Runs saved
# before "emoji" and "quotes" existed stored the steps they used; clean_text's defaults for those
# two are off, so such runs clean as they always did.
DEFAULT_CLEANING: dict[str, bool] = {
    "lowercase": True,
    "handles": True,
    "urls": True,
    "repeats": True,
    "emoji": True,
    "quotes": True,
}
# Emoji and emoticons -> a word token per feeling, so the word n-grams see them (the character
# n-grams alone see ':(' but word tokens drop it). Emoji missing here become EMOJI_TOKEN.
EMOJI_TOKENS: dict[str, str] = {
    **dict.fromkeys("😀😃😄😁😊☺🙂😇🤗😋😎✨🎉👍🙌👏", "emosmile"),
    **dict.fromkeys("😂🤣😆😹", "emolaugh"),
    **dict.fromkeys("❤♥💕💖💗💙💚💛💜😍🥰😘😻", "emolove"),
    **dict.fromkeys("☹🙁😞😢😭😔😟😥😿💔", "emosad"),
    **dict.fromkeys("😠😡🤬👿💢", "emoangry"),
    **dict.fromkeys("😨😱😰😧😬", "emofear"),
    **dict.fromkeys("🤢🤮😖😒", "emodisgust"),
    **dict.fromkeys("😮😲😯😳🙀", "emosurprise"),
    **dict.fromkeys("😐😑🙄😶", "emoneutral"),
    **dict.fromkeys("😉😜😛", "emowink"),
}
EMOTICON_TOKENS: dict[str, str] = {
    **dict.fromkeys((":)", ":-)", "=)", "(:", ":]", ":3"), "emosmile"),
    **dict.fromkeys((":D", ":-D", "xD", "XD", "=D"), "emolaugh"),
    **dict.fromkeys(("<3",), "emolove"),
    **dict.fromkeys((":(", ":-(", ":'(", ":[", "):", "=(", "</3"), "emosad"),
    **dict.fromkeys((">:(", ">:-("), "emoangry"),
    **dict.fromkeys((":o", ":O", ":-o", ":-O"), "emosurprise"),
    **dict.fromkeys((":|", ":-|", ":/", ":-/", "-_-"), "emoneutral"),
    **dict.fromkeys((";)", ";-)", ":P", ":p", ":-P", ";P"), "emowink"),
}
# Any other emoji (pictographs, symbols, dingbats).
EMOJI_TOKEN = "emoji"
_EMOJI = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf\u2b50\u2764]\ufe0f?")
# An emoticon stands alone: after a space or the start, before a space, punctuation or the end.
_EMOTICON = re.compile(
    r"(?<!\S)("
    + "|".join(re.escape(e) for e in sorted(EMOTICON_TOKENS, key=len, reverse=True))
    + r")(?=$|[\s.,!?])"
)
# Typographic quotes and apostrophes -> ASCII ("don’t" and "don't" are one word).
_QUOTES = str.maketrans({"’": "'", "‘": "'", "´": "'", "“": '"', "”": '"', "«": '"', "»": '"'})

# Twitter-style user handles: '@name' at a word start (not e-mail addresses).
_HANDLE = re.compile(r"(?<![\w@])@\w{1,30}")
# http(s) and www links up to the next whitespace.
_URL = re.compile(r"(?:https?://|www\.)\S+", flags=re.IGNORECASE)
# A character repeated three or more times ('soooo', '!!!!').
_REPEAT = re.compile(r"(.)\1{2,}")
# HTML entities left in scraped tweets.
_ENTITIES = {"&quot;": '"', "&amp;": "&", "&lt;": "<", "&gt;": ">", "&#39;": "'"}
# Placeholders that keep the fact that a handle / link was there (a signal) but not the name.
USER_TOKEN = "@user"
URL_TOKEN = "http"


def clean_text(
    text: str,
    *,
    lowercase: bool = True,
    handles: bool = True,
    urls: bool = True,
    repeats: bool = True,
    emoji: bool = False,
    quotes: bool = False,
) -> str:
    """Normalise one text for the classifiers.

    - HTML entities (``&quot;``, ``&amp;``...) are decoded and whitespace is collapsed (always).
    - ``handles``: user handles ``@name`` become ``@user`` (names carry no emotion, only noise).
    - ``urls``: links become ``http``.
    - ``repeats``: a character repeated 3+ times is cut to two (``soooo`` -> ``soo``,
      ``!!!!`` -> ``!!``), so elongations share features but still differ from the plain word.
    - ``lowercase``: case is folded (before squeezing repeats, so ``Bbbb`` -> ``bb``).
    - ``emoji``: emoji and stand-alone emoticons become a word per feeling (``😂`` and ``xD`` ->
      ``emolaugh``, ``:(`` -> ``emosad``; :data:`EMOJI_TOKENS`, :data:`EMOTICON_TOKENS`), other
      emoji ``emoji``: kept as signals the word n-grams see.
    - ``quotes``: typographic quotes and apostrophes become ASCII ones.
    Punctuation is kept: ``!`` and ``?`` are strong emotion cues, and a very short utterance
    (``Oh.``, ``Yeah!``) keeps its word and mark. ``emoji`` and ``quotes`` default to off here so
    that runs saved before them clean as they did; new runs turn them on (:data:`DEFAULT_CLEANING`).
    """
    if not isinstance(text, str):
        raise ValueError(f"clean_text expects a string, got {type(text).__name__}")
    for entity, character in _ENTITIES.items():
        text = text.replace(entity, character)
    if urls:
        text = _URL.sub(URL_TOKEN, text)
    if handles:
        text = _HANDLE.sub(USER_TOKEN, text)
    if quotes:
        text = text.translate(_QUOTES)
    if emoji:
        # Emoticons before case folding (':D' is not ':d'); spaces keep the tokens apart.
        text = _EMOTICON.sub(lambda m: f" {EMOTICON_TOKENS[m.group(1)]} ", text)
        text = _EMOJI.sub(lambda m: f" {EMOJI_TOKENS.get(m.group(0)[0], EMOJI_TOKEN)} ", text)
    if lowercase:
        text = text.lower()
    # After case folding, so 'Sooo' and 'sooo' squeeze alike.
    if repeats:
        text = _REPEAT.sub(r"\1\1", text)
    return " ".join(text.split())


def clean_texts(texts: Iterable[str], **options: bool) -> list[str]:
    """Apply :func:`clean_text` to every text (used as the first step of the saved pipelines)."""
    return [clean_text(str(text), **options) for text in texts]


def _normalise_key(text: str) -> str:
    """The identity of a text for de-duplication: whitespace collapsed, nothing else changed."""
    return " ".join(str(text).split())


def load_text_csv(path: str | Path, labels: Sequence[str] = TEXT_LABELS) -> pd.DataFrame:
    """Read a text-emotion CSV into ``row_id, emotion, text``, keeping bad rows out but counted.

    Labels are compared after stripping spaces and lower-casing (``" Joy"`` is ``joy``).
    Rows with a missing or blank text, or a label not in ``labels``, are removed; the counts
    are in ``frame.attrs["report"]`` (keys rows, empty_texts, unknown_labels, kept) and the
    removed rows in ``frame.attrs["removed"]`` (a list of {row_id, reason}).
    ``row_id`` is the CSV's own unnamed index column when present, else the 0-based row number.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: text CSV not found")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable CSV ({error})") from error
    missing = [c for c in (LABEL_COLUMN, TEXT_COLUMN) if c not in raw.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {missing}; expected '{LABEL_COLUMN}' and '{TEXT_COLUMN}' "
            f"(found {list(raw.columns)})"
        )
    index_columns = [c for c in raw.columns if c == "" or str(c).startswith("Unnamed:")]
    row_ids = raw[index_columns[0]] if index_columns else pd.Series(range(len(raw))).astype(str)
    emotion = raw[LABEL_COLUMN].astype(str).str.strip().str.lower()
    text = raw[TEXT_COLUMN].astype(str)
    empty = text.str.strip() == ""
    unknown = ~emotion.isin(list(labels))
    removed = [
        {"row_id": str(row_ids.iloc[i]), "reason": "empty text"} for i in np.flatnonzero(empty.to_numpy())
    ]
    removed += [
        {"row_id": str(row_ids.iloc[i]), "reason": f"unknown label {emotion.iloc[i]!r}"}
        for i in np.flatnonzero((unknown & ~empty).to_numpy())
    ]
    keep = ~empty & ~unknown
    frame = pd.DataFrame(
        {"row_id": row_ids[keep].astype(str), "emotion": emotion[keep], "text": text[keep]}
    ).reset_index(drop=True)
    if frame["row_id"].duplicated().any():
        # A repeated index column cannot identify rows: fall back to row numbers.
        frame["row_id"] = np.flatnonzero(keep.to_numpy()).astype(str)
    unknown_counts = emotion[unknown & ~empty].value_counts().to_dict()
    frame.attrs["report"] = {
        "rows": int(len(raw)),
        "empty_texts": int(empty.sum()),
        "unknown_labels": int((unknown & ~empty).sum()),
        "unknown_label_values": {str(k): int(v) for k, v in unknown_counts.items()},
        "kept": int(len(frame)),
    }
    frame.attrs["removed"] = removed
    if frame.empty:
        raise ValueError(
            f"{path}: no usable rows ({int(empty.sum())} empty texts, "
            f"{int((unknown & ~empty).sum())} unknown labels; expected labels {list(labels)})"
        )
    return frame


def deduplicate(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop repeated texts (keep the first) and texts that carry more than one label.

    Texts are compared with whitespace collapsed. Returns a new frame whose
    ``attrs["report"]`` extends the input's with exact_duplicate_rows (identical text),
    duplicate_rows (removed repeats, same or different label), conflicting_texts (texts seen
    with 2+ labels; every copy is dropped, since no label can be trusted) and kept.
    """
    key = frame["text"].map(_normalise_key)
    labels_per_text = frame.groupby(key)["emotion"].nunique()
    conflicting = set(labels_per_text.index[labels_per_text > 1])
    repeated = key.duplicated(keep="first")
    is_conflict = key.isin(conflicting)
    result = frame[~repeated & ~is_conflict].reset_index(drop=True)
    report = dict(frame.attrs.get("report", {}))
    report.update(
        {
            "exact_duplicate_rows": int(frame["text"].duplicated().sum()),
            "duplicate_rows": int(repeated.sum()),
            "conflicting_texts": len(conflicting),
            "conflicting_rows_dropped": int((~repeated & is_conflict).sum()),
            "kept": int(len(result)),
        }
    )
    result.attrs["report"] = report
    result.attrs["removed"] = list(frame.attrs.get("removed", []))
    return result


def prepare_text_data(path: str | Path, labels: Sequence[str] = TEXT_LABELS) -> pd.DataFrame:
    """Load a CSV and de-duplicate it: the data every text model trains on (report in attrs)."""
    return deduplicate(load_text_csv(path, labels))


def stratified_split(
    frame: pd.DataFrame,
    sizes: Sequence[float] = SPLIT_SIZES,
    seed: int = DEFAULT_SEED,
) -> pd.DataFrame:
    """Add a ``split`` column (train / val / test) with the same class balance in each part.

    Each class is shuffled with ``seed`` and cut by ``sizes``: val and test get
    round(n x fraction) rows, train the rest, so a class with 1-2 texts stays in train.
    """
    if len(sizes) != 3 or any(s < 0 for s in sizes) or not np.isclose(sum(sizes), 1.0):
        raise ValueError(f"sizes must be three non-negative fractions summing to 1, got {sizes}")
    rng = np.random.default_rng(seed)
    split = np.empty(len(frame), dtype=object)
    for label in sorted(frame["emotion"].unique()):
        positions = np.flatnonzero((frame["emotion"] == label).to_numpy())
        positions = positions[rng.permutation(len(positions))]
        n_val = int(round(len(positions) * sizes[1]))
        n_test = int(round(len(positions) * sizes[2]))
        split[positions[:n_test]] = "test"
        split[positions[n_test : n_test + n_val]] = "val"
        split[positions[n_test + n_val :]] = "train"
    result = frame.copy()
    result["split"] = split.astype(str)
    return result


def class_balance_table(frame: pd.DataFrame, labels: Sequence[str] = TEXT_LABELS) -> pd.DataFrame:
    """Counts and percentages of each label in each split (rows in label order, plus a total)."""
    if "split" not in frame.columns:
        raise ValueError("frame has no 'split' column; call stratified_split first")
    counts = (
        frame.groupby(["emotion", "split"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=list(labels), fill_value=0)
    )
    counts = counts.reindex(columns=[s for s in SPLIT_NAMES if s in counts.columns])
    table = pd.DataFrame(index=counts.index)
    for column in counts.columns:
        table[column] = counts[column]
        table[f"{column}_%"] = (100 * counts[column] / max(counts[column].sum(), 1)).round(1)
    table.loc["total"] = [100.0 if column.endswith("%") else counts[column].sum() for column in table.columns]
    table.index.name = "emotion"
    return table


def cleaning_report_table(report: dict) -> pd.DataFrame:
    """The data-cleaning counts as a two-column table for notebooks."""
    keys = (
        "rows",
        "empty_texts",
        "unknown_labels",
        "exact_duplicate_rows",
        "duplicate_rows",
        "conflicting_texts",
        "conflicting_rows_dropped",
        "kept",
    )
    return pd.DataFrame({"count": [report.get(k, np.nan) for k in keys]}, index=pd.Index(keys, name="step"))
