"""The forward process: the schedule tables (anchors from the course, invariants, the torch
copy) and q_sample (DDPM eq. 4) with its inversions, reference invariants and torch == reference."""

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import minidiff
from minidiff import make_schedule as make_schedule_torch
from minidiff.noising import check_t as check_t_torch
from minidiff.reference import make_schedule, q_sample
from minidiff.reference.noising import check_t

from compare import TOLERANCE, assert_close
from strategies import normal, random_t, schedules, seeds, shapes


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


def test_course_anchors():
    """Float64 values of the course's schedule (COURSE.md), extra factor included."""
    s = make_schedule()
    assert s.beta.shape == (501,)
    assert s.beta[1] == pytest.approx(1.398e-4, rel=1e-12)
    assert s.alpha_bar[0] == 1.0
    assert s.alpha_bar[1] == pytest.approx(0.99976021, abs=5e-9)
    assert s.alpha_bar[250] == pytest.approx(0.278560, abs=5e-7)
    assert s.alpha_bar[500] == pytest.approx(6.28876e-3, rel=1e-5)
    # the course's quirk: alpha_bar_1 carries (1 - beta_0) as well as alpha_1
    assert s.alpha_bar[1] == pytest.approx(s.alpha[0] * s.alpha[1], rel=1e-15)


@given(schedules())
@example(make_schedule("linear", 1, 1e-4, 1e-4))
@example(make_schedule("cosine", 1))
def test_alpha_bar_decreases_strictly_within_0_1(s):
    assert s.alpha_bar[0] == 1.0
    assert np.all(np.diff(s.alpha_bar) < 0)
    assert np.all(s.alpha_bar > 0) and np.all(s.alpha_bar <= 1)


@given(schedules())
def test_posterior_variance_below_beta(s):
    assert np.all(s.beta_tilde[1:] <= s.beta[1:])
    assert np.all(s.beta_tilde >= 0)
    np.testing.assert_array_equal(s.alpha_bar_prev[1:], s.alpha_bar[:-1])


@given(schedules(kinds=("cosine",)))
def test_cosine_beta_is_clipped(s):
    assert s.beta.max() <= 0.999


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "quadratic"}, "quadratic"),
        ({"T": 0}, "T=0"),
        ({"T": 2.5}, "T=2.5"),
        ({"beta1": 0.0}, "beta1=0.0"),
        ({"beta2": 1.0}, "beta2=1.0"),
        ({"beta1": 0.02, "beta2": 1e-4}, "beta2=0.0001 must be >= beta1"),
    ],
)
def test_invalid_schedules_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_schedule(**kwargs)


def test_check_t_names_what_is_wrong():
    with pytest.raises(ValueError, match=r"t=501 is outside the valid range \[1, 500\]"):
        check_t(np.array([3, 501]), 500)
    with pytest.raises(ValueError, match="integers"):
        check_t(np.array([1.5]), 500)
    with pytest.raises(ValueError, match=r"t must have shape \(3,\) to match x, got \(2,\)"):
        check_t(np.array([1, 2]), 500, np.zeros((3, 4)))


def test_check_t_is_one_rule_for_numpy_and_torch():
    """An int is every sample's timestep; the torch twin gives the reference's answers, errors."""
    x = np.zeros((3, 2))
    np.testing.assert_array_equal(check_t(7, 500, x), [7, 7, 7])
    assert torch.equal(check_t_torch(7, 500, torch.zeros(3, 2)), torch.tensor([7, 7, 7]))
    assert check_t_torch(torch.tensor([0, 5], dtype=torch.int32), 9, low=0).dtype == torch.int64
    for bad, message in [(torch.tensor([1.0]), "integers"), (torch.tensor([True]), "integers"),
                         (torch.tensor([10]), r"t=10 is outside the valid range \[1, 9\]")]:
        with pytest.raises(ValueError, match=message):
            check_t_torch(bad, 9)


@given(schedules(max_T=600))
def test_torch_tables_are_the_reference_tables(s):
    t = make_schedule_torch(s.kind, s.T, *(() if s.kind == "cosine" else (s.beta[0], s.beta[-1])))
    for name in ("beta", "alpha", "alpha_bar", "alpha_bar_prev", "beta_tilde"):
        table = getattr(t, name)
        assert table.dtype == torch.float64
        np.testing.assert_allclose(table.numpy(), getattr(s, name), rtol=1e-12, atol=0)


@given(schedules(), shapes, seeds)
def test_v_and_eps_are_two_views_of_one_forward_process(s, shape, seed):
    """eps_from_v(q_sample(x0, t, eps), v_target(x0, t, eps)) = eps, and predict_x0 inverts
    q_sample (Salimans & Ho 2022, sec. 4; DDPM eq. 4); the torch twins agree with the reference."""
    from minidiff.reference import eps_from_v, predict_x0, v_target

    x0, eps = normal(seed, shape), normal(seed + 1, shape)
    t = random_t(seed, shape[0], s.T)
    x_t, v = q_sample(x0, t, eps, s), v_target(x0, t, eps, s)
    alpha_bar_t = s.alpha_bar[t].reshape((-1,) + (1,) * (len(shape) - 1))
    np.testing.assert_allclose(eps_from_v(x_t, v, alpha_bar_t), eps, atol=1e-9)
    x0_theta = predict_x0(x_t, eps, alpha_bar_t)  # divides by sqrt(alpha_bar_t): compare scaled
    np.testing.assert_allclose(np.sqrt(alpha_bar_t) * x0_theta, np.sqrt(alpha_bar_t) * x0,
                               atol=1e-9)
    torch_s = minidiff.noising.Schedule.from_reference(s)
    as_tensor = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    assert_close(minidiff.noising.v_target(as_tensor(x0), torch.from_numpy(t), as_tensor(eps),
                                           torch_s), v, what="v_target")
    assert_close(minidiff.noising.eps_from_v(as_tensor(x_t), as_tensor(v),
                                             torch.from_numpy(alpha_bar_t)), eps,
                 what="eps_from_v")


@given(schedules(), st.lists(st.floats(-8, 8), min_size=1, max_size=64),
       st.floats(-3, 1), st.floats(0.1, 3))
def test_lognormal_t_is_the_nearest_log_sigma(s, z, p_mean, p_std):
    """EDM's p_train on a discrete schedule: each draw lands on a t in 1..T whose log sigma_t is
    the nearest to p_mean + p_std z (no other t is nearer), larger z never gives a smaller t, and
    the torch twin draws the same t."""
    from minidiff.reference.noising import log_sigma, lognormal_t

    z = np.sort(np.asarray(z))
    t = lognormal_t(z, s, p_mean, p_std)
    assert t.dtype == np.int64 and t.min() >= 1 and t.max() <= s.T
    assert np.all(np.diff(t) >= 0)
    ls, target = log_sigma(s)[1:], p_mean + p_std * z
    distance = np.abs(ls[None, :] - target[:, None])  # (draws, T)
    np.testing.assert_allclose(distance[np.arange(len(z)), t - 1], distance.min(1), rtol=1e-12)
    twin = minidiff.noising.lognormal_t(torch.from_numpy(z), make_schedule_torch(
        s.kind, s.T, *(() if s.kind == "cosine" else (s.beta[0], s.beta[-1]))), p_mean, p_std)
    assert twin.dtype == torch.int64 and np.array_equal(twin.numpy(), t)


def test_lognormal_t_lands_on_the_t_of_its_own_log_sigma():
    from minidiff.reference.noising import log_sigma, lognormal_t

    s = make_schedule()
    t = np.arange(1, s.T + 1)
    assert np.array_equal(lognormal_t(log_sigma(s)[t], s, p_mean=0.0, p_std=1.0), t)


def test_lognormal_t_moves_training_to_low_noise():
    """With EDM's defaults, 43% of the course schedule's draws fall at t <= 50 (sigma_t <= 0.24),
    where U{1..T} puts 10%, and 13% above t = 200, where U{1..T} puts 60%."""
    from minidiff.reference.noising import lognormal_t

    t = lognormal_t(np.random.default_rng(0).standard_normal(200_000), make_schedule())
    assert abs(np.mean(t <= 50) - 0.43) < 0.01 and abs(np.mean(t > 200) - 0.13) < 0.01
