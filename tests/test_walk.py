"""Folders laid out with symbolic links are read like real ones, and a link back up cannot loop."""

from __future__ import annotations

import os

from mer_utils.batch import collect_clips
from mer_utils.corpora import read_source
from mer_utils.ravdess import index_dataset
from mer_utils.walk import files_under


def _linked_corpus(tmp_path):
    """Actor folders stored elsewhere, reached through links; one link points back at its parent."""
    store = tmp_path / "store"
    for actor in ("01", "02"):
        folder = store / f"Actor_{actor}"
        folder.mkdir(parents=True)
        for emotion in ("01", "05"):
            (folder / f"03-01-{emotion}-01-01-01-{actor}.wav").write_bytes(b"RIFF")
    data = tmp_path / "data"
    data.mkdir()
    for actor in ("01", "02"):
        os.symlink(store / f"Actor_{actor}", data / f"Actor_{actor}")
    os.symlink(data, data / "Actor_01_again")  # a loop: data/Actor_01_again -> data
    return data


def test_files_under_follows_linked_folders_once(tmp_path):
    data = _linked_corpus(tmp_path)
    found = files_under(data)
    assert found == sorted(found)
    assert len(found) == 4
    assert all(str(p).startswith(str(data)) for p in found)


def test_ravdess_index_reads_linked_actor_folders(tmp_path):
    index = index_dataset(_linked_corpus(tmp_path))
    assert sorted(index["actor"].unique().tolist()) == [1, 2]
    assert len(index) == 4


def test_corpus_reader_and_batch_walk_read_linked_folders(tmp_path):
    data = _linked_corpus(tmp_path)
    assert len(read_source(data)) == 4
    clips, missing = collect_clips([data])
    assert len(clips) == 4 and missing == []
