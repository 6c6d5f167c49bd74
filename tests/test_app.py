"""`mer app` (mer_utils.app): the plain functions on tiny real runs, the Gradio page, and the page in Chromium.

The runs are the tiny ones of tests/test_predict.py (a faces run on pattern images, a logistic
regression audio run on the demo set), trained once per module. Each test hands the page's
functions a demo clip, a broken file or one over a limit, and checks the answer, the message and
that the temporary copy is gone. The page test skips when Gradio is absent.

The browser tests (at the end, in this module so they share its runs) start `mer app --models` in
a process of its own on a free localhost port; Chromium, driven by Playwright
(mer_utils.app_browser), uploads a 3 s demo clip and a corrupt file as a visitor does and checks
what the page shows; the answer time from the click is printed and a screenshot saved. They skip,
saying why, where Gradio, Playwright or Chromium is absent (`make setup-app` installs the first
two, `apt-get install chromium` the last; MER_CHROMIUM names another executable).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from mer_utils import app, cli, errors, media
from mer_utils.app import AppLimits, answer_clip, answer_text, load_app_models
from mer_utils.app_browser import SUMMARY, answer_in_page, find_chromium
from mer_utils.config import RAVDESS_EMOTIONS
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
    # The faces run's crops, captioned with their frame's emotion and probability.
    frames = answer["modalities"]["faces"]["details"]["face_frames"]
    assert 1 <= len(outcome["faces"]) <= app.MAX_GALLERY_FACES and len(outcome["faces"]) <= len(frames)
    for crop, caption in outcome["faces"]:
        assert crop.dtype == np.uint8 and crop.ndim == 3 and crop.std() > 0, caption
        match = re.fullmatch(r"([a-z]+) ([01]\.\d\d), (\d+\.\d) s", caption)
        assert match and match[1] in answer["labels"], caption
        shown = next(f for f in frames if f"{f['seconds']:.1f}" == match[3])
        assert (match[1], match[2]) == (shown["label"], f"{shown['probability']:.2f}")
    # The waveform is drawn, with the audio run's voice segments shaded.
    assert outcome["waveform"].ndim == 3 and outcome["waveform"].std() > 0
    assert app.voice_segments(answer)[0] == [
        tuple(s) for s in answer["modalities"]["audio"]["details"]["voice_segments"]
    ]
    # Nothing in the answer names the temporary copy; the JSON download holds the whole answer.
    text = json.dumps(answer, default=str)
    assert "mer-upload-" not in text
    saved = app.write_answer_json(answer, tmp_path, answer["clip"])
    assert json.loads(saved.read_text())["fused_probabilities"] == answer["fused_probabilities"]
    assert f"## {answer['label']}" in app.summary_markdown(outcome)
    assert list(work.iterdir()) == []  # the copy and its folder are gone


def test_a_sound_file_gets_the_voice_segments_of_the_vad_and_no_face_crops(models, tmp_path):
    from mer_utils import voice
    from tests.test_voice import SR, _voice

    silence = np.zeros(SR, np.float32)
    sound = media.write_wav(tmp_path / "spoken.wav", np.concatenate([silence, _voice(2.0), silence]), SR)
    outcome = answer_clip(sound, models, work_root=tmp_path)
    assert outcome["ok"], outcome["message"]
    modalities = outcome["answer"]["modalities"]
    assert not modalities["faces"]["available"] and outcome["faces"] == []  # no frames, no gallery
    segments, said_by = app.voice_segments(outcome["answer"])
    assert said_by == "audio"
    assert segments == voice.stream_voice_activity(sound).segments()  # the VAD's own, reused
    assert segments[0][0] >= 0.95 and segments[-1][1] <= 3.05  # the silences stay unmarked
    assert outcome["waveform"].ndim == 3 and outcome["waveform"].std() > 0


def test_the_waveform_says_why_no_voice_is_marked(tmp_path):
    tone = media.write_wav(
        tmp_path / "tone.wav",
        (0.3 * np.sin(2 * np.pi * 200 * np.arange(16_000) / 16_000)).astype(np.float32),
        16_000,
    )
    unmarked = {"modalities": {"audio": {"available": False, "reason": "tone.wav: no speech found (0.0 s)"}}}
    assert app.voice_segments(unmarked) == (None, "no speech found (0.0 s)")
    marked = {"modalities": {"audio": {"available": True, "details": {"voice_segments": [[0.2, 0.6]]}}}}
    plain, shaded = (app.waveform_chart(tone, result, "tone.wav") for result in (unmarked, marked))
    assert plain.shape == shaded.shape and not np.array_equal(plain, shaded)
    assert app.waveform_chart(tmp_path / "gone.wav", marked, "gone.wav") is None


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
        summary, weights, faces_chart, audio_chart, timeline, download, gallery, waveform = result
        assert summary.startswith("## ") and clip.name in summary
        assert {row[0] for row in weights["data"]} == {"faces", "audio"}
        assert faces_chart and audio_chart and timeline is None
        assert gallery and all(re.match(r"[a-z]+ [01]\.\d\d, ", item["caption"]) for item in gallery)
        assert waveform
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


# --- the page in a real browser -------------------------------------------------------------

try:
    CHROMIUM, CHROMIUM_PROBLEM = (
        find_chromium(),
        "Chromium is absent (apt-get install chromium, or set MER_CHROMIUM)",
    )
except FileNotFoundError as error:  # MER_CHROMIUM names nothing: say so in the skip reason
    CHROMIUM, CHROMIUM_PROBLEM = None, str(error)
# Why the browser tests cannot run here, or None: they need Gradio, Playwright and a Chromium.
BROWSER_MISSING = next(
    (
        reason
        for absent, reason in (
            (importlib.util.find_spec("gradio") is None, "gradio is absent (make setup-app)"),
            (importlib.util.find_spec("playwright") is None, "playwright is absent (make setup-app)"),
            (CHROMIUM is None, CHROMIUM_PROBLEM),
        )
        if absent
    ),
    None,
)
needs_browser = pytest.mark.skipif(BROWSER_MISSING is not None, reason=str(BROWSER_MISSING))

# The checkout whose mer_utils the command runs (the one under test).
CHECKOUT = Path(__file__).resolve().parents[1]
# Longest wait for `mer app` to load its runs and answer HTTP (s): TensorFlow and the warm-up on a
# shared 2-core CPU.
START_SECONDS = 300
# The headline of an answer: "## label (probability)", shown as "label (0.83)".
HEADLINE = re.compile(r"^(?P<label>[a-z]+) \((?P<probability>[01]\.\d\d)\)$")


def free_port() -> int:
    """A localhost port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServedApp:
    """`mer app` running in its own process: its URL, temporary folder and log."""

    def __init__(self, runs: list[Path], folder: Path):
        self.folder = folder
        self.temporary = folder / "tmp"  # the command's TMPDIR: its upload folder lands here
        self.temporary.mkdir()
        self.log = folder / "mer_app.log"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        environment = os.environ | {
            "TMPDIR": str(self.temporary),
            "MER_CACHE_DIR": str(folder / "cache"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(CHECKOUT), os.environ.get("PYTHONPATH")])),
        }
        command = [sys.executable, "-m", "mer_utils.cli", "app", "--models", *map(str, runs)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [*command, "--port", str(port)], env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        self.wait_until_serving()

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mer app stopped with code {self.process.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(1)
        self.stop()
        raise RuntimeError(f"mer app did not serve {self.url} within {START_SECONDS} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def upload_folders(self) -> list[Path]:
        return sorted(self.temporary.glob("mer-app-*"))

    def stop(self) -> int:
        """Stop the command as a service manager does (SIGTERM); its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="module")
def served(face_run, audio_run, tmp_path_factory):  # noqa: F811 - pytest fixtures by name
    app = ServedApp([face_run, audio_run], tmp_path_factory.mktemp("app_browser"))
    yield app
    app.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    yield context.new_page()
    context.close()


@needs_browser
@pytest.mark.slow
def test_a_demo_clip_is_answered_with_its_label_and_a_chart_per_modality(served, page, tmp_path, capsys):
    clip = demo_clip(tmp_path)
    shown = answer_in_page(page, served.url, clip)
    headline, *lines = [line for line in shown.summary.splitlines() if line.strip()]
    match = HEADLINE.match(headline)
    assert match, shown.summary
    label, probability = match["label"], match["probability"]
    assert label in RAVDESS_EMOTIONS
    assert f"{clip.name}: {label} with probability {probability}" in lines
    assert "(the file name says: angry)" in lines
    for name in ("faces", "audio"):
        chart = page.locator(f"#mer-chart-{name} img")
        chart.wait_for()
        width, height = chart.evaluate("image => [image.naturalWidth, image.naturalHeight]")
        assert width > 100 and height > 50, (name, width, height)  # a drawn chart, not an empty frame
    # The face crops with their captions, and the waveform, are shown.
    page.locator("#mer-faces img").first.wait_for()
    assert page.locator("#mer-faces img").count() >= 1
    assert re.search(r"[a-z]+ [01]\.\d\d, [\d.]+ s", page.locator("#mer-faces").inner_text())
    page.locator("#mer-waveform img").wait_for()
    assert page.locator("#mer-waveform img").evaluate("image => image.naturalWidth") > 100
    weights = page.locator("#mer-weights").inner_text()
    assert "faces" in weights and "audio" in weights and "trust" in weights
    # The JSON download holds the answer the headline shows.
    with page.expect_download() as download:
        page.locator('#mer-download [data-testid="download-link"]').click()
    answer = json.loads(Path(download.value.path()).read_text())
    assert answer["clip"] == clip.name and answer["label"] == label
    assert f"{max(answer['fused_probabilities']):.2f}" == probability
    screenshot = page.screenshot(path=tmp_path / "mer_app.png", full_page=True)
    assert screenshot[:8] == b"\x89PNG\r\n\x1a\n"
    # Gradio's copy of the upload is deleted once answered.
    assert not list(served.temporary.rglob(clip.name))
    with capsys.disabled():
        print(
            f"\nmer app in Chromium, 3 s demo clip: answered in {shown.answer_seconds:.2f} s after the click "
            f"(upload {shown.upload_seconds:.2f} s; issue #23 asks <= 3 s); screenshot {tmp_path / 'mer_app.png'}"
        )


@needs_browser
@pytest.mark.slow
def test_a_corrupt_file_gets_the_one_line_message_and_no_traceback(served, page, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    shown = answer_in_page(page, served.url, broken)
    assert "\n" not in shown.summary
    assert shown.summary.startswith("error: broken.mp4: no modality could be used"), shown.summary
    text = page.locator("body").inner_text()
    assert "Traceback" not in text and 'File "' not in text
    assert page.locator('[data-testid="toast-body"]').count() == 0  # no Gradio error pop-up either
    assert page.locator(f"{SUMMARY} h2").count() == 0
    assert page.locator("#mer-chart-faces img").count() == 0


@needs_browser
@pytest.mark.slow
def test_stopping_the_command_removes_its_upload_folder(served):
    assert len(served.upload_folders()) == 1  # serving: one folder for the uploads
    assert served.stop() == 0, served.log_text()
    assert served.upload_folders() == []


def test_run_folders_are_shown_relative_to_the_working_folder_when_inside_it(tmp_path, monkeypatch):
    inside = tmp_path / "runs" / "audio"
    inside.mkdir(parents=True)
    elsewhere = tmp_path.parent / f"{tmp_path.name}_elsewhere" / "audio"
    monkeypatch.chdir(tmp_path)
    assert app.shown_folder(inside) == os.path.join("runs", "audio")
    assert app.shown_folder(elsewhere) == str(elsewhere)
    models = {
        "runs": [
            {"name": "audio", "branch": "audio", "run_dir": str(inside), "source": "given with --models"}
        ]
    }
    assert app.runs_description(models) == "- **audio** (audio): `runs/audio`, given with --models"
