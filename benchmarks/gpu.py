"""One prepared check of minidiff's GPU path: device tests, kernel bandwidth, sampling, training.

    python benchmarks/gpu.py --out DIR                 # on a CUDA machine: under 7 minutes
    python benchmarks/gpu.py --dry-run --out DIR       # on a CPU: tiny sizes, Triton's interpreter
    python benchmarks/gpu.py --out DIR --only kernels,end_to_end --budget 200   # a rerun

It writes DIR/gpu.json (every number), DIR/gpu.md (the tables for benchmarks/RESULTS.md) and
DIR/gpu_parts.log (each part's own output), rewritten after every part, so a part that fails or
runs out of time leaves the others' results and its own failure on record. Each part runs in a
process of its own with a time box (its share of --budget): it saves its rows as it goes, and at
the end of its box it is killed, with the rows it saved kept. The parts (issue 15):

- environment: GPU, driver, CUDA, torch and triton versions;
- tests: `pytest -m cuda tests/cuda` (each kernel against the reference for every dtype, fused ==
  torch pixels, CPU == GPU pixels, bf16 + channels_last and --compile training, a bit-exact
  resume), then the kernels' own property tests (tests/kernels), which run natively on a GPU;
- kernels: every function minidiff.kernels exports (found at run time), fused vs the eager torch
  step of the same name vs a device-to-device copy of the same bytes, timed with
  triton.testing.do_bench (median), as GB/s of the minimum traffic, at sprite batches and 16M+
  elements (sprite batches fit in the L2 cache, the large sizes do not);
- end_to_end: DDPM-500, DDIM-25 (and any newer sampler) for 1,024 sprites: the course's loop,
  sample_loop unfused and fused, the network alone, and loops captured in one CUDA graph;
- training: `Trainer.train_step` with the default recipe vs the course's eager loop, images/s.

Each part is a file of benchmarks/gpu_parts/ (its `run` and its section of gpu.md); this file
parses the command line, runs each part in its box, checks the targets and writes the report.

`--dry-run` hides any GPU (CUDA_VISIBLE_DEVICES=""), so the same code runs at tiny sizes on the CPU
with the kernels in Triton's interpreter; tests/test_gpu.py runs it. Its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from gpu_parts import end_to_end, environment, kernels, tests, training
from gpu_parts.record import DRY, GPU, Recorder, Skip, run_boxed, write_json

PARTS = {"environment": environment, "tests": tests, "kernels": kernels,
         "end_to_end": end_to_end, "training": training}  # in the order they run
# Each part's time box in seconds at the default budget; --budget scales them all.
BOXES = {"environment": 15, "tests": 170, "kernels": 45, "end_to_end": 95, "training": 75}
DEFAULT_BUDGET = sum(BOXES.values())  # 400 s: an 8-minute device command with room to spare
MARGIN = 8  # seconds a part keeps in hand to save its rows before its box ends
TARGETS = {"copy_share": 0.85, "eager_speedup": 3.0, "ddpm_speedup": 5.0, "pixel_levels": 1}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for gpu.json, gpu.md, gpu_parts.log")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--only", help=f"comma list of parts: {', '.join(BOXES)}")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                        help=f"seconds for all parts (default {DEFAULT_BUDGET}); scales each box")
    parser.add_argument("--part", choices=tuple(BOXES), help=argparse.SUPPRESS)  # the child
    parser.add_argument("--part-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        return run_part(args.part, args.part_file, args.deadline, args.dry_run)
    if args.out is None:
        parser.error("--out DIR is required")
    parts = args.only.split(",") if args.only else list(BOXES)
    unknown = [p for p in parts if p not in BOXES]
    if unknown:
        parser.error(f"--only: unknown part {unknown[0]!r}; the parts are {', '.join(BOXES)}")
    return run_all(args.out, parts, args.budget, args.dry_run)


def run_part(name: str, path: Path, deadline: float, dry_run: bool) -> int:
    """The child process: one part, its rows saved to `path` as they come."""
    rec = Recorder(path, deadline)
    try:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and not dry_run and name != "environment":
            raise Skip("no CUDA GPU here (torch.cuda.is_available() is False); --dry-run runs "
                       "this part at tiny sizes on the CPU")
        rec.set("device", device)
        PARTS[name].run(rec, DRY if dry_run else GPU, device)
    except Skip as why:
        rec.set("skipped", str(why))
    except Exception:
        rec.set("error", traceback.format_exc()[-3000:])
        return 1
    return 0


# %% the parent: time boxes, then gpu.json and gpu.md after every part


def run_all(out: Path, parts: list[str], budget: float, dry_run: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    report = {"schema": 1, "dry_run": dry_run, "started": _now(), "budget_s": budget,
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "parts": {}}
    env = os.environ.copy()
    if dry_run:  # the CPU path everywhere, GPU or not
        env |= {"CUDA_VISIBLE_DEVICES": "", "TRITON_INTERPRET": "1"}
    (out / "gpu_parts.log").write_text("")
    with tempfile.TemporaryDirectory(prefix="minidiff_gpu_") as work:
        for name in parts:
            report["parts"][name] = run_one(name, Path(work), budget, dry_run, env, out)
            entry = report["parts"][name]
            print(f"[{name}] {entry['status']} in {entry['seconds']:.0f} s "
                  f"(box {entry['box_s']:.0f} s)", flush=True)
            report |= {"targets": targets(report), "finished": _now()}
            write_json(out / "gpu.json", report)
            (out / "gpu.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if all(p["status"] in ("ok", "skipped") for p in report["parts"].values()) else 1


def run_one(name, work: Path, budget, dry_run, env, out: Path) -> dict:
    """Run part `name` in a child process inside its time box; what it saved, and its status."""
    box, start = BOXES[name] * budget / DEFAULT_BUDGET, time.time()
    path, log_path = work / f"{name}.json", work / f"{name}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--part-file",
               str(path), "--deadline", str(start + box - MARGIN)] + ["--dry-run"] * dry_run
    with open(log_path, "w") as log:
        status = run_boxed(command, box, log, env=env)
    data = json.loads(path.read_text()) if path.is_file() else {}
    if status == "ok" and "skipped" in data:
        status = "skipped"
    failed = [t for suite in tests.SUITES for t in data.get(suite, {}).get("tests", [])
              if t["outcome"] in ("failed", "error")]
    failed += [r for r in data.get("rows", []) if r.get("status", "ok").startswith("failed")]
    if status == "ok" and failed:
        status = f"failed ({len(failed)} tests or rows)"
    if name == "tests":
        status = tests.status(data, status)
    text = log_path.read_text(errors="replace")
    with open(out / "gpu_parts.log", "a") as combined:
        combined.write(f"===== {name}: {status}\n{text}\n")
    entry = {"status": status, "seconds": round(time.time() - start, 1), "box_s": round(box, 1),
             **data}
    if status not in ("ok", "skipped"):
        entry["log_tail"] = text[-2000:]
    return entry


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def targets(report: dict) -> list[dict]:
    """Issue 15's targets against what was measured (`met` is None in a dry run)."""
    parts, found = report["parts"], []

    def add(target, value, met, shown):
        found.append({"target": target, "value": value, "shown": shown,
                      "met": None if report["dry_run"] or value is None else bool(met)})

    rows = [r for r in parts.get("kernels", {}).get("rows", []) if r.get("status") == "ok"]
    for name in dict.fromkeys(r["kernel"] for r in rows):
        share = [r["copy_share"] for r in rows if r["kernel"] == name and r["size"] == "large"]
        speedup = [r["eager_speedup"] for r in rows if r["kernel"] == name
                   and r["size"] == "sprites" and r.get("eager_speedup") is not None]
        if share:
            add(f"{name}: >= {TARGETS['copy_share']:.0%} of copy bandwidth at 16M+ elements "
                "(worst size)", min(share), min(share) >= TARGETS["copy_share"],
                f"{min(share):.0%}")
        if speedup:
            add(f"{name}: >= {TARGETS['eager_speedup']:g}x the eager step at sprite batches "
                "(worst batch)", min(speedup), min(speedup) >= TARGETS["eager_speedup"],
                f"{min(speedup):.2f}x")
    e2e = {(r["sampler"], r["loop"]): r.get("seconds")
           for r in parts.get("end_to_end", {}).get("rows", []) if r.get("status") == "ok"}
    for (sampler, loop), fused in e2e.items():
        course = e2e.get((sampler, "course loop"))
        if sampler.startswith("DDPM") and loop == "minidiff --fused" and course and fused:
            add(f"{sampler}, {report['parts']['end_to_end']['setup']['n_sprites']} sprites: "
                f"sample --fused >= {TARGETS['ddpm_speedup']:g}x the course loop",
                course / fused, course / fused >= TARGETS["ddpm_speedup"], f"{course / fused:.2f}x")
    for case in parts.get("tests", {}).get("cuda", {}).get("tests", []):
        if "cpu_and_gpu" in case["test"] and case["outcome"] != "skipped":
            levels = case["properties"].get("max_level_difference")
            add(f"CPU and GPU pixels for the same seed within {TARGETS['pixel_levels']} level "
                f"({case['test'].split('::')[-1]})", levels, case["outcome"] == "passed",
                f"{levels} levels ({case['outcome']})")
    return found


def markdown(report: dict) -> str:
    parts = report["parts"]
    env = parts.get("environment", {}).get("environment", {})
    where = env.get("gpu") or ("dry run on the CPU" if report["dry_run"] else "no GPU")
    lines = [f"# minidiff GPU check: {where}", "",
             f"{report['started']}, budget {report['budget_s']:.0f} s: `{report['command']}`"]
    if report["dry_run"]:
        lines += ["", "Dry run: tiny sizes on the CPU, the kernels in Triton's interpreter. "
                  "It proves the script runs; its numbers mean nothing."]
    lines += ["", "| part | status | seconds (box) |", "|---|---|---|"]
    lines += [f"| {n} | {p['status']} | {p['seconds']:.0f} ({p['box_s']:.0f}) |"
              for n, p in parts.items()]
    for name, module in PARTS.items():
        if name in parts:
            part = parts[name]
            lines += ["", f"## {name.replace('_', ' ').capitalize()}", ""]
            if part.get("skipped"):
                lines.append(f"Skipped: {part['skipped']}")
            elif part.get("error"):
                lines.append(f"Failed:\n```\n{part['error'].strip()[-1200:]}\n```")
            lines += module.markdown(part) if not part.get("skipped") else []
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    met = {True: "yes", False: "**no**", None: "(dry run)"}
    lines += [f"| {t['target']} | {t['shown']} | {met[t['met']]} |" for t in report["targets"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
