"""`python -m minidiff data` (minidiff/cli/data.py): preview's one column per class, export's
names that `train` reads, and one line for bad input (issue 13 items 8, 9; issue 16 item 4)."""

import numpy as np
import pytest
from PIL import Image

from minidiff.cli import main
from minidiff.data.datasets import load_dataset


def cli(*argv) -> int:
    try:
        return main(list(argv))
    except SystemExit as exit_:
        return exit_.code


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("minidiff data: error: "), err
    return err


def test_preview_is_one_column_per_class(tmp_path):
    assert cli("data", "preview", "-n", "100", "--per-class", "3", "--out",
               str(tmp_path / "p.png")) == 0
    assert Image.open(tmp_path / "p.png").size == (4 * (5 * 17 + 1), 4 * (3 * 17 + 1))


def test_bad_per_class_and_escaping_names_are_one_line(tmp_path, capsys):
    assert cli("data", "preview", "--per-class", "-3", "--out", str(tmp_path / "p.png")) == 2
    assert "argument --per-class: -3 is too small: it must be >= 1" in one_line(capsys)
    out = tmp_path / "a" / "b" / "out"
    for name in ("../../x", "/tmp/x", ".hidden", "a/b"):
        assert cli("data", "export", "-n", "5", "--name", name, "--out", str(out)) == 2
        assert "must be a plain file name" in one_line(capsys)
    assert not list(tmp_path.rglob("x*"))  # nothing written outside --out, or at all


def test_export_writes_what_train_reads_and_prints_the_command(tmp_path, capsys):
    out = tmp_path / "course_layout"
    assert cli("data", "export", "-n", "20", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    data = out / "sprites_16x16.npy"
    assert f"train on it: python -m minidiff train --data {data}" in printed
    back = load_dataset(str(data))  # what `train --data` does: labels and names found beside
    assert len(back) == 20 and back.classes[0] == "hero"
    assert cli("data", "export", "-n", "20", "--out", str(out)) == 2
    assert "already exists: pass --overwrite" in one_line(capsys)
    assert cli("data", "export", "-n", "20", "--out", str(out), "--overwrite") == 0


def test_an_output_is_never_an_input(tmp_path, capsys):
    data = tmp_path / "items_16x16.npy"
    np.save(data, np.zeros((4, 16, 16, 3), np.uint8))
    before = data.read_bytes()
    assert cli("data", "export", "--data", str(data), "--out", str(tmp_path), "--overwrite") == 2
    assert "an input of this command" in one_line(capsys)
    assert cli("data", "preview", "--data", str(data), "--out", str(data)) == 2
    assert "an input of this command" in one_line(capsys)
    assert data.read_bytes() == before


def test_an_unwritable_out_fails_before_loading(tmp_path, capsys, monkeypatch):
    import minidiff.cli.data as data_cli

    (tmp_path / "file").write_text("")
    monkeypatch.setattr(data_cli, "load_dataset", lambda *a, **k: pytest.fail("loaded first"))
    assert cli("data", "export", "--out", str(tmp_path / "file" / "x")) == 2
    assert "is a file, not a folder" in one_line(capsys)
    assert cli("data", "preview", "--out", str(tmp_path / "file" / "p.png")) == 2
    assert "is a file, not a folder" in one_line(capsys)


def test_a_full_disk_during_export_leaves_no_file(tmp_path, capsys, disk_full_at_second_fsync):
    """ENOSPC injected at the labels file's fsync: not even the images file is left."""
    out = tmp_path / "out"
    assert cli("data", "export", "-n", "5", "--out", str(out)) == 2
    assert "no space left on the device); none of this command's outputs" in one_line(capsys)
    assert list(out.iterdir()) == []
