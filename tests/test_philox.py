"""The NumPy Philox spec against Triton's own `tl.randint4x` / `tl.rand` / `tl.randn`, and the torch
twin against the spec.

Triton runs natively when CUDA is present, else in its interpreter (chosen in conftest.py).
Integers must match bit for bit; floats within 1e-6 (log/cos may differ in the last bit).
"""

import numpy as np
import pytest
import torch
import triton
import triton.language as tl
from hypothesis import example, given
from hypothesis import strategies as st

from minidiff import philox as torch_philox
from minidiff.kernels import runtime
from minidiff.reference import philox as ref

from compare import assert_close

DEVICE = "cuda" if runtime.on_cuda() else "cpu"  # chosen in conftest.py
FLOAT_TOL = {"atol": 1e-6, "rtol": 1e-6}
BLOCK = 64


@triton.jit
def _philox_probe_kernel(
    ints_ptr,  # (4, n) int64 out: the four randint4x words, zero-extended
    uniform_ptr,  # (n,) float32 out: tl.rand
    normal_ptr,  # (n,) float32 out: tl.randn
    seed,  # the 64-bit Philox seed
    start,  # first offset; offsets are start + element index
    n,  # number of offsets
    WIDE: tl.constexpr,  # use int64 offsets (counter word c1 = offset >> 32)
    BLOCK: tl.constexpr,  # offsets per program
):
    idx = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < n
    if WIDE:
        offsets = start + idx.to(tl.int64)
    else:
        offsets = start + idx
    i1, i2, i3, i4 = tl.randint4x(seed, offsets)
    tl.store(ints_ptr + idx, i1.to(tl.int64), mask=mask)
    tl.store(ints_ptr + n + idx, i2.to(tl.int64), mask=mask)
    tl.store(ints_ptr + 2 * n + idx, i3.to(tl.int64), mask=mask)
    tl.store(ints_ptr + 3 * n + idx, i4.to(tl.int64), mask=mask)
    tl.store(uniform_ptr + idx, tl.rand(seed, offsets), mask=mask)
    tl.store(normal_ptr + idx, tl.randn(seed, offsets), mask=mask)


def triton_streams(seed: int, start: int, n: int, wide: bool):
    ints = torch.empty((4, n), dtype=torch.int64, device=DEVICE)
    uniform = torch.empty(n, dtype=torch.float32, device=DEVICE)
    normal = torch.empty(n, dtype=torch.float32, device=DEVICE)
    if n:
        grid = (triton.cdiv(n, BLOCK),)
        _philox_probe_kernel[grid](ints, uniform, normal, seed, start, n, WIDE=wide, BLOCK=BLOCK)
    return ints.cpu().numpy(), uniform.cpu().numpy(), normal.cpu().numpy()


seeds = st.one_of(
    st.integers(0, 2**32 - 1),  # a user's seed, step 0
    st.builds(ref.philox_seed, st.integers(0, 2**32 - 1), st.integers(0, 1000)),  # later steps
    st.integers(0, 2**63 - 1),  # any key (k0, k1)
)


@given(seed=seeds, start=st.integers(0, 2**31 - 2**12), n=st.integers(0, 200))
@example(seed=0, start=0, n=BLOCK + 3)
@example(seed=ref.philox_seed(42, 500), start=0, n=1)
def test_reference_matches_triton(seed, start, n):
    ints, uniform, normal = triton_streams(seed, start, n, wide=False)
    offset = np.arange(start, start + n, dtype=np.int32)
    for word, (expected, got) in enumerate(zip(ref.randint4x(seed, offset), ints)):
        np.testing.assert_array_equal(got, expected.astype(np.int64), err_msg=f"word {word}")
    assert_close(uniform, ref.rand(seed, offset), what="rand", **FLOAT_TOL)
    assert_close(normal, ref.randn(seed, offset), what="randn", **FLOAT_TOL)


@given(seed=seeds, start=st.integers(2**31, 2**40), n=st.integers(1, 100))
def test_reference_matches_triton_with_int64_offsets(seed, start, n):
    ints, _, normal = triton_streams(seed, start, n, wide=True)
    offset = np.arange(start, start + n, dtype=np.int64)
    for word, (expected, got) in enumerate(zip(ref.randint4x(seed, offset), ints)):
        np.testing.assert_array_equal(got, expected.astype(np.int64), err_msg=f"word {word}")
    assert_close(normal, ref.randn(seed, offset), what="randn", **FLOAT_TOL)


def test_known_answer_of_philox4x32_10():
    """Random123's published known-answer vector (kat_vectors: philox4x32 10 rounds, all ones)."""
    ones = np.array([0xFFFFFFFF], dtype=np.uint32)
    words = ref.philox(ones, ones, ones, ones, 0xFFFFFFFF, 0xFFFFFFFF)
    assert [int(w[0]) for w in words] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]


@given(seed=seeds, start=st.integers(0, 2**40), n=st.integers(0, 300), wide=st.booleans())
def test_torch_twin_matches_reference(seed, start, n, wide):
    dtype = np.int64 if wide else np.int32
    start = start if wide else start % 2**31 // 2
    offset = np.arange(start, start + n, dtype=dtype)
    offset_t = torch.from_numpy(offset)
    got = torch_philox.randint4x(seed, offset_t)
    for word, expected in enumerate(ref.randint4x(seed, offset)):
        np.testing.assert_array_equal(got[word].numpy(), expected.astype(np.int64), f"word {word}")
    assert_close(torch_philox.rand(seed, offset_t), ref.rand(seed, offset), **FLOAT_TOL)
    assert_close(torch_philox.randn(seed, offset_t), ref.randn(seed, offset), **FLOAT_TOL)


@given(seed=st.integers(0, 2**32 - 1), k=st.integers(0, 500), batch=st.integers(0, 5))
def test_step_noise_convention(seed, k, batch):
    """Noise of step k = randn(seed | k << 32, element index); sample i independent of batch."""
    x = torch.empty(batch, 3, 4, 4)
    z = torch_philox.randn_like_step(x, seed, k)
    assert z.shape == x.shape and z.dtype == torch.float32
    assert_close(z, ref.randn_like_step(x.numpy(), seed, k), **FLOAT_TOL)
    first = torch_philox.randn_like_step(torch.empty(1, 3, 4, 4), seed, k)
    if batch:
        assert torch.equal(z[:1], first)
    assert ref.philox_seed(seed, k) == seed + k * 2**32


def test_philox_seed_rejects_out_of_range_seeds_and_steps():
    with pytest.raises(ValueError, match="step k"):
        ref.philox_seed(1, -1)
    with pytest.raises(ValueError, match="seed"):
        ref.philox_seed(2**32, 1)


def test_step_noise_is_standard_normal_across_cpu_chunks():
    z = torch_philox.randn_like_step(torch.empty(100_000), seed=7, k=1)
    assert abs(z.double().mean().item()) < 0.02 and abs(z.double().std().item() - 1) < 0.02
    tail = np.arange(100_000 - 40_000, 100_000, 997, dtype=np.int32)  # beyond the first chunk
    assert_close(z[tail], ref.randn(ref.philox_seed(7, 1), tail), **FLOAT_TOL)
