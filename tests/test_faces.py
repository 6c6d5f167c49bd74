"""Tests of mer_utils.faces: detection on a real photo, fallbacks, crops, the cache and batch extraction."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mer_utils import faces
from mer_utils.faces import ClipFaces, FaceBox, FaceParams

# Landmarks of Grace Hopper's face in matplotlib's 512x600 sample photo (x, y).
LEFT_EYE, RIGHT_EYE, MOUTH = (220, 190), (308, 186), (268, 275)
# A chain without MTCNN keeps the cache and batch tests free of TensorFlow (fast).
FAST_CHAIN = ("haar", "center")


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    """The public-domain Grace Hopper photo shipped with matplotlib, as uint8 RGB."""
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    image = mpimg.imread(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    assert image.shape == (600, 512, 3)
    return np.asarray(image, dtype=np.uint8)


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """Send the face cache to a temporary folder."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("MER_CACHE_DIR", str(folder))
    return folder / faces.FACES_CACHE_FOLDER


@pytest.fixture()
def clips(tmp_path, hopper) -> list[Path]:
    """Three tiny mp4 clips of the photo, shifted differently, plus nothing else."""
    from mer_utils.media import write_mp4

    paths = []
    for k in range(3):
        frames = np.stack([np.roll(hopper[60:540:4, 16:496:4], shift=k * 3 + i, axis=1) for i in range(6)])
        paths.append(write_mp4(tmp_path / f"clip{k}.mp4", frames, fps=6))
    return paths


def _assert_sensible_face(box: FaceBox, image_shape) -> None:
    for point in (LEFT_EYE, RIGHT_EYE, MOUTH):
        assert box.contains(point), f"{box} misses landmark {point}"
    # A face, not the whole picture: between 100 and 350 pixels wide in a 512-wide photo.
    assert 100 < box.width < 350 and 100 < box.height < 350
    assert (
        box.x >= 0
        and box.y >= 0
        and box.x + box.width <= image_shape[1]
        and box.y + box.height <= image_shape[0]
    )


@pytest.mark.slow
def test_mtcnn_finds_one_face_with_landmarks_on_a_real_photo(hopper):
    raw = [r for r in faces.get_mtcnn().detect_faces(hopper) if r["confidence"] >= faces.MIN_MTCNN_CONFIDENCE]
    assert len(raw) == 1
    box = faces.detect_face(hopper, ("mtcnn",))
    assert box.detector == "mtcnn" and box.confidence > 0.95
    _assert_sensible_face(box, hopper.shape)
    for name, expected in (("left_eye", LEFT_EYE), ("right_eye", RIGHT_EYE)):
        assert np.hypot(*np.subtract(box.keypoints[name], expected)) < 15


def test_haar_fallback_finds_the_same_face(hopper):
    box = faces.detect_face_haar(hopper)
    assert box is not None and box.detector == "haar"
    _assert_sensible_face(box, hopper.shape)
    # The chain without MTCNN uses Haar first.
    assert faces.detect_face(hopper, FAST_CHAIN).detector == "haar"


def test_blank_frames_fall_back_to_a_centre_crop_and_are_recorded():
    blank = np.full((120, 160, 3), 128, np.uint8)
    assert faces.detect_face_haar(blank) is None
    clip = faces.faces_from_frames(np.stack([blank, blank]), FaceParams(size=48, detectors=FAST_CHAIN))
    assert clip.detectors == ["center", "center"]
    assert clip.fallback_share == 1.0
    assert np.isnan(clip.confidences).all()
    side = faces.CENTER_CROP_SHARE * 120
    np.testing.assert_allclose(clip.boxes[0], [(160 - side) / 2, (120 - side) / 2, side, side])
    # Without "center" in the chain nothing is invented: the frame is marked "none".
    assert faces.faces_from_frames(blank[None], FaceParams(size=48, detectors=("haar",))).detectors == [
        "none"
    ]


@pytest.mark.slow
def test_mtcnn_on_a_blank_frame_falls_back():
    blank = np.zeros((100, 100, 3), np.uint8)
    assert faces.detect_faces_mtcnn([blank]) == [None]
    assert faces.detect_face(blank).detector == "center"


def test_square_box_adds_the_margin_and_stays_inside_the_image():
    box = FaceBox(100, 100, 50, 80, 0.99, "mtcnn")
    assert faces.square_box(box, (400, 400), margin=0.25) == (65, 80, 185, 200)  # side 80 * 1.5 = 120
    corner = FaceBox(0, 0, 40, 40, 0.99, "mtcnn")
    assert faces.square_box(corner, (400, 300), margin=0.5) == (0, 0, 80, 80)  # shifted, not padded
    huge = FaceBox(10, 10, 280, 280, 0.99, "mtcnn")
    x0, y0, x1, y1 = faces.square_box(huge, (200, 300), margin=0.2)
    assert (x1 - x0, y1 - y0) == (200, 200) and y0 == 0  # capped at the shorter image side


def test_crop_face_has_the_asked_size_and_content():
    image = np.zeros((200, 200, 3), np.uint8)
    image[50:150, 60:160] = (255, 0, 0)  # a red square "face" on black
    box = FaceBox(60, 50, 100, 100, 0.99, "mtcnn")
    tight = faces.crop_face(image, box, size=64, margin=0.0)
    assert tight.shape == (64, 64, 3) and tight.dtype == np.uint8
    assert (tight[..., 0] == 255).all()
    wide = faces.crop_face(image, box, size=64, margin=0.4)
    assert wide.shape == (64, 64, 3)
    red_share = (wide[..., 0] > 128).mean()
    assert 0.27 < red_share < 0.35  # (1 / 1.8)^2 = 0.31 of the crop is the face


def test_face_params_reject_bad_values():
    with pytest.raises(ValueError, match="detectors"):
        FaceParams(detectors=("dlib",))
    with pytest.raises(ValueError, match="start"):
        FaceParams(start=0.8, stop=0.2)
    with pytest.raises(ValueError, match="num_frames"):
        FaceParams(num_frames=0)


def test_frames_are_sampled_inside_the_window(clips):
    from mer_utils.media import read_frames

    frames = faces.extract_clip_faces(clips[0], FaceParams(num_frames=3, size=40, detectors=FAST_CHAIN))
    assert frames.faces.shape == (3, 40, 40, 3)
    # A window [0.5, 1.0] samples the second half only: its frames differ from a [0, 0.5] window's.
    early = read_frames(clips[0], 2, start=0.0, stop=0.5)
    late = read_frames(clips[0], 2, start=0.5, stop=1.0)
    assert np.abs(early.astype(int) - late.astype(int)).mean() > 1


def test_cache_is_reused_and_keyed_by_parameters(clips, cache):
    params = FaceParams(num_frames=2, size=32, detectors=FAST_CHAIN)
    first = faces.extract_faces(clips, params, progress=False)
    assert (first.computed, first.cached) == (3, 0)
    files = sorted(cache.glob("*.npz"))
    assert len(files) == 3
    stamps = [f.stat().st_mtime_ns for f in files]
    second = faces.extract_faces(clips, params, progress=False)
    assert (second.computed, second.cached) == (0, 3)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing rewritten
    for path in map(str, clips):
        np.testing.assert_array_equal(first.faces[path].faces, second.faces[path].faces)
        assert first.faces[path].detectors == second.faces[path].detectors
    # Other parameters or a modified clip are new cache entries.
    third = faces.extract_faces(
        clips, FaceParams(num_frames=2, size=40, detectors=FAST_CHAIN), progress=False
    )
    assert third.computed == 3
    os.utime(clips[0], ns=(stamps[0] + 10**9, stamps[0] + 10**9))
    assert faces.extract_faces(clips, params, progress=False).computed == 1


def test_interrupted_run_resumes_without_redoing_finished_clips(clips, cache):
    params = FaceParams(num_frames=2, size=32, detectors=FAST_CHAIN)
    partial = faces.extract_faces(clips[:2], params, progress=False)  # "interrupted" after two clips
    assert partial.computed == 2
    resumed = faces.extract_faces(clips, params, progress=False)
    assert (resumed.computed, resumed.cached) == (1, 2)
    assert len(resumed.faces) == 3
    # A damaged cache entry is recomputed instead of crashing.
    next(cache.glob("clip0-*.npz")).write_bytes(b"not an npz")
    assert faces.extract_faces(clips, params, progress=False).computed == 1
    # No temporary files are left behind by the atomic writes.
    assert not list(cache.glob("*.tmp"))


def test_manifest_records_bad_clips_and_keeps_the_others(clips, cache, tmp_path):
    from mer_utils.media import write_wav

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x01 this is not a video" * 50)
    sound_only = write_wav(tmp_path / "voice.wav", np.zeros(8000, np.float32), 16000)
    missing = tmp_path / "missing.mp4"
    manifest = tmp_path / "failed.csv"
    paths = [clips[0], corrupt, sound_only, missing, clips[1]]
    result = faces.extract_faces(
        paths, FaceParams(num_frames=2, size=32, detectors=FAST_CHAIN), progress=False, manifest=manifest
    )
    assert set(result.faces) == {str(clips[0]), str(clips[1])}
    reasons = dict(zip(result.failed["path"], result.failed["reason"], strict=True))
    assert set(reasons) == {str(corrupt), str(sound_only), str(missing)}
    assert "corrupt" in reasons[str(corrupt)]
    assert "no video stream" in reasons[str(sound_only)]
    assert "no such file" in reasons[str(missing)]
    written = pd.read_csv(manifest)
    assert list(written.columns) == ["path", "reason"] and len(written) == 3


def test_fallback_table_counts_detectors_per_clip():
    clip = ClipFaces(
        faces=np.zeros((4, 8, 8, 3), np.uint8),
        detectors=["mtcnn", "mtcnn", "haar", "center"],
        confidences=np.array([0.99, 0.98, 5.0, np.nan]),
        boxes=np.zeros((4, 4)),
    )
    result = faces.FaceExtraction(faces={"a.mp4": clip}, failed=pd.DataFrame(columns=["path", "reason"]))
    row = result.fallback_table().iloc[0]
    assert (row["mtcnn"], row["haar"], row["center"], row["fallback_share"]) == (2, 1, 1, 0.5)
    assert result.total_fallback_share() == 0.5


def test_parallel_extraction_matches_serial(clips, cache):
    params = FaceParams(num_frames=2, size=32, detectors=FAST_CHAIN)
    parallel = faces.extract_faces(clips, params, workers=2, progress=False)
    assert parallel.computed == 3
    serial = faces.extract_faces(clips, params, workers=1, progress=False)
    assert serial.cached == 3  # the workers wrote to the same (monkeypatched) cache
    for path in map(str, clips):
        np.testing.assert_array_equal(parallel.faces[path].faces, serial.faces[path].faces)


@pytest.mark.slow
def test_preprocess_faces_matches_resnet50_preprocessing():
    crop = np.zeros((1, 2, 2, 3), np.uint8)
    crop[..., 0] = 255  # pure red
    out = faces.preprocess_faces(crop)
    # Caffe mode: RGB -> BGR, minus the ImageNet channel means.
    np.testing.assert_allclose(out[0, 0, 0], [-103.939, -116.779, 255 - 123.68], atol=1e-3)
    assert crop[0, 0, 0, 0] == 255  # the input is not modified in place


# --- alignment and frame weights ------------------------------------------------------------


def _drawn_face(angle_degrees: float) -> tuple[np.ndarray, tuple, tuple]:
    """A grey 'face' with two dark eyes and a mouth, rotated by ``angle_degrees``; its eye centres."""
    import cv2

    image = np.full((200, 240, 3), 200, np.uint8)
    eyes = [(100.0, 90.0), (140.0, 90.0)]
    for x, y in eyes:
        cv2.circle(image, (int(x), int(y)), 5, (20, 20, 20), -1)
    cv2.rectangle(image, (105, 130), (135, 136), (60, 60, 60), -1)
    matrix = cv2.getRotationMatrix2D((120.0, 110.0), angle_degrees, 1.0)
    rotated = cv2.warpAffine(image, matrix, (240, 200), borderValue=(200, 200, 200))
    moved = [tuple(matrix @ np.array([x, y, 1.0])) for x, y in eyes]
    left, right = sorted(moved)
    return rotated, left, right


def _dark_blob_centres(crop: np.ndarray) -> list[tuple[float, float]]:
    """Centroids (x, y) of the dark blobs in the upper half of a crop, left to right."""
    import cv2

    gray = crop[..., 0]
    upper = (gray[: gray.shape[0] // 2] < 100).astype(np.uint8)
    count, _, _, centroids = cv2.connectedComponentsWithStats(upper)
    return sorted((float(x), float(y)) for x, y in centroids[1:count])


@pytest.mark.parametrize("angle", [25.0, -15.0])
def test_align_face_levels_the_eyes_at_fer2013_geometry(angle):
    image, left, right = _drawn_face(angle)
    assert abs(left[1] - right[1]) > 10  # the drawn face is visibly tilted
    crop = faces.align_face(image, left, right, size=96)
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    (left_x, left_y), (right_x, right_y) = _dark_blob_centres(crop)
    assert abs(left_y - right_y) < 1.0  # level
    assert abs((left_y + right_y) / 2 - faces.ALIGNED_EYE_HEIGHT * 96) < 1.5
    assert abs((right_x - left_x) - faces.ALIGNED_EYE_DISTANCE * 96) < 1.5
    assert abs((left_x + right_x) / 2 - 48) < 1.5
    # The mouth stays below the eyes (the face was rotated, not mirrored or flipped).
    assert (crop[70:90, 35:61, 0] < 100).any()


def test_align_face_shrinks_a_large_face_and_rejects_bad_eyes():
    image, left, right = _drawn_face(10.0)
    big = cv2_resize(image, 4)
    crop = faces.align_face(big, tuple(4 * v for v in left), tuple(4 * v for v in right), size=48)
    (left_x, left_y), (right_x, right_y) = _dark_blob_centres(crop)
    assert abs(left_y - right_y) < 1.0 and abs((right_x - left_x) - 0.36 * 48) < 1.5
    with pytest.raises(ValueError, match="left eye first"):
        faces.align_face(image, right, left, size=48)
    with pytest.raises(ValueError, match="pixels between them"):
        faces.align_face(image, (50.0, 50.0), (51.0, 50.0), size=48)


def cv2_resize(image: np.ndarray, factor: int) -> np.ndarray:
    import cv2

    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)


def test_faces_from_frames_aligns_mtcnn_faces_only(monkeypatch):
    image, left, right = _drawn_face(20.0)
    keypoints = {"left_eye": right, "right_eye": left}  # MTCNN's naming is the person's side
    found = [
        FaceBox(70, 50, 100, 110, 0.99, "mtcnn", keypoints),
        FaceBox(70, 50, 100, 110, 12.0, "haar"),
        FaceBox(70, 50, 100, 110, 0.98, "mtcnn"),  # no landmarks: the box crop
    ]
    monkeypatch.setattr(faces, "detect_faces", lambda images, *_: found[: len(images)])
    frames = np.stack([image] * 3)
    plain = faces.faces_from_frames(frames, FaceParams(num_frames=3, size=48))
    aligned = faces.faces_from_frames(frames, FaceParams(num_frames=3, size=48, align=True, gray=True))
    assert plain.aligned.tolist() == [False, False, False]
    assert aligned.aligned.tolist() == [True, False, False]
    np.testing.assert_array_equal(aligned.faces[1], faces.to_gray(plain.faces[1]))  # Haar: today's crop, grey
    assert not np.array_equal(aligned.faces[0], faces.to_gray(plain.faces[0]))
    assert (aligned.faces[..., 0] == aligned.faces[..., 2]).all()  # grey in three equal channels
    (left_x, left_y), (right_x, right_y) = _dark_blob_centres(aligned.faces[0])
    assert abs(left_y - right_y) < 1.0


def test_alignment_options_key_the_cache_only_when_on(tmp_path):
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"x")
    default = FaceParams()
    assert "align" not in default.cache_dict() and default.as_dict()["align"] is False
    keys = {faces.face_cache_key(clip, p) for p in (default, FaceParams(align=True), FaceParams(gray=True))}
    assert len(keys) == 3


def test_aligned_flags_survive_the_cache(tmp_path):
    clip = ClipFaces(
        faces=np.zeros((2, 8, 8, 3), np.uint8),
        detectors=["mtcnn", "haar"],
        confidences=np.array([0.99, 5.0]),
        boxes=np.zeros((2, 4)),
        aligned=np.array([True, False]),
    )
    loaded = faces.load_clip_faces(faces.save_clip_faces(tmp_path / "c.npz", clip))
    assert loaded.aligned.tolist() == [True, False]


def test_frame_weights_follow_confidence_and_face_size():
    clip = ClipFaces(
        faces=np.zeros((5, 8, 8, 3), np.uint8),
        detectors=["mtcnn", "mtcnn", "haar", "center", "none"],
        confidences=np.array([0.99, 0.95, 30.0, np.nan, np.nan]),
        boxes=np.array([[0, 0, 120, 150], [0, 0, 24, 20], [0, 0, 100, 100], [0, 0, 80, 80], [np.nan] * 4]),
    )
    weights = faces.frame_weights(clip)
    np.testing.assert_allclose(weights, [0.99, 0.95 * 0.5, 0.5, 0.5, 0.0])
    probabilities = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(
        faces.weighted_clip_mean(probabilities, weights[:2]), [0.99, 0.475] / np.float64(1.465)
    )
    np.testing.assert_allclose(faces.weighted_clip_mean(probabilities, np.zeros(2)), [0.5, 0.5])
    with pytest.raises(ValueError, match="one weight per frame"):
        faces.weighted_clip_mean(probabilities, np.ones(3))
    with pytest.raises(ValueError, match="finite and >= 0"):
        faces.weighted_clip_mean(probabilities, np.array([1.0, -1.0]))


class _ProportionalDetector:
    """A stand-in for MTCNN that finds a face at fixed fractions of whatever image it is shown."""

    def __init__(self):
        self.shapes = []

    def detect_faces(self, images):
        batch = isinstance(images, list)
        answers = []
        for image in images if batch else [images]:
            height, width = image.shape[:2]
            self.shapes.append(image.shape[:2])
            answers.append(
                [
                    {
                        "box": [0.25 * width, 0.2 * height, 0.5 * width, 0.6 * height],
                        "confidence": 0.99,
                        "keypoints": {
                            "left_eye": (0.6 * width, 0.4 * height),
                            "right_eye": (0.4 * width, 0.4 * height),
                        },
                    }
                ]
            )
        return answers if batch else answers[0]


def test_detection_on_a_shrunk_frame_maps_boxes_back_to_the_full_frame(monkeypatch):
    detector = _ProportionalDetector()
    monkeypatch.setattr(faces, "get_mtcnn", lambda: detector)
    frames = [np.zeros((720, 960, 3), np.uint8), np.zeros((720, 960, 3), np.uint8)]
    full = faces.detect_faces_mtcnn(frames)
    shrunk = faces.detect_faces_mtcnn(frames, detect_side=320)
    assert detector.shapes[:2] == [(720, 960)] * 2 and detector.shapes[2:] == [(240, 320)] * 2
    for big, small in zip(full, shrunk, strict=True):
        np.testing.assert_allclose(
            [small.x, small.y, small.width, small.height], [big.x, big.y, big.width, big.height]
        )
        np.testing.assert_allclose(small.keypoints["left_eye"], big.keypoints["left_eye"])
    # A frame already smaller than detect_side is detected as it is.
    small_frame = np.zeros((200, 160, 3), np.uint8)
    (box,) = faces.detect_faces_mtcnn([small_frame], detect_side=320)
    assert detector.shapes[-1] == (200, 160) and box.width == 80
    assert (
        "detect_side" not in FaceParams().cache_dict()
        and FaceParams(detect_side=320).cache_dict()["detect_side"] == 320
    )
    with pytest.raises(ValueError, match="detect_side"):
        FaceParams(detect_side=10)
