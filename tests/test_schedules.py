"""The schedule tables: anchors from the course, invariants, and the torch copy."""

import numpy as np
import pytest
import torch
from hypothesis import example, given
from minidiff.reference import make_schedule
from minidiff.reference.schedules import check_t
from strategies import schedules

from minidiff import make_schedule as make_schedule_torch
from minidiff.schedules import check_t as check_t_torch


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
    """An int is every sample's timestep; the torch twin gives the reference's answers and errors."""
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
