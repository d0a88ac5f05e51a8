"""Triton's Philox noise in plain torch, on any device: the twin of `minidiff.reference.philox`.

The torch sampler calls `randn_like_step(x, seed, k)` for the noise of step k, and gets bit for
bit the integers (and, to float32 rounding, the normals) that the fused kernels draw in-kernel with
`tl.randn(philox_seed(seed, k), offsets)`; see the reference module for the convention and
the algorithm. Notation: counter (c0, c1, c2, c3), key (k0, k1), as in Salmon et al. (2011).

torch has no uint32 arithmetic worth using, so each 32-bit word lives in an int64 tensor. A 32x32
product fits in 64 bits modulo 2**64, and int64 multiplication wraps modulo 2**64, so the bits
of `a * b` are right even when the int64 is negative: `(p >> 32) & MASK` is umulhi, `p & MASK`
the low word. Masks are applied lazily: words that are only XORed carry garbage above bit 31
until the next mask, which saves a full pass over the tensor per round.
"""

from __future__ import annotations

import torch

from minidiff.reference.philox import (
    MIN_UNIFORM,
    N_ROUNDS,
    PHILOX_KEY_A,
    PHILOX_KEY_B,
    PHILOX_ROUND_A,
    PHILOX_ROUND_B,
    TWO_PI,
    UNIFORM_SCALE,
    philox_seed,
)

__all__ = ["philox_seed", "rand", "randint4x", "randn", "randn_like_step"]

_MASK32 = 0xFFFFFFFF
_CPU_CHUNK = 2**15  # elements per pass on the CPU: 256 KiB per int64 word, cache-sized
_KEY_A, _KEY_B = int(PHILOX_KEY_A), int(PHILOX_KEY_B)
_ROUND_A, _ROUND_B = int(PHILOX_ROUND_A), int(PHILOX_ROUND_B)


def _split_seed(seed: int) -> tuple[int, int]:
    seed = int(seed) & (2**64 - 1)  # Triton casts the seed to uint64
    return seed & _MASK32, (seed >> 32) & _MASK32


def _philox_from_offset(offset: torch.Tensor, k0: int, k1: int, n_rounds: int, words: int):
    """Philox on counter (offset_lo, offset_hi, 0, 0); returns the first `words` output words."""
    offset = offset.to(torch.int64)
    c0 = offset & _MASK32
    c1 = offset >> 32  # 0 for 32-bit offsets (Triton's randint4x)
    c2 = torch.zeros_like(c0)
    c3 = torch.zeros_like(c0)
    for _ in range(n_rounds):
        # c0' = umulhi(B, c2) ^ c1 ^ k0,  c2' = umulhi(A, c0) ^ c3 ^ k1,  c1' = B c2,  c3' = A c0
        p_b = c2 * _ROUND_B  # wraps mod 2**64; the low 64 bits are the true product's
        p_a = c0 * _ROUND_A
        c0 = (p_b >> 32).bitwise_xor_(c1).bitwise_xor_(k0).bitwise_and_(_MASK32)
        c2 = (p_a >> 32).bitwise_xor_(c3).bitwise_xor_(k1).bitwise_and_(_MASK32)
        c1, c3 = p_b, p_a  # only ever XORed before the next mask, so left unmasked here
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32  # raise the key
    return [c & _MASK32 for c in (c0, c1, c2, c3)[:words]]


def randint4x(seed: int, offset: torch.Tensor, n_rounds: int = N_ROUNDS) -> list[torch.Tensor]:
    """Four uint32 streams per offset, as int64 tensors in [0, 2**32) (Triton's `randint4x`)."""
    k0, k1 = _split_seed(seed)
    return _philox_from_offset(offset, k0, k1, n_rounds, words=4)


def _uint_to_uniform_float(x: torch.Tensor) -> torch.Tensor:
    """Triton's uint_to_uniform_float on uint32 values held in int64: float32 in [0, 1)."""
    # bitcast to int32, then ~x for negatives: for x >= 2**31 that is x ^ 0xFFFFFFFF
    folded = torch.where(x >= 2**31, x ^ _MASK32, x)
    return folded.to(torch.float32).mul_(float(UNIFORM_SCALE))


def rand(seed: int, offset: torch.Tensor, n_rounds: int = N_ROUNDS) -> torch.Tensor:
    """float32 uniforms in [0, 1), one per offset (Triton's `rand`)."""
    k0, k1 = _split_seed(seed)
    (i1,) = _philox_from_offset(offset, k0, k1, n_rounds, words=1)
    return _uint_to_uniform_float(i1)


def randn(seed: int, offset: torch.Tensor, n_rounds: int = N_ROUNDS) -> torch.Tensor:
    """float32 standard normals, one per offset (Triton's `randn`: Box-Muller's cosine branch)."""
    if offset.device.type == "cpu" and offset.numel() > _CPU_CHUNK:
        # ~20 passes over int64 words: in chunks that stay in cache, not over the whole tensor
        flat = offset.reshape(-1)
        chunks = [
            randn(seed, flat[i : i + _CPU_CHUNK], n_rounds)
            for i in range(0, flat.numel(), _CPU_CHUNK)
        ]
        return torch.cat(chunks).reshape(offset.shape)
    k0, k1 = _split_seed(seed)
    i1, i2 = _philox_from_offset(offset, k0, k1, n_rounds, words=2)
    u1 = _uint_to_uniform_float(i1).clamp_(min=float(MIN_UNIFORM))
    th = _uint_to_uniform_float(i2).mul_(float(TWO_PI))
    r = u1.log_().mul_(-2.0).sqrt_()  # sqrt(-2 log u1), in float32 as Triton
    return r.mul_(th.cos_())


def randn_like_step(x: torch.Tensor, seed: int, k: int, dtype=torch.float32) -> torch.Tensor:
    """The noise of sampling step k, shaped like x, on x's device (float32 unless `dtype`)."""
    numel = x.numel()
    if numel >= 2**31:
        raise ValueError(f"{numel} elements: the int32 offsets of the convention stop at 2**31")
    offset = torch.arange(numel, dtype=torch.int32, device=x.device)  # element index, C order
    return randn(philox_seed(seed, k), offset).reshape(x.shape).to(dtype)
