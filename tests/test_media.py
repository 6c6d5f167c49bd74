"""Reading frames and audio, and the errors for bad clips."""

from __future__ import annotations

import numpy as np
import pytest

from mer_utils import media

SR = 16_000


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 2 s clip: frame i is filled with grey level 10*i; audio is a 440 Hz tone."""
    out = tmp_path_factory.mktemp("media") / "clip.mp4"
    frames = np.stack([np.full((64, 48, 3), 10 * i, dtype=np.uint8) for i in range(24)])
    t = np.arange(2 * SR) / SR
    media.write_mp4(out, frames, fps=12, audio=0.5 * np.sin(2 * np.pi * 440 * t), sr=SR, crf=10)
    return out


def test_probe_reports_streams_and_duration(clip):
    info = media.probe(clip)
    assert info["has_video"] and info["has_audio"]
    assert (info["width"], info["height"], info["fps"]) == (48, 64, 12.0)
    assert info["duration"] == pytest.approx(2.0, abs=0.15)


def test_frame_positions_avoid_the_edges_and_respect_the_window():
    assert media.frame_positions(100, 4).tolist() == [12, 37, 62, 87]
    window = media.frame_positions(100, 5, start=0.2, stop=0.8)
    assert window.min() >= 20 and window.max() < 80
    with pytest.raises(ValueError):
        media.frame_positions(100, 0)


def test_read_frames_samples_evenly_and_resizes(clip):
    frames = media.read_frames(clip, 4)
    assert frames.shape == (4, 64, 48, 3) and frames.dtype == np.uint8
    # Grey levels rise with the frame index: sampled frames 3, 9, 15, 21 -> about 30, 90, 150, 210.
    levels = frames.reshape(4, -1).mean(axis=1)
    assert np.all(np.diff(levels) > 40)
    assert levels[0] == pytest.approx(30, abs=8)
    assert media.read_frames(clip, 3, size=32).shape == (3, 32, 32, 3)
    assert media.read_frames(clip, 2, size=(40, 20)).shape == (2, 20, 40, 3)


def test_read_audio_mono_float_at_requested_rate(clip):
    audio = media.read_audio(clip, SR)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == pytest.approx(2 * SR, rel=0.05)  # AAC adds a short lead-in
    spectrum = np.abs(np.fft.rfft(audio[4000:20000]))
    assert np.fft.rfftfreq(16000, 1 / SR)[spectrum.argmax()] == pytest.approx(440, abs=3)
    assert len(media.read_audio(clip, 8000)) == pytest.approx(SR, rel=0.05)


def test_read_audio_from_wav_at_another_rate(tmp_path):
    path = media.write_wav(
        tmp_path / "x.wav", 0.3 * np.sin(2 * np.pi * 200 * np.arange(48000) / 48000), 48000
    )
    audio = media.read_audio(path, SR)
    assert len(audio) == pytest.approx(SR, abs=50)
    assert np.abs(audio).max() == pytest.approx(0.3, abs=0.02)


def test_errors_name_the_file_and_the_problem(tmp_path, clip):
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        media.read_frames(tmp_path / "missing.mp4", 2)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(media.MediaError, match="empty.mp4.*empty"):
        media.read_audio(empty)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(media.MediaError, match="corrupt.mp4.*corrupt"):
        media.read_frames(corrupt, 2)
    silent = media.write_mp4(tmp_path / "video_only.mp4", np.zeros((6, 32, 32, 3), np.uint8), fps=6)
    with pytest.raises(media.NoAudioStreamError, match="video_only.mp4.*no audio"):
        media.read_audio(silent)
    wav = media.write_wav(tmp_path / "a.wav", np.zeros(1000), SR)
    with pytest.raises(media.NoVideoStreamError, match="a.wav.*no video"):
        media.read_frames(wav, 2)
    with pytest.raises(ValueError, match="even"):
        media.write_mp4(tmp_path / "odd.mp4", np.zeros((2, 33, 32, 3), np.uint8), fps=6)
