"""SDE-DPM-Solver++(2M): the reference's properties (first order is DDIM at eta 1, every update
keeps the forward marginal, the last step lands on x0_theta, a Gaussian's spread is kept where
DDIM at eta 1 shrinks it), the torch twin against the reference, the sampling loop written out,
`--fused` against torch to the uint8 pixel, and the command line."""

import importlib.util
import inspect
import re

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from test_dpm_solver import MU, S0, cli, gaussian_eps, three_timesteps, tiny_run, x0_scale  # noqa: F401

from minidiff import dpm_solver
from minidiff.noising import Schedule
from minidiff.reference import dpm_solver as ref_dpm
from minidiff.reference import make_schedule
from minidiff.reference import samplers as ref
from minidiff.samplers import SamplerConfig, sample_loop

from compare import TOLERANCE, assert_close
from strategies import normal, random_t, schedules, seeds, shapes
from tiny_denoiser import tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")
COURSE = make_schedule()  # linear, T = 500


# --- the reference -------------------------------------------------------------------------------


@given(schedules(), shapes, seeds)
@example(COURSE, (2, 3, 4, 4), 0)
def test_first_order_is_ddim_with_eta_1(s, shape, seed):
    """Without a previous x0_theta the SDE update is DDPM's posterior q(x_s | x_t, x0_theta):
    DDIM's eq. (12) with eta = 1, the same z."""
    x_t, eps_theta, z = normal(seed, shape), normal(seed + 1, shape), normal(seed + 2, shape)
    t = random_t(seed, shape[0], s.T)
    s_ = np.random.default_rng(seed).integers(0, t)
    x_s, _ = ref_dpm.dpm_solver_sde_step(x_t, eps_theta, t, s_, s, z)
    expected = ref.ddim_step(x_t, eps_theta, t, s_, s, eta=1.0, z=z)
    np.testing.assert_allclose(x_s, expected, rtol=1e-9, atol=1e-10 * x0_scale(s, t))


@given(schedules().filter(lambda s: s.T >= 2), seeds, st.booleans())
def test_every_update_keeps_the_forward_marginal(s, seed, second_order):
    """With D = x0 and x_t = alpha_t x0 + sigma_t eps: x_s has mean alpha_s x0 and variance
    sigma_s^2, i.e. ratio alpha_t + phi = alpha_s and (ratio sigma_t)^2 + sigma^2 = sigma_s^2."""
    t_prev, t, s_ = three_timesteps(seed, 5, s.T)
    ratio, phi, c, sigma = ref_dpm.dpm_solver_sde_coefficients(
        t, s_, s, t_prev if second_order else None)
    alpha_bar_t, alpha_bar_s = s.alpha_bar[t], s.alpha_bar[s_]
    np.testing.assert_allclose(ratio * np.sqrt(alpha_bar_t) + phi, np.sqrt(alpha_bar_s),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ratio**2 * (1 - alpha_bar_t) + sigma**2, 1 - alpha_bar_s,
                               rtol=1e-9, atol=1e-12)
    ode_c = ref_dpm.dpm_solver_coefficients(t, s_, s, t_prev if second_order else None)[2]
    np.testing.assert_array_equal(c, ode_c)  # Algorithm 2's correction, unchanged


@given(schedules().filter(lambda s: s.T >= 2), shapes, seeds, st.booleans())
def test_the_last_step_lands_on_x0_theta_without_noise(s, shape, seed, second_order):
    x_t, eps_theta, x0_prev = (normal(seed + i, shape) for i in range(3))
    t_prev, t, _ = three_timesteps(seed, shape[0], s.T)
    history = (x0_prev, t_prev) if second_order else (None, None)
    x_s, x0_theta = ref_dpm.dpm_solver_sde_step(x_t, eps_theta, t, np.zeros_like(t), s, None,
                                                *history)
    np.testing.assert_array_equal(x_s, x0_theta)


def sampled_std(n_updates, second_order, n=50_000):
    """The std of samples of N(MU, S0^2) drawn with the exact eps_theta (`gaussian_eps`)."""
    rng = np.random.default_rng(1)
    x, history = rng.standard_normal((1, n)), (None, None)
    visited = ref_dpm.dpm_solver_timesteps(COURSE.T, n_updates)
    for t, s in zip(visited[:-1], visited[1:]):
        z = rng.standard_normal(x.shape) if s > 0 else None
        x, x0_theta = ref_dpm.dpm_solver_sde_step(
            x, gaussian_eps(x, COURSE.alpha_bar[t]), [t], [s], COURSE, z, *history)
        history = (x0_theta, [t]) if second_order else (None, None)
    assert abs(x.mean() - MU) < 0.01
    return x.std()


def test_second_order_keeps_the_spread_that_ddim_at_eta_1_loses():
    """Why the sampler exists: in 25 updates DDIM at eta 1 (its first order) narrows a Gaussian
    data set's spread by 14% (its posterior means are too smooth: the blur of few stochastic
    steps); the multistep correction brings it within 5%."""
    first, second = sampled_std(25, False), sampled_std(25, True)
    assert first < 0.9 * S0, first
    assert abs(second - S0) < 0.05 * S0, second
    assert abs(sampled_std(50, True) - S0) < 0.05 * S0


X = np.zeros((2, 3))


@pytest.mark.parametrize("call, message", [
    (lambda: ref_dpm.dpm_solver_sde_step(X, X, [5, 5], [2, 1], COURSE), "needs fresh noise z"),
    (lambda: ref_dpm.dpm_solver_sde_step(X, X, [5, 5], [5, 1], COURSE, X), "s < t"),
    (lambda: ref_dpm.dpm_solver_sde_step(X, X, [5, 5], [1, 1], COURSE, X, X), "together"),
    (lambda: ref_dpm.dpm_solver_sde_step(X, X, [5, 5], [1, 1], COURSE, np.zeros((2, 4))), "z has"),
])
def test_reference_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the torch twin and the kernel's names -------------------------------------------------------


def test_the_twins_have_the_same_names_and_parameter_order():
    for name in ("dpm_solver_sde_coefficients", "dpm_solver_sde_step"):
        assert (inspect.signature(getattr(ref_dpm, name)).parameters.keys()
                == inspect.signature(getattr(dpm_solver, name)).parameters.keys()), name
    if importlib.util.find_spec("triton") is not None:
        from minidiff.kernels import dpm_solver as kernel

        positional = [p.name for p in inspect.signature(kernel.dpm_solver_sde_step)
                      .parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional == list(inspect.signature(ref_dpm.dpm_solver_sde_step).parameters)


@given(schedules(max_T=1000).filter(lambda s: s.T >= 2), shapes, seeds,
       st.sampled_from([torch.float64, torch.float32]), st.booleans())
@example(COURSE, (2, 3, 16, 16), 0, torch.float32, True)
def test_torch_dpm_solver_sde_step_matches_reference(s, shape, seed, dtype, second_order):
    x_t, eps_theta, x0_prev, z = (normal(seed + i, shape) for i in range(4))
    t_prev, t, s_ = three_timesteps(seed, shape[0], s.T)
    history = (x0_prev, t_prev) if second_order else (None, None)
    expected, expected_x0 = ref_dpm.dpm_solver_sde_step(x_t, eps_theta, t, s_, s, z, *history)
    as_torch = [None if a is None else torch.from_numpy(a) for a in history]
    got, got_x0 = dpm_solver.dpm_solver_sde_step(
        *(torch.from_numpy(a).to(dtype) for a in (x_t, eps_theta)), torch.from_numpy(t),
        torch.from_numpy(s_), Schedule.from_reference(s), torch.from_numpy(z).to(dtype),
        None if as_torch[0] is None else as_torch[0].to(dtype), as_torch[1])
    c = ref_dpm.dpm_solver_sde_coefficients(t, s_, s, t_prev if second_order else None)[2]
    atol, rtol = TOLERANCE[dtype]
    atol *= x0_scale(s, t) * (1 + 2 * float(np.max(np.abs(c), initial=0)))
    assert got.dtype == dtype and got_x0.dtype == dtype
    assert_close(got_x0, expected_x0, dtype, atol=atol * 4, rtol=rtol, what="x0_theta")
    assert_close(got, expected, dtype, atol=atol * 4, rtol=rtol, what="x_s")


def test_torch_refuses_no_noise_where_sigma_is_not_zero():
    s, x = Schedule.from_reference(COURSE), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="needs fresh noise z"):
        dpm_solver.dpm_solver_sde_step(x, x, 3, 2, s)
    x_s, x0_theta = dpm_solver.dpm_solver_sde_step(x + 1, x, 3, 0, s)  # s = 0: sigma = 0
    assert torch.equal(x_s, x0_theta)


# --- the sampling loop ---------------------------------------------------------------------------


def test_the_loop_is_the_sde_solver_written_out():
    """sample_loop's dpm++2m-sde against the reference's steps called by hand in float64, with
    update k's noise from philox_seed(seed, k) and none on the last update (to t = 0)."""
    from minidiff.philox import randn_like_step

    pipe = tiny_pipeline()
    model, shape = pipe.model, (2, 3, 16, 16)
    got, _, _ = sample_loop(model, pipe.schedule, shape, None,
                            SamplerConfig("dpm++2m-sde", steps=6), seed=4)
    visited = ref_dpm.dpm_solver_timesteps(500, 6)
    x = randn_like_step(torch.empty(shape), 4, 0).double().numpy()
    history = (None, None)
    for k, (t, s) in enumerate(zip(visited[:-1], visited[1:]), start=1):
        eps_theta = model(torch.from_numpy(x).float(), torch.full((2,), t / 500)).detach()
        eps_theta = eps_theta.double().numpy()
        z = randn_like_step(torch.empty(shape), 4, k).double().numpy() if s > 0 else None
        x, x0_theta = ref_dpm.dpm_solver_sde_step(x, eps_theta, [t, t], [s, s], COURSE, z,
                                                  *history)
        history = (x0_theta, [t, t])
    assert_close(got, x, atol=1e-4, what="dpm++2m-sde loop vs the steps by hand")
    other_seed, _, _ = sample_loop(model, pipe.schedule, shape, None,
                                   SamplerConfig("dpm++2m-sde", steps=6), seed=5)
    assert not torch.allclose(got, other_seed)


needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="the fused kernels need Triton")


@needs_triton
@pytest.mark.parametrize("kwargs", [{"steps": 10}, {"steps": 7, "classes": "hero",
                                                    "guidance": 2.0}])
def test_fused_dpm_solver_sde_gives_the_torch_pixels(kwargs):
    """`sample --fused --sampler dpm++2m-sde`: the kernel draws the same z in-kernel, so the same
    uint8 pixels, max difference 1."""
    pipe = tiny_pipeline()
    torch_pixels = pipe.sample(3, sampler="dpm++2m-sde", seed=5, normalize="clip", **kwargs).int()
    fused_pixels = pipe.sample(3, sampler="dpm++2m-sde", seed=5, normalize="clip", fused=True,
                               **kwargs).int()
    assert (torch_pixels - fused_pixels).abs().max() <= 1
    assert 20 < torch_pixels.float().std()


# --- the command line ----------------------------------------------------------------------------


def test_sample_with_the_sde_solver(tiny_run, tmp_path, capsys):  # noqa: F811
    npy = tmp_path / "s.npy"
    assert cli("sample", "--run", str(tiny_run), "--device", "cpu", "--sampler", "dpm++2m-sde",
               "--steps", "5", "--n", "2", "--out", str(tmp_path / "g.png"), "--npy",
               str(npy)) == 0
    assert "SDE-DPM-Solver++(2M) 5 steps" in capsys.readouterr().out
    assert np.load(npy).shape == (2, 16, 16, 3)


def test_sample_refuses_eta_for_the_sde_solver(tiny_run, tmp_path, capsys):  # noqa: F811
    code = cli("sample", "--run", str(tiny_run), "--device", "cpu", "--sampler", "dpm++2m-sde",
               "--eta", "0.5", "--out", str(tmp_path / "x.png"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert re.search(r"--eta is for --sampler ddim; dpm\+\+2m-sde always adds", err), err
