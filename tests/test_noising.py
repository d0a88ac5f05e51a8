"""q_sample (DDPM eq. 4): reference invariants, and torch == reference."""

import numpy as np
import pytest
import torch
from compare import TOLERANCE, assert_close
from hypothesis import example, given
from hypothesis import strategies as st
from minidiff.reference import make_schedule, q_sample
from strategies import normal, random_t, schedules, seeds, shapes

import minidiff


@given(schedules(), shapes, seeds)
def test_no_noise_keeps_the_scaled_image(s, shape, seed):
    x0 = normal(seed, shape)
    t = random_t(seed, shape[0], s.T, low=0)
    expected = np.sqrt(s.alpha_bar[t]).reshape(-1, 1, 1, 1) * x0
    np.testing.assert_allclose(q_sample(x0, t, np.zeros(shape), s), expected, rtol=1e-14)


@given(schedules(), shapes, seeds)
def test_noise_enters_with_coefficient_sqrt_one_minus_alpha_bar(s, shape, seed):
    """q_sample is affine in eps with slope sqrt(1 - alpha_bar_t): its variance over eps is
    exactly (1 - alpha_bar_t) Var(eps). (The course's form would give (1 - alpha_bar_t)^2.)"""
    x0, eps = normal(seed, shape), normal(seed + 1, shape)
    t = random_t(seed, shape[0], s.T)
    slope = (q_sample(x0, t, eps, s) - q_sample(x0, t, np.zeros(shape), s)) / np.where(
        eps == 0, 1, eps
    )
    expected = np.broadcast_to(np.sqrt(1 - s.alpha_bar[t]).reshape(-1, 1, 1, 1), shape)
    np.testing.assert_allclose(slope[eps != 0], expected[eps != 0], rtol=1e-9, atol=1e-12)


@given(seeds, st.integers(1, 500))
def test_variance_over_eps_is_one_minus_alpha_bar(seed, t):
    """Monte Carlo over many noise draws for a fixed x0."""
    s = make_schedule()
    n = 200_000
    x0 = np.full((n, 1), 0.7)
    x_t = q_sample(x0, np.full(n, t), normal(seed, (n, 1)), s)
    assert x_t.mean() == pytest.approx(np.sqrt(s.alpha_bar[t]) * 0.7, abs=0.01)
    assert x_t.var() == pytest.approx(1 - s.alpha_bar[t], rel=0.02, abs=1e-4)


@given(schedules(max_T=600), shapes, seeds, st.sampled_from(list(TOLERANCE)))
@example(make_schedule(), (1, 3, 16, 16), 0, torch.float32)
def test_torch_matches_reference(s, shape, seed, dtype):
    x0 = torch.from_numpy(normal(seed, shape)).to(dtype)
    eps = torch.from_numpy(normal(seed + 1, shape)).to(dtype)
    t = random_t(seed, shape[0], s.T, low=0)
    schedule = minidiff.Schedule.from_reference(s)
    actual = minidiff.q_sample(x0, torch.from_numpy(t), eps, schedule)
    compute = torch.promote_types(dtype, torch.float32)
    assert actual.dtype == compute
    expected = q_sample(x0.double().numpy(), t, eps.double().numpy(), s)
    assert_close(actual, expected, compute, what="q_sample")


def test_mismatched_shapes_are_named():
    s = make_schedule()
    with pytest.raises(ValueError, match=r"eps has shape \(2, 3\) but x0 has \(2, 4\)"):
        q_sample(np.zeros((2, 4)), np.array([1, 2]), np.zeros((2, 3)), s)
    with pytest.raises(ValueError, match="t=501"):
        minidiff.q_sample(torch.zeros(1, 3), torch.tensor([501]), torch.zeros(1, 3),
                          minidiff.make_schedule())
