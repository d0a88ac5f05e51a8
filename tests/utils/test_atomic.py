"""Atomic writes: fsync before the rename, nothing torn, leftovers of killed writers removed."""

import os
import signal
import subprocess
import sys

import pytest

from minidiff.utils import atomic
from minidiff.utils.atomic import atomic_path, remove_leftovers, write_json, write_text


def test_file_fsynced_before_rename_and_folder_after(tmp_path, monkeypatch):
    """Issue 13 case 6: the data reaches the disk before the new name points at it."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.append(("fsync", _kind(fd)))
                        or real_fsync(fd))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: calls.append(("replace", None))
                        or real_replace(a, b))
    write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    expected = [("fsync", "file"), ("replace", None)]
    if os.name != "nt":
        expected.append(("fsync", "folder"))
    assert calls == expected


def _kind(fd):
    import stat

    return "folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "config.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("disk full")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_remove_leftovers_takes_only_temporaries(tmp_path):
    keep = ["checkpoint.pt", ".hidden", "notes.tmp", ".a.tmp.pt", "metrics.jsonl",
            ".checkpoint.TOOLONG12.tmp.pt"]
    gone = [".checkpoint.k3j9x2ab.tmp.pt", ".config.a_b_c_d_.tmp.json", ".samples.01234567.tmp"]
    for name in keep + gone:
        (tmp_path / name).write_text("x")
    (tmp_path / ".sub.abcdefgh.tmp").mkdir()  # a folder is never a leftover file
    removed = remove_leftovers(tmp_path)
    assert sorted(p.name for p in removed) == sorted(gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + [".sub.abcdefgh.tmp"])
    assert remove_leftovers(tmp_path / "missing") == []


@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_leftover_of_a_killed_writer_is_removed(tmp_path):
    """kill -9 inside the write leaves `.checkpoint.XXXX.tmp.pt`; the next start removes it."""
    code = ("import sys, time\n"
            "from minidiff.utils.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'x' * 1000)\n"
            "    print('writing', flush=True)\n"
            "    time.sleep(60)\n")
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"old")
    child = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"writing\n"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    left = [p for p in tmp_path.iterdir() if p.name != "checkpoint.pt"]
    assert len(left) == 1 and left[0].name.startswith(".checkpoint.")
    assert left[0].name.endswith(".tmp.pt")
    assert remove_leftovers(tmp_path) == left
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
    assert target.read_bytes() == b"old"
