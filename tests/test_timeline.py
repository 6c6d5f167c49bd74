"""`mer predict CLIP --timeline` (mer_utils.timeline): windows, streamed decoding, per-window answers, CSV and plot.

The runs are the tiny ones of tests/test_predict.py (a faces run on pattern images, a logistic
regression audio run on the demo set), trained once per module; the clips are demo clips joined
into a longer one with a known length, a silent stretch and frames that say their own time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_utils import cli, media, timeline
from mer_utils.config import RAVDESS_EMOTIONS
from mer_utils.pipelines import base
from mer_utils.predict import NoModalityError, load_models
from tests.test_predict import audio_run, demo_clip, face_run  # noqa: F401 - the module's run fixtures

# The joined clip: 3 s of a speaking demo clip, 4.5 s of its faces with silence (7.5 s, 12 fps).
SPEECH_SECONDS, SILENT_SECONDS, FPS, SR = 3.0, 4.5, 12, 16_000


@pytest.fixture(scope="module")
def loaded(face_run, audio_run) -> dict:  # noqa: F811 - pytest fixtures by name
    return load_models([face_run, audio_run], warm_up=False)


@pytest.fixture(scope="module")
def joined_clip(tmp_path_factory) -> Path:
    """A 7.5 s clip: a demo clip's 3 s of speech, then its faces again over 4.5 s of silence."""
    folder = tmp_path_factory.mktemp("timeline_clips")
    clip = demo_clip(folder)
    frames = media.read_frames(clip, int(SPEECH_SECONDS * FPS))
    speech = media.read_audio(clip, SR)[: int(SPEECH_SECONDS * SR)]
    faces_again = np.concatenate([frames, frames])[: int(SILENT_SECONDS * FPS)]
    silence = np.zeros(int(SILENT_SECONDS * SR), np.float32)
    return media.write_mp4(
        folder / "joined.mp4",
        np.concatenate([frames, faces_again]),
        FPS,
        np.concatenate([speech, silence]),
        SR,
    )


# --- the window grid ----------------------------------------------------------------------------


def test_the_grid_of_a_clip_of_known_length_ends_with_a_shorter_last_window():
    assert timeline.window_grid(7.5, 3.0, 1.0) == [
        (0.0, 3.0),
        (1.0, 4.0),
        (2.0, 5.0),
        (3.0, 6.0),
        (4.0, 7.0),
        (5.0, 7.5),
    ]
    # A grid that fits exactly has no partial window.
    assert timeline.window_grid(7.0, 3.0, 2.0) == [(0.0, 3.0), (2.0, 5.0), (4.0, 7.0)]
    # A clip shorter than a window is one window: the whole clip.
    assert timeline.window_grid(1.2, 3.0, 1.0) == [(0.0, 1.2)]
    # A 10-minute clip: one window a second until one reaches the end.
    grid = timeline.window_grid(600.0)
    assert len(grid) == 598 and grid[-1] == (597.0, 600.0)


@pytest.mark.parametrize(
    ("window", "hop", "message"),
    [
        (0.0, 1.0, "--window must be a positive number"),
        (-3.0, 1.0, "--window must be a positive number"),
        (3.0, 0.0, "--hop must be a positive number"),
        (float("nan"), 1.0, "--window must be a positive number"),
        (2.0, 3.0, "--hop 3 s is longer than --window 2 s"),
    ],
)
def test_bad_window_or_hop_is_a_clear_error(window, hop, message):
    with pytest.raises(ValueError, match=message):
        timeline.window_grid(10.0, window, hop)


def test_bad_window_on_the_command_line_is_one_line_and_exit_2(audio_run, joined_clip, capsys):  # noqa: F811
    code = cli.main(["predict", str(joined_clip), "--models", str(audio_run), "--timeline", "--hop", "-1"])
    assert code == 2
    assert "--hop must be a positive number of seconds, got -1" in capsys.readouterr().err
    code = cli.main(["predict", str(joined_clip), "--models", str(audio_run), "--window", "2"])
    assert code == 2 and "add --timeline" in capsys.readouterr().err


# --- streamed decoding ------------------------------------------------------------------------------


def test_each_window_gets_the_frames_shown_at_its_times(tmp_path):
    # Frame i is a flat grey of level 3 * i, so a decoded frame says which frame it is.
    count = 66
    frames = np.repeat((np.arange(count) * 3).astype(np.uint8)[:, None, None, None], 32, axis=1)
    frames = np.repeat(np.repeat(frames, 32, axis=2), 3, axis=3)
    clip = media.write_mp4(tmp_path / "ramp.mp4", frames, fps=FPS)
    windows = timeline.window_grid(count / FPS, 2.0, 1.5)
    assert windows[-1] == (4.5, 5.5)
    got = list(media.iter_window_frames(clip, windows, 4))
    assert len(got) == len(windows)
    for (start, end), images in zip(windows, got, strict=True):
        assert images.shape == (4, 32, 32, 3)
        expected = np.floor(media.window_frame_times(start, end, 4) * FPS) * 3
        np.testing.assert_allclose(images.reshape(4, -1).mean(axis=1), expected, atol=1.5)


def test_each_window_gets_its_own_audio(tmp_path):
    # Each second of sound is a constant level 0.1 * second: a window's samples say where they came from.
    seconds = 5
    levels = np.repeat(np.arange(seconds) * 0.1, SR).astype(np.float32)
    clip = media.write_wav(tmp_path / "steps.wav", levels, SR)
    windows = timeline.window_grid(seconds, 2.0, 1.0)
    got = list(media.iter_window_audio(clip, windows, SR))
    assert [len(a) for a in got] == [2 * SR] * len(windows)
    for (start, _), samples in zip(windows, got, strict=True):
        np.testing.assert_allclose(samples[: SR // 2].mean(), 0.1 * start, atol=2e-3)
        np.testing.assert_allclose(samples[-SR // 2 :].mean(), 0.1 * (start + 1), atol=2e-3)


def test_an_audio_only_file_has_windows_without_frames(tmp_path):
    sound = media.write_wav(tmp_path / "tone.wav", np.zeros(2 * SR, np.float32), SR)
    segments = list(timeline.iter_segments(sound, timeline.window_grid(2.0, 1.0, 1.0)))
    assert len(segments) == 2
    assert all(s.frames is None and "has no video stream" in s.frames_reason for s in segments)
    assert all(s.audio is not None and len(s.audio) == SR for s in segments)


# --- per-window answers, CSV and plot -------------------------------------------------------------------


@pytest.fixture(scope="module")
def table(loaded, joined_clip) -> pd.DataFrame:
    return timeline.predict_timeline(joined_clip, loaded=loaded, window=3.0, hop=1.0)


def test_every_window_has_its_times_and_probabilities_that_sum_to_one(table):
    labels = list(RAVDESS_EMOTIONS)
    assert list(table.columns) == timeline.timeline_columns(["faces", "audio"], labels)
    assert list(zip(table["start"], table["end"], strict=True)) == timeline.window_grid(7.5, 3.0, 1.0)
    assert table.attrs["duration"] == pytest.approx(7.5, abs=0.05)
    for prefix in ("faces_prob_", "fused_prob_"):
        sums = table[[f"{prefix}{label}" for label in labels]].sum(axis=1)
        np.testing.assert_allclose(sums, 1.0, atol=1e-6)
    assert table["faces_available"].all()
    fused = table[[f"fused_prob_{label}" for label in labels]].to_numpy()
    assert (table["fused_label"] == [labels[k] for k in fused.argmax(axis=1)]).all()
    np.testing.assert_allclose(table["fused_probability"], fused.max(axis=1))
    assert (table["fusion"] == timeline.MEAN_FUSION).all()


def test_a_silent_window_has_no_audio_answer_with_the_reason(table, joined_clip):
    speaking = table[table["end"] <= SPEECH_SECONDS]
    silent = table[table["start"] >= SPEECH_SECONDS]
    assert len(speaking) == 1 and len(silent) == 3
    assert speaking["audio_available"].all()
    np.testing.assert_allclose(speaking.filter(like="audio_prob_").sum(axis=1), 1.0, atol=1e-6)
    assert not silent["audio_available"].any()
    for reason in silent["audio_reason"]:
        assert "no speech found" in reason and f"{joined_clip} [" in reason and ".wav" not in reason
    assert silent.filter(like="audio_prob_").isna().all().all()
    # Without audio, a window's fused answer (the mean of what is available) is the faces answer.
    np.testing.assert_allclose(
        silent.filter(like="fused_prob_").to_numpy(), silent.filter(like="faces_prob_").to_numpy(), atol=1e-9
    )


def test_the_first_window_matches_the_whole_clip_through_the_same_code(loaded, face_run, joined_clip):  # noqa: F811
    # The first window is the whole speaking demo clip's time span: the faces answer of the window's
    # frames is the one predict_segment gives for the same frames handed over directly.
    images = next(media.iter_window_frames(joined_clip, [(0.0, 3.0)], 8))
    segment = base.Segment(Path(joined_clip), 0.0, 3.0, frames=images)
    direct = base.predict_segment(face_run, segment, model=loaded["models"]["faces"]["model"])
    assert direct["available"] and direct["details"]["frames"] == 8
    first = timeline.predict_timeline(joined_clip, loaded=loaded, window=3.0, hop=3.0).iloc[0]
    np.testing.assert_allclose(
        [first[f"faces_prob_{label}"] for label in RAVDESS_EMOTIONS], direct["probabilities"], atol=1e-6
    )


def test_cli_writes_the_csv_and_the_plot_beside_it(face_run, audio_run, joined_clip, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out" / "joined_timeline.csv"
    argv = ["predict", str(joined_clip), "--models", str(face_run), str(audio_run), "--timeline"]
    assert cli.main([*argv, "--window", "2.5", "--hop", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    written = pd.read_csv(out, keep_default_na=False)
    assert list(written.columns) == timeline.timeline_columns(["faces", "audio"], list(RAVDESS_EMOTIONS))
    assert list(zip(written["start"], written["end"], strict=True)) == timeline.window_grid(7.5, 2.5, 2.0)
    plot = out.with_suffix(".png")
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    assert f"{len(written)} windows of 2.5 s every 2 s" in text and str(plot) in text
    assert "unavailable: audio" in text
    assert cli.main([*argv, "--out", str(tmp_path / "again.csv"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["windows"] == 6 and summary["fusion"] == timeline.MEAN_FUSION
    assert cli.main([*argv, "--out", str(tmp_path / "timeline.parquet")]) == 2
    assert "ending in .csv" in capsys.readouterr().err


def test_a_fusion_folder_fuses_the_windows_as_mer_predict_does(audio_run, demo_dir, joined_clip, tmp_path):  # noqa: F811
    # `mer fuse` needs runs validated on the same clips: a second audio run on the demo set.
    from mer_utils.fusion.io import fuse_runs

    other = tmp_path / "svm"
    base.train("audio", demo_dir, other, seed=3, model="svm", smoke=True, progress=False)
    fusion = tmp_path / "fusion"
    fuse_runs([audio_run, other], fusion, seed=0, n_boot=20)
    loaded = load_models([audio_run, other], fusion=fusion, warm_up=False)
    names = list(loaded["models"])
    table = timeline.predict_timeline(joined_clip, fusion=fusion, loaded=loaded, window=3.0, hop=1.5)
    method = loaded["parameters"]["method"]
    assert table["fusion"].str.startswith(method).all() and str(fusion) in table["fusion"].iloc[0]
    assert table["fused_label"].iloc[0] and not table["fused_label"].iloc[-1]  # speech, then silence
    # Each window's fused answer is fuse_single's on that window's modality answers, with fusion.json's rule.
    from mer_utils.fusion.methods import fuse_single
    from mer_utils.fusion.parameters import single_clip_rule, trust_and_temperatures

    trust, temperatures = trust_and_temperatures(loaded["parameters"])
    labels = list(RAVDESS_EMOTIONS)
    for _, row in table[table["fused_label"] != ""].iterrows():
        answers = {
            name: ([row[f"{name}_prob_{label}"] for label in labels] if row[f"{name}_available"] else None)
            for name in names
        }
        expected = fuse_single(
            answers, trust, temperatures, labels=labels, **single_clip_rule(loaded["parameters"])
        )
        np.testing.assert_allclose(
            [row[f"fused_prob_{label}"] for label in labels], expected["fused_probabilities"], atol=1e-9
        )
        assert row["fused_label"] == labels[expected["label_index"]]


def test_a_clip_no_model_can_read_is_a_no_modality_error(loaded, tmp_path):
    mute = media.write_mp4(tmp_path / "mute.mp4", np.zeros((24, 32, 32, 3), np.uint8), fps=FPS)
    loaded_audio = {**loaded, "models": {"audio": loaded["models"]["audio"]}}
    with pytest.raises(
        NoModalityError, match=r"mute\.mp4: no modality could be used in any window.*no audio stream"
    ):
        timeline.predict_timeline(mute, loaded=loaded_audio)


def test_a_window_without_a_face_has_no_video_answer_with_the_reason(tmp_path):
    from mer_utils.runs import write_run_info

    run = tmp_path / "video"
    run.mkdir()
    faces = {"num_frames": 3, "start": 0.2, "stop": 0.8, "size": 32, "margin": 0.2}
    write_run_info(
        run, "video", list(RAVDESS_EMOTIONS), faces={**faces, "detectors": ["mtcnn", "haar", "center"]}
    )
    wall = np.zeros((3, 96, 96, 3), np.uint8)
    wall[..., 1] = 180
    segment = base.Segment(tmp_path / "clip.mp4", 2.0, 5.0, frames=wall)
    result = base.predict_segment(run, segment)
    assert not result["available"]
    assert result["reason"].startswith(
        f"{tmp_path / 'clip.mp4'} [2.0-5.0 s]: no face found in any of the 3 sampled"
    )
    assert result["details"]["frames_with_face"] == 0 and result["details"]["start"] == 2.0
    sound_only = base.Segment(tmp_path / "clip.wav", 0.0, 3.0, frames_reason="has no video stream")
    result = base.predict_segment(run, sound_only)
    assert not result["available"] and result["reason"] == f"{sound_only.name}: has no video stream"
