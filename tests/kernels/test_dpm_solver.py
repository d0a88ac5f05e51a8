"""The fused DPM-Solver++(2M) kernel, ODE and SDE, against the NumPy reference, in place, and on
paper (PTX). The SDE's in-kernel noise is the reference's Philox stream, element by element.

Runs natively when CUDA is present, else in Triton's interpreter on the CPU (same tests). The
reference is fed the inputs as rounded to the kernel's dtype.
"""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minidiff import dpm_solver
from minidiff.kernels import dpm_solver_sde_step, dpm_solver_step, runtime
from minidiff.noising import Schedule, make_schedule
from minidiff.reference import dpm_solver as ref_dpm
from minidiff.reference import philox as ref_philox
from minidiff.reference.noising import make_schedule as make_ref_schedule

from compare import TOLERANCE, assert_close
from strategies import schedules, seeds

DEVICE = "cuda" if runtime.on_cuda() else "cpu"  # chosen in conftest.py
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# per-sample shapes: a scalar, one element, a prime, a sprite, more than one 2048-element block
SAMPLE_SHAPES = [(), (1,), (7,), (3, 16, 16), (3, 29, 29), (0,)]
cases = st.fixed_dictionaries({
    "batch": st.integers(0, 4),
    "sample_shape": st.sampled_from(SAMPLE_SHAPES),
    "dtype": st.sampled_from(DTYPES),
    "seed": seeds,
})
COURSE = make_ref_schedule()  # linear, T = 500


def case(batch, sample_shape, dtype=torch.float32, seed=0):
    return {"batch": batch, "sample_shape": sample_shape, "dtype": dtype, "seed": seed}


def inputs(case, n=3):
    """n standard-normal tensors of the case's shape and dtype on DEVICE."""
    g = torch.Generator().manual_seed(case["seed"])
    shape = (case["batch"], *case["sample_shape"])
    return [torch.randn(shape, generator=g).to(DEVICE, case["dtype"]) for _ in range(n)]


def three_timesteps(seed, batch, T):
    """(t_prev, t, s) per sample, T >= t_prev > t > s >= 0, with s = 0 (the last step) often."""
    rng = np.random.default_rng(seed)
    t = rng.integers(1, T, size=batch)
    s = np.where(rng.random(batch) < 0.3, 0, rng.integers(0, t))
    return [torch.from_numpy(a) for a in (rng.integers(t + 1, T + 1), t, s)]


def as_ref(x):
    return None if x is None else x.cpu().double().numpy()


@settings(max_examples=15)  # the interpreter is slow
@given(schedules().filter(lambda s: s.T >= 2), cases, st.booleans())
@example(COURSE, case(3, (3, 29, 29), seed=5), True)  # several blocks per sample
@example(COURSE, case(0, (3, 16, 16)), True)  # empty batch
@example(make_ref_schedule("cosine"), case(2, (7,), torch.bfloat16), False)
def test_dpm_solver_step_matches_reference(ref_schedule, case, second_order):
    x_t, eps_theta, x0_theta_prev = inputs(case)
    # timesteps whose x0_theta = x_t / sqrt(alpha_bar_t) float16 can hold: alpha_bar_t > 1e-6
    # (drawn schedules reach 1e-77; real ones stay above 1e-5)
    T_usable = max(2, int(np.nonzero(ref_schedule.alpha_bar > 1e-6)[0].max()))
    t_prev, t, s = three_timesteps(case["seed"], case["batch"], T_usable)
    history = (x0_theta_prev, t_prev) if second_order else (None, None)
    schedule = Schedule.from_reference(ref_schedule).to(DEVICE)
    got, got_x0 = dpm_solver_step(x_t, eps_theta, t, s, schedule, *history)
    expected, expected_x0 = ref_dpm.dpm_solver_step(
        as_ref(x_t), as_ref(eps_theta), t.numpy(), s.numpy(), ref_schedule,
        as_ref(history[0]), None if history[1] is None else history[1].numpy())
    assert got.dtype == got_x0.dtype == case["dtype"] and got.shape == x_t.shape
    # float32 errors in x_t and eps_theta grow by 1 / sqrt(alpha_bar_t), then by the correction
    _, _, c = ref_dpm.dpm_solver_coefficients(t.numpy(), s.numpy(), ref_schedule,
                                          t_prev.numpy() if second_order else None)
    atol, rtol = TOLERANCE[case["dtype"]]
    scale = float(np.max(1 / np.sqrt(ref_schedule.alpha_bar[t.numpy()]), initial=1.0))
    scale *= 1 + 2 * float(np.max(np.abs(c), initial=0.0))
    assert_close(got_x0, expected_x0, case["dtype"], atol=4 * atol * scale, rtol=rtol,
                 what="x0_theta")
    assert_close(got, expected, case["dtype"], atol=4 * atol * scale, rtol=rtol, what="x_s")


@settings(max_examples=10)  # the interpreter is slow
@given(schedules().filter(lambda s: s.T >= 2), cases, st.booleans(), st.booleans())
@example(COURSE, case(3, (3, 29, 29), seed=5), True, True)  # several blocks, in-kernel noise
@example(COURSE, case(0, (3, 16, 16)), True, False)  # empty batch
def test_dpm_solver_sde_step_matches_reference(ref_schedule, case, second_order, philox_noise):
    """The SDE update with z read from a tensor, or drawn in-kernel (philox_seed(seed, k)) and
    compared with the reference's own draw of that stream."""
    x_t, eps_theta, x0_theta_prev, z = inputs(case, n=4)
    T_usable = max(2, int(np.nonzero(ref_schedule.alpha_bar > 1e-6)[0].max()))
    t_prev, t, s = three_timesteps(case["seed"], case["batch"], T_usable)
    history = (x0_theta_prev, t_prev) if second_order else (None, None)
    schedule = Schedule.from_reference(ref_schedule).to(DEVICE)
    k = case["seed"] % 30 + 1
    if philox_noise:
        got, got_x0 = dpm_solver_sde_step(x_t, eps_theta, t, s, schedule, None, *history,
                                          seed=case["seed"], k=k)
        z_ref = ref_philox.randn_like_step(as_ref(x_t), case["seed"], k)
    else:
        got, got_x0 = dpm_solver_sde_step(x_t, eps_theta, t, s, schedule, z, *history)
        z_ref = as_ref(z)
    expected, expected_x0 = ref_dpm.dpm_solver_sde_step(
        as_ref(x_t), as_ref(eps_theta), t.numpy(), s.numpy(), ref_schedule, z_ref,
        as_ref(history[0]), None if history[1] is None else history[1].numpy())
    assert got.dtype == got_x0.dtype == case["dtype"] and got.shape == x_t.shape
    c = ref_dpm.dpm_solver_sde_coefficients(t.numpy(), s.numpy(), ref_schedule,
                                            t_prev.numpy() if second_order else None)[2]
    atol, rtol = TOLERANCE[case["dtype"]]
    scale = float(np.max(1 / np.sqrt(ref_schedule.alpha_bar[t.numpy()]), initial=1.0))
    scale *= 1 + 2 * float(np.max(np.abs(c), initial=0.0))
    assert_close(got_x0, expected_x0, case["dtype"], atol=4 * atol * scale, rtol=rtol,
                 what="x0_theta")
    assert_close(got, expected, case["dtype"], atol=4 * atol * scale, rtol=rtol, what="x_s")


def test_sde_refuses_no_noise_where_sigma_is_not_zero():
    schedule, x = make_schedule(device=DEVICE), torch.zeros(2, 3, device=DEVICE)
    with pytest.raises(ValueError, match="needs fresh noise z"):
        dpm_solver_sde_step(x, x, 3, 2, schedule)
    with pytest.raises(ValueError, match="not both"):
        dpm_solver_sde_step(x, x, 3, 2, schedule, x, seed=0, k=1)
    x_s, x0_theta = dpm_solver_sde_step(x + 1, x, 3, 0, schedule)  # s = 0: sigma = 0, none needed
    assert torch.equal(x_s, x0_theta)


@settings(max_examples=5)
@given(seeds, st.integers(1, 4))
def test_fused_equals_the_torch_twin(seed, batch):
    """What `sample --fused` relies on: the torch twin's x_s and x0_theta, float32, sprite-sized."""
    g = torch.Generator().manual_seed(seed)
    x_t, eps_theta, x0_prev = torch.randn(3, batch, 3, 16, 16, generator=g).to(DEVICE)
    schedule = make_schedule(device=DEVICE)
    t_prev, t, s = (torch.full((batch,), v, device=DEVICE) for v in (300, 200, 100))
    expected = dpm_solver.dpm_solver_step(x_t, eps_theta, t, s, schedule, x0_prev, t_prev)
    got = dpm_solver_step(x_t, eps_theta, t, s, schedule, x0_prev, t_prev)
    for a, b, what in zip(got, expected, ("x_s", "x0_theta")):
        assert_close(a, b, atol=2e-6, what=what)


def test_in_place_and_non_contiguous_inputs():
    schedule = make_schedule("cosine", device=DEVICE)
    x_t, eps_theta, x0_prev = torch.randn(3, 4, 3, 8, 8, device=DEVICE)
    t_prev, t = torch.tensor([9, 300, 500, 2]), torch.tensor([5, 200, 499, 1])
    s = torch.tensor([0, 100, 3, 0])
    x_s, x0_theta = dpm_solver_step(x_t, eps_theta, t, s, schedule, x0_prev, t_prev)
    view = eps_theta.transpose(2, 3).contiguous().transpose(2, 3)
    assert not view.is_contiguous()
    assert torch.equal(dpm_solver_step(x_t, view, t, s, schedule, x0_prev, t_prev)[0], x_s)
    got = dpm_solver_step(x_t, eps_theta, t, s, schedule, x0_prev, t_prev, out=x_t,
                          x0_theta_out=x0_prev)
    assert got[0] is x_t and got[1] is x0_prev
    assert torch.equal(x_t, x_s) and torch.equal(x0_prev, x0_theta)


def test_rejects_bad_input():
    schedule, x = make_schedule(device=DEVICE), torch.zeros(2, 3, device=DEVICE)
    with pytest.raises(ValueError, match="together"):
        dpm_solver_step(x, x, 3, 2, schedule, x)
    with pytest.raises(ValueError, match="s < t"):
        dpm_solver_step(x, x, 3, 3, schedule)
    with pytest.raises(ValueError, match="t_prev > t"):
        dpm_solver_step(x, x, 3, 2, schedule, x, 2)
    with pytest.raises(ValueError, match=r"x0_theta_prev has shape \(2, 4\)"):
        dpm_solver_step(x, x, 3, 2, schedule, torch.zeros(2, 4, device=DEVICE), 4)


def test_on_paper_it_moves_each_element_once_vectorised_without_spills():
    """The PTX for sm_80 and sm_90: second order reads x_t, eps_theta and x0_theta_prev and
    writes x_s and x0_theta once each (20 bytes per float32 element), in 16-byte vectors."""
    from minidiff.kernels import compile as aot

    variants = [v for v in aot.VARIANTS if v.kernel == "dpm_solver_step"]
    builds = aot.compile_all(variants)
    assert {b.variant for b in builds} == set(variants) and len(builds) == 2 * len(variants)
    for b in builds:
        if b.variant == aot.Variant("dpm_solver_step", "float32", "none", second_order=True):
            # 8 float32 per thread: two ld.global.v4 for each of the three inputs, two per output
            assert b.loads == {"ld.global.v4.b32": 6} and b.stores == {"st.global.v4.b32": 4}
        moved = b.per_element(b.loads)[1] + b.per_element(b.stores)[1]
        assert moved == b.variant.min_bytes_per_element(), b.variant.name
        assert b.vectorised and b.spill_stores == b.spill_loads == 0, b.variant.name
