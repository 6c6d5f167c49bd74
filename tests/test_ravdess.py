"""RAVDESS file names, the index, actor-disjoint splits and the safe download."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from mer_utils import ravdess
from mer_utils.config import RAVDESS_EMOTIONS


def test_parse_filename_fields():
    clip = ravdess.parse_filename("/data/Actor_12/02-01-06-01-02-01-12.mp4")
    assert clip.modality == "video-only"
    assert clip.vocal_channel == "speech"
    assert clip.emotion == "fearful"
    assert clip.intensity == "normal"
    assert (clip.statement, clip.repetition, clip.actor) == (2, 1, 12)
    assert clip.gender == "female"
    assert clip.take == "01-06-01-02-01-12"


def test_parse_filename_accepts_wav_any_case_and_odd_actor_is_male():
    clip = ravdess.parse_filename("03-02-08-02-01-02-23.WAV")
    assert (clip.modality, clip.vocal_channel, clip.emotion, clip.intensity) == (
        "audio-only",
        "song",
        "surprised",
        "strong",
    )
    assert clip.gender == "male"


def test_take_is_shared_by_the_three_copies_of_a_recording():
    takes = {
        ravdess.parse_filename(f"{m}-01-05-02-01-02-07.{ext}").take
        for m, ext in (("01", "mp4"), ("02", "mp4"), ("03", "wav"))
    }
    assert len(takes) == 1


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("04-01-01-01-01-01-01.mp4", "modality"),
        ("01-03-01-01-01-01-01.mp4", "vocal channel"),
        ("01-01-09-01-01-01-01.mp4", "emotion"),
        ("01-01-02-03-01-01-01.mp4", "intensity"),
        ("01-01-02-01-03-01-01.mp4", "statement"),
        ("01-01-02-01-01-00-01.mp4", "repetition"),
        ("01-01-02-01-01-01-25.mp4", "actor"),
        ("01-01-01-02-01-01-01.mp4", "neutral"),
        ("01-01-01-01-01-01.mp4", "scheme"),
        ("clip.mp4", "scheme"),
        ("01-01-01-01-01-01-01.avi", "extension"),
    ],
)
def test_parse_filename_rejects_bad_names_naming_file_and_field(name, field):
    with pytest.raises(ValueError) as error:
        ravdess.parse_filename(name)
    assert name in str(error.value)
    assert field in str(error.value)


def test_index_reports_unparseable_files_and_keeps_the_rest(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    good = ["01-01-03-01-01-01-01.mp4", "03-01-03-01-01-01-01.wav", "02-01-03-01-01-01-01.mp4"]
    for name in good:
        (tmp_path / "Actor_01" / name).write_bytes(b"x")
    (tmp_path / "01-01-09-01-01-01-02.mp4").write_bytes(b"x")  # flat layout, bad emotion
    (tmp_path / "notes.txt").write_text("ignored: not media")
    manifest = tmp_path / "skipped.csv"
    index = ravdess.index_dataset(tmp_path, manifest=manifest)
    assert len(index) == 3
    assert index["take"].nunique() == 1
    assert len(index.attrs["skipped"]) == 1
    assert "emotion" in index.attrs["skipped"][0][1]
    assert "01-01-09-01-01-01-02.mp4" in manifest.read_text()


def test_index_missing_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ravdess.index_dataset(tmp_path / "nowhere")


def test_one_file_per_take_prefers_the_requested_modality(tmp_path):
    for name in ("01-01-03-01-01-01-01.mp4", "03-01-03-01-01-01-01.wav", "02-01-04-01-01-01-01.mp4"):
        (tmp_path / name).write_bytes(b"x")
    index = ravdess.index_dataset(tmp_path)
    audio = ravdess.one_file_per_take(index, prefer=("audio-only", "audio-video"))
    assert sorted(audio["modality"]) == ["audio-only"]
    video = ravdess.one_file_per_take(index, prefer=("audio-video", "video-only"))
    assert sorted(video["modality"]) == ["audio-video", "video-only"]
    assert video["take"].is_unique


def _full_index(tmp_path: Path, actors: int = 24):
    for actor in range(1, actors + 1):
        for code in range(1, 9):
            for intensity in (1,) if code == 1 else (1, 2):
                (tmp_path / f"03-01-{code:02d}-{intensity:02d}-01-01-{actor:02d}.wav").write_bytes(b"x")
    return ravdess.index_dataset(tmp_path)


def test_actor_disjoint_split_default_is_16_4_4_gender_balanced_and_complete(tmp_path):
    index = _full_index(tmp_path)
    split = ravdess.actor_disjoint_split(index, seed=3)
    assert split.groupby("actor")["split"].nunique().max() == 1
    table = ravdess.split_table(split)
    assert table["n_actors"].to_dict() == {"train": 16, "val": 4, "test": 4}
    assert (table["male"] == table["female"]).all()
    for part in ("train", "val", "test"):
        assert set(split.loc[split["split"] == part, "emotion"]) == set(RAVDESS_EMOTIONS)


def test_actor_disjoint_split_is_deterministic_by_seed(tmp_path):
    index = _full_index(tmp_path)
    first = ravdess.actor_disjoint_split(index, seed=11)["split"].tolist()
    assert first == ravdess.actor_disjoint_split(index, seed=11)["split"].tolist()
    assert first != ravdess.actor_disjoint_split(index, seed=12)["split"].tolist()


def test_actor_disjoint_split_fixed_test_actors_and_bad_sizes(tmp_path):
    index = _full_index(tmp_path, actors=8)
    split = ravdess.actor_disjoint_split(index, test_actors=[1, 2])
    assert sorted(split.loc[split["split"] == "test", "actor"].unique()) == [1, 2]
    assert ravdess.split_table(split)["n_actors"].to_dict() == {"train": 4, "val": 2, "test": 2}
    with pytest.raises(ValueError, match="do not fit"):
        ravdess.actor_disjoint_split(index, sizes=(6, 2, 2))
    with pytest.raises(ValueError, match="not in the index"):
        ravdess.actor_disjoint_split(index, test_actors=[20])


def test_real_ravdess_filenames_all_parse(real_audio_dir):
    index = ravdess.index_dataset(real_audio_dir)
    assert len(index) == 1080
    assert index.attrs["skipped"] == []
    assert set(index["modality"]) == {"audio-only"}
    assert set(index["vocal_channel"]) == {"speech"}
    assert sorted(index["actor"].unique()) == list(range(1, 19))
    assert index.groupby("actor").size().eq(60).all()
    counts = index.groupby("emotion").size()
    assert counts["neutral"] == 18 * 4 and counts["angry"] == 18 * 8
    assert index["take"].is_unique
    assert (index["gender"] == index["actor"].map(lambda a: "male" if a % 2 else "female")).all()


# --- safe extraction and the download against a loopback server ----------------------------


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_safe_extract_refuses_traversal_and_writes_nothing(tmp_path):
    archive = _zip(
        tmp_path / "evil.zip", {"Actor_01/01-01-01-01-01-01-01.mp4": b"ok", "../escape.txt": b"bad"}
    )
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="outside"):
        ravdess.safe_extract(archive, dest)
    assert not (tmp_path / "escape.txt").exists()
    assert not dest.exists()


def test_safe_extract_rejects_a_non_zip(tmp_path):
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="broken.zip"):
        ravdess.safe_extract(bad, tmp_path / "out")


def test_download_ravdess_from_loopback_checks_md5_and_indexes(loopback_server, tmp_path):
    import hashlib

    served, url = loopback_server
    names = [f"01-01-0{e}-01-01-01-03.mp4" for e in range(1, 4)] + ["02-01-02-01-01-01-03.mp4"]
    archive = _zip(served / "Video_Speech_Actor_03.zip", {f"Actor_03/{n}": b"fake video" for n in names})
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    registry = {"video-speech-03": {"name": archive.name, "md5": md5}}
    dest = tmp_path / "ravdess"
    index = ravdess.download_ravdess(
        dest, actors=[3], base_url=url, registry=registry, progress=False, checksums_url=None
    )
    assert len(index) == 4
    assert set(index["actor"]) == {3}
    assert (dest / "_downloads" / archive.name).is_file()
    # A second call reuses the cached archive (the server could be gone).
    (served / archive.name).unlink()
    assert (
        len(ravdess.download_ravdess(dest, actors=[3], base_url=url, registry=registry, progress=False)) == 4
    )


def test_download_looks_up_checksums_in_the_record_metadata(loopback_server, tmp_path):
    import hashlib
    import json

    served, url = loopback_server
    archive = _zip(served / "Video_Speech_Actor_04.zip", {"Actor_04/01-01-02-01-01-01-04.mp4": b"v"})
    registry = {"video-speech-04": {"name": archive.name, "md5": None}}
    api = url.format(name="record.json")
    good = {
        "files": [{"key": archive.name, "checksum": "md5:" + hashlib.md5(archive.read_bytes()).hexdigest()}]
    }
    (served / "record.json").write_text(json.dumps(good))
    assert ravdess.record_checksums(api) == {archive.name: good["files"][0]["checksum"]}
    index = ravdess.download_ravdess(
        tmp_path / "ok", actors=[4], base_url=url, registry=registry, checksums_url=api, progress=False
    )
    assert len(index) == 1
    (served / "record.json").write_text(
        json.dumps({"files": [{"key": archive.name, "checksum": "md5:" + "1" * 32}]})
    )
    with pytest.raises(ValueError, match="(?i)hash"):
        ravdess.download_ravdess(
            tmp_path / "bad", actors=[4], base_url=url, registry=registry, checksums_url=api, progress=False
        )


def test_download_ravdess_rejects_bad_checksum_and_malicious_archive(loopback_server, tmp_path):
    served, url = loopback_server
    _zip(served / "Video_Speech_Actor_05.zip", {"Actor_05/01-01-01-01-01-01-05.mp4": b"x"})
    registry = {"video-speech-05": {"name": "Video_Speech_Actor_05.zip", "md5": "0" * 32}}
    with pytest.raises(ValueError, match="(?i)hash"):
        ravdess.download_ravdess(tmp_path / "a", actors=[5], base_url=url, registry=registry, progress=False)
    _zip(served / "Video_Speech_Actor_06.zip", {"../../evil.mp4": b"x"})
    registry = {"video-speech-06": {"name": "Video_Speech_Actor_06.zip", "md5": None}}
    with pytest.raises(ValueError, match="outside"):
        ravdess.download_ravdess(
            tmp_path / "b", actors=[6], base_url=url, registry=registry, progress=False, checksums_url=None
        )
    assert not (tmp_path / "evil.mp4").exists()


def test_download_rejects_unknown_kind_and_actor(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        ravdess.download_ravdess(tmp_path, kind="video-song")
    with pytest.raises(ValueError, match="out of range"):
        ravdess.download_ravdess(tmp_path, actors=[30])
