"""Labelled face-image folders: both layouts, label mapping, skips with reasons, splits and the cache."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mer_utils.face_images import (
    decode_image,
    face_image_layout,
    gray_to_rgb,
    index_face_images,
    load_face_images,
    map_label,
    split_face_images,
)


def write_images(folder: Path, count: int, value: int, suffix: str = ".png", size: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = np.full((size, size), value, np.uint8)
        image[i % size, :] = 255 - value  # every file differs
        cv2.imwrite(str(folder / f"img_{i:03d}{suffix}"), image)


@pytest.fixture
def label_layout(tmp_path) -> Path:
    root = tmp_path / "by_label"
    write_images(root / "anger", 10, 30)
    write_images(root / "Happiness", 10, 90, ".jpg")
    write_images(root / "fear", 10, 150)
    write_images(root / "contempt", 3, 200)
    (root / "fear" / "broken.jpg").write_bytes(b"this is not a JPEG")
    (root / "fear" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def split_layout(tmp_path) -> Path:
    root = tmp_path / "by_split"
    for split, count in (("train", 10), ("validation", 4)):
        write_images(root / split / "angry", count, 30)
        write_images(root / split / "surprise", count, 120)
        write_images(root / split / "sadness", count, 200)
    write_images(root / "train" / "contempt", 2, 60)
    return root


def test_map_label_covers_common_spellings_and_rejects_unknown():
    assert map_label("Anger") == "angry"
    assert map_label("fear") == "fearful"
    assert map_label("surprise") == "surprised"
    assert map_label("sadness") == "sad"
    assert map_label("happiness") == "happy"
    assert map_label("neutral") == "neutral"
    assert map_label("calm") == "calm"
    assert map_label("contempt") is None


def test_label_layout_is_indexed_with_unknown_folders_and_non_images_skipped(label_layout):
    assert face_image_layout(label_layout) == "label"
    index = index_face_images(label_layout)
    assert sorted(index["label"].unique()) == ["angry", "fearful", "happy"]
    assert (index["folder_split"] == "").all()
    # broken.jpg is listed (its suffix is an image's); it is skipped when decoding.
    assert (index["label"] == "fearful").sum() == 11
    reasons = {Path(s["path"]).name: s["reason"] for s in index.attrs["skipped"]}
    assert "contempt" in reasons and "no RAVDESS emotion" in reasons["contempt"]
    assert "3 files" in reasons["contempt"]
    assert "notes.txt" in reasons and "not an image" in reasons["notes.txt"]


def test_split_layout_keeps_folder_roles_and_carves_validation_from_train(split_layout):
    assert face_image_layout(split_layout) == "split"
    index = index_face_images(split_layout)
    assert set(index["folder_split"]) == {"train", "validation"}
    assert any("contempt" in s["path"] for s in index.attrs["skipped"])
    split = split_face_images(index, seed=1, val_share=0.2)
    # Without test/, validation/ is the untouched test part; val comes out of train/ only.
    assert (split.loc[split["folder_split"] == "validation", "split"] == "test").all()
    val = split[split["split"] == "val"]
    assert (val["folder_split"] == "train").all()
    assert val.groupby("label").size().to_dict() == {"angry": 2, "sad": 2, "surprised": 2}
    assert split_face_images(index, seed=1, val_share=0.2)["split"].tolist() == split["split"].tolist()


def test_split_layout_with_test_folder_uses_validation_for_selection(split_layout):
    write_images(split_layout / "test" / "angry", 3, 40)
    write_images(split_layout / "test" / "sadness", 3, 210)
    split = split_face_images(index_face_images(split_layout), seed=0)
    assert (split.loc[split["folder_split"] == "validation", "split"] == "val").all()
    assert (split.loc[split["folder_split"] == "test", "split"] == "test").all()
    assert (split.loc[split["folder_split"] == "train", "split"] == "train").all()


def test_label_layout_split_is_stratified_and_disjoint(label_layout):
    split = split_face_images(index_face_images(label_layout), seed=3, val_share=0.2, test_share=0.2)
    counts = split.groupby(["split", "label"]).size()
    for label in ("angry", "happy"):
        assert counts[("test", label)] == 2 and counts[("val", label)] == 2 and counts[("train", label)] == 6
    assert split["path"].is_unique


def test_no_images_raises_a_clear_error(tmp_path):
    (tmp_path / "empty" / "contempt").mkdir(parents=True)
    with pytest.raises(ValueError, match="no labelled face images"):
        index_face_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        index_face_images(tmp_path / "missing")


def test_decode_resizes_gray_and_colour(label_layout):
    path = next((label_layout / "anger").glob("*.png"))
    gray = decode_image(path, 32)
    assert gray.shape == (32, 32, 1) and gray.dtype == np.uint8
    colour = decode_image(path, 16, grayscale=False)
    assert colour.shape == (16, 16, 3)
    assert gray_to_rgb(gray[None]).shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="unreadable image"):
        decode_image(label_layout / "fear" / "broken.jpg", 32)


def test_corrupt_images_are_skipped_and_decoding_is_cached(label_layout, tmp_path):
    index = index_face_images(label_layout)
    cache = tmp_path / "cache"
    first = load_face_images(index, 24, cache_dir=cache, progress=False)
    assert not first.cached
    assert len(first.images) == len(index) - 1 == len(first.index)
    assert [Path(s["path"]).name for s in first.skipped] == ["broken.jpg"]
    assert "unreadable image" in first.skipped[0]["reason"]
    assert first.images.shape[1:] == (24, 24, 1)
    # Row order of images follows the readable index rows.
    row = int(np.flatnonzero(first.index["label"] == "happy")[0])
    expected = decode_image(first.index.loc[row, "path"], 24)
    np.testing.assert_array_equal(first.images[row], expected)

    second = load_face_images(index, 24, cache_dir=cache, progress=False)
    assert second.cached
    np.testing.assert_array_equal(second.images, first.images)
    assert second.skipped == first.skipped
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob("*.tmp"))

    # A changed listing (one more file) is a new cache entry, never a stale answer.
    write_images(label_layout / "anger", 11, 30)
    grown = index_face_images(label_layout)
    third = load_face_images(grown, 24, cache_dir=cache, progress=False)
    assert not third.cached and len(third.images) == len(second.images) + 1
