"""`mer app`: a local web page that answers one clip (or one text) with every modality, the fusion and the timeline.

The work is done by plain functions that take a file path (or a text) and return plain data:
:func:`load_app_models` loads the runs once (the bundled runs of :mod:`mer_utils.default_runs`
without ``--models``), :func:`answer_clip` answers an uploaded or recorded clip with the same dict
as `mer predict --json` plus one bar chart per modality, the fusion weights with a sentence saying
why, and the timeline plot of a clip longer than one window; :func:`answer_text` answers a text with
the text runs. A clip's answer also shows the face crops a faces run classified, each captioned
with its frame's emotion and probability (:func:`face_gallery`, from the crops
:func:`mer_utils.predict.predict_clip` hands back: faces are not detected twice), and the clip's
waveform with the voice segments the audio run found shaded (:func:`waveform_chart`). Both refuse
a file over :data:`MAX_UPLOAD_MEGABYTES` or a clip over :data:`MAX_CLIP_SECONDS`, work on a copy in
a fresh temporary folder deleted after the answer, and never raise: a bad file comes back as the one-line message `mer predict` prints
(:func:`mer_utils.errors.error_message`). :func:`build_app` puts a thin Gradio page on top
(imported only there: `mer --help` works without Gradio) and :func:`serve` launches it on
localhost, offline, analytics off, no share link, behind Gradio's queue.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mer_utils.errors import error_message

if TYPE_CHECKING:
    import numpy as np

# Largest upload the page accepts (MB): a few minutes of phone video.
MAX_UPLOAD_MEGABYTES = 100.0
# Longest clip the page answers (s): the 2-minute clip of issue #23's timeline target; longer
# clips are for `mer predict CLIP --timeline` on the command line.
MAX_CLIP_SECONDS = 120.0
# Longest text the page answers (characters).
MAX_TEXT_CHARACTERS = 5_000
# Where `mer app` listens unless told otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# Answers waiting in Gradio's queue before new visitors are asked to come back later.
QUEUE_SIZE = 16
# Face crops shown per answer, evenly spread over those a run classified (a faces run samples 8).
MAX_GALLERY_FACES = 8
# Height of the face gallery (px): one row of thumbnails with their captions.
GALLERY_HEIGHT = 190
# Slices of the drawn waveform (about one per pixel column of the image) and the rate it is read at.
WAVEFORM_COLUMNS = 1000
WAVEFORM_SAMPLE_RATE = 8_000
# Suffixes kept from an upload's name (the copy is always called clip<suffix>); others are dropped.
SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,5}$")


@dataclass(frozen=True)
class AppLimits:
    """What the page accepts: upload size (MB), clip length (s) and text length (characters)."""

    max_megabytes: float = MAX_UPLOAD_MEGABYTES
    max_seconds: float = MAX_CLIP_SECONDS
    max_characters: int = MAX_TEXT_CHARACTERS


# --- loading -------------------------------------------------------------------------------------


def load_app_models(
    run_dirs: Sequence[str | Path] | None = None, fusion: str | Path | None = None, warm_up: bool = True
) -> dict:
    """Load the runs once: clip runs through :func:`mer_utils.predict.load_models`, text runs apart.

    Without ``run_dirs`` the bundled runs answer (:data:`mer_utils.default_runs.DEFAULT_RUNS`).
    Returns {"clip": load_models' dict or None, "text": {name: {run_dir, model, labels}},
    "fusion": the `mer fuse` folder or None, "runs": [{name, branch, run_dir, source}]}.
    """
    from mer_utils.branches import get_branch
    from mer_utils.default_runs import DEFAULT_RUNS, default_run
    from mer_utils.pipelines import base
    from mer_utils.predict import load_models
    from mer_utils.runs import read_run_info

    if run_dirs:
        runs = [(Path(run), "given with --models") for run in run_dirs]
    else:
        runs = [(default_run(name), f"bundled: {DEFAULT_RUNS[name][1]}") for name in DEFAULT_RUNS]
    clip_runs, text, described = [], {}, []
    for run, source in runs:
        info = read_run_info(run)
        if get_branch(info["branch"]).reads == "text":
            name = "text" if "text" not in text else f"text_{len(text) + 1}"
            text[name] = {
                "run_dir": run,
                "model": base.load_model(run, "text"),
                "labels": list(info["labels"]),
            }
            described.append({"name": name, "branch": "text", "run_dir": str(run), "source": source})
        else:
            clip_runs.append((run, source))
    if fusion is not None and not clip_runs:
        raise ValueError(f"{fusion}: --fusion fuses clip runs; give at least one clip run with --models")
    clip = load_models([run for run, _ in clip_runs], fusion=fusion, warm_up=warm_up) if clip_runs else None
    if clip is not None:
        sources = {str(Path(run).resolve()): source for run, source in clip_runs}
        for name, entry in clip["models"].items():
            source = sources.get(str(Path(entry["run_dir"]).resolve()), "given with --models")
            described.append(
                {"name": name, "branch": entry["branch"], "run_dir": str(entry["run_dir"]), "source": source}
            )
    return {"clip": clip, "text": text, "fusion": fusion, "runs": described}


def shown_folder(run_dir: str | Path) -> str:
    """A run folder as the page shows it: relative to the working folder when inside it, else as given."""
    path = Path(run_dir)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def runs_description(models: dict) -> str:
    """One Markdown line per run that answers in the page (name, branch, folder, where it came from)."""
    return "\n".join(
        f"- **{run['name']}** ({run['branch']}): `{shown_folder(run['run_dir'])}`, {run['source']}"
        for run in models["runs"]
    )


# --- answering -----------------------------------------------------------------------------------


def _empty_answer(message: str | None = None) -> dict:
    return {
        "ok": False,
        "message": message,
        "answer": None,
        "charts": {},
        "weights": [],
        "timeline": None,
        "faces": [],
        "waveform": None,
    }


def check_size(path: Path, name: str, limits: AppLimits) -> None:
    """Refuse a file larger than the page accepts, naming it and the limit."""
    megabytes = path.stat().st_size / 1e6
    if megabytes > limits.max_megabytes:
        raise ValueError(
            f"{name}: is {megabytes:.1f} MB; the page takes files up to {limits.max_megabytes:g} MB "
            "(cut the clip, or use `mer predict` on the command line)"
        )


def check_length(seconds: float | None, name: str, limits: AppLimits) -> None:
    """Refuse a clip longer than the page answers, naming it and the limit."""
    if seconds is not None and seconds > limits.max_seconds:
        raise ValueError(
            f"{name}: lasts {seconds:.1f} s; the page answers clips up to {limits.max_seconds:g} s "
            "(cut the clip, or use `mer predict CLIP --timeline` on the command line)"
        )


def _readable_duration(path: Path) -> float | None:
    """The clip's length in seconds, or None when it cannot be read (predict_clip then says why)."""
    from mer_utils.timeline import clip_duration

    try:
        return clip_duration(path)
    except (ValueError, OSError):
        return None


def _replace_text(value, old: str, new: str):
    """``value`` (nested dicts, lists, strings) with every ``old`` in its strings replaced by ``new``."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {key: _replace_text(item, old, new) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_replace_text(item, old, new) for item in value]
    return value


def weight_sentence(name: str, entry: dict, single: str | None = None) -> str:
    """Why modality ``name`` weighs what it weighs in the fused answer, in one sentence."""
    if not entry.get("available"):
        reason = str(entry.get("reason") or "nothing to read")
        # Reasons start with the file's name; the sentence is about the modality.
        reason = reason.split(": ", 1)[1] if ": " in reason else reason
        return f"{name}: unavailable, weight 0 ({reason})"
    trust, confidence, weight = entry.get("trust"), entry.get("confidence"), entry.get("weight", 0.0)
    if single and name != single and weight == 0.0:
        return f"{name}: weight 0, the fusion lets {single} answer alone when it is available (chosen on validation)"
    return (
        f"{name}: weight {weight:.2f} from trust {trust:.2f} (its validation score) x confidence "
        f"{confidence:.2f} (how sure it is on this clip), normalised over the available modalities"
    )


def fusion_weights(result: dict, parameters: dict | None = None) -> list[dict]:
    """Per modality of a `mer predict` answer: available, confidence, trust, weight and the sentence why."""
    from mer_utils.fusion.parameters import single_clip_rule

    single = single_clip_rule(parameters).get("single") if parameters else None
    rows = []
    for name, entry in result["modalities"].items():
        rows.append(
            {
                "modality": name,
                "available": bool(entry.get("available")),
                "confidence": entry.get("confidence"),
                "trust": entry.get("trust"),
                "weight": float(entry.get("weight") or 0.0),
                "why": weight_sentence(name, entry, single),
            }
        )
    return rows


def figure_image(figure) -> np.ndarray:
    """A matplotlib figure as an RGB array (the figure is closed: a long-running page keeps none open)."""
    import numpy as np

    from mer_utils.plotting import pyplot

    try:
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    finally:
        pyplot().close(figure)


def probability_chart(name: str, labels: Sequence[str], probabilities, note: str = "") -> np.ndarray:
    """One modality's probabilities as a bar chart (the most likely label highlighted), as an RGB array."""
    import numpy as np

    from mer_utils.plotting import pyplot

    plt = pyplot()
    figure, ax = plt.subplots(figsize=(5, 2.6))
    values = np.asarray(probabilities, dtype=float)
    colours = ["tab:orange" if k == int(np.argmax(values)) else "tab:blue" for k in range(len(values))]
    ax.bar(range(len(values)), values, color=colours)
    ax.set_xticks(range(len(values)), list(labels), rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(f"{name}{': ' + note if note else ''}", fontsize=9, loc="left")
    figure.tight_layout()
    return figure_image(figure)


def unavailable_chart(name: str, reason: str) -> np.ndarray:
    """A placeholder chart for a modality that had nothing to read, saying why."""
    from mer_utils.plotting import pyplot

    plt = pyplot()
    figure, ax = plt.subplots(figsize=(5, 2.6))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{name}: unavailable\n{reason}", ha="center", va="center", wrap=True, fontsize=9)
    return figure_image(figure)


def face_gallery(result: dict, arrays: dict, most: int = MAX_GALLERY_FACES) -> list[tuple[np.ndarray, str]]:
    """Up to ``most`` face crops a run classified for ``result``, evenly spread, each with its caption.

    ``arrays`` is what :func:`mer_utils.predict.predict_clip` handed back for the same answer; a
    caption names that frame's most likely label with its probability, then the frame's time
    (``details["face_frames"]``), e.g. ``angry 0.43, 0.7 s``. Empty when no run found a face.
    """
    import numpy as np

    named = [
        (name, arrays[name]["face_crops"], result["modalities"][name]["details"].get("face_frames", []))
        for name in result["modalities"]
        if name in arrays and "face_crops" in arrays[name]
    ]
    gallery = []
    for name, crops, frames in named:
        if len(crops) != len(frames):
            raise ValueError(f"{name}: {len(crops)} face crops for {len(frames)} frame records")
        if not len(crops):
            continue
        chosen = sorted(set(np.linspace(0, len(crops) - 1, min(most, len(crops))).round().astype(int)))
        for k in chosen:
            frame = frames[k]
            # Label first: a narrow thumbnail cuts its caption's end.
            when = (
                f"{frame['seconds']:.1f} s"
                if frame.get("seconds") is not None
                else f"frame {frame['frame'] + 1}"
            )
            who = f" ({name})" if len(named) > 1 else ""
            caption = f"{frame['label']} {frame['probability']:.2f}, {when}{who}"
            gallery.append((np.asarray(crops[k], dtype=np.uint8), caption))
    return gallery


def voice_segments(result: dict) -> tuple[list[tuple[float, float]] | None, str | None]:
    """The voice segments an audio run found for ``result`` and that run's name, or (None, the reason).

    The first available modality that recorded ``details["voice_segments"]`` gives them; the
    reason is that of an unavailable audio run (e.g. no speech found), else None.
    """
    reason = None
    for name, entry in result["modalities"].items():
        found = (entry.get("details") or {}).get("voice_segments")
        if entry.get("available") and found is not None:
            return [(float(start), float(end)) for start, end in found], name
        if not entry.get("available") and "speech" in str(entry.get("reason") or ""):
            reason = str(entry["reason"]).split(": ", 1)[-1]
    return None, reason


def waveform_chart(clip: str | Path, result: dict, title: str) -> np.ndarray | None:
    """The clip's waveform (streamed, at most :data:`WAVEFORM_COLUMNS` slices) with the voice segments shaded.

    The segments are the ones the prediction found (:func:`voice_segments`), not detected again.
    None when the clip has no readable sound.
    """
    import numpy as np

    from mer_utils.media import MediaError, waveform_envelope
    from mer_utils.plotting import pyplot

    try:
        lows, highs, duration = waveform_envelope(clip, WAVEFORM_COLUMNS, WAVEFORM_SAMPLE_RATE)
    except (MediaError, FileNotFoundError, ValueError):
        return None
    segments, said_by = voice_segments(result)
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(10, 2.2))
    times = np.arange(lows.size) * duration / max(lows.size, 1)
    ax.fill_between(times, lows, highs, color="tab:blue", linewidth=0, step="post")
    for start, end in segments or []:
        ax.axvspan(start, end, color="tab:orange", alpha=0.3, linewidth=0)
    if segments is None:
        note = f"no voice marked: {said_by}" if said_by else "no voice marked (no audio run read this clip)"
    else:
        voiced = sum(end - start for start, end in segments)
        note = f"voice found by {said_by} (shaded): {len(segments)} segments, {voiced:.1f} s"
    ax.set_xlim(0, max(duration, 1e-3))
    peak = float(max(np.abs(lows).max(initial=0.0), np.abs(highs).max(initial=0.0), 1e-3))
    ax.set_ylim(-peak, peak)
    ax.set_xlabel("seconds")
    ax.set_yticks([])
    ax.set_title(f"{title}: {note}", fontsize=9, loc="left")
    figure.tight_layout()
    return figure_image(figure)


def _charts(result: dict) -> dict:
    charts = {}
    for name, entry in result["modalities"].items():
        if entry.get("available"):
            note = f"{result['labels'][max(range(len(result['labels'])), key=lambda k: entry['probabilities'][k])]}"
            charts[name] = probability_chart(name, result["labels"], entry["probabilities"], note)
        else:
            reason = str(entry.get("reason") or "")
            charts[name] = unavailable_chart(name, reason.split(": ", 1)[-1])
    return charts


def answer_clip(
    upload: str | Path,
    models: dict,
    limits: AppLimits = AppLimits(),
    display_name: str | None = None,
    work_root: str | Path | None = None,
) -> dict:
    """Answer one uploaded or recorded clip; never raises.

    ``upload`` is a file on this machine (Gradio's copy of an upload); ``display_name`` is what
    the page and the messages call it (default: its file name). The clip is copied as
    ``clip<suffix>`` into a fresh folder under ``work_root`` (default: the system's temporary
    folder), deleted once the answer is made. Returns {"ok", "message" (the one-line error, or
    None), "answer" (`mer predict --json`'s dict, plus "timeline" rows for a clip longer than one
    window; "clip" is the display name), "charts" {modality: RGB array}, "weights" (rows of
    :func:`fusion_weights`), "timeline" (RGB array or None)}.
    """
    upload = Path(upload)
    name = display_name or upload.name
    if models.get("clip") is None:
        return _empty_answer("error: no clip run answers in this page; start it with --models and a clip run")
    suffix = upload.suffix if SAFE_SUFFIX.match(upload.suffix) else ""
    folder = Path(tempfile.mkdtemp(prefix="mer-upload-", dir=work_root))
    clip = folder / f"clip{suffix.lower()}"
    try:
        if not upload.is_file():
            raise FileNotFoundError(f"{name}: no such file (the upload did not arrive; send it again)")
        check_size(upload, name, limits)
        shutil.copyfile(upload, clip)
        return _answer_copy(clip, name, models, limits)
    except Exception as error:  # the page shows every error as one line, never a traceback
        return _empty_answer(error_message(error).replace(str(clip), name))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _answer_copy(clip: Path, name: str, models: dict, limits: AppLimits) -> dict:
    from mer_utils.predict import predict_clip
    from mer_utils.timeline import HOP_SECONDS, WINDOW_SECONDS, predict_timeline

    duration = _readable_duration(clip)
    check_length(duration, name, limits)
    loaded = models["clip"]
    arrays: dict = {}
    result = predict_clip(clip, loaded=loaded, arrays=arrays)
    result = _replace_text(result, str(clip), name)
    result["clip"] = name
    try:
        from mer_utils.ravdess import parse_filename

        result["true_label"] = parse_filename(name).emotion
    except ValueError:
        result.pop("true_label", None)
    timeline_image = None
    # A timeline needs a second window that starts a full hop later: a 3.04 s clip is one window.
    if duration is not None and duration >= WINDOW_SECONDS + HOP_SECONDS:
        from mer_utils.plotting import plot_timeline

        table = predict_timeline(clip, fusion=models.get("fusion"), loaded=loaded)
        table.attrs["clip"] = name
        rows = _replace_text(
            table.astype(object).where(table.notna(), None).to_dict("records"), str(clip), name
        )
        result["timeline"] = rows
        timeline_image = figure_image(plot_timeline(table, title=name))
    return {
        "ok": True,
        "message": None,
        "answer": result,
        "charts": _charts(result),
        "weights": fusion_weights(result, loaded["parameters"]),
        "timeline": timeline_image,
        "faces": face_gallery(result, arrays),
        "waveform": waveform_chart(clip, result, name),
    }


def answer_text(text: str, models: dict, limits: AppLimits = AppLimits()) -> dict:
    """Answer a typed text with the text runs; never raises. Returns the keys of :func:`answer_clip`.

    The answer holds text, label, labels, probabilities (the mean of the text runs) and
    modalities (each text run's probabilities and confidence). Text labels differ from the clip
    labels, so a text is answered on its own, not fused with a clip.
    """
    import numpy as np

    from mer_utils.pipelines.text import predict_text

    try:
        if not models.get("text"):
            raise ValueError("no text run answers in this page; start it with --models and a text run")
        text = str(text or "")
        if not text.strip():
            raise ValueError("the text is empty; type a sentence")
        if len(text) > limits.max_characters:
            raise ValueError(
                f"the text has {len(text)} characters; the page answers up to {limits.max_characters}"
            )
        modalities, labels = {}, None
        for name, entry in models["text"].items():
            if labels is not None and entry["labels"] != labels:
                raise ValueError(f"{entry['run_dir']}: label order {entry['labels']} differs from {labels}")
            labels = entry["labels"]
            row = predict_text(text, model=entry["model"], labels=labels).iloc[0]
            probabilities = [float(row[f"prob_{label}"]) for label in labels]
            modalities[name] = {
                "available": True,
                "probabilities": probabilities,
                "confidence": float(row["confidence"]),
                "branch": "text",
                "run_dir": str(entry["run_dir"]),
            }
        mean = np.mean([entry["probabilities"] for entry in modalities.values()], axis=0)
        answer = {
            "text": text,
            "label": labels[int(np.argmax(mean))],
            "labels": labels,
            "probabilities": [float(p) for p in mean],
            "modalities": modalities,
        }
        charts = {
            name: probability_chart(
                name, labels, entry["probabilities"], labels[int(np.argmax(entry["probabilities"]))]
            )
            for name, entry in modalities.items()
        }
        return {
            "ok": True,
            "message": None,
            "answer": answer,
            "charts": charts,
            "weights": [],
            "timeline": None,
            "faces": [],
            "waveform": None,
        }
    except Exception as error:  # one line in the page, never a traceback
        return _empty_answer(error_message(error))


def summary_markdown(outcome: dict) -> str:
    """The page's headline: the fused emotion and its probability, or the one-line error."""
    if not outcome["ok"]:
        return outcome["message"]
    answer = outcome["answer"]
    probabilities = answer.get("fused_probabilities", answer.get("probabilities"))
    top = max(probabilities)
    what = answer.get("clip") or "the text"
    lines = [f"## {answer['label']} ({top:.2f})", f"{what}: {answer['label']} with probability {top:.2f}"]
    if answer.get("true_label"):
        lines.append(f"(the file name says: {answer['true_label']})")
    if answer.get("weak_answer"):
        lines.append(f"note: {answer['weak_answer']}")
    return "\n\n".join(lines)


def _shown(value) -> float | None:
    """A weight table number as the page shows it: three decimals (None stays empty)."""
    return None if value is None else round(float(value), 3)


def write_answer_json(answer: dict, folder: str | Path, stem: str = "answer") -> Path:
    """The full answer as a JSON file in ``folder`` (the page's download), named from ``stem``."""
    from mer_utils.runs import atomic_write_bytes

    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(stem).stem)[:60] or "answer"
    folder = Path(tempfile.mkdtemp(prefix="mer-answer-", dir=folder))
    return atomic_write_bytes(folder / f"{safe}_mer.json", json.dumps(answer, indent=2, default=str).encode())


# --- the page ------------------------------------------------------------------------------------


def _gradio():
    """Gradio, imported with its analytics and the Hugging Face hub's telemetry switched off."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio
    except ImportError as error:
        raise ImportError(
            "mer app needs Gradio: pip install 'mer-utils[app]' (or pip install 'gradio>=6.31,<7')"
        ) from error
    return gradio


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def build_app(models: dict, limits: AppLimits = AppLimits(), upload_root: str | Path | None = None):
    """The Gradio page over :func:`answer_clip` and :func:`answer_text` (built, not launched).

    ``upload_root`` is where Gradio keeps uploads (GRADIO_TEMP_DIR): a file handed to the page is
    answered only when it lies there, and removed after the answer.
    """
    gr = _gradio()
    upload_root = Path(upload_root or os.environ.get("GRADIO_TEMP_DIR") or tempfile.gettempdir())
    clip_names = list(models["clip"]["models"]) if models.get("clip") else []
    text_names = list(models.get("text", {}))

    def handle_clip(upload, webcam, microphone):
        given = next((item for item in (upload, webcam, microphone) if item), None)
        if given is None:
            return _outputs(_empty_answer("error: no clip given; upload a file or record one"))
        path = Path(given)
        # Only Gradio's own copies are read: nothing from the client is used as a server path.
        if not _inside(path, upload_root):
            return _outputs(_empty_answer(f"error: {path.name}: not an upload of this page; upload it again"))
        try:
            return _outputs(answer_clip(path, models, limits, display_name=path.name, work_root=upload_root))
        finally:
            path.unlink(missing_ok=True)
            try:
                path.parent.rmdir()  # Gradio's folder for this upload, if now empty
            except OSError:
                pass

    def handle_text(text):
        return _outputs(answer_text(text, models, limits))

    def _outputs(outcome: dict):
        download = None
        if outcome["ok"]:
            stem = outcome["answer"].get("clip") or "text"
            download = str(write_answer_json(outcome["answer"], upload_root, stem))
        rows = [
            [
                r["modality"],
                r["available"],
                _shown(r["confidence"]),
                _shown(r["trust"]),
                _shown(r["weight"]),
                r["why"],
            ]
            for r in outcome["weights"]
        ]
        charts = [outcome["charts"].get(name) for name in clip_names + text_names]
        # The gallery and the waveform come last: the earlier outputs keep their API positions.
        return [
            summary_markdown(outcome),
            rows,
            *charts,
            outcome["timeline"],
            download,
            outcome["faces"],
            outcome["waveform"],
        ]

    # The elem_ids ("mer-...") are how a browser finds the page's parts (mer_utils.app_browser).
    with gr.Blocks(title="mer: multimodal emotion recognition", analytics_enabled=False) as page:
        gr.Markdown(
            "# mer: what each modality says about a clip\n"
            "Upload a video or audio file, or record one; the fused emotion, each modality's answer and "
            "how much the fusion trusted it come back below. Runs answering:\n\n" + runs_description(models)
        )
        with gr.Tab("Upload"):
            upload = gr.File(label="video or audio file", type="filepath", elem_id="mer-upload")
        with gr.Tab("Webcam"):
            webcam = gr.Video(
                sources=["webcam"], include_audio=True, webcam_options=gr.WebcamOptions(mirror=False)
            )
        with gr.Tab("Microphone"):
            microphone = gr.Audio(sources=["microphone"], type="filepath")
        clip_button = gr.Button("Answer the clip", variant="primary", interactive=bool(clip_names))
        text = gr.Textbox(label="or type a text", visible=bool(text_names))
        text_button = gr.Button("Answer the text", visible=bool(text_names))
        summary = gr.Markdown(elem_id="mer-summary")
        weights = gr.Dataframe(
            headers=["modality", "available", "confidence", "trust", "weight", "why"],
            label="fusion weights (trust x confidence)",
            interactive=False,
            elem_id="mer-weights",
        )
        with gr.Row():
            charts = [
                gr.Image(label=name, type="numpy", elem_id=f"mer-chart-{name}")
                for name in clip_names + text_names
            ]
        faces = gr.Gallery(
            label="face crops the faces run read: each frame's emotion, its probability and the time",
            columns=MAX_GALLERY_FACES,
            height=GALLERY_HEIGHT,
            object_fit="contain",
            interactive=False,
            elem_id="mer-faces",
        )
        # The plot's own title says what it shows; Gradio's label chip would hide it.
        waveform = gr.Image(
            label="waveform, with the voice the audio run found shaded",
            show_label=False,
            type="numpy",
            elem_id="mer-waveform",
        )
        timeline = gr.Image(label="emotion over time (clips longer than one window)", type="numpy")
        download = gr.File(label="the full answer (JSON, as `mer predict --json`)", elem_id="mer-download")
        outputs = [summary, weights, *charts, timeline, download, faces, waveform]
        clip_button.click(handle_clip, [upload, webcam, microphone], outputs, api_name="answer_clip")
        text_button.click(handle_text, [text], outputs, api_name="answer_text")
    # One answer at a time: the models are shared, so visitors queue rather than mix answers.
    page.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return page


def serve(
    run_dirs: Sequence[str | Path] | None = None,
    fusion: str | Path | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    limits: AppLimits = AppLimits(),
) -> None:
    """Load the runs, build the page and serve it until Ctrl-C; uploads live in a folder removed at the end."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt  # a service manager's SIGTERM stops the page as Ctrl-C does: uploads removed

    previous_handler = signal.signal(signal.SIGTERM, stop)
    upload_root = Path(tempfile.mkdtemp(prefix="mer-app-"))
    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(upload_root)
    try:
        _gradio()
        models = load_app_models(run_dirs, fusion)
        page = build_app(models, limits, upload_root)
        print(f"mer app: {len(models['runs'])} runs loaded; serving on http://{host}:{port} (Ctrl-C stops)")
        page.launch(
            server_name=host,
            server_port=port,
            share=False,
            inbrowser=False,
            show_error=False,
            max_file_size=f"{limits.max_megabytes:g}mb",
            ssr_mode=False,
            mcp_server=False,
            enable_monitoring=False,
            quiet=True,
        )
    finally:
        shutil.rmtree(upload_root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous_handler)
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
