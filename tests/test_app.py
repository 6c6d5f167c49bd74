"""`mer app` (mer_utils.app) without a browser: the plain functions on tiny real runs, and the Gradio page.

The runs are the tiny ones of tests/test_predict.py (a faces run on pattern images, a logistic
regression audio run on the demo set), trained once per module. Each test hands the page's
functions a demo clip, a broken file or one over a limit, and checks the answer, the message and
that the temporary copy is gone. The page test skips when Gradio is absent.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mer_utils import app, cli, errors, media
from mer_utils.app import AppLimits, answer_clip, answer_text, load_app_models
from tests.test_predict import RESULT_KEYS, audio_run, demo_clip, face_run  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def models(face_run, audio_run) -> dict:  # noqa: F811 - pytest fixtures by name
    return load_app_models([face_run, audio_run])


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 3 s demo clip (angry, actor 1) with a RAVDESS name."""
    return demo_clip(tmp_path_factory.mktemp("app_clips"))


def test_a_demo_clip_gets_a_label_probabilities_and_one_chart_per_modality(models, clip, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    outcome = answer_clip(clip, models, work_root=work)
    assert outcome["ok"] and outcome["message"] is None
    answer = outcome["answer"]
    assert RESULT_KEYS <= set(answer)
    assert answer["clip"] == clip.name and answer["true_label"] == "angry"
    assert answer["label"] == answer["labels"][int(np.argmax(answer["fused_probabilities"]))]
    np.testing.assert_allclose(sum(answer["fused_probabilities"]), 1.0, atol=1e-6)
    assert set(outcome["charts"]) == {"faces", "audio"}
    for image in outcome["charts"].values():
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
        assert image.std() > 0  # something is drawn
    weights = {row["modality"]: row for row in outcome["weights"]}
    assert set(weights) == {"faces", "audio"}
    available = [row for row in weights.values() if row["available"]]
    np.testing.assert_allclose(sum(row["weight"] for row in available), 1.0, atol=1e-6)
    for name, row in weights.items():
        assert row["why"].startswith(f"{name}: ")
    assert outcome["timeline"] is None  # one window: no timeline
    # Nothing in the answer names the temporary copy; the JSON download holds the whole answer.
    text = json.dumps(answer, default=str)
    assert "mer-upload-" not in text
    saved = app.write_answer_json(answer, tmp_path, answer["clip"])
    assert json.loads(saved.read_text())["fused_probabilities"] == answer["fused_probabilities"]
    assert f"## {answer['label']}" in app.summary_markdown(outcome)
    assert list(work.iterdir()) == []  # the copy and its folder are gone


def test_a_corrupt_file_gets_the_cli_one_line_message(models, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    work = tmp_path / "work"
    work.mkdir()
    outcome = answer_clip(broken, models, work_root=work)
    assert not outcome["ok"] and outcome["answer"] is None and outcome["charts"] == {}
    message = outcome["message"]
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("error: broken.mp4: no modality could be used")
    assert list(work.iterdir()) == []
    # The command line says the same words after its prefix.
    monkeypatch.chdir(tmp_path)
    runs = [run["run_dir"] for run in models["runs"]]
    assert cli.main(["predict", "broken.mp4", "--models", *runs]) == 2
    assert capsys.readouterr().err.strip() == f"mer predict: {message}"


def test_a_too_large_or_too_long_clip_is_refused_with_its_message(models, clip, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    large = answer_clip(clip, models, AppLimits(max_megabytes=0.001), work_root=work)
    assert not large["ok"]
    assert large["message"].startswith(f"error: {clip.name}: is ") and "up to 0.001 MB" in large["message"]
    long = answer_clip(clip, models, AppLimits(max_seconds=1.0), work_root=work)
    assert not long["ok"]
    assert long["message"].startswith(f"error: {clip.name}: lasts ") and "up to 1 s" in long["message"]
    text = answer_text("x" * 20, models, AppLimits(max_characters=10))
    assert text["message"] == "error: no text run answers in this page; start it with --models and a text run"
    assert list(work.iterdir()) == []


def test_a_missing_upload_is_a_message_not_an_exception(models, tmp_path):
    outcome = answer_clip(tmp_path / "gone.mp4", models, work_root=tmp_path)
    assert outcome["message"].startswith("error: gone.mp4: no such file")
    assert not any(p.name.startswith("mer-upload-") for p in tmp_path.iterdir())


def test_a_clip_longer_than_a_window_gets_a_timeline(models, clip, tmp_path):
    frames = media.read_frames(clip, 36)
    sound = media.read_audio(clip, 16_000)[: 3 * 16_000]
    long = media.write_mp4(
        tmp_path / "twice.mp4", np.concatenate([frames, frames]), 12, np.concatenate([sound, sound]), 16_000
    )
    outcome = answer_clip(long, models, work_root=tmp_path)
    assert outcome["ok"], outcome["message"]
    rows = outcome["answer"]["timeline"]
    assert len(rows) >= 3 and rows[0]["start"] == 0.0
    assert outcome["timeline"].ndim == 3
    json.dumps(outcome["answer"])  # plain data, no NaN objects or arrays


def test_page_errors_read_as_the_command_line_prints_them(monkeypatch, capsys):
    for error in (ValueError("x.mp4: bad\nthing"), MemoryError(), RuntimeError("boom")):

        def fail(args, error=error):
            raise error

        monkeypatch.setattr(cli, "cmd_predict", fail)
        cli.main(["predict", "x.mp4", "--models", "run"])
        assert capsys.readouterr().err.strip() == f"mer predict: {errors.error_message(error)}"


@pytest.mark.skipif(
    importlib.util.find_spec("gradio") is None, reason="gradio is not installed (the [app] extra)"
)
def test_the_page_answers_a_demo_clip_over_http(models, clip, tmp_path, monkeypatch):
    gradio_client = pytest.importorskip("gradio_client")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    page = app.build_app(models, upload_root=uploads)
    _, url, _ = page.launch(
        server_name="127.0.0.1", prevent_thread_lock=True, share=False, ssr_mode=False, quiet=True
    )
    try:
        assert url.startswith("http://127.0.0.1:")
        client = gradio_client.Client(url, verbose=False)
        copy = tmp_path / "client" / clip.name
        copy.parent.mkdir()
        shutil.copy(clip, copy)
        result = client.predict(gradio_client.handle_file(str(copy)), None, None, api_name="/answer_clip")
        summary, weights, faces_chart, audio_chart, timeline, download = result
        assert summary.startswith("## ") and clip.name in summary
        assert {row[0] for row in weights["data"]} == {"faces", "audio"}
        assert faces_chart and audio_chart and timeline is None
        answer = json.loads(Path(download).read_text())
        assert answer["clip"] == clip.name and answer["label"] in answer["labels"]
        # The upload is gone from the page's folder once answered.
        assert not [p for p in uploads.rglob(clip.name)]
        broken = tmp_path / "client" / "broken.mp4"
        broken.write_bytes(b"not a video" * 50)
        summary = client.predict(gradio_client.handle_file(str(broken)), None, None, api_name="/answer_clip")[
            0
        ]
        assert summary.startswith("error: broken.mp4: no modality could be used")
    finally:
        page.close()


@pytest.fixture(scope="module")
def text_run(demo_dir, tmp_path_factory) -> Path:
    """A naive Bayes text run on the demo set's sentences (seconds to train)."""
    from mer_utils.demo import TEXT_CSV_NAME
    from mer_utils.pipelines import base

    out = tmp_path_factory.mktemp("app_text") / "text"
    base.train("text", demo_dir / "text" / TEXT_CSV_NAME, out, seed=0, smoke=True, model="nb")
    return out


def test_a_typed_text_is_answered_by_the_text_run_alone(text_run, clip, tmp_path):
    models = load_app_models([text_run])
    assert models["clip"] is None and [run["name"] for run in models["runs"]] == ["text"]
    outcome = answer_text("I am so happy, this is wonderful", models)
    assert outcome["ok"], outcome["message"]
    answer = outcome["answer"]
    np.testing.assert_allclose(sum(answer["probabilities"]), 1.0, atol=1e-6)
    assert answer["label"] == answer["labels"][int(np.argmax(answer["probabilities"]))]
    assert set(outcome["charts"]) == {"text"}
    assert answer_text("   ", models)["message"] == "error: the text is empty; type a sentence"
    too_long = answer_text("word " * 10, models, AppLimits(max_characters=20))["message"]
    assert too_long == "error: the text has 50 characters; the page answers up to 20"
    no_clip_run = answer_clip(clip, models, work_root=tmp_path)["message"]
    assert no_clip_run.startswith("error: no clip run answers in this page")
    with pytest.raises(ValueError, match="--fusion fuses clip runs"):
        load_app_models([text_run], fusion=tmp_path)
