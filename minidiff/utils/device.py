"""Choosing where tensors live: `--device auto|cpu|cuda` (and `mps` where torch has it)."""

from __future__ import annotations

import torch

from minidiff.utils.errors import MinidiffError

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """"auto" picks CUDA, then Apple's MPS, then the CPU; a named device must exist."""
    if isinstance(name, torch.device):
        return name
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise MinidiffError(f"--device {name!r} is not one of {', '.join(DEVICES)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise MinidiffError("--device cuda was asked for but torch sees no CUDA GPU; use --device "
                            "cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise MinidiffError("--device mps was asked for but this torch has no MPS; use --device "
                            "cpu")
    return torch.device(name)


def fast_bf16(device: torch.device) -> bool:
    """Does `device` run bf16 matrix maths natively? CUDA GPUs that support it, and CPUs with
    AVX512-BF16 or AMX (oneDNN then runs convolutions in bf16 about 1.7x faster than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = torch.cpu
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return False
