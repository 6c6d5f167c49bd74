"""RAVDESS filenames, the dataset index, actor-disjoint splits and the download registry.

RAVDESS names every file ``MM-VV-EE-II-SS-RR-AA.ext``:
modality (01 full AV, 02 video-only, 03 audio-only), vocal channel (01 speech, 02 song),
emotion (01-08), intensity (01 normal, 02 strong; neutral has no strong), statement (01/02),
repetition (01/02) and actor (01-24; odd male, even female).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils.config import DEFAULT_SEED, RAVDESS_EMOTIONS
from mer_utils.walk import files_under

log = logging.getLogger(__name__)

# Code -> name tables of the RAVDESS filename fields.
MODALITIES = {1: "audio-video", 2: "video-only", 3: "audio-only"}
VOCAL_CHANNELS = {1: "speech", 2: "song"}
EMOTIONS = {i + 1: name for i, name in enumerate(RAVDESS_EMOTIONS)}
INTENSITIES = {1: "normal", 2: "strong"}
# File extensions the index accepts (matched case-insensitively).
MEDIA_SUFFIXES = (".mp4", ".wav")
# Number of actors in the corpus.
NUM_ACTORS = 24

_NAME_PATTERN = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")


@dataclass(frozen=True)
class RavdessClip:
    """One RAVDESS file with the fields its name encodes."""

    path: str
    modality: str
    vocal_channel: str
    emotion: str
    intensity: str
    statement: int
    repetition: int
    actor: int
    gender: str

    @property
    def take(self) -> str:
        """The recording this file comes from, shared by its AV, video-only and audio-only copies."""
        return take_id(
            self.vocal_channel, self.emotion, self.intensity, self.statement, self.repetition, self.actor
        )


def take_id(
    vocal_channel: str, emotion: str, intensity: str, statement: int, repetition: int, actor: int
) -> str:
    """Take id ``VV-EE-II-SS-RR-AA``: the file name without its modality field."""
    codes = (
        _code_of(VOCAL_CHANNELS, vocal_channel),
        _code_of(EMOTIONS, emotion),
        _code_of(INTENSITIES, intensity),
        statement,
        repetition,
        actor,
    )
    return "-".join(f"{c:02d}" for c in codes)


def _code_of(table: dict[int, str], name: str) -> int:
    for code, value in table.items():
        if value == name:
            return code
    raise ValueError(f"unknown value {name!r}; expected one of {list(table.values())}")


def _field(path: Path, name: str, value: int, table: dict[int, str]) -> str:
    if value not in table:
        raise ValueError(
            f"{path}: {name} code {value:02d} is out of range; expected "
            + ", ".join(f"{c:02d} ({v})" for c, v in table.items())
        )
    return table[value]


def parse_filename(path: str | Path) -> RavdessClip:
    """Parse a RAVDESS file name into a :class:`RavdessClip`.

    Raises ``ValueError`` naming the file and the field when the name does not follow
    the scheme, a code is out of range, or neutral is marked strong.
    """
    path = Path(path)
    if path.suffix.lower() not in MEDIA_SUFFIXES:
        raise ValueError(f"{path}: extension {path.suffix!r} is not one of {MEDIA_SUFFIXES}")
    match = _NAME_PATTERN.match(path.stem)
    if not match:
        raise ValueError(
            f"{path}: name does not follow the RAVDESS scheme MM-VV-EE-II-SS-RR-AA "
            "(seven two-digit fields, e.g. 01-01-03-02-01-01-12.mp4)"
        )
    modality, channel, emotion, intensity, statement, repetition, actor = map(int, match.groups())
    modality_name = _field(path, "modality", modality, MODALITIES)
    channel_name = _field(path, "vocal channel", channel, VOCAL_CHANNELS)
    emotion_name = _field(path, "emotion", emotion, EMOTIONS)
    intensity_name = _field(path, "intensity", intensity, INTENSITIES)
    if statement not in (1, 2):
        raise ValueError(f"{path}: statement code {statement:02d} is out of range; expected 01 or 02")
    if repetition not in (1, 2):
        raise ValueError(f"{path}: repetition code {repetition:02d} is out of range; expected 01 or 02")
    if not 1 <= actor <= NUM_ACTORS:
        raise ValueError(f"{path}: actor code {actor:02d} is out of range; expected 01-24")
    if emotion_name == "neutral" and intensity_name == "strong":
        raise ValueError(f"{path}: intensity 02 (strong) is impossible for emotion 01 (neutral)")
    return RavdessClip(
        path=str(path),
        modality=modality_name,
        vocal_channel=channel_name,
        emotion=emotion_name,
        intensity=intensity_name,
        statement=statement,
        repetition=repetition,
        actor=actor,
        gender="male" if actor % 2 == 1 else "female",
    )


INDEX_COLUMNS = [
    "path",
    "clip_id",
    "take",
    "modality",
    "vocal_channel",
    "emotion",
    "intensity",
    "statement",
    "repetition",
    "actor",
    "gender",
]


def index_dataset(
    root: str | Path,
    manifest: str | Path | None = None,
    relative: bool = False,
) -> pd.DataFrame:
    """Index every RAVDESS .mp4 / .wav below ``root`` (``Actor_XX/`` layout or flat).

    One row per file with the parsed fields plus ``clip_id`` (the file stem) and ``take``.
    Files whose names do not parse are logged, listed in ``df.attrs["skipped"]`` as
    ``(path, reason)`` pairs and, if ``manifest`` is given, written there as CSV; they never
    stop the walk. With ``relative=True`` paths are stored relative to ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: data folder does not exist; run `mer demo-data {root}` or `mer download {root}`"
        )
    rows, skipped = [], []
    first_of: dict[str, Path] = {}
    for path in files_under(root):
        if path.name.startswith("."):
            continue
        if path.suffix.lower() not in MEDIA_SUFFIXES:
            continue
        try:
            clip = parse_filename(path)
        except ValueError as error:
            log.warning("skipping %s", error)
            skipped.append((str(path), str(error)))
            continue
        if path.stem in first_of:
            reason = (
                f"{path}: duplicate of {first_of[path.stem]} (the same RAVDESS name); kept the first, "
                "skipped this copy"
            )
            log.warning("skipping %s", reason)
            skipped.append((str(path), reason))
            continue
        first_of[path.stem] = path
        row = asdict(clip)
        row["clip_id"] = path.stem
        row["take"] = clip.take
        if relative:
            row["path"] = str(path.relative_to(root))
        rows.append(row)
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    index = index.sort_values(["actor", "clip_id"], kind="stable").reset_index(drop=True)
    index.attrs["skipped"] = skipped
    index.attrs["root"] = str(root)
    if manifest is not None:
        Path(manifest).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(manifest, index=False)
    if skipped:
        log.warning("%d file(s) below %s did not parse; see index.attrs['skipped']", len(skipped), root)
    return index


def one_file_per_take(
    index: pd.DataFrame, prefer: Sequence[str] = ("audio-video", "audio-only", "video-only")
) -> pd.DataFrame:
    """Keep one file per take, choosing modalities in the order of ``prefer``.

    RAVDESS stores one recording up to three times; using the copies as separate samples
    inflates results, so every branch calls this (with the modality order it needs).
    """
    unknown = set(prefer) - set(MODALITIES.values())
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}")
    rank = {m: i for i, m in enumerate(prefer)}
    kept = index[index["modality"].isin(rank)].copy()
    kept["_rank"] = kept["modality"].map(rank)
    kept = kept.sort_values(["take", "_rank"], kind="stable")
    copies = int(kept.duplicated("take").sum())
    if copies:
        # Expected for RAVDESS (a take is stored as AV, video-only and audio-only files): a notice only.
        log.info("one file per take: %d other copies of %d takes not used", copies, kept["take"].nunique())
    kept = kept.drop_duplicates("take")
    return kept.drop(columns="_rank").sort_values(["actor", "clip_id"]).reset_index(drop=True)


def take_index(data, prefer: Sequence[str], need: str) -> pd.DataFrame:
    """One file per take with ``need`` (e.g. "an audio track") from a RAVDESS folder or an index DataFrame.

    The one clip index of every RAVDESS branch: files are chosen in the modality order ``prefer``
    (:func:`one_file_per_take`); files that do not parse, and takes that have no file of a
    ``prefer`` modality, are listed in ``attrs["skipped"]`` as {path, reason}. An index DataFrame
    (e.g. the test rows of a split) keeps its other columns; no usable take raises ``ValueError``.
    """
    if isinstance(data, pd.DataFrame):
        missing = {"take", "modality", "path"} - set(data.columns)
        if missing:
            raise ValueError(
                f"index DataFrame lacks {sorted(missing)} columns; build it with ravdess.index_dataset"
            )
        index, where = data.copy(), "the given index"
    else:
        index, where = index_dataset(data), str(data)
    skipped = [
        item if isinstance(item, dict) else {"path": str(item[0]), "reason": str(item[1])}
        for item in index.attrs.get("skipped", [])
    ]
    if index.empty:
        raise ValueError(f"{where}: no RAVDESS clips found")
    usable = index["modality"].isin(prefer)
    lost = index[~usable & ~index["take"].isin(set(index.loc[usable, "take"]))]
    skipped += [
        {"path": str(path), "reason": f"{path}: a {modality} clip has no {need}"}
        for path, modality in zip(lost["path"], lost["modality"], strict=True)
    ]
    kept = one_file_per_take(index, prefer=prefer)
    if kept.empty:
        raise ValueError(f"{where}: no RAVDESS clip with {need} (modalities {list(prefer)})")
    kept.attrs["skipped"] = skipped
    return kept


# Modalities that carry a face / a voice, in order of preference when a take has several copies.
VIDEO_MODALITIES = ("audio-video", "video-only")
AUDIO_MODALITIES = ("audio-video", "audio-only")


def video_takes(data) -> pd.DataFrame:
    """One video file per take (audio-video mp4, else video-only mp4): :func:`take_index` for faces."""
    return take_index(data, VIDEO_MODALITIES, "video stream (a face needs one)")


def audio_takes(data) -> pd.DataFrame:
    """One file with sound per take (audio-video mp4, else audio-only wav): :func:`take_index` for voices."""
    return take_index(data, AUDIO_MODALITIES, "audio track")


# Default actor counts for (train, validation, test) with all 24 actors.
DEFAULT_SPLIT = (16, 4, 4)


def actor_disjoint_split(
    index: pd.DataFrame,
    sizes: Sequence[int] | None = None,
    seed: int = DEFAULT_SEED,
    test_actors: Iterable[int] | None = None,
    val_actors: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Assign every row a ``split`` (train / val / test) by actor, gender-balanced.

    ``sizes`` are actor counts (train, val, test); by default 16/4/4 for 24 actors, a sixth each
    for val and test otherwise (12/3/3 for 18, 4/2/2 for 8, 2/1/1 for 4), at least two actors,
    one of each gender, in val and test from 8 actors on.
    Fixed ``test_actors`` / ``val_actors`` override the draw for those parts.
    The same seed always gives the same split. Returns a copy with a ``split`` column.
    """
    if index.empty:
        raise ValueError("cannot split an empty index")
    actors = sorted(int(a) for a in index["actor"].unique())
    test_fixed = sorted(int(a) for a in test_actors) if test_actors is not None else None
    val_fixed = sorted(int(a) for a in val_actors) if val_actors is not None else None
    for name, fixed in (("test", test_fixed), ("val", val_fixed)):
        if fixed is not None and set(fixed) - set(actors):
            raise ValueError(f"{name} actors {sorted(set(fixed) - set(actors))} are not in the index")
    if test_fixed and val_fixed and set(test_fixed) & set(val_fixed):
        raise ValueError("the same actor cannot be in validation and test")
    n = len(actors)
    if n < 3 and sizes is None:
        raise ValueError(
            f"an actor-disjoint split needs at least 3 actors (train, validation, test), "
            f"found {n} (actor {', '.join(f'{a:02d}' for a in actors)}); add clips of more actors"
        )
    if sizes is None:
        # A sixth of the actors each for validation and test (4 of 24); at least two from 8 actors on.
        n_eval = max(2, round(n * DEFAULT_SPLIT[2] / sum(DEFAULT_SPLIT))) if n >= 8 else max(1, n // 4)
        sizes = (n - 2 * n_eval, n_eval, n_eval)
    n_train, n_val, n_test = (int(s) for s in sizes)
    if n_train + n_val + n_test != n or min(n_train, n_val, n_test) < 1:
        raise ValueError(f"split sizes {tuple(sizes)} do not fit the {n} actors in the index")
    rng = np.random.default_rng(seed)
    remaining = [a for a in actors if a not in (test_fixed or []) and a not in (val_fixed or [])]
    rng.shuffle(remaining)

    def draw(count: int) -> list[int]:
        # Alternate genders so each part is balanced as far as the actors allow.
        males = [a for a in remaining if a % 2 == 1]
        females = [a for a in remaining if a % 2 == 0]
        chosen: list[int] = []
        while len(chosen) < count and (males or females):
            pool = males if (len(chosen) % 2 == 0 and males) or not females else females
            chosen.append(pool.pop(0))
        for a in chosen:
            remaining.remove(a)
        return sorted(chosen)

    test = test_fixed if test_fixed is not None else draw(n_test)
    val = val_fixed if val_fixed is not None else draw(n_val)
    split_of = {a: "train" for a in remaining}
    split_of.update({a: "val" for a in val})
    split_of.update({a: "test" for a in test})
    result = index.copy()
    result["split"] = result["actor"].astype(int).map(split_of)
    return result


def split_table(index: pd.DataFrame) -> pd.DataFrame:
    """Actors, clips and genders per split (the table notebooks show)."""
    if "split" not in index:
        raise ValueError("index has no 'split' column; call actor_disjoint_split first")
    rows = []
    for split in ("train", "val", "test"):
        part = index[index["split"] == split]
        actors = sorted(part["actor"].unique())
        rows.append(
            {
                "split": split,
                "actors": ", ".join(f"{a:02d}" for a in actors),
                "n_actors": len(actors),
                "male": int(sum(a % 2 == 1 for a in actors)),
                "female": int(sum(a % 2 == 0 for a in actors)),
                "clips": len(part),
                "emotions": part["emotion"].nunique(),
            }
        )
    return pd.DataFrame(rows).set_index("split")


# --- download -----------------------------------------------------------------------------

# Zenodo record 1188976 (RAVDESS, CC BY-NC-SA 4.0).
ZENODO_URL = "https://zenodo.org/records/1188976/files/{name}?download=1"
# The record's metadata (JSON), which lists every file's checksum as "md5:<hex>".
ZENODO_API_URL = "https://zenodo.org/api/records/1188976"
# MD5 checksums known in advance; None means "look it up in the record's metadata at download time".
_VIDEO_SPEECH_MD5: dict[int, str | None] = {actor: None for actor in range(1, NUM_ACTORS + 1)}
RAVDESS_ARCHIVES: dict[str, dict] = {
    "audio-speech": {
        "name": "Audio_Speech_Actors_01-24.zip",
        "md5": "bc696df654c87fed845eb13823edef8a",
    },
}
for _actor in range(1, NUM_ACTORS + 1):
    RAVDESS_ARCHIVES[f"video-speech-{_actor:02d}"] = {
        "name": f"Video_Speech_Actor_{_actor:02d}.zip",
        "md5": _VIDEO_SPEECH_MD5[_actor],
    }


# Unix file-type bits of a zip member's external attributes (upper 16 bits) that mark a symlink.
_SYMLINK_MODE = 0o120000
_FILE_TYPE_MASK = 0o170000


def _unsafe_member(member: zipfile.ZipInfo, dest: Path) -> str | None:
    """Why a member must not be extracted into ``dest`` (None when it is safe)."""
    name = member.filename
    if (member.external_attr >> 16) & _FILE_TYPE_MASK == _SYMLINK_MODE:
        return "is a symbolic link (it could point outside the folder)"
    target = (dest / name).resolve()
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or not target.is_relative_to(dest):
        return f"would be written outside {dest}"
    return None


def _member_clash(members: list[zipfile.ZipInfo], dest: Path) -> tuple[str, str] | None:
    """(member, what it clashes with) when a member cannot be written: a file where a folder must go."""
    files = [m.filename.rstrip("/") for m in members if not m.is_dir()]
    folders = {str(parent) for name in files for parent in Path(name).parents if str(parent) != "."}
    folders |= {m.filename.rstrip("/") for m in members if m.is_dir()}
    for name in files:
        if name in folders:
            return name, "another member of the archive that uses the same name as a folder"
        final = dest / name
        if final.is_dir() and not final.is_symlink():
            return name, f"the folder {final} (a file cannot replace a folder)"
        for parent in Path(name).parents:
            if str(parent) != "." and (dest / parent).exists() and not (dest / parent).is_dir():
                return name, f"the file {dest / parent} (it would have to be a folder)"
    return None


def safe_extract(archive: str | Path, dest: str | Path) -> list[Path]:
    """Extract a zip into ``dest`` all or nothing, refusing unsafe members and checking every CRC.

    Raises ``ValueError`` naming the member, before anything is written, when one is unsafe
    (absolute path, ``..`` traversal, a symbolic link, a file where a folder is or must go).
    Members are first written to a hidden temporary folder inside ``dest``, each checked against
    its CRC-32 as it is read; only when all are intact are they moved into place, so a corrupt
    member leaves nothing half-written.
    Returns the extracted file paths.
    """
    import shutil

    archive, dest = Path(archive), Path(dest).resolve()
    try:
        handle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(
            f"{archive}: not a valid zip archive ({error}); delete it and download again"
        ) from error
    with handle:
        members = handle.infolist()
        for member in members:
            reason = _unsafe_member(member, dest)
            if reason:
                raise ValueError(f"{archive}: member {member.filename!r} {reason}; refusing to extract")
        clash = _member_clash(members, dest)
        if clash is not None:
            raise ValueError(
                f"{archive}: member {clash[0]!r} clashes with {clash[1]}; nothing was extracted; "
                "move that file or folder away, or extract into an empty folder"
            )
        created = not dest.exists()
        dest.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=dest))
        try:
            files = []
            for member in members:
                target = staging / member.filename
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    # Reading to the end makes zipfile compare the CRC-32 (BadZipFile on a mismatch).
                    with handle.open(member) as source, target.open("wb") as sink:
                        shutil.copyfileobj(source, sink, 1 << 20)
                except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError) as error:
                    raise ValueError(
                        f"{archive}: member {member.filename!r} is corrupt ({error}); nothing was extracted; "
                        "delete the archive and download it again"
                    ) from error
                files.append(member.filename)
            extracted = []
            for name in files:
                final = dest / name
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, final)
                extracted.append(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if created and not any(dest.iterdir()):
                dest.rmdir()
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return extracted


def record_checksums(api_url: str = ZENODO_API_URL, timeout: float = 30.0) -> dict[str, str]:
    """File name -> ``md5:<hex>`` from a Zenodo record's metadata JSON."""
    import json
    import urllib.request

    with urllib.request.urlopen(api_url, timeout=timeout) as response:
        record = json.load(response)
    files = record.get("files", [])
    if isinstance(files, dict):  # some Zenodo API versions nest the list under "entries"
        files = files.get("entries", [])
    return {entry["key"]: entry["checksum"] for entry in files if "key" in entry and "checksum" in entry}


def download_ravdess(
    dest: str | Path,
    actors: Iterable[int] | None = None,
    kind: str = "video-speech",
    base_url: str | None = None,
    registry: dict[str, dict] | None = None,
    progress: bool = True,
    checksums_url: str | None = ZENODO_API_URL,
) -> pd.DataFrame:
    """Download and extract RAVDESS archives from Zenodo into ``dest``; return the index.

    ``kind`` is ``"video-speech"`` (one archive per actor, modality 01 and 02 mp4s) or
    ``"audio-speech"`` (one archive of all actors' wavs; ``actors`` then filters the index).
    Archives are cached in ``dest/_downloads`` and checked against their MD5: from the
    registry, or else from the record's metadata at ``checksums_url`` (if that cannot be read,
    a warning says the archive is used unverified). Extraction refuses members outside
    ``dest``. ``base_url`` (a format string with ``{name}``), ``registry`` and
    ``checksums_url`` let tests serve small archives from a loopback server.
    """
    import pooch

    dest = Path(dest)
    registry = registry if registry is not None else RAVDESS_ARCHIVES
    base_url = base_url or ZENODO_URL
    actors = sorted(set(int(a) for a in actors)) if actors is not None else list(range(1, NUM_ACTORS + 1))
    bad = [a for a in actors if not 1 <= a <= NUM_ACTORS]
    if bad:
        raise ValueError(f"actors {bad} are out of range 1-24")
    if kind == "video-speech":
        keys = [f"video-speech-{a:02d}" for a in actors]
    elif kind == "audio-speech":
        keys = ["audio-speech"]
    else:
        raise ValueError(f"kind must be 'video-speech' or 'audio-speech', got {kind!r}")
    cache = dest / "_downloads"
    looked_up: dict[str, str] | None = None
    for key in keys:
        entry = registry[key]
        known_hash = f"md5:{entry['md5']}" if entry.get("md5") else None
        if known_hash is None and checksums_url and not (cache / entry["name"]).exists():
            if looked_up is None:
                try:
                    looked_up = record_checksums(checksums_url)
                except (OSError, ValueError) as error:
                    log.warning(
                        "could not read checksums from %s (%s); archives are not verified",
                        checksums_url,
                        error,
                    )
                    looked_up = {}
            known_hash = looked_up.get(entry["name"])
        archive = pooch.retrieve(
            url=base_url.format(name=entry["name"]),
            known_hash=known_hash,
            fname=entry["name"],
            path=cache,
            progressbar=progress,
        )
        try:
            safe_extract(archive, dest)
        except ValueError:
            # A broken or hostile archive must not be reused from the cache on the next run.
            Path(archive).unlink(missing_ok=True)
            log.warning("deleted the cached archive %s; it could not be extracted", archive)
            raise
    index = index_dataset(dest)
    if kind == "audio-speech":
        index = index[index["actor"].isin(actors)].reset_index(drop=True)
    return index
