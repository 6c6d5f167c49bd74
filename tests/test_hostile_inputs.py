# --- media, voice activity, faces, lone clips ---
# Clips a user may really hand to `mer predict`: silence, hiss, a 0.2 s clip, a green wall, a lone
# recording with any name, a long or truncated file. Tiny generated files; one small logreg run.

import shutil as _shutil
import warnings as _warnings

import numpy as _np
import pytest as _pytest

from mer_utils import media as _media
from mer_utils import voice as _voice

_SR = 16_000
_LABELS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def _tone_bursts(seconds: float, level: float = 0.2, on: float = 0.6) -> _np.ndarray:
    """A 180 Hz tone switched on for ``on`` s of every second: voice-like energy that rises and falls."""
    t = _np.arange(int(seconds * _SR)) / _SR
    return (level * _np.sin(2 * _np.pi * 180 * t) * ((t % 1.0) < on)).astype(_np.float32)


def _hiss(seconds: float, level: float = 0.05, seed: int = 0) -> _np.ndarray:
    return (_np.random.default_rng(seed).standard_normal(int(seconds * _SR)) * level).astype(_np.float32)


@_pytest.fixture(scope="module")
def lone_run(demo_dir, tmp_path_factory):
    """A small utterance-statistics logreg audio run on the demo set (features are cached)."""
    from mer_utils.pipelines import audio as pipeline

    out = tmp_path_factory.mktemp("hostile") / "logreg"
    pipeline.train(demo_dir, out, seed=3, model="logreg", smoke=True, progress=False)
    return out


def _fake_run(folder, branch: str, **info):
    """A run folder with run.json only: enough for the checks that come before the model is loaded."""
    from mer_utils.runs import write_run_info

    folder.mkdir(parents=True, exist_ok=True)
    write_run_info(folder, branch, _LABELS, **info)
    return folder


def test_voice_activity_tells_speech_from_silence_hiss_and_a_short_clip():
    assert _voice.voice_activity(_tone_bursts(3.0), _SR).has_speech
    for name, y in {
        "digital silence": _np.zeros(3 * _SR, _np.float32),
        "loud steady hiss": _hiss(3.0, 0.3),
        "faint hiss": _hiss(3.0, 1e-4),
        "0.2 s of voice": _tone_bursts(0.2, on=1.0),
    }.items():
        activity = _voice.voice_activity(y, _SR)
        assert not activity.has_speech, name
        with _pytest.raises(_voice.NoSpeechError, match=r"no speech found \(\d\.\d s of voice"):
            _voice.require_speech(y, _SR, "clip.wav")


@_pytest.mark.parametrize(
    "name, sound",
    [
        ("silent.wav", _np.zeros(3 * _SR, _np.float32)),
        ("short.wav", _tone_bursts(0.2, on=1.0)),
        ("hiss.wav", _hiss(3.0)),
    ],
)
def test_no_speech_makes_audio_unavailable_with_the_reason(lone_run, tmp_path, name, sound):
    from mer_utils.pipelines import audio as pipeline

    clip = _media.write_wav(tmp_path / name, sound, _SR)
    result = pipeline.predict_file(lone_run, clip)
    assert result["available"] is False and result["probabilities"] is None
    assert name in result["reason"] and "no speech found" in result["reason"]


def test_no_speech_makes_spectrogram_unavailable_before_the_model_is_loaded(tmp_path):
    from mer_utils.pipelines import spectrogram

    run = _fake_run(tmp_path / "spec", "spectrogram", seed=1)  # no model.keras: it must not be needed
    clip = _media.write_wav(tmp_path / "quiet.wav", _hiss(2.0, 1e-4), _SR)
    result = spectrogram.predict_file(run, clip)
    assert not result["available"] and "no speech found" in result["reason"]


def test_two_lone_clips_and_a_non_ravdess_name_get_their_own_answers(lone_run, demo_dir, tmp_path):
    from mer_utils.pipelines import audio as pipeline

    sources = sorted((demo_dir / "Actor_01").glob("*.mp4"))
    angry = next(p for p in sources if p.name.split("-")[2] == "05")
    sad = next(p for p in sources if p.name.split("-")[2] == "04")
    results = []
    for source, name in ((angry, "myclip.mp4"), (sad, "holiday video.mp4")):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        results.append(pipeline.predict_file(lone_run, _shutil.copy(source, folder / name)))
    for result in results:
        assert result["available"], result["reason"]
        assert result["details"]["speaker_reference_clips"] == 1
        assert result["details"]["speaker_normalisation"] == "shrunk"
        assert _np.isclose(sum(result["probabilities"]), 1)
    # Self-normalisation made every lone clip identical; the population statistics must not.
    assert not _np.allclose(results[0]["probabilities"], results[1]["probabilities"], atol=1e-3)


def test_a_run_without_stored_speaker_statistics_refuses_a_lone_clip(lone_run, demo_dir, tmp_path):
    from mer_utils.pipelines import audio as pipeline
    from mer_utils.speakers import POPULATION_FILE

    old = tmp_path / "old_run"
    _shutil.copytree(lone_run, old)
    (old / POPULATION_FILE).unlink()
    clip = _shutil.copy(sorted((demo_dir / "Actor_02").glob("*.mp4"))[0], tmp_path / "mine.mp4")
    result = pipeline.predict_file(old, clip)
    assert not result["available"] and "retrain" in result["reason"]


def test_speaker_statistics_unchanged_with_enough_clips_and_shrunk_with_few():
    from mer_utils import audio, speakers

    rng = _np.random.default_rng(0)
    features = rng.normal(3.0, 2.0, size=(40, 5)).astype(_np.float32)
    ids = _np.repeat(["a", "b"], 20)
    population = (_np.zeros(5, _np.float32), _np.ones(5, _np.float32))
    np_old = audio.normalise_per_speaker(features[:, None, :], ids)[:, 0, :]
    _np.testing.assert_allclose(speakers.normalise_speakers(features, ids, population), np_old, atol=1e-5)
    lone = speakers.normalise_speakers(features[:1], ["c"], population)
    assert _np.abs(lone).max() > 0.1  # not the all-zero vector of self-normalisation
    _, _, how = speakers.speaker_moments(features[:3], population)
    assert how == "shrunk"


def test_a_green_wall_has_no_face_so_video_is_unavailable(tmp_path):
    from mer_utils.pipelines import video

    faces = {"num_frames": 3, "start": 0.2, "stop": 0.8, "size": 32, "margin": 0.2}
    run = _fake_run(tmp_path / "video", "video", faces={**faces, "detectors": ["mtcnn", "haar", "center"]})
    wall = _np.zeros((12, 96, 96, 3), _np.uint8)
    wall[..., 1] = 180
    clip = _media.write_mp4(tmp_path / "wall.mp4", wall, fps=12, audio=_tone_bursts(1.0), sr=_SR)
    result = video.predict_file(run, clip)
    assert not result["available"] and "no face found in any of the 3 sampled frames" in result["reason"]


def test_a_centre_crop_is_never_called_a_face_at_prediction(tmp_path):
    from mer_utils import faces
    from mer_utils.pipelines import video

    grey = _np.full((96, 96, 3), 120, _np.uint8)
    # Training keeps its centre-crop fallback (every frame yields a crop) ...
    assert faces.detect_face(grey, ("haar", "center")).detector == "center"
    # ... but prediction drops it: the only detector left (Haar) finds nothing.
    params = {
        "num_frames": 2,
        "start": 0.2,
        "stop": 0.8,
        "size": 32,
        "margin": 0.2,
        "detectors": ["haar", "center"],
    }
    run = _fake_run(tmp_path / "video", "video", faces=params)
    clip = _media.write_mp4(tmp_path / "grey.mp4", _np.repeat(grey[None], 6, axis=0), fps=6)
    result = video.predict_file(run, clip)
    assert not result["available"] and "detectors: haar" in result["reason"]
    assert result["details"]["frames_with_face"] == 0


def test_nothing_left_to_fuse_is_one_clear_error(lone_run, tmp_path):
    from mer_utils.predict import NoModalityError, load_models, predict_clip

    loaded = load_models([lone_run], warm_up=False)
    mute = _media.write_mp4(tmp_path / "mute.mp4", _np.zeros((6, 32, 32, 3), _np.uint8), fps=6)
    with _pytest.raises(NoModalityError, match="mute.mp4: no modality could be used.*no audio stream"):
        predict_clip(mute, loaded=loaded)
    hiss = _media.write_wav(tmp_path / "hiss.wav", _hiss(2.0), _SR)
    with _pytest.raises(NoModalityError, match="no speech found"):
        predict_clip(hiss, loaded=loaded)


def test_frame_sampling_keeps_only_the_sampled_frames_in_memory(tmp_path):
    import tracemalloc

    frames = _np.random.default_rng(0).integers(0, 255, size=(400, 96, 128, 3), dtype=_np.uint8)
    clip = _media.write_mp4(tmp_path / "long.mp4", frames, fps=25)
    del frames
    tracemalloc.start()
    sampled = _media.read_frames(clip, 4, start=0.2, stop=0.8)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sampled.shape == (4, 96, 128, 3)
    # All 400 decoded frames would be 14.7 MB of arrays; 4 kept frames are 0.15 MB.
    assert peak < 2_000_000, peak


def test_audio_reading_stops_at_its_bound_and_whisper_starts_at_the_voice():
    from mer_utils import whisper_encoder

    y = _np.concatenate([_np.zeros(20 * _SR, _np.float32), _tone_bursts(40.0)])
    window = whisper_encoder.speech_window(y)
    assert window.size == 30 * _SR
    assert _voice.voice_activity(window[:_SR], _SR).seconds > 0.3  # voice from its first second
    short = _tone_bursts(3.0)
    assert whisper_encoder.speech_window(short) is short  # RAVDESS-length clips are unchanged


def test_audio_read_is_bounded(tmp_path):
    clip = _media.write_wav(tmp_path / "long.wav", _tone_bursts(5.0), _SR)
    assert _media.read_audio(clip, _SR, max_seconds=1.0).size == _SR
    assert _media.read_audio(clip, _SR).size == 5 * _SR


def _faststart_copy(source, target):
    """Remux an mp4 with its index (moov) in front, as web downloads are."""
    import av

    with av.open(str(source)) as inp, av.open(str(target), "w", options={"movflags": "+faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return target


def test_a_truncated_faststart_mp4_is_used_with_a_notice(tmp_path):
    frames = _np.random.default_rng(1).integers(0, 255, size=(60, 64, 64, 3), dtype=_np.uint8)
    whole = _media.write_mp4(tmp_path / "whole.mp4", frames, fps=20, audio=_tone_bursts(3.0), sr=_SR)
    full = _faststart_copy(whole, tmp_path / "full.mp4")
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.5)])
    with _warnings.catch_warnings():
        _warnings.simplefilter("error", _media.MediaWarning)
        _media.read_frames(full, 4)  # the whole file: no notice
    with _pytest.warns(_media.MediaWarning, match="cut.mp4: the video decodes only"):
        sampled = _media.read_frames(cut, 4)
    assert sampled.shape == (4, 64, 64, 3)
    with _pytest.warns(_media.MediaWarning, match="cut.mp4: the audio decodes only"):
        _media.read_audio(cut, _SR)


def test_out_of_memory_is_reported_as_such_not_as_a_corrupt_file(tmp_path, monkeypatch):
    import cv2

    clip = _media.write_mp4(tmp_path / "big.mp4", _np.zeros((4, 32, 32, 3), _np.uint8), fps=4)

    def exhausted(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(cv2, "resize", exhausted)
    with _pytest.raises(MemoryError, match="big.mp4: out of memory while decoding the video"):
        _media.read_frames(clip, 2, size=16)
