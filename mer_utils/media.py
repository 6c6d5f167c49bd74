"""Reading frames and audio from RAVDESS clips (.mp4 via PyAV, .wav via soundfile/PyAV).

librosa cannot open .mp4 without an ffmpeg binary; PyAV ships the FFmpeg libraries, so
every container goes through it. Errors name the file and what is wrong with it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class MediaError(ValueError):
    """A clip cannot be read: empty, corrupt, or lacking the stream asked for."""


class NoAudioStreamError(MediaError):
    """The clip has no audio track (e.g. a RAVDESS video-only clip, modality 02)."""


class MediaPermissionError(MediaError, PermissionError):
    """The clip may not be read by this user: a PermissionError, and a MediaError so batch jobs skip it."""


class NoVideoStreamError(MediaError):
    """The clip has no video track (e.g. a RAVDESS audio-only .wav, modality 03)."""


def _check_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (0 bytes)")
    return path


def _open(path: Path):
    import av

    try:
        return av.open(str(path))
    except PermissionError as error:  # PyAV's PermissionError is also an FFmpegError: not "corrupt"
        raise MediaPermissionError(
            f"{path}: permission denied (the file is not readable by this user); "
            "make it readable (chmod a+r) or copy it somewhere you can read"
        ) from error
    except (av.error.FFmpegError, UnicodeDecodeError) as error:
        raise MediaError(
            f"{path}: cannot be opened as audio/video, the file is corrupt or not media ({error})"
        ) from error


def probe(path: str | Path) -> dict:
    """Duration (s), frame rate, frame size and whether the clip has video / audio streams."""
    path = _check_file(path)
    with _open(path) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        duration = float(container.duration / 1_000_000) if container.duration else None
        return {
            "path": str(path),
            "duration": duration,
            "has_video": video is not None,
            "has_audio": audio is not None,
            "fps": float(video.average_rate) if video is not None and video.average_rate else None,
            "width": video.codec_context.width if video is not None else None,
            "height": video.codec_context.height if video is not None else None,
            "sample_rate": audio.codec_context.sample_rate if audio is not None else None,
        }


def frame_positions(total: int, num_frames: int, start: float = 0.0, stop: float = 1.0) -> np.ndarray:
    """Indices of ``num_frames`` evenly spaced frames within the fraction [start, stop] of a clip.

    Frames are taken at the centres of ``num_frames`` equal segments, so the very first and
    last frames (in RAVDESS mostly a neutral face before and after speaking) are avoided.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    if not 0.0 <= start < stop <= 1.0:
        raise ValueError(f"need 0 <= start < stop <= 1, got start={start}, stop={stop}")
    if total < 1:
        raise ValueError("clip has no frames")
    span = (stop - start) * total
    centres = start * total + (np.arange(num_frames) + 0.5) * span / num_frames
    return np.clip(np.floor(centres).astype(int), 0, total - 1)


class MediaWarning(UserWarning):
    """A clip was read only in part (truncated or damaged): results rest on what could be decoded."""


def notice(message: str) -> None:
    """Log a reading problem and raise it as a :class:`MediaWarning` (``mer predict`` shows them)."""
    import warnings

    log.warning(message)
    warnings.warn(message, MediaWarning, stacklevel=3)


def _out_of_memory(path: Path, what: str, error: BaseException) -> MemoryError:
    return MemoryError(f"{path}: out of memory while decoding the {what} ({error or 'no detail'})")


def _expected_frames(container, stream) -> int | None:
    """Frame count from the container (stored count, else duration x frame rate), without decoding."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / 1_000_000
    else:
        return None
    return max(1, int(round(seconds * float(rate)))) if rate else None


def _count_video_packets(path: Path) -> int:
    """Frames of a container that states neither count nor duration: its video packets, not decoded."""
    with _open(path) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def _decode_positions(path: Path, positions: np.ndarray, convert) -> tuple[dict, int, Exception | None]:
    """Decode up to the last wanted frame, keeping only ``positions`` (converted at once).

    Returns the kept frames by index, the number of frames decoded and the error that ended
    decoding early (None when it ended normally). Memory holds the kept frames only.
    """
    wanted = set(int(i) for i in positions)
    last = max(wanted)
    kept: dict[int, np.ndarray] = {}
    count, failure = 0, None
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if count in wanted:
                    kept[count] = convert(frame)
                count += 1
                if count > last:
                    break
        except MemoryError as error:  # av.error.MemoryError is one too
            raise _out_of_memory(path, "video", error) from error
        except Exception as error:  # noqa: BLE001 - PyAV raises several FFmpeg error types mid-decode
            failure = error
    return kept, count, failure


def frame_rotation(frame) -> int:
    """Counter-clockwise degrees (0, 90, 180 or 270) a decoded frame is turned by for display.

    Phones store a clip as the sensor saw it and say how to turn it in the display matrix (side
    data, the old ``rotate`` tag becomes one too); ignoring it hands the face detector a face lying
    on its side. Flips in the matrix are not applied (no camera writes them).
    """
    try:
        degrees = float(frame.rotation or 0)
    except (AttributeError, TypeError, ValueError):  # no display matrix, or an unreadable one
        return 0
    if not np.isfinite(degrees):
        return 0
    return int(round(degrees / 90.0)) % 4 * 90


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """The image turned ``rotation`` degrees counter-clockwise (a multiple of 90), as it is displayed."""
    turns = int(rotation) // 90 % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def read_frames(
    path: str | Path,
    num_frames: int,
    size: int | tuple[int, int] | None = None,
    start: float = 0.0,
    stop: float = 1.0,
) -> np.ndarray:
    """Evenly sampled RGB frames of a video as a uint8 array (num_frames, H, W, 3), upright.

    Frames are turned as the clip's display matrix says (:func:`frame_rotation`: a phone clip
    stored sideways comes out upright, its height and width swapped). ``size`` resizes frames to (width, height) (an int means square). ``start`` / ``stop``
    restrict sampling to a fraction of the clip (e.g. 0.15-0.85 skips the neutral edges).
    Streams: the frame count comes from the container (or its packets), frames are decoded up to
    the last sampled one and only the sampled ones are kept, so memory does not grow with the
    clip's length. A clip that decodes only in part (truncated download) is sampled over the
    part that decodes, with a :class:`MediaWarning`; out of memory raises ``MemoryError``.
    """
    import cv2

    path = _check_file(path)
    with _open(path) as container:
        if not container.streams.video:
            raise NoVideoStreamError(f"{path}: has no video stream")
        expected = _expected_frames(container, container.streams.video[0])
    width = height = None
    if size is not None:
        width, height = (size, size) if isinstance(size, int) else size

    def convert(frame) -> np.ndarray:
        image = upright(frame.to_ndarray(format="rgb24"), frame_rotation(frame))
        if width is not None:
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        return image

    total = expected if expected is not None else _count_video_packets(path)
    if total < 1:
        raise MediaError(f"{path}: video stream holds no decodable frames")
    positions = frame_positions(total, num_frames, start, stop)
    kept, decoded, failure = _decode_positions(path, positions, convert)
    if len(kept) < len(set(positions.tolist())):
        if decoded == 0:
            reason = (
                f"video stream is corrupt ({failure})"
                if failure
                else "video stream holds no decodable frames"
            )
            raise MediaError(f"{path}: {reason}")
        # The stream ended before the last sampled frame: a truncated or damaged file, or a
        # container that overstates its length. Sample again within the frames that decode.
        if decoded < 0.9 * total or failure is not None:
            notice(
                f"{path}: the video decodes only {decoded} of {total} frames"
                f"{f' ({failure})' if failure else ''}; the file looks truncated, frames come from the decoded part"
            )
        positions = frame_positions(decoded, num_frames, start, stop)
        kept, _, _ = _decode_positions(path, positions, convert)
        if len(kept) < len(set(positions.tolist())):
            raise MediaError(
                f"{path}: video stream decodes differently on a second pass; the file is damaged"
            )
    return np.stack([kept[int(i)] for i in positions])


def iter_audio(path: str | Path, sr: int = 16_000, block_seconds: float = 30.0):
    """Mono float32 audio of a clip in blocks of about ``block_seconds`` at ``sr`` Hz, decoded as read.

    Memory holds one block at a time, whatever the clip's length. Raises like :func:`read_audio`;
    a track that decodes only in part ends early with a :class:`MediaWarning`.
    """
    import av

    path = _check_file(path)
    block = max(1, int(round(block_seconds * sr)))
    with _open(path) as container:
        if not container.streams.audio:
            raise NoAudioStreamError(
                f"{path}: has no audio stream (RAVDESS video-only clips, modality 02, carry no sound)"
            )
        stream = container.streams.audio[0]
        if stream.duration and stream.time_base:
            expected = float(stream.duration * stream.time_base)
        else:
            expected = container.duration / 1_000_000 if container.duration else None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        chunks: list[np.ndarray] = []
        held = samples = 0
        failure = None
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    held += chunks[-1].size
                if held >= block:
                    joined = np.concatenate(chunks).astype(np.float32)
                    chunks, held = [], 0
                    samples += joined.size
                    yield joined
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except MemoryError as error:  # av.error.MemoryError is one too
            raise _out_of_memory(path, "audio", error) from error
        except Exception as error:  # noqa: BLE001 - PyAV raises several FFmpeg error types mid-decode
            if not chunks and not samples:
                raise MediaError(f"{path}: audio stream is corrupt ({error})") from error
            failure = error
    if chunks:
        joined = np.concatenate(chunks).astype(np.float32)
        samples += joined.size
        if joined.size:
            yield joined
    if not samples:
        raise MediaError(f"{path}: audio stream holds no samples")
    decoded = samples / sr
    if failure is not None or (expected and decoded < 0.9 * expected - 0.25):
        notice(
            f"{path}: the audio decodes only {decoded:.1f} s of {expected or 0:.1f} s"
            f"{f' ({failure})' if failure else ''}; the file looks truncated, the decoded part is used"
        )


def waveform_envelope(
    path: str | Path, columns: int = 1200, sr: int = 16_000
) -> tuple[np.ndarray, np.ndarray, float]:
    """The lowest and highest sample of each of at most ``columns`` equal slices of a clip's sound.

    What a waveform drawing needs, read as :func:`iter_audio` streams (memory holds one block and
    one value pair per 10 ms, whatever the clip's length). Returns (lows, highs, duration in s);
    slice ``k`` starts at ``k * duration / len(lows)``. Raises like :func:`iter_audio`.
    """
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    step = max(1, sr // 100)
    lows, highs = [], []
    carry = np.zeros(0, np.float32)
    samples = 0
    for block in iter_audio(path, sr):
        samples += block.size
        block = np.concatenate([carry, block])
        whole = block.size // step * step
        parts = block[:whole].reshape(-1, step)
        lows.append(parts.min(axis=1))
        highs.append(parts.max(axis=1))
        carry = block[whole:]
    if carry.size:
        lows.append(carry.min(keepdims=True))
        highs.append(carry.max(keepdims=True))
    low, high = np.concatenate(lows), np.concatenate(highs)
    group = -(-low.size // columns)
    if group > 1:
        missing = -low.size % group
        low = np.pad(low, (0, missing), mode="edge").reshape(-1, group).min(axis=1)
        high = np.pad(high, (0, missing), mode="edge").reshape(-1, group).max(axis=1)
    return low, high, samples / sr


def sampled_frame_seconds(
    path: str | Path, num_frames: int, start: float = 0.0, stop: float = 1.0
) -> np.ndarray | None:
    """Times (s) of the frames :func:`read_frames` samples with these arguments, or None when unknown.

    From the container's frame count and rate, without decoding; a clip that decodes only in part
    is sampled over that part by :func:`read_frames`, so its times are then approximate.
    """
    path = _check_file(path)
    with _open(path) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        total, rate = _expected_frames(container, stream), stream.average_rate or stream.guessed_rate
    if not total or not rate:
        return None
    return frame_positions(total, num_frames, start, stop) / float(rate)


def read_audio(
    path: str | Path, sr: int = 16_000, max_seconds: float | None = None, start_seconds: float = 0.0
) -> np.ndarray:
    """Mono float32 audio in [-1, 1] resampled to ``sr`` Hz, from an .mp4 audio track or a .wav.

    ``start_seconds`` skips the start of the clip (decoded and dropped as it streams by);
    ``max_seconds`` stops decoding after that much audio, so memory stays bounded for long clips.
    A track that decodes only in part gives a :class:`MediaWarning`.
    """
    if start_seconds < 0:
        raise ValueError(f"start_seconds must be 0 or more, got {start_seconds}")
    skip = int(round(start_seconds * sr))
    limit = None if max_seconds is None else max(1, int(round(max_seconds * sr)))
    kept: list[np.ndarray] = []
    held = 0
    blocks = iter_audio(path, sr, block_seconds=min(30.0, max_seconds or 30.0))
    try:
        for block in blocks:
            if skip:
                dropped = min(skip, block.size)
                block, skip = block[dropped:], skip - dropped
            if block.size:
                kept.append(block)
                held += block.size
            if limit is not None and held >= limit:
                break
    finally:
        blocks.close()
    if not kept:
        raise MediaError(f"{path}: audio stream holds no samples after {start_seconds:.1f} s")
    y = np.concatenate(kept)
    return y[:limit] if limit is not None else y


# --- windows of a long clip, streamed ---------------------------------------------------------


def window_frame_times(start: float, end: float, num_frames: int) -> np.ndarray:
    """Times (s) of ``num_frames`` frames spread evenly over [start, end): the centres of equal parts."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    return start + (np.arange(num_frames) + 0.5) * (end - start) / num_frames


def iter_window_frames(path: str | Path, windows, num_frames: int):
    """RGB uint8 frames (num_frames, H, W, 3) of each (start, end) window in seconds, upright, in order.

    One pass over the video stream: each window gets the frames shown at
    :func:`window_frame_times`, and only those are converted, so memory holds the frames of the
    windows not yet handed out, whatever the clip's length. ``windows`` must be sorted by start.
    A window past the decodable end of the stream gets an empty array (0, H, W, 3); a stream that
    breaks off mid-way ends early with a :class:`MediaWarning`. Raises ``FileNotFoundError`` /
    :class:`MediaError` (:class:`NoVideoStreamError` for an audio-only file) at the first frame asked for.
    """
    path = _check_file(path)
    windows = [(float(start), float(end)) for start, end in windows]
    # Every wanted frame time, sorted: (time, window, slot).
    wanted = sorted(
        (float(t), w, k)
        for w, (start, end) in enumerate(windows)
        for k, t in enumerate(window_frame_times(start, end, num_frames))
    )
    slots: list[list] = [[None] * num_frames for _ in windows]
    missing = [num_frames] * len(windows)
    handed = 0  # windows handed out so far
    with _open(path) as container:
        if not container.streams.video:
            raise NoVideoStreamError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        offset = (
            float(stream.start_time * stream.time_base) if stream.start_time and stream.time_base else 0.0
        )
        held, image, position, count, last_time, failure = None, None, 0, 0, None, None

        def take(frame_image, upto: float) -> None:
            nonlocal position
            while position < len(wanted) and wanted[position][0] < upto:
                _, w, k = wanted[position]
                slots[w][k] = frame_image
                missing[w] -= 1
                position += 1

        def converted(frame) -> np.ndarray:
            return upright(frame.to_ndarray(format="rgb24"), frame_rotation(frame))

        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except MemoryError as error:  # av.error.MemoryError is one too
                raise _out_of_memory(path, "video", error) from error
            except Exception as error:  # noqa: BLE001 - PyAV raises several FFmpeg error types mid-decode
                if count == 0:
                    raise MediaError(f"{path}: video stream is corrupt ({error})") from error
                failure = error
                break
            time = frame.time - offset if frame.time is not None else count / rate
            # Wanted times before this frame are shown by the frame before it (the first frame for
            # times before the stream starts).
            if position < len(wanted) and wanted[position][0] < time:
                if image is None:
                    image = converted(held if held is not None else frame)
                take(image, time)
            held, image, last_time = frame, None, time
            count += 1
            while handed < len(windows) and missing[handed] == 0:
                yield np.stack(slots[handed])
                slots[handed] = []
                handed += 1
            if handed == len(windows):
                return
        if count == 0:
            raise MediaError(f"{path}: video stream holds no decodable frames")
        # The last frame is shown for one frame period; later times lie past the stream's end.
        if position < len(wanted) and wanted[position][0] < last_time + 1.0 / rate:
            take(converted(held), last_time + 1.0 / rate)
    if failure is not None:
        notice(f"{path}: the video breaks off after {count} frames ({failure}); later windows have no frames")
    for w in range(handed, len(windows)):
        found = [image for image in slots[w] if image is not None]
        yield np.stack(found) if found else np.zeros((0, held.height, held.width, 3), np.uint8)


def iter_window_audio(path: str | Path, windows, sr: int = 16_000):
    """Mono float32 audio at ``sr`` Hz of each (start, end) window in seconds, in order, streamed.

    Memory holds one decoded block and the samples of the windows not yet handed out, whatever the
    clip's length. ``windows`` must be sorted by start. A window past the end of the track gets
    what remains of it (possibly nothing). Raises like :func:`iter_audio` at the first window asked for.
    """
    windows = [(float(start), float(end)) for start, end in windows]
    blocks = iter_audio(path, sr, block_seconds=10.0)
    held = np.zeros(0, np.float32)
    first = 0  # sample index of held[0]
    ended = False
    try:
        for start, end in windows:
            begin, stop = int(round(start * sr)), int(round(end * sr))
            while not ended and first + held.size < stop:
                block = next(blocks, None)
                if block is None:
                    ended = True
                else:
                    held = np.concatenate([held, block])
            window = held[max(0, begin - first) : max(0, stop - first)].copy()
            # Windows start in order: samples before this one's start are never asked for again.
            drop = min(max(0, begin - first), held.size)
            held, first = held[drop:], first + drop
            yield window
    finally:
        blocks.close()


def write_mp4(
    path: str | Path,
    frames: np.ndarray,
    fps: int,
    audio: np.ndarray | None = None,
    sr: int = 16_000,
    crf: int = 28,
    rotation: int = 0,
) -> Path:
    """Write RGB uint8 frames (n, H, W, 3) as H.264 and optional mono float audio as AAC.

    ``rotation`` (degrees counter-clockwise, a multiple of 90) is stored in the display matrix, as
    a phone does for a clip filmed sideways: players (and :func:`read_frames`) turn the frames by it.
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(frames, dtype=np.uint8)
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}")
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if rotation % 360:
            if rotation % 90:
                raise ValueError(f"rotation must be a multiple of 90 degrees, got {rotation}")
            video.set_display_rotation(rotation)
        # One thread and no rate-control lookahead: otherwise x264 output differs from run to run
        # (measured here), and the demo data set must be identical for a given seed.
        video.options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "rc-lookahead": "0"}
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sr)
            audio_stream.layout = "mono"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i  # explicit timestamps keep the encoding identical from run to run
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio_stream is not None:
            samples = np.clip(np.asarray(audio, dtype=np.float32), -1, 1).reshape(1, -1)
            chunk = 1024
            for offset in range(0, samples.shape[1], chunk):
                frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(samples[:, offset : offset + chunk]), format="flt", layout="mono"
                )
                frame.sample_rate = sr
                frame.pts = offset
                for packet in audio_stream.encode(frame):
                    container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)
    tmp.replace(path)
    return path


def write_wav(path: str | Path, audio: np.ndarray, sr: int) -> Path:
    """Write mono float audio as 16-bit PCM WAV."""
    import soundfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.clip(audio, -1, 1), sr, subtype="PCM_16")
    return path
