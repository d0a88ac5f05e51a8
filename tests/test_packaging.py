"""One import name: kernels/ and reference/ install as minidiff.kernels and minidiff.reference."""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True,
                          check=False)


def test_only_minidiff_is_importable_outside_the_checkout(tmp_path):
    ok = run_python("import minidiff.kernels, minidiff.reference; print('ok')", tmp_path)
    assert ok.stdout.strip() == "ok", ok.stderr
    for name in ("kernels", "reference"):
        result = run_python(f"import {name}", tmp_path)
        assert "ModuleNotFoundError" in result.stderr, f"'import {name}' worked outside the repo"


def test_reference_imports_numpy_only():
    """The specification must stay readable without torch: NumPy, the standard library and
    its own modules, nothing else."""
    allowed = {"numpy", "__future__", "dataclasses", "math", "typing", "functools"}
    for path in sorted((ROOT / "reference").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source checkout")
def test_wheel_holds_one_top_level_package(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("minidiff-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"minidiff"}
    assert "minidiff/reference/noising.py" in names
    assert "minidiff/kernels/__init__.py" in names
