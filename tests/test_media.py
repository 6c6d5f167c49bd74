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


def _grace_hopper(height: int = 160) -> np.ndarray:
    """A real photographed face (matplotlib's sample image), upright, as RGB uint8 with even sides."""
    import cv2
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        image = cv2.imdecode(np.frombuffer(handle.read(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    width = int(round(image.shape[1] * height / image.shape[0])) // 2 * 2
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_read_frames_turns_a_phone_clip_upright(tmp_path, rotation):
    """A phone stores a face filmed sideways as it lies and says in the display matrix how to turn it."""
    import av

    from mer_utils import faces

    face = _grace_hopper()
    stored = np.rot90(face, -rotation // 90)  # as the sensor saw it: turning it back shows the face upright
    clip = media.write_mp4(
        tmp_path / "phone.mp4", np.repeat(stored[None], 4, axis=0), fps=4, crf=12, rotation=rotation
    )
    with av.open(str(clip)) as container:
        raw = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert raw.shape == stored.shape  # the file holds the frames as stored ...
    frames = media.read_frames(clip, 2)
    assert frames.shape[1:3] == face.shape[:2]  # ... read_frames turns them upright
    assert np.abs(frames[0].astype(int) - face.astype(int)).mean() < 8
    assert faces.detect_face(frames[0], ("haar",)) is not None
    # The stored picture is what a reader ignoring the matrix would hand the detector: no face.
    assert faces.detect_face(raw, ("haar",)) is None
    assert media.read_frames(clip, 1, size=32).shape == (1, 32, 32, 3)


def test_write_mp4_refuses_a_rotation_that_is_not_a_quarter_turn(tmp_path):
    with pytest.raises(ValueError, match="multiple of 90"):
        media.write_mp4(tmp_path / "x.mp4", np.zeros((2, 32, 32, 3), np.uint8), fps=2, rotation=45)


def test_waveform_envelope_bounds_the_sound_in_at_most_the_columns_asked(tmp_path):
    t = np.arange(2 * SR) / SR
    sound = np.where(t < 1.0, 0.0, 0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    wav = media.write_wav(tmp_path / "half.wav", sound, SR)
    lows, highs, duration = media.waveform_envelope(wav, columns=300)
    assert duration == pytest.approx(2.0, abs=1e-3)
    assert 150 <= lows.size <= 300 and lows.shape == highs.shape and (lows <= highs).all()
    half = lows.size // 2
    assert np.abs(highs[: half - 1]).max() < 0.01 and np.abs(lows[: half - 1]).max() < 0.01  # the silence
    assert highs[half + 1 :].min() > 0.4 and lows[half + 1 :].max() < -0.4  # the tone, both signs
    with pytest.raises(ValueError, match="columns"):
        media.waveform_envelope(wav, columns=0)
    assert media.sampled_frame_seconds(wav, 8) is None  # a sound file has no frames


def test_sampled_frame_seconds_are_the_times_of_read_frames(clip):
    seconds = media.sampled_frame_seconds(clip, 4, 0.25, 0.75)
    # The clip's frame i is grey 10*i at 12 fps: the frames read are those at these times.
    greys = media.read_frames(clip, 4, start=0.25, stop=0.75)[:, 0, 0, 0].astype(float)
    np.testing.assert_allclose(greys / 10, seconds * 12, atol=0.6)
    assert 0.5 <= seconds[0] < seconds[-1] <= 1.5


def test_read_audio_skips_to_a_start_and_streams_in_blocks(tmp_path):
    t = np.arange(4 * SR) / SR
    y = (0.3 * np.sin(2 * np.pi * 200 * t) * (t >= 2.0)).astype(np.float32)  # silent 2 s, then a tone
    path = media.write_wav(tmp_path / "late.wav", y, SR)
    later = media.read_audio(path, SR, start_seconds=2.0, max_seconds=1.0)
    assert later.size == SR and np.abs(later).max() == pytest.approx(0.3, abs=0.02)
    assert np.abs(media.read_audio(path, SR, max_seconds=1.0)).max() < 1e-3
    blocks = list(media.iter_audio(path, SR, block_seconds=0.5))
    assert len(blocks) >= 7 and max(b.size for b in blocks) < 0.6 * SR
    np.testing.assert_allclose(np.concatenate(blocks), media.read_audio(path, SR), atol=1e-6)
    with pytest.raises(ValueError, match="start_seconds"):
        media.read_audio(path, SR, start_seconds=-1)
    with pytest.raises(media.MediaError, match="late.wav.*no samples after 9.0 s"):
        media.read_audio(path, SR, start_seconds=9.0)
