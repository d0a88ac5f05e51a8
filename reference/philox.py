"""Triton's Philox random numbers, re-derived in NumPy: the specification of minidiff's sampling
noise.

Why this exists: the fused kernels draw their noise z inside the kernel with `tl.randn`, and the
plain torch sampler must draw the *same* z for the same seed, on any device, so that `sample` and
`sample --fused` give the same images. This module is the spec both are tested against; it
mirrors `triton/language/random.py` function by function.

Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) is a
counter-based generator: a pure function of a 128-bit counter (c0, c1, c2, c3) and a 64-bit key
(k0, k1). Triton uses the key for the seed and the counter for the element's offset:
k0, k1 = low and high 32 bits of the 64-bit seed; c0, c1 = low and high 32 bits of the offset
(c1 = 0 for int32 offsets); c2 = c3 = 0.

**Noise convention of minidiff.** For sampling step k (k = 0 draws the initial x_T, k = 1, 2, ...
each update's fresh z), the noise of a contiguous tensor of `numel` elements is

    z = randn(philox_seed(seed, k), offset=arange(numel)),  philox_seed(seed, k) = seed | k << 32,

so k0 is the user's 32-bit seed and k1 the step, which is what `tl.randn(philox_seed, offsets)`
gives in a kernel whose offsets are int32 element indices. Sample i's noise does not depend on the
batch size.

**Precision.** Unlike the rest of `reference/` (float64), the float functions here compute in
float32 on purpose: "the same numbers as Triton" means Triton's float32 rounding in
`uint_to_uniform_float` (int32 -> float32, times a float32 scale) and in the Box-Muller transform.
Integers are bit-exact; on a GPU, Triton's log/cos may differ from NumPy's in the last bit.
"""

from __future__ import annotations

import numpy as np

N_ROUNDS = 10  # Philox4x32-10: ten rounds is the variant Triton (and cuRAND) use

# Philox4x32 constants (Salmon et al., Table 2): key increments (Weyl) and round multipliers.
PHILOX_KEY_A = np.uint32(0x9E3779B9)  # golden ratio
PHILOX_KEY_B = np.uint32(0xBB67AE85)  # sqrt(3) - 1
PHILOX_ROUND_A = np.uint32(0xD2511F53)
PHILOX_ROUND_B = np.uint32(0xCD9E8D57)

# Largest float32 scale with (2**31 - 1) * scale < 1 after rounding, as in Triton.
UNIFORM_SCALE = np.float32(4.6566127342e-10)
TWO_PI = np.float32(6.283185307179586)
MIN_UNIFORM = np.float32(1.0e-7)  # keeps log(u1) finite in Box-Muller

_MASK32 = 0xFFFFFFFF


def philox_seed(seed: int, k: int) -> int:
    """The 64-bit Philox seed of sampling step k: key k0 = the user's seed, key k1 = the step.

    The seed must fit in 32 bits (it is key k0); k below 2**31 keeps the result a positive int64.
    """
    if not 0 <= seed <= _MASK32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if not 0 <= k < 2**31:
        raise ValueError(f"step k must be in [0, 2**31), got {k}")
    return int(seed) | (int(k) << 32)


def _umulhi(a: np.ndarray, b: np.uint32) -> np.ndarray:
    """High 32 bits of the 64-bit product of two uint32 values (`tl.math.umulhi`)."""
    return ((a.astype(np.uint64) * np.uint64(b)) >> np.uint64(32)).astype(np.uint32)


def philox(c0, c1, c2, c3, k0, k1, n_rounds: int = N_ROUNDS):
    """`n_rounds` Philox4x32 rounds of counter (c0, c1, c2, c3) under key (k0, k1), uint32."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint32) for c in (c0, c1, c2, c3))
    k0, k1 = np.uint32(k0), np.uint32(k1)
    with np.errstate(over="ignore"):  # uint32 arithmetic wraps modulo 2**32, as on the GPU
        for _ in range(n_rounds):
            _c0, _c2 = c0, c2
            c0 = _umulhi(_c2, PHILOX_ROUND_B) ^ c1 ^ k0
            c2 = _umulhi(_c0, PHILOX_ROUND_A) ^ c3 ^ k1
            c1 = _c2 * PHILOX_ROUND_B
            c3 = _c0 * PHILOX_ROUND_A
            k0 = k0 + PHILOX_KEY_A  # raise the key
            k1 = k1 + PHILOX_KEY_B
    return c0, c1, c2, c3


def randint4x(seed: int, offset, n_rounds: int = N_ROUNDS):
    """Four uint32 streams for each offset (Triton's `randint4x`)."""
    seed = int(seed) & (2**64 - 1)  # Triton casts the seed to uint64
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    offset = np.asarray(offset)
    if offset.dtype.kind not in "iu":
        raise TypeError(f"offset must be an integer array, got {offset.dtype}")
    offset_lo = offset.astype(np.uint32)  # wraps, as Triton's cast does
    if offset.dtype.itemsize > 4:
        offset_hi = (offset.astype(np.uint64) >> np.uint64(32)).astype(np.uint32)
    else:
        offset_hi = np.zeros_like(offset_lo)
    zero = np.zeros_like(offset_lo)
    return philox(offset_lo, offset_hi, zero, zero, k0, k1, n_rounds)


def randint(seed: int, offset, n_rounds: int = N_ROUNDS) -> np.ndarray:
    """One uint32 stream for each offset: the first of `randint4x`."""
    return randint4x(seed, offset, n_rounds)[0]


def uint_to_uniform_float(x) -> np.ndarray:
    """uint32 -> float32 in [0, 1): bitcast to int32, fold negatives with ~x, times a scale."""
    x = np.asarray(x, dtype=np.uint32).view(np.int32)
    x = np.where(x < 0, ~x, x)  # now in [0, 2**31)
    return x.astype(np.float32) * UNIFORM_SCALE  # int32 -> float32 rounds to nearest, as sitofp


def rand(seed: int, offset, n_rounds: int = N_ROUNDS) -> np.ndarray:
    """float32 uniforms in [0, 1), one per offset (Triton's `rand`)."""
    return uint_to_uniform_float(randint(seed, offset, n_rounds))


def pair_uniform_to_normal(u1, u2):
    """Box-Muller (Box & Muller 1958) in float32: two uniforms -> two independent N(0, 1)."""
    u1 = np.maximum(MIN_UNIFORM, np.asarray(u1, dtype=np.float32))
    th = TWO_PI * np.asarray(u2, dtype=np.float32)
    r = np.sqrt(np.float32(-2.0) * np.log(u1))
    return r * np.cos(th), r * np.sin(th)


def randn(seed: int, offset, n_rounds: int = N_ROUNDS) -> np.ndarray:
    """float32 standard normals, one per offset (Triton's `randn`: Box-Muller's cosine branch)."""
    i1, i2, _, _ = randint4x(seed, offset, n_rounds)
    n1, _ = pair_uniform_to_normal(uint_to_uniform_float(i1), uint_to_uniform_float(i2))
    return n1


def randn_like_step(x, seed: int, k: int) -> np.ndarray:
    """The noise of sampling step k for a tensor shaped like x (float32), per the convention."""
    shape = np.shape(x)
    offset = np.arange(int(np.prod(shape)), dtype=np.int32)  # element index in C order
    return randn(philox_seed(seed, k), offset).reshape(shape)
