"""The fused kernels natively on the GPU against the float64 NumPy reference, for every dtype.

tests/kernels/ holds the full property tests (natively too where CUDA is present); these pin
what a GPU session must see for each kernel: every storage dtype, awkward shapes (batch 1 and a
prime, more than one block per sample, the benchmark's 1,024 sprites), timesteps mixed within
a batch (t = 1 and T included), and the noise drawn in-kernel equal to the reference Philox.
"""

import inspect

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from minidiff.noising import Schedule
from minidiff.reference import dpm_solver as ref_dpm
from minidiff.reference import noising as ref_noising
from minidiff.reference import philox as ref_philox
from minidiff.reference import samplers as ref
from minidiff.reference.noising import make_schedule as make_ref_schedule

from compare import TOLERANCE, assert_close
from strategies import seeds

pytestmark = pytest.mark.cuda

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(1, 7), (3, 3, 29, 29), (1024, 3, 16, 16)]
CHECKED = ("ddpm_step", "ddim_step", "dpm_solver_step", "q_sample")  # the kernels this file tests
COURSE = make_ref_schedule()  # linear, T = 500


def kernels():
    from minidiff import kernels

    assert kernels.load().runtime.on_cuda(), "the kernels chose the interpreter on a CUDA machine"
    return kernels


def inputs(shape, dtype, seed, n=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).to("cuda", dtype) for _ in range(n)]


def mixed_t(batch, seed, low=1):
    """One timestep per sample: the first, the last, or anywhere."""
    rng = np.random.default_rng(seed)
    edge = rng.choice([low, COURSE.T], size=batch)
    anywhere = rng.integers(low, COURSE.T + 1, size=batch)
    return np.where(rng.random(batch) < 0.4, edge, anywhere)


def as_ref(x):
    return x.cpu().double().numpy()


def tolerance(dtype, scale=1.0):
    atol, rtol = TOLERANCE[dtype]
    return {"atol": atol * max(1.0, scale), "rtol": rtol}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=2, deadline=None)  # the first call compiles
@given(seed=seeds)
def test_ddpm_step_on_the_gpu(dtype, shape, seed):
    x_t, eps_theta = inputs(shape, dtype, seed)
    t = mixed_t(shape[0], seed)
    schedule = Schedule.from_reference(COURSE).to("cuda")
    got = kernels().ddpm_step(x_t, eps_theta, torch.from_numpy(t).cuda(), schedule, seed=seed, k=7)
    z = ref_philox.randn_like_step(as_ref(x_t), seed, 7)
    expected = ref.ddpm_step(as_ref(x_t), as_ref(eps_theta), t, COURSE, z)
    assert got.dtype == dtype and got.device.type == "cuda"
    s1 = ref.ddpm_coefficients(t, COURSE)[0]
    assert_close(got, expected, dtype, what="x_{t-1}", **tolerance(dtype, float(np.max(s1))))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("eta", [0.0, 1.0])
@settings(max_examples=2, deadline=None)  # the first call compiles
@given(seed=seeds)
def test_ddim_step_on_the_gpu(eta, dtype, shape, seed):
    x_t, eps_theta = inputs(shape, dtype, seed)
    t = mixed_t(shape[0], seed)
    s = np.random.default_rng(seed + 1).integers(0, t)
    noise = {"seed": seed, "k": 3} if eta > 0 else {}
    t_gpu, s_gpu = torch.from_numpy(t).cuda(), torch.from_numpy(s).cuda()
    schedule = Schedule.from_reference(COURSE).to("cuda")
    got = kernels().ddim_step(x_t, eps_theta, t_gpu, s_gpu, schedule, eta=eta, clip_x0=eta > 0,
                              **noise)
    z = ref_philox.randn_like_step(as_ref(x_t), seed, 3) if eta > 0 else None
    expected = ref.ddim_step(as_ref(x_t), as_ref(eps_theta), t, s, COURSE, eta=eta, z=z,
                             clip_x0=eta > 0)
    assert got.dtype == dtype and got.device.type == "cuda"
    scale = float(np.max(np.sqrt(COURSE.alpha_bar[s] / COURSE.alpha_bar[t])))
    assert_close(got, expected, dtype, what="x_s", **tolerance(dtype, scale))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=2, deadline=None)  # the first call compiles
@given(seed=seeds)
def test_q_sample_on_the_gpu(dtype, shape, seed):
    x0 = inputs(shape, dtype, seed, n=1)[0].clamp(-1, 1)
    t = mixed_t(shape[0], seed, low=0)
    schedule = Schedule.from_reference(COURSE).to("cuda")
    x_t, eps = kernels().q_sample(x0, torch.from_numpy(t).cuda(), None, schedule, seed=seed, k=11)
    eps_ref = ref_philox.randn_like_step(np.empty(shape), seed, 11)
    atol, rtol = max(TOLERANCE[dtype][0], 1e-6), max(TOLERANCE[dtype][1], 1e-6)
    assert_close(eps, eps_ref, dtype, atol=atol, rtol=rtol, what="eps")
    expected = ref_noising.q_sample(as_ref(x0), t, as_ref(eps), COURSE)
    assert_close(x_t, expected, dtype, what="x_t")


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("second_order", [False, True])
@settings(max_examples=2, deadline=None)  # the first call compiles
@given(seed=seeds)
def test_dpm_solver_step_on_the_gpu(second_order, dtype, shape, seed):
    x_t, eps_theta, x0_theta_prev = inputs(shape, dtype, seed, n=3)
    rng = np.random.default_rng(seed)
    t = rng.integers(2, COURSE.T, size=shape[0])  # room for s < t < t_prev <= T
    s = rng.integers(0, t)
    t_prev = rng.integers(t + 1, COURSE.T + 1) if second_order else None
    previous = (x0_theta_prev, torch.from_numpy(t_prev).cuda()) if second_order else (None, None)
    x_s, x0_theta = kernels().dpm_solver_step(
        x_t, eps_theta, torch.from_numpy(t).cuda(), torch.from_numpy(s).cuda(),
        Schedule.from_reference(COURSE).to("cuda"), *previous)
    expected = ref_dpm.dpm_solver_step(as_ref(x_t), as_ref(eps_theta), t, s, COURSE,
                                   as_ref(x0_theta_prev) if second_order else None, t_prev)
    assert x_s.dtype == x0_theta.dtype == dtype
    # float32 errors pass through 1 / sqrt(alpha_bar_t) into x0_theta, then line 5's (1 + 2c)
    # and line 6's coefficients into x_s
    ratio, phi, c = ref_dpm.dpm_solver_coefficients(t, s, COURSE, t_prev)
    to_x0 = float(np.max(1 / np.sqrt(COURSE.alpha_bar[t])))
    to_x_s = float(np.max(np.abs(ratio)) + np.max(np.abs(phi) * (1 + 2 * np.abs(c))) * to_x0)
    assert_close(x0_theta, expected[1], dtype, what="x0_theta", **tolerance(dtype, to_x0))
    assert_close(x_s, expected[0], dtype, what="x_s", **tolerance(dtype, to_x_s))


def test_every_kernel_has_a_gpu_test_here():
    """A kernel added to minidiff.kernels (DPM-Solver++'s, say) needs its GPU test here too."""
    exported = {n for n in kernels().__all__ if inspect.isfunction(getattr(kernels(), n))}
    missing = sorted(exported - set(CHECKED))
    assert not missing, f"no GPU test in tests/cuda/test_kernels.py for {', '.join(missing)}"
