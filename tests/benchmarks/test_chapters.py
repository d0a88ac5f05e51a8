"""benchmarks/chapters.py at toy size: it runs a chapter as a notebook and reports a row that
says whether the lesson held (the numbers mean nothing at this size)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_chapters_benchmark_reports_each_chapter(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "chapters.py"), "--out",
                           str(tmp_path), "--chapters", "1", "--small"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("| 1 |")]
    assert row.endswith("| held |"), row
    assert (tmp_path / "01_noising.ipynb").is_file()
