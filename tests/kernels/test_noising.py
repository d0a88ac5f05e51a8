"""The fused q_sample kernel: eps is the reference Philox stream and x_t is DDPM eq. (4) of it.

Runs natively when CUDA is present, else in Triton's interpreter on the CPU (same tests).
"""

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from minidiff.kernels import q_sample, runtime
from minidiff.noising import Schedule, make_schedule
from minidiff.reference import noising as ref
from minidiff.reference import philox as ref_philox
from minidiff.reference.noising import make_schedule as make_ref_schedule

from compare import TOLERANCE, assert_close
from strategies import schedules, seeds

DEVICE = "cuda" if runtime.on_cuda() else "cpu"  # chosen in conftest.py
shapes = st.tuples(st.integers(0, 4)).flatmap(
    lambda b: st.sampled_from([b, (*b, 1), (*b, 7), (*b, 3, 16, 16), (*b, 3, 29, 29), (*b, 0)])
)


@given(schedules(), shapes, st.sampled_from([torch.float32, torch.float16, torch.bfloat16]),
       seeds, st.integers(0, 10_000))  # fmt: skip
@example(make_ref_schedule(), (3, 3, 29, 29), torch.float32, 0, 0)  # several blocks per sample
def test_q_sample_matches_reference(ref_schedule, shape, dtype, seed, k):
    x0 = torch.rand(shape, generator=torch.Generator().manual_seed(seed)).mul(2).sub(1)
    x0 = x0.to(DEVICE, dtype)
    t = np.random.default_rng(seed).integers(0, ref_schedule.T + 1, size=shape[0])
    schedule = Schedule.from_reference(ref_schedule).to(DEVICE)
    x_t, eps = q_sample(x0, torch.from_numpy(t), None, schedule, seed=seed, k=k)
    assert x_t.dtype == eps.dtype == dtype and x_t.shape == eps.shape == x0.shape
    eps_ref = ref_philox.randn_like_step(np.empty(shape), seed, k)
    # float tolerance 1e-6 as in test_philox, or the storage dtype's rounding
    atol, rtol = max(TOLERANCE[dtype][0], 1e-6), max(TOLERANCE[dtype][1], 1e-6)
    assert_close(eps, eps_ref, dtype, atol=atol, rtol=rtol, what="eps")
    expected = ref.q_sample(x0.cpu().double().numpy(), t, eps.cpu().double().numpy(), ref_schedule)
    assert_close(x_t, expected, dtype, what="x_t")
    x_t_given, eps_given = q_sample(x0, torch.from_numpy(t), eps, schedule)  # eps read, not drawn
    assert eps_given is eps
    assert_close(x_t_given, expected, dtype, what="x_t from a given eps")


def test_t_zero_returns_x0_and_noise_depends_on_seed_and_k():
    schedule = make_schedule(device=DEVICE)
    x0 = torch.rand(2, 3, 16, 16, device=DEVICE)
    x_t, eps = q_sample(x0, torch.tensor([0, 0]), None, schedule, seed=1, k=0)
    assert torch.equal(x_t, x0)
    assert not torch.equal(eps, q_sample(x0, 0, None, schedule, seed=1, k=1)[1])
    assert not torch.equal(eps, q_sample(x0, 0, None, schedule, seed=2, k=0)[1])


def test_q_sample_rejects_bad_arguments():
    schedule, x0 = make_schedule(device=DEVICE), torch.zeros(2, 3, device=DEVICE)
    with pytest.raises(ValueError, match="outside the valid range"):
        q_sample(x0, 501, None, schedule, seed=0)
    with pytest.raises(ValueError, match="either seed"):
        q_sample(x0, 5, None, schedule, seed=None)
    with pytest.raises(ValueError, match="not both"):
        q_sample(x0, 5, x0, schedule, seed=0)
    with pytest.raises(ValueError, match=r"eps has shape \(2, 4\)"):
        q_sample(x0, 5, torch.zeros(2, 4), schedule)
    with pytest.raises(ValueError, match="dtype"):
        q_sample(x0.long(), 5, None, schedule, seed=0)
