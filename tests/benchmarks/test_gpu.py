"""benchmarks/gpu.py's dry run: the GPU check runs end to end on a CPU, so it cannot rot while no
GPU is lent. Tiny sizes, the kernels in Triton's interpreter, the device tests (tests/cuda)
collected and skipped with the reason. Its numbers mean nothing and nothing here reads them:
these tests check that every part ran and that gpu.json and gpu.md hold what a GPU run records.
"""

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu.py"
PARTS = ["environment", "tests", "kernels", "end_to_end", "training"]


def run_script(*flags) -> subprocess.CompletedProcess:
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), "--dry-run", *flags], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    done = run_script("--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text()


def rows(report, part) -> list[dict]:
    return report["parts"][part]["rows"]


def exported_kernels() -> set[str]:
    from minidiff import kernels

    return {n for n in kernels.__all__ if inspect.isfunction(getattr(kernels, n))}


def test_every_part_runs(dry_run):
    report, _ = dry_run
    assert report["dry_run"] is True
    assert {name: part["status"] for name, part in report["parts"].items()} == dict.fromkeys(
        PARTS, "ok")
    assert report["parts"]["environment"]["environment"]["kernel_backend"] == "interpreter"


def test_device_tests_are_collected_and_skipped_with_the_reason(dry_run):
    cases = dry_run[0]["parts"]["tests"]["cuda"]["tests"]
    modules = {case["test"].split("::")[0].rsplit(".", 1)[-1] for case in cases}
    assert {"test_kernels", "test_sample", "test_train"} <= modules
    assert all(case["outcome"] == "skipped" for case in cases)
    assert all("torch.cuda.is_available() is False" in case["message"] for case in cases)


def test_every_kernel_is_timed_against_eager_and_a_copy(dry_run):
    kernel_rows = rows(dry_run[0], "kernels")
    assert {row["kernel"] for row in kernel_rows} == exported_kernels()
    assert {row["size"] for row in kernel_rows} == {"sprites", "large"}
    for row in kernel_rows:
        assert row["status"] == "ok", row
        assert row["bytes"] > 0 and row["fused_gbps"] > 0 and row["copy_gbps"] > 0
        assert row["eager_speedup"] > 0, f"{row['kernel']} has no eager twin to compare with"


def test_end_to_end_times_every_sampler_and_loop(dry_run):
    from minidiff.samplers import SAMPLERS

    timed = {(row["sampler"].rsplit("-", 1)[0], row["loop"])
             for row in rows(dry_run[0], "end_to_end")
             if row["status"] == "ok" and row["seconds"] > 0}
    for sampler in ("DDPM", "DDIM"):
        for loop in ("course loop", "minidiff", "minidiff --fused", "network only"):
            assert (sampler, loop) in timed
    newer = set(SAMPLERS) - {"ddpm", "ddim", "ddpm-no-noise"}
    assert {(name, "minidiff --fused") for name in newer} <= timed


def test_training_is_timed_for_the_course_loop_and_the_trainer(dry_run):
    speeds = {row["loop"]: row.get("images_per_s") for row in rows(dry_run[0], "training")}
    assert speeds.keys() >= {"course loop", "trainer, default recipe"}
    assert all(speed > 0 for speed in speeds.values()), speeds


def test_markdown_holds_every_section_and_the_targets(dry_run):
    report, text = dry_run
    assert text.startswith("# minidiff GPU check: dry run on the CPU")
    for heading in ("Environment", "Tests", "Kernels", "End to end", "Training", "Targets"):
        assert f"\n## {heading}\n" in text
    for kernel in exported_kernels():
        assert f"| {kernel} |" in text
    assert report["targets"] and all(target["met"] is None for target in report["targets"])
    assert "| (dry run) |" in text


def test_a_part_out_of_time_is_recorded_and_the_outputs_still_written(tmp_path):
    done = run_script("--out", str(tmp_path), "--only", "environment,kernels", "--budget", "5")
    assert done.returncode == 1
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert [p["status"] for p in report["parts"].values()] == ["timeout", "timeout"]
    assert "| kernels | timeout |" in (tmp_path / "gpu.md").read_text()
