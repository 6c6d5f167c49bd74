"""The `mer` command: start-up, data tools and error messages."""

from __future__ import annotations

import subprocess
import sys

from mer_utils import cli


def test_help_starts_without_heavy_imports():
    code = "import sys; from mer_utils import cli; cli.build_parser(); print('tensorflow' in sys.modules, 'librosa' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_index_command_prints_counts_and_split(demo_dir, tmp_path, capsys):
    csv = tmp_path / "index.csv"
    assert cli.main(["index", str(demo_dir), "--out", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "120 clips, 4 actors" in out
    assert csv.read_text().count("\n") == 121


def test_errors_are_one_clear_line_with_exit_code_2(tmp_path, capsys):
    assert cli.main(["index", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "does not exist" in err
    assert cli.main(["evaluate", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_parse_actor_ranges():
    assert cli._parse_actors("1-3,7, 9") == [1, 2, 3, 7, 9]


def test_missing_whisper_weights_is_a_clear_error(demo_dir, tmp_path, capsys, monkeypatch):
    from mer_utils import whisper_encoder

    monkeypatch.delenv(whisper_encoder.MODEL_DIR_ENV, raising=False)
    monkeypatch.setattr(whisper_encoder, "PACKAGED_PARTS", (("mer_no_such_weights_part1", "x"),))
    args = ["train", "audio", "--data", str(demo_dir), "--out", str(tmp_path / "run"), "--model", "whisper"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "mer train: error:" in err and whisper_encoder.INSTALL in err
