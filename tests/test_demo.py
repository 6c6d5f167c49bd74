"""The synthetic demo data set: format, determinism, and that emotions are learnable from it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mer_utils import demo, media, ravdess
from mer_utils.config import RAVDESS_EMOTIONS, TEXT_LABELS


def test_demo_set_is_ravdess_format_with_all_emotions(demo_dir):
    index = ravdess.index_dataset(demo_dir)
    assert index.attrs["skipped"] == []
    assert len(index) == 4 * 30
    assert set(index["emotion"]) == set(RAVDESS_EMOTIONS)
    assert set(index["modality"]) == {"audio-video"}
    assert sorted(index["actor"].unique()) == [1, 2, 3, 4]
    info = media.probe(index["path"].iloc[0])
    assert info["has_video"] and info["has_audio"]
    assert info["duration"] == pytest.approx(demo.DURATION, abs=0.2)
    assert (info["width"], info["height"]) == demo.FRAME_SIZE


def test_demo_text_csv_has_the_real_format(demo_dir):
    frame = pd.read_csv(demo_dir / "text" / demo.TEXT_CSV_NAME)
    assert list(frame.columns) == ["Unnamed: 0", "Emotion", "Text"]
    assert set(frame["Emotion"]) == set(TEXT_LABELS)
    assert frame["Text"].str.len().min() > 5


def test_demo_clip_is_deterministic_by_seed(tmp_path):
    first = demo.make_demo_clip(tmp_path / "a" / "01-01-05-01-01-01-01.mp4", "angry", "normal", 1, 1, seed=3)
    again = demo.make_demo_clip(tmp_path / "b" / "01-01-05-01-01-01-01.mp4", "angry", "normal", 1, 1, seed=3)
    other = demo.make_demo_clip(tmp_path / "c" / "01-01-05-01-01-01-01.mp4", "angry", "normal", 1, 1, seed=4)
    assert np.array_equal(media.read_audio(first), media.read_audio(again))
    assert np.array_equal(media.read_frames(first, 3), media.read_frames(again, 3))
    assert not np.array_equal(media.read_audio(first), media.read_audio(other))


def test_demo_expression_lives_in_the_middle_of_the_clip(tmp_path):
    # The first frame shows the neutral face, like a RAVDESS actor before speaking; the middle differs.
    happy = demo.make_demo_clip(tmp_path / "h.mp4", "happy", "strong", 1, 2, seed=1)
    neutral = demo.make_demo_clip(tmp_path / "n.mp4", "neutral", "normal", 1, 2, seed=1)
    edge = [media.read_frames(p, 1, start=0.0, stop=0.05)[0].astype(float) for p in (happy, neutral)]
    middle = [media.read_frames(p, 1, start=0.45, stop=0.55)[0].astype(float) for p in (happy, neutral)]
    assert np.abs(middle[0] - middle[1]).mean() > 2 * np.abs(edge[0] - edge[1]).mean()


def test_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="actors"):
        demo.make_demo_dataset(tmp_path, actors=0)
    with pytest.raises(ValueError, match="unknown emotion"):
        demo.make_demo_clip(tmp_path / "x.mp4", "bored", "normal", 1, 1)


def test_demo_generation_resumes_without_rewriting(demo_dir):
    before = {p: p.stat().st_mtime_ns for p in demo_dir.rglob("*.mp4")}
    summary = demo.make_demo_dataset(demo_dir, actors=4, seed=7)
    assert summary["clips"] == len(before)
    assert {p: p.stat().st_mtime_ns for p in demo_dir.rglob("*.mp4")} == before


def test_demo_voice_carries_the_emotion(demo_dir):
    """Angry and fearful voices are louder / higher than sad ones for every actor (a learnable signal)."""
    index = ravdess.index_dataset(demo_dir)
    for actor, rows in index.groupby("actor"):
        loud = {}
        for emotion in ("angry", "sad"):
            paths = rows.loc[rows["emotion"] == emotion, "path"]
            loud[emotion] = np.mean([np.sqrt(np.mean(media.read_audio(p) ** 2)) for p in paths])
        assert loud["angry"] > 1.5 * loud["sad"], actor
