"""Part environment: GPU, driver (nvidia-smi), CUDA, cuDNN, torch, triton, the commit."""

from __future__ import annotations

import os
import subprocess

from gpu_parts.record import REPO, Recorder, Sizes


def run(rec: Recorder, sizes: Sizes, device: str) -> None:
    import platform

    import numpy
    import torch
    import triton

    from minidiff.kernels import runtime

    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "triton": triton.__version__,
            "numpy": numpy.__version__, "kernel_backend": runtime.choose_backend(),
            "commit": _git("rev-parse", "--short", "HEAD"),
            "uncommitted_files": len((_git("status", "--porcelain") or "").splitlines())}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                 "multiprocessors": props.multi_processor_count,
                 "memory_gib": round(props.total_memory / 2**30, 1),
                 "nvidia_smi": _command("nvidia-smi", "--query-gpu=name,driver_version,"
                                        "memory.total,clocks.sm,clocks.max.sm",
                                        "--format=csv,noheader")}
    rec.set("environment", info)


def _command(*cmd) -> str | None:
    try:
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _git(*args) -> str | None:
    return _command("git", *args)


def markdown(part) -> list[str]:
    return [f"- {k}: {v}" for k, v in part.get("environment", {}).items()]
