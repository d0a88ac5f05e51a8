"""Part tests: the suite's device tests (`pytest -m cuda tests/cuda`: each kernel against the
reference for every dtype, fused == torch pixels, CPU == GPU pixels, bf16 + channels_last and
--compile training, a bit-exact resume), then on a GPU the kernels' own property tests
(tests/kernels), which run natively there. Each test's outcome comes from pytest's JUnit XML, or
from its `-v` log when the run was killed before writing it."""

from __future__ import annotations

import os
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from gpu_parts.record import Recorder, Sizes, run_boxed

SUITES = ("cuda", "kernels")


def run(rec: Recorder, sizes: Sizes, device: str) -> None:
    env = os.environ | {"CI": "true"}  # Hypothesis's derandomized "ci" profile (tests/conftest.py)
    suites = [("cuda", ["-m", "cuda", "tests/cuda"])]
    if device == "cuda":  # on a CPU tests/kernels runs in the ordinary suite, interpreted
        suites.append(("kernels", ["tests/kernels"]))
    for name, args in suites:
        if name == "kernels" and rec.left() < 40:
            rec.set(name, {"command": "pytest " + " ".join(args), "tests": [], "tail": "",
                           "status": "skipped: out of time"})
            continue
        junit = rec.path.with_name(f"junit_{name}.xml")
        command = [sys.executable, "-m", "pytest", *args, "-v", "-p", "no:cacheprovider",
                   f"--junitxml={junit}"]
        log = rec.path.with_name(f"pytest_{name}.log")
        with open(log, "w") as out:
            status = run_boxed(command, rec.left(), out, env=env)
        tail = log.read_text(errors="replace")[-3000:]
        cases = junit_cases(junit) or logged_cases(log.read_text(errors="replace"))
        rec.set(name, {"command": "pytest " + " ".join(args), "status": status, "tests": cases,
                       "tail": tail})
        if status == "timeout":
            break


def junit_cases(path: Path) -> list[dict]:
    """Each test's outcome, seconds, message and recorded properties, from pytest's JUnit XML."""
    if not path.is_file():
        return []
    cases = []
    for case in ElementTree.parse(path).iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                message = (child.get("message") or child.text or "").strip()[:500]
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": round(float(case.get("time") or 0), 2), "message": message,
                      "properties": properties})
    return cases


def logged_cases(log: str) -> list[dict]:
    """The outcomes `pytest -v` printed, for a run killed before it wrote its JUnit XML."""
    outcomes = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped"}
    found = re.findall(r"^(tests/\S.*?) (PASSED|FAILED|ERROR|SKIPPED)\b", log, re.MULTILINE)
    return [{"test": test, "outcome": outcomes[word], "seconds": 0.0, "message": "(from the log)",
             "properties": {}} for test, word in found]


def status(data: dict, status: str) -> str:
    """The part's status given its child's: a suite that failed (or was killed) fails it."""
    if status != "ok":
        return status
    return next((f"failed ({s['status']})" for s in (data.get(n) for n in SUITES)
                 if s and s["status"] not in ("ok", "skipped: out of time")), status)


# %% its section of gpu.md


def markdown(part) -> list[str]:
    lines = []
    for suite in SUITES:
        if suite in part:
            lines += _md_suite(suite, part[suite])
    return lines


def _md_suite(suite: str, s: dict) -> list[str]:
    cases = s["tests"]
    counts = {o: sum(c["outcome"] == o for c in cases)
              for o in ("passed", "failed", "error", "skipped")}
    lines = [f"`{s['command']}`: {s['status']}; "
             + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + "."]
    reasons = {c["message"] for c in cases if c["outcome"] == "skipped"}
    if counts["skipped"] == len(cases) and len(reasons) == 1 and cases:
        return lines + ["", f"All skipped: {reasons.pop()}", ""]
    groups = {}  # test function -> its cases (one per parameter set)
    for c in cases:
        module, _, test = c["test"].partition("::")
        groups.setdefault(f"{module.rsplit('.', 1)[-1]}::{test.split('[')[0]}", []).append(c)
    if suite == "kernels":  # only what did not pass
        groups = {k: v for k, v in groups.items() if any(c["outcome"] != "passed" for c in v)}
    if groups:
        lines += ["", "| test | passed | not passed | s | note |", "|---|---|---|---|---|"]
        lines += [_md_group(test, group) for test, group in groups.items()] + [""]
    if s["status"] != "ok":
        lines += ["```", s["tail"][-1500:].strip(), "```", ""]
    return lines


def _md_group(test: str, group: list[dict]) -> str:
    bad = [c for c in group if c["outcome"] != "passed"]
    notes = "; ".join(dict.fromkeys(_note(c) for c in (bad or group) if _note(c)))
    return (f"| {test} | {len(group) - len(bad)} | "
            + ", ".join(f"{c['outcome']}" for c in bad[:1])
            + (f" x{len(bad)}" if bad else "")
            + f" | {sum(c['seconds'] for c in group):.1f} | {notes[:300]} |")


def _note(case) -> str:
    text = "; ".join(f"{k} = {v}" for k, v in case["properties"].items())
    message = case["message"].splitlines()[0][:160] if case["message"] else ""
    return " ".join(x for x in (text, message) if x).replace("|", "/")
