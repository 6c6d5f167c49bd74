"""Training features on Dask (`mer train --workers/--scheduler`): the same arrays and crops as serially, failures kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")

from mer_utils import cli, faces, feature_map, utterance  # noqa: E402


@pytest.fixture(scope="module")
def scheduler():
    """A running in-process Dask cluster (threads: quick to start; the code path is that of a remote one)."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        yield cluster.scheduler_address


def on_a_worker(path: str) -> str | None:
    distributed.get_worker()  # raises ValueError outside a Dask worker
    return "cannot be read" if path.endswith("bad.wav") else None


def test_fill_runs_every_clip_on_the_workers_and_returns_the_failures(scheduler):
    paths = [f"clip{i}.wav" for i in range(10)] + ["bad.wav"]
    with feature_map.cluster(scheduler=scheduler):
        assert feature_map.active()
        assert feature_map.fill(paths, on_a_worker, chunk_size=3) == {"bad.wav": "cannot be read"}
    assert not feature_map.active()
    with pytest.raises(RuntimeError, match="cluster"):
        feature_map.fill(paths, on_a_worker)


def test_features_on_dask_equal_the_serial_ones_and_skip_a_corrupt_clip(scheduler, demo_dir, tmp_path):
    clips = sorted(str(p) for p in (demo_dir / "Actor_01").glob("01-01-*.mp4"))[:2]
    corrupt = tmp_path / "01-01-05-01-01-01-01.mp4"
    corrupt.write_bytes(b"not a video file")
    index = pd.DataFrame({"path": [clips[0], str(corrupt), clips[1]]})
    serial = utterance.utterance_batch(index, cache_dir=tmp_path / "serial", progress=False)
    with feature_map.cluster(scheduler=scheduler):
        mapped = utterance.utterance_batch(index, cache_dir=tmp_path / "mapped", progress=False)
    # The workers filled the cache (one file per readable clip), and the arrays are the serial ones.
    assert len(list((tmp_path / "mapped").glob("*.npy"))) == 2
    np.testing.assert_array_equal(mapped.features, serial.features)
    assert mapped.rows["path"].tolist() == clips
    assert [s["path"] for s in mapped.skipped] == [str(corrupt)]
    assert mapped.skipped[0]["reason"] == serial.skipped[0]["reason"]


def test_face_crops_on_dask_equal_the_serial_ones_and_skip_a_corrupt_clip(scheduler, demo_dir, tmp_path):
    clips = sorted(str(p) for p in (demo_dir / "Actor_02").glob("01-01-*.mp4"))[:3]
    corrupt = tmp_path / "01-01-05-01-01-01-02.mp4"
    corrupt.write_bytes(b"not a video file")
    paths = [clips[0], str(corrupt), *clips[1:]]
    # Haar then centre crop: real detection without loading TensorFlow (MTCNN) into the test.
    params = faces.FaceParams(num_frames=3, size=32, detectors=("haar", "center"))
    serial = faces.extract_faces(paths, params, cache_dir=tmp_path / "serial", progress=False)
    with feature_map.cluster(scheduler=scheduler) as client, distributed.get_task_stream(client) as tasks:
        mapped = faces.extract_faces(paths, params, cache_dir=tmp_path / "mapped", progress=False)
    # The workers cut the crops (the tasks ran there) into the same cache files a serial run writes.
    assert any(task["key"].startswith("_compute_chunk") for task in tasks.data)
    names = sorted(p.name for p in (tmp_path / "serial").glob("*.npz"))
    assert len(names) == 3 and sorted(p.name for p in (tmp_path / "mapped").glob("*.npz")) == names
    assert (mapped.computed, mapped.cached) == (3, 0)
    assert list(mapped.faces) == clips
    for path in clips:
        np.testing.assert_array_equal(mapped.faces[path].faces, serial.faces[path].faces)
        assert mapped.faces[path].detectors == serial.faces[path].detectors
        np.testing.assert_allclose(mapped.faces[path].boxes, serial.faces[path].boxes)
    assert mapped.failed.to_dict("records") == serial.failed.to_dict("records")
    assert mapped.failed["path"].tolist() == [str(corrupt)]
    # Run again inside the cluster: every clip is a cache hit, nothing is sent to the workers.
    with feature_map.cluster(scheduler=scheduler) as client, distributed.get_task_stream(client) as tasks:
        again = faces.extract_faces(clips, params, cache_dir=tmp_path / "mapped", progress=False)
    assert (again.computed, again.cached) == (0, 3) and not tasks.data


def test_cluster_and_train_refuse_what_cannot_be_shared_out(scheduler, capsys, tmp_path):
    with pytest.raises(ValueError, match="not both"), feature_map.cluster(workers=2, scheduler="tcp://x:1"):
        pass
    with pytest.raises(ValueError, match="at least 1"), feature_map.cluster(workers=0):
        pass
    csv = tmp_path / "texts.csv"
    csv.write_text("Emotion,Text\njoy,a good day\n")
    assert (
        cli.main(["train", "text", "--data", str(csv), "--out", str(tmp_path / "run"), "--workers", "2"]) != 0
    )
    assert "'text' branch reads text and computes none" in capsys.readouterr().err
    assert (
        cli.main(
            ["train", "faces", "--data", str(tmp_path), "--out", str(tmp_path / "run"), "--workers", "2"]
        )
        != 0
    )
    error = capsys.readouterr().err
    assert "'faces' branch reads face images" in error and "video" in error
    # The video branch is let through to the cluster (here it then finds no clips in an empty folder).
    empty = tmp_path / "no_clips"
    empty.mkdir()
    command = ["train", "video", "--data", str(empty), "--out", str(tmp_path / "v"), "--scheduler", scheduler]
    assert cli.main(command) != 0
    error = capsys.readouterr().err
    assert "share out" not in error and "no_clips" in error
