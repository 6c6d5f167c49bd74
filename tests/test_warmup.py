"""The setup warm-up runs every audio feature on a synthetic clip that exercises them (speech and silence)."""

import numpy as np

from mer_utils import audio, warmup


def test_warm_up_voice_has_silence_to_trim_and_voiced_frames():
    y = warmup._voice()
    trimmed = audio.trim_silence(y)
    assert 0.3 * y.size < trimmed.size < 0.9 * y.size
    log_f0 = audio.prosody_features(trimmed)[:, 0]
    assert (log_f0 > 0).mean() > 0.5
    # The glide from 140 to 180 Hz is what YIN finds.
    assert 120 < np.exp(np.median(log_f0[log_f0 > 0])) < 200


def test_compile_audio_kernels_runs_each_feature():
    assert warmup.compile_audio_kernels() > 0
