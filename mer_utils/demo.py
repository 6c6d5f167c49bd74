"""The embedded synthetic demo data set: RAVDESS-format clips and a small text CSV.

Every clip is a real .mp4 (H.264 video + AAC audio) named like RAVDESS
(``01-01-EE-II-SS-RR-AA.mp4``, full audio-video speech). The face is a real public-domain
photograph that ships with matplotlib (Grace Hopper), so MTCNN detects it; each emotion
changes the mouth, brows, colour and head motion, and each actor changes scale, position
and lighting. The voice is synthesised: each emotion sets pitch level and range, tempo,
loudness and voice quality (breathy, harsh), each actor sets a base pitch and habits.
Per-clip randomness keeps the task learnable but not trivial.

Nothing here is real emotion data: it exists so that every notebook and test runs
anywhere, and so that a pipeline that stops learning fails CI.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mer_utils.config import DEFAULT_SEED, DEMO_DIR, RAVDESS_EMOTIONS, TEXT_LABELS

log = logging.getLogger(__name__)

# Frame size (width, height) of demo clips: small keeps the set light and fast to decode.
FRAME_SIZE = (160, 160)
# Frames per second of demo clips.
FPS = 12
# Clip duration in seconds (RAVDESS speech clips last about 3-4 s).
DURATION = 3.0
# Audio sample rate of the demo clips (Hz).
SAMPLE_RATE = 16_000
# Share of the clip at each end that shows the neutral face (RAVDESS actors start and end neutral).
NEUTRAL_EDGE = 0.18
# Name of the demo text CSV, written below <out_dir>/text/.
TEXT_CSV_NAME = "emotion_demo.csv"
# Landmarks of the face in the matplotlib photo (x, y in the original 512x600 image).
_LEFT_EYE, _RIGHT_EYE, _MOUTH = (220, 190), (308, 186), (268, 275)
# The crop of the photo around the face used as the base frame (x0, y0, x1, y1).
_CROP = (108, 70, 428, 390)


@dataclass(frozen=True)
class _Expression:
    """How one emotion changes the face and the voice (deviations from neutral)."""

    smile: float  # mouth corner lift (+ up, - down)
    mouth_open: float  # mouth opening (0 closed .. 1 wide open)
    brow_raise: float  # brow height (+ raised)
    brow_tilt: float  # inner brow (+ up as in sadness/fear, - down as in anger)
    tint: tuple[float, float, float]  # RGB gain change of the skin
    motion: float  # head motion amplitude (pixels)
    pitch: float  # pitch level factor
    pitch_range: float  # pitch movement (fraction of f0)
    tempo: float  # syllables per second
    loudness: float  # amplitude
    breathiness: float  # noise mixed into the voice
    harshness: float  # saturation of the voice


_EXPRESSIONS = {
    "neutral": _Expression(0.0, 0.05, 0.0, 0.0, (0, 0, 0), 0.5, 1.00, 0.08, 4.0, 0.50, 0.10, 0.0),
    "calm": _Expression(0.25, 0.0, -0.1, 0.0, (0.0, 0.03, 0.05), 0.3, 0.95, 0.05, 3.2, 0.40, 0.28, 0.0),
    "happy": _Expression(1.0, 0.35, 0.25, 0.0, (0.08, 0.04, -0.04), 1.6, 1.22, 0.25, 4.8, 0.70, 0.05, 0.1),
    "sad": _Expression(-0.8, 0.05, -0.1, 0.8, (-0.08, -0.04, 0.08), 0.4, 0.88, 0.04, 2.7, 0.35, 0.35, 0.0),
    "angry": _Expression(-0.3, 0.3, -0.5, -1.0, (0.16, -0.06, -0.08), 2.2, 1.15, 0.18, 5.2, 0.95, 0.0, 0.6),
    "fearful": _Expression(-0.3, 0.7, 0.9, 0.7, (-0.06, -0.02, 0.02), 1.8, 1.35, 0.22, 5.6, 0.60, 0.30, 0.1),
    "disgust": _Expression(-0.5, 0.2, -0.3, -0.3, (0.0, 0.08, -0.06), 1.0, 0.92, 0.12, 3.3, 0.60, 0.15, 0.3),
    "surprised": _Expression(0.1, 1.0, 1.0, 0.2, (0.05, 0.05, 0.05), 1.4, 1.30, 0.35, 4.2, 0.75, 0.10, 0.1),
}


@dataclass(frozen=True)
class _Actor:
    """Per-actor appearance and voice habits."""

    actor: int
    scale: float
    offset: tuple[float, float]
    brightness: float
    gamma: float
    background: tuple[int, int, int]
    base_pitch: float
    expressiveness: float
    habits: np.ndarray  # per-emotion multiplicative noise on the voice parameters


def _make_actor(actor: int, rng: np.random.Generator) -> _Actor:
    male = actor % 2 == 1
    return _Actor(
        actor=actor,
        scale=float(rng.uniform(0.85, 1.1)),
        offset=(float(rng.uniform(-10, 10)), float(rng.uniform(-8, 8))),
        brightness=float(rng.uniform(0.75, 1.2)),
        gamma=float(rng.uniform(0.8, 1.25)),
        background=tuple(int(v) for v in rng.integers(30, 220, size=3)),
        base_pitch=float(rng.uniform(100, 140) if male else rng.uniform(180, 240)),
        expressiveness=float(rng.uniform(0.6, 1.1)),
        habits=rng.normal(1.0, 0.12, size=(len(RAVDESS_EMOTIONS), 6)),
    )


def _base_face() -> np.ndarray:
    """The cropped Grace Hopper photo as float RGB in [0, 1]."""
    import matplotlib.cbook
    from PIL import Image

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    x0, y0, x1, y1 = _CROP
    return image[y0:y1, x0:x1]


def _draw_expression(face: np.ndarray, expression: _Expression, strength: float) -> np.ndarray:
    """Draw mouth and brows of an expression on the (cropped, full-resolution) face."""
    import cv2

    out = face.copy()
    x0, y0 = _CROP[0], _CROP[1]
    mouth = (_MOUTH[0] - x0, _MOUTH[1] - y0)
    smile = expression.smile * strength
    opening = expression.mouth_open * strength
    half_width = int(38 + 10 * abs(smile))
    # Mouth: a curved lip line; corners lifted (smile) or dropped; open mouths are dark ellipses.
    xs = np.linspace(-half_width, half_width, 25)
    curve = -smile * 14 * (1 - (xs / half_width) ** 2) + smile * 14
    lips = np.stack([mouth[0] + xs, mouth[1] + curve * -1 + 0], axis=1)
    if opening > 0.12:
        cv2.ellipse(
            out,
            (mouth[0], int(mouth[1] + 4)),
            (int(half_width * 0.8), int(4 + 22 * opening)),
            0,
            0,
            360,
            (0.18, 0.03, 0.04),
            -1,
            cv2.LINE_AA,
        )
    cv2.polylines(out, [lips.astype(np.int32)], False, (0.45, 0.1, 0.12), 5, cv2.LINE_AA)
    # Brows: a thick line above each eye, raised and tilted by the expression.
    raise_px = expression.brow_raise * strength * 14
    tilt_px = expression.brow_tilt * strength * 10
    for eye, inner_sign in ((_LEFT_EYE, 1), (_RIGHT_EYE, -1)):
        ex, ey = eye[0] - x0, eye[1] - y0
        outer = (ex - inner_sign * 24, ey - 26 - raise_px)
        inner = (ex + inner_sign * 18, ey - 26 - raise_px - tilt_px)
        cv2.line(
            out,
            (int(outer[0]), int(outer[1])),
            (int(inner[0]), int(inner[1])),
            (0.12, 0.1, 0.1),
            7,
            cv2.LINE_AA,
        )
    return out


def _render_frames(
    face: np.ndarray, expression: _Expression, actor: _Actor, strength: float, rng: np.random.Generator
) -> np.ndarray:
    """All frames of one clip as uint8 RGB: neutral at both ends, the expression in between."""
    import cv2

    width, height = FRAME_SIZE
    n = int(round(DURATION * FPS))
    neutral = _EXPRESSIONS["neutral"]
    phase = rng.uniform(0, 2 * np.pi)
    frames = np.empty((n, height, width, 3), dtype=np.uint8)
    cache: dict[float, np.ndarray] = {}
    for i in range(n):
        t = i / max(n - 1, 1)
        # Onset and offset ramps around the expressive middle of the clip.
        ramp = np.clip(min(t - NEUTRAL_EDGE, 1 - NEUTRAL_EDGE - t) / 0.1, 0, 1)
        level = round(float(ramp) * 4) / 4  # four drawing levels keep rendering cheap
        if level not in cache:
            drawn = (
                _draw_expression(face, expression, strength * level)
                if level > 0
                else _draw_expression(face, neutral, 1.0)
            )
            tint = 1 + np.asarray(expression.tint, dtype=np.float32) * strength * level
            cache[level] = np.clip(drawn * tint, 0, 1)
        image = cache[level]
        motion = (expression.motion * level + neutral.motion) * strength
        dx = actor.offset[0] + motion * 3 * np.sin(2 * np.pi * 1.3 * t * DURATION + phase)
        dy = actor.offset[1] + motion * 2 * np.cos(2 * np.pi * 0.9 * t * DURATION + phase)
        scale = actor.scale * width / image.shape[1]
        matrix = np.array(
            [
                [scale, 0, dx + width / 2 - scale * image.shape[1] / 2],
                [0, scale, dy + height / 2 - scale * image.shape[0] / 2],
            ],
            dtype=np.float32,
        )
        background = np.asarray(actor.background, dtype=np.float32) / 255.0
        frame = cv2.warpAffine(
            image,
            matrix,
            (width, height),
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=tuple(float(v) for v in background),
        )
        frame = np.clip(actor.brightness * frame, 0, 1) ** actor.gamma
        frame = frame + rng.normal(0, 0.025, size=frame.shape)
        frames[i] = np.clip(frame * 255, 0, 255).astype(np.uint8)
    return frames


def _synthesise_voice(
    expression: _Expression,
    actor: _Actor,
    emotion_index: int,
    strength: float,
    statement: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """A speech-like signal: syllables of a harmonic voice shaped by the emotion and the actor."""
    from scipy.signal import lfilter

    neutral = _EXPRESSIONS["neutral"]
    habits = actor.habits[emotion_index]

    def towards(value: float, base: float, habit: float) -> float:
        # Deviation from neutral scaled by intensity and the actor's expressiveness.
        return (base + (value - base) * strength) * habit

    pitch = actor.base_pitch * towards(expression.pitch, neutral.pitch, habits[0])
    pitch_range = max(0.01, towards(expression.pitch_range, neutral.pitch_range, habits[1]))
    tempo = max(1.5, towards(expression.tempo, neutral.tempo, habits[2]))
    loudness = max(0.1, towards(expression.loudness, neutral.loudness, habits[3]))
    breathiness = float(np.clip(towards(expression.breathiness, neutral.breathiness, habits[4]), 0, 0.8))
    harshness = float(np.clip(towards(expression.harshness, neutral.harshness, habits[5]), 0, 1))

    total = int(DURATION * SAMPLE_RATE)
    t = np.arange(total) / SAMPLE_RATE
    start, stop = NEUTRAL_EDGE * DURATION, (1 - NEUTRAL_EDGE) * DURATION
    speaking = (t >= start) & (t < stop)
    # Syllable envelope: raised-cosine bursts at the tempo, with small timing jitter.
    syllable_phase = (
        np.cumsum(np.where(speaking, tempo * (1 + 0.05 * rng.standard_normal()), 0)) / SAMPLE_RATE
    )
    envelope = np.where(speaking, 0.5 - 0.5 * np.cos(2 * np.pi * syllable_phase), 0.0) ** 1.5
    # Pitch contour: a phrase-level shape (statement-dependent) plus syllable-rate movement.
    progress = np.clip((t - start) / (stop - start), 0, 1)
    phrase = np.sin(np.pi * progress) if statement == 1 else np.sin(np.pi * progress * 1.5 + 0.3)
    f0 = pitch * (1 + pitch_range * (0.6 * phrase + 0.4 * np.sin(2 * np.pi * syllable_phase / 2)))
    f0 *= 1 + 0.01 * rng.standard_normal(total).cumsum() / np.sqrt(total)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    harmonics = sum((0.75**k) * np.sin(k * phase) for k in range(1, 12))
    voice = harmonics / 3.0
    if harshness > 0:
        voice = np.tanh(voice * (1 + 4 * harshness)) / np.tanh(1 + 4 * harshness)
    noise = rng.standard_normal(total)
    source = (1 - breathiness) * voice + breathiness * noise * 0.6
    # Vowel-like resonances alternate by syllable (statement-dependent vowel sequence).
    vowels = [(700, 1200), (400, 2000), (300, 2300), (550, 900)]
    order = [0, 1, 2, 3] if statement == 1 else [3, 2, 0, 1]
    signal = np.zeros(total)
    syllable_index = np.floor(syllable_phase).astype(int) % 4
    for k, (f1, f2) in enumerate(vowels):
        mask = syllable_index == order.index(k)
        if not mask.any():
            continue
        band = np.zeros(total)
        for formant, bandwidth in ((f1, 90), (f2, 120)):
            r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
            theta = 2 * np.pi * formant / SAMPLE_RATE
            band += lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], source)
        signal += band * mask
    signal = signal * envelope
    signal = signal / (np.abs(signal).max() + 1e-9) * 0.8 * loudness
    # Room and microphone noise at a per-clip signal-to-noise ratio.
    snr_db = rng.uniform(18, 35)
    noise_power = np.mean(signal[speaking] ** 2) / 10 ** (snr_db / 10)
    signal = signal + rng.standard_normal(total) * np.sqrt(noise_power)
    return np.clip(signal, -1, 1).astype(np.float32)


def demo_clip_name(emotion: str, intensity: str, statement: int, repetition: int, actor: int) -> str:
    """RAVDESS file name of a full audio-video speech clip."""
    emotion_code = RAVDESS_EMOTIONS.index(emotion) + 1
    intensity_code = 1 if intensity == "normal" else 2
    return f"01-01-{emotion_code:02d}-{intensity_code:02d}-{statement:02d}-{repetition:02d}-{actor:02d}.mp4"


def demo_takes(repetitions: int = 2) -> list[tuple[str, str, int, int]]:
    """The (emotion, intensity, statement, repetition) design of RAVDESS speech for one actor."""
    takes = []
    for emotion in RAVDESS_EMOTIONS:
        intensities = ("normal",) if emotion == "neutral" else ("normal", "strong")
        for intensity in intensities:
            for statement in (1, 2):
                for repetition in range(1, repetitions + 1):
                    takes.append((emotion, intensity, statement, repetition))
    return takes


def make_demo_clip(
    path: str | Path,
    emotion: str,
    intensity: str,
    statement: int,
    actor: int,
    seed: int = DEFAULT_SEED,
    repetition: int = 1,
    with_audio: bool = True,
) -> Path:
    """Write one synthetic clip (video + optional audio) to ``path``."""
    from mer_utils.media import write_mp4

    if emotion not in _EXPRESSIONS:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {RAVDESS_EMOTIONS}")
    actor_rng = np.random.default_rng([seed, actor])
    actor_profile = _make_actor(actor, actor_rng)
    rng = np.random.default_rng(
        [seed, actor, RAVDESS_EMOTIONS.index(emotion), statement, repetition, intensity == "strong"]
    )
    strength = (1.0 if intensity == "normal" else 1.5) * actor_profile.expressiveness * rng.uniform(0.6, 1.15)
    expression = _EXPRESSIONS[emotion]
    frames = _render_frames(_base_face(), expression, actor_profile, strength, rng)
    audio = None
    if with_audio:
        audio = _synthesise_voice(
            expression, actor_profile, RAVDESS_EMOTIONS.index(emotion), strength, statement, rng
        )
    return write_mp4(path, frames, FPS, audio, SAMPLE_RATE)


# Sentences for the demo text CSV: templates filled with emotion words (written for this project).
_TEXT_TEMPLATES = {
    "neutral": [
        "The meeting is at {t} tomorrow.",
        "I bought {o} at the shop.",
        "The train leaves at {t}.",
        "We moved {o} to the other room.",
    ],
    "joy": [
        "I am so happy about {o}!",
        "What a wonderful day, {o} made me smile.",
        "I love {o}, this is great!",
        "So glad we finally got {o}.",
    ],
    "sadness": [
        "I feel so lonely since {o} is gone.",
        "I miss {o} so much, it hurts.",
        "Crying again about {o}.",
        "Everything feels empty without {o}.",
    ],
    "fear": [
        "I am scared of {o}.",
        "What if {o} happens again, I am terrified.",
        "My hands shake when I think of {o}.",
        "I am afraid {o} will find me.",
    ],
    "surprise": [
        "Wow, I did not expect {o}!",
        "No way, {o} is here already?",
        "I can't believe {o} just happened!",
        "Suddenly {o} appeared out of nowhere!",
    ],
    "anger": [
        "I am furious about {o}!",
        "Stop it, {o} makes me so angry.",
        "I hate how {o} treats everyone.",
        "This {o} is outrageous, I am livid.",
    ],
    "shame": [
        "I am so ashamed of {o}.",
        "I feel embarrassed about {o}, I should not have.",
        "It was humiliating to admit {o}.",
        "I blush every time I remember {o}.",
    ],
    "disgust": [
        "Ugh, {o} is disgusting.",
        "That {o} smells revolting.",
        "Gross, {o} made me feel sick.",
        "I find {o} repulsive.",
    ],
}
_TEXT_OBJECTS = [
    "the new job",
    "my old friend",
    "the exam",
    "the dog",
    "the party",
    "the letter",
    "the storm",
    "the neighbour",
    "the trip",
    "the results",
    "the phone call",
    "dinner",
]
_TEXT_TIMES = ["nine", "noon", "five", "seven thirty"]
# Rows per text label in the demo CSV (shame and disgust are rare in the real data too).
_TEXT_ROWS = {
    "neutral": 50,
    "joy": 90,
    "sadness": 70,
    "fear": 60,
    "surprise": 55,
    "anger": 60,
    "shame": 30,
    "disgust": 35,
}


def make_demo_text_csv(path: str | Path, seed: int = DEFAULT_SEED) -> Path:
    """Write a small CSV in the real text data set's format (index, ``Emotion``, ``Text``)."""
    rng = np.random.default_rng(seed)
    rows = []
    for label in TEXT_LABELS:
        templates = _TEXT_TEMPLATES[label]
        for _ in range(_TEXT_ROWS[label]):
            template = templates[rng.integers(len(templates))]
            text = template.format(
                o=_TEXT_OBJECTS[rng.integers(len(_TEXT_OBJECTS))],
                t=_TEXT_TIMES[rng.integers(len(_TEXT_TIMES))],
            )
            # Some noise so that the task is not a lookup: a share of rows borrow another label's words.
            if rng.random() < 0.15:
                other = TEXT_LABELS[rng.integers(len(TEXT_LABELS))]
                text = _TEXT_TEMPLATES[other][rng.integers(4)].format(
                    o=_TEXT_OBJECTS[rng.integers(len(_TEXT_OBJECTS))], t="noon"
                )
            if rng.random() < 0.2:
                text = "@friend " + text
            rows.append((label, text))
    order = rng.permutation(len(rows))
    frame = pd.DataFrame([rows[i] for i in order], columns=["Emotion", "Text"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path)  # keeps the unnamed index column, as in the real file
    return path


def _make_demo_clip_job(job: tuple) -> Path:
    path, emotion, intensity, statement, actor, repetition, seed = job
    return make_demo_clip(path, emotion, intensity, statement, actor, seed=seed, repetition=repetition)


def make_demo_dataset(
    out_dir: str | Path,
    actors: int = 8,
    seed: int = DEFAULT_SEED,
    repetitions: int = 1,
    progress: bool = False,
    workers: int = 2,
) -> dict:
    """Write the demo set: ``out_dir/Actor_XX/*.mp4`` for ``actors`` actors and ``text/emotion_demo.csv``.

    Idempotent: existing clips are kept, so an interrupted run resumes. ``repetitions`` (1 or 2)
    sets how many repetitions of each statement are written (RAVDESS has 2; 1 halves the size).
    Returns a summary (clips, actors, megabytes, text_rows).
    """
    if not 1 <= actors <= 24:
        raise ValueError(f"actors must be between 1 and 24, got {actors}")
    if repetitions not in (1, 2):
        raise ValueError(f"repetitions must be 1 or 2, got {repetitions}")
    out_dir = Path(out_dir)
    jobs = []
    for actor in range(1, actors + 1):
        for emotion, intensity, statement, repetition in demo_takes(repetitions):
            name = demo_clip_name(emotion, intensity, statement, repetition, actor)
            jobs.append(
                (out_dir / f"Actor_{actor:02d}" / name, emotion, intensity, statement, actor, repetition)
            )
    todo = [(*job, seed) for job in jobs if not job[0].exists()]
    if todo:
        from concurrent.futures import ProcessPoolExecutor

        from tqdm.auto import tqdm

        # Each clip is independent and seeded by its own fields, so parallel order changes nothing.
        from mer_utils.workers import exit_with_parent

        # Workers end with this process, even when it is killed with SIGKILL.
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), initializer=exit_with_parent) as pool:
            done = pool.map(_make_demo_clip_job, todo, chunksize=4)
            for _ in tqdm(done, total=len(todo), desc="demo clips", unit="clip", disable=not progress):
                pass
    text_path = out_dir / "text" / TEXT_CSV_NAME
    if not text_path.exists():
        make_demo_text_csv(text_path, seed=seed)
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return {
        "clips": len(jobs),
        "actors": actors,
        "megabytes": size / 1e6,
        "text_rows": len(pd.read_csv(text_path)),
        "path": str(out_dir),
    }


def ensure_demo_data(out_dir: str | Path = DEMO_DIR, actors: int = 8, seed: int = DEFAULT_SEED) -> Path:
    """Return the demo data folder, generating it first if it is missing or incomplete."""
    make_demo_dataset(out_dir, actors=actors, seed=seed)
    return Path(out_dir)
