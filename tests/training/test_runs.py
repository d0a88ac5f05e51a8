"""The run folder (`minidiff.training.runs`): one writer at a time, a metrics log that survives a
torn write, leftovers of interrupted writes cleaned, and a run stopped before its first
checkpoint started again without ceremony (issue 13, cases 1, 4, 5 and 6's cleanup)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minidiff.training import train
from minidiff.training.runs import METRICS_NAME, MetricsLog, RunLock, read_metrics
from minidiff.utils.errors import MinidiffError

from tiny_runs import TINY
from tiny_runs import run_train as run_cli
from tiny_runs import tiny as tiny_run

REPO = Path(__file__).resolve().parents[2]
def tiny(out, **overrides):
    """Four steps, a checkpoint at the last."""
    return tiny_run(out, **{"steps": 4, **overrides})


def wait_for(path: Path, process, seconds=90) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_one_writer_per_run_folder_and_the_lock_dies_with_its_process(tmp_path, capsys):
    """Case 1: a second `train --out X`, and `--resume --out X`, are refused while X trains; once
    the trainer is killed (-9, no cleanup), its lock is gone and the run resumes."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "minidiff", "train", *TINY, "--steps",
                              "100000", "--checkpoint-every", "2", "--out", str(out)],
                             stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                             cwd=REPO)
    try:
        wait_for(out / "checkpoint.pt", first)
        config = (out / "config.json").read_bytes()
        code, err, _ = run_cli([*TINY, "--steps", "4", "--out", str(out)], capsys)
        assert code == 2 and "is in use: another minidiff process" in err, err
        assert f"(pid {first.pid})" in err
        code, err, _ = run_cli(["--resume", "--out", str(out)], capsys)
        assert code == 2 and "is in use" in err, err
        assert (out / "config.json").read_bytes() == config  # the refused ones wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
    code, err, _ = run_cli(["--resume", "--out", str(out), "--steps", "100000",
                                  "--minutes", "0.001"], capsys)
    assert code == 0, err


def test_a_lock_is_exclusive_within_one_process_too(tmp_path):
    held = RunLock(tmp_path)
    with pytest.raises(MinidiffError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path)
    held.release()
    RunLock(tmp_path).release()


def test_a_torn_last_metrics_line_is_dropped_on_resume_with_a_warning(tmp_path, capsys):
    """Case 4: a full disk or a kill cut the last line short; resuming drops it, says so in one
    line, and the log ends up whole."""
    out = tmp_path / "run"
    train(tiny(out))
    with (out / METRICS_NAME).open("a") as f:
        f.write('{"step": 6, "loss": 0.3, "lr": 0.00')
    code, err, printed = run_cli(["--resume", "--out", str(out), "--steps", "8"], capsys)
    assert code == 0, err
    warnings = [line for line in printed.splitlines() if "torn last line" in line]
    assert len(warnings) == 1 and str(out / METRICS_NAME) in warnings[0]
    records, torn = read_metrics(out / METRICS_NAME)
    assert [r["step"] for r in records] == [2, 4, 6, 8] and not torn


@pytest.mark.parametrize("bad", ["123", '{"step": "abc"}', '["step", 2]', "{not json"])
def test_a_malformed_line_inside_the_log_is_one_line_naming_file_and_fix(tmp_path, bad, capsys):
    out = tmp_path / "run"
    train(tiny(out))
    path = out / METRICS_NAME
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], bad, *lines[1:]]) + "\n")
    before = path.read_bytes()
    code, err, _ = run_cli(["--resume", "--out", str(out), "--steps", "8"], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{path} line 2 is not a metrics record" in err and "delete that line" in err
    assert path.read_bytes() == before


def test_metrics_log_keeps_only_lines_up_to_the_checkpoint(tmp_path):
    path = tmp_path / METRICS_NAME
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (2, 4, 6)) + "\n")
    said = []
    MetricsLog(tmp_path, resume_step=4, say=said.append)
    assert [r["step"] for r in read_metrics(path)[0]] == [2, 4] and said == []


def test_leftovers_of_interrupted_writes_are_removed_when_the_run_starts_again(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny(out))
    leftover = out / ".checkpoint.k3j9x2ab.tmp.pt"
    leftover.write_bytes(b"half a checkpoint")
    code, err, printed = run_cli(["--resume", "--out", str(out), "--steps", "6"], capsys)
    assert code == 0, err
    assert not leftover.exists() and "removed .checkpoint.k3j9x2ab.tmp.pt" in printed


def test_a_run_killed_before_its_first_checkpoint_starts_again_without_ceremony(tmp_path, capsys):
    """Case 5: --resume says what to do, and the same command without it just starts again."""
    out = tmp_path / "run"

    def crash(step):
        if step == 3:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        train(tiny(out, checkpoint_every=0), on_step=crash)
    assert (out / "config.json").exists() and not (out / "checkpoint.pt").exists()
    code, err, _ = run_cli(["--resume", "--out", str(out)], capsys)
    assert code == 2 and "has no checkpoint.pt yet (the run stopped before its first" in err
    assert f"start it again: the command that began it, with --out {out} and without " in err
    code, err, printed = run_cli([*TINY, "--steps", "4", "--out", str(out)], capsys)
    assert code == 0, err
    assert "stopped before its first checkpoint: starting it again" in printed
    assert (out / "checkpoint.pt").exists()


def test_a_folder_with_other_files_is_still_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "my_notes.txt").write_text("keep")
    code, err, _ = run_cli([*TINY, "--steps", "2", "--out", str(out)], capsys)
    assert code == 2 and "already exists" in err
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "my_notes.txt"]
