"""The reverse process: DDPM and DDIM steps (the reference's invariants, torch == reference, bad
input), and the sampling loop (SamplerConfig's timesteps and frames, sample_loop's determinism
and batch independence, guidance, the course's loop written out, and the fused kernels giving
the torch images)."""

import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

import minidiff
from minidiff.reference import (
    ddim_step,
    ddim_timesteps,
    ddpm_step,
    make_schedule,
    predict_x0,
    q_sample,
)
from minidiff.samplers import SamplerConfig, guided_eps, sample_loop

from compare import TOLERANCE, assert_close
from strategies import normal, random_t, schedules, seeds, shapes
from tiny_denoiser import TinyDenoiser, tiny_pipeline


def consistent(s, t):
    """Timesteps where alpha_bar_t = alpha_t * alpha_bar_{t-1}: every t of a cosine schedule,
    every t >= 2 of the course's linear one (whose alpha_bar_1 has an extra factor)."""
    return np.isclose(s.alpha_bar[t], s.alpha[t] * s.alpha_bar_prev[t], rtol=1e-12)


def column(a):
    return a.reshape(-1, 1, 1, 1)


@given(schedules(), shapes, seeds)
def test_ddpm_step_with_true_noise_is_the_posterior_mean(s, shape, seed):
    x0, eps = normal(seed, shape), normal(seed + 1, shape)
    t = random_t(seed, shape[0], s.T)
    assume(consistent(s, t).all())
    x_t = q_sample(x0, t, eps, s)
    a, ab, ab_prev, b = (column(v[t]) for v in (s.alpha, s.alpha_bar, s.alpha_bar_prev, s.beta))
    # DDPM eq. (7): mean of q(x_{t-1} | x_t, x0)
    mu_tilde = np.sqrt(ab_prev) * b / (1 - ab) * x0 + np.sqrt(a) * (1 - ab_prev) / (1 - ab) * x_t
    np.testing.assert_allclose(ddpm_step(x_t, eps, t, s, np.zeros(shape)), mu_tilde, atol=1e-9)


@given(shapes, seeds)
def test_ddpm_last_step_recovers_x0(shape, seed):
    s = make_schedule("cosine")
    x0, eps, z = normal(seed, shape), normal(seed + 1, shape), normal(seed + 2, shape)
    t = np.ones(shape[0], dtype=np.int64)
    # z is ignored at t = 1 (no fresh noise on the last step)
    np.testing.assert_allclose(ddpm_step(q_sample(x0, t, eps, s), eps, t, s, z), x0, atol=1e-9)


def test_course_schedule_last_step_misses_x0_by_its_extra_factor():
    """With the course's alpha_bar_1 the last DDPM step does not land exactly on x0; this is the
    size of the miss, which minidiff keeps for fidelity and states here."""
    s = make_schedule()
    x0, eps = np.ones((1, 1)), np.ones((1, 1))
    t = np.array([1])
    got = ddpm_step(q_sample(x0, t, eps, s), eps, t, s, np.zeros((1, 1)))
    a, ab, b = s.alpha[1], s.alpha_bar[1], s.beta[1]
    expected = (np.sqrt(ab) + np.sqrt(1 - ab) - b / np.sqrt(1 - ab)) / np.sqrt(a)
    assert got[0, 0] == pytest.approx(expected, rel=1e-12)
    assert abs(got[0, 0] - 1) > 1e-3


@given(schedules(), shapes, seeds, st.booleans())
def test_ddim_eta0_is_deterministic_and_lands_on_q_sample(s, shape, seed, use_z):
    x0, eps = normal(seed, shape), normal(seed + 1, shape)
    t = random_t(seed, shape[0], s.T)
    s_prev = np.random.default_rng(seed).integers(0, t)  # any earlier step, 0 included
    x_t = q_sample(x0, t, eps, s)
    z = normal(seed + 2, shape) if use_z else None
    x_s = ddim_step(x_t, eps, t, s_prev, s, eta=0.0, z=z)
    np.testing.assert_array_equal(x_s, ddim_step(x_t, eps, t, s_prev, s, eta=0.0))
    # recovering x0 divides by sqrt(alpha_bar_t): float64 rounding grows by that factor
    atol = 1e-13 / np.sqrt(s.alpha_bar[t].min())
    np.testing.assert_allclose(x_s, q_sample(x0, s_prev, eps, s), rtol=1e-9, atol=atol)


@given(schedules(), shapes, seeds)
def test_ddim_eta1_between_consecutive_steps_has_posterior_variance(s, shape, seed):
    x_t, eps, z = normal(seed, shape), normal(seed + 1, shape), normal(seed + 2, shape)
    t = random_t(seed, shape[0], s.T)
    assume(consistent(s, t).all())
    with_z = ddim_step(x_t, eps, t, t - 1, s, eta=1.0, z=z)
    added = with_z - ddim_step(x_t, eps, t, t - 1, s, 1.0, 0 * z)
    np.testing.assert_allclose(added, np.sqrt(column(s.beta_tilde[t])) * z, atol=1e-9)


@given(st.integers(1, 1000), st.data())
@example(500, None)
def test_ddim_timesteps(T, data):
    n = 25 if data is None else data.draw(st.integers(1, T))
    for spacing in ("course", "uniform"):
        ts = ddim_timesteps(T, n, spacing)
        assert ts[0] == T and ts[-1] == 0 and np.all(np.diff(ts) < 0)
    assert list(ddim_timesteps(T, n, "course")) == [*range(T, 0, -(T // n)), 0]
    uniform = ddim_timesteps(T, n, "uniform")
    assert len(uniform) == n + 1 and (n == 1 or uniform[-2] == 1)


# --- torch == reference --------------------------------------------------------------------------

variances = st.sampled_from(["beta", "beta_tilde", "none"])


@given(schedules(max_T=600), shapes, seeds, st.sampled_from(list(TOLERANCE)), variances)
@example(make_schedule(), (1, 3, 16, 16), 0, torch.float32, "beta")
def test_torch_ddpm_step_matches_reference(s, shape, seed, dtype, variance):
    x_t, eps_theta, z = (torch.from_numpy(normal(seed + i, shape)).to(dtype) for i in range(3))
    t = random_t(seed, shape[0], s.T)
    schedule = minidiff.Schedule.from_reference(s)
    actual = minidiff.ddpm_step(x_t, eps_theta, torch.from_numpy(t), schedule, z, variance)
    expected = ddpm_step(*(v.double().numpy() for v in (x_t, eps_theta)), t, s, z.double().numpy(),
                         variance)
    assert_close(actual, expected, torch.promote_types(dtype, torch.float32), what="ddpm_step")


@given(schedules(max_T=600), shapes, seeds, st.sampled_from(list(TOLERANCE)),
       st.sampled_from([0.0, 0.5, 1.0]), st.booleans())
def test_torch_ddim_step_matches_reference(s, shape, seed, dtype, eta, clip_x0):
    x_t, eps_theta, z = (torch.from_numpy(normal(seed + i, shape)).to(dtype) for i in range(3))
    t = random_t(seed, shape[0], s.T)
    s_prev = np.random.default_rng(seed).integers(0, t)
    actual = minidiff.ddim_step(x_t, eps_theta, torch.from_numpy(t), torch.from_numpy(s_prev),
                                minidiff.Schedule.from_reference(s), eta, z, clip_x0)
    expected = ddim_step(*(v.double().numpy() for v in (x_t, eps_theta)), t, s_prev, s, eta,
                         z.double().numpy(), clip_x0)
    # x0_theta divides by sqrt(alpha_bar_t), which amplifies float32 rounding late in a schedule
    scale = 1 / np.sqrt(s.alpha_bar[t].min())
    compute = torch.promote_types(dtype, torch.float32)
    atol, rtol = TOLERANCE[compute]
    assert_close(actual, expected, compute, atol=atol * scale, rtol=rtol, what="ddim_step")


@given(schedules(max_T=600), shapes, seeds)
def test_predict_x0_inverts_q_sample(s, shape, seed):
    """DDIM eq. (12): with the true noise, the predicted x0 is x0; torch == reference."""
    x0, eps = normal(seed, shape), normal(seed + 1, shape)
    t = random_t(seed, shape[0], s.T)
    alpha_bar_t = column(s.alpha_bar[t])
    x0_theta = predict_x0(q_sample(x0, t, eps, s), eps, alpha_bar_t)
    np.testing.assert_allclose(x0_theta, x0, atol=1e-12 / np.sqrt(alpha_bar_t.min()))
    x_t = torch.from_numpy(q_sample(x0, t, eps, s)).float()
    actual = minidiff.noising.predict_x0(x_t, torch.from_numpy(eps).float(),
                                          torch.from_numpy(alpha_bar_t))
    expected = predict_x0(x_t.double().numpy(), np.float32(eps).astype(np.float64), alpha_bar_t)
    scale = 1 / np.sqrt(alpha_bar_t.min())
    assert_close(actual, expected, atol=1e-5 * scale, what="predict_x0")


def test_z_none_means_no_noise_only_where_sigma_is_zero():
    """One contract in every layer: z=None is allowed exactly where sigma = 0 for every sample
    (DDPM at t = 1 or variance "none", DDIM at eta = 0 or s = 0), else ValueError."""
    x, eps = normal(0, (2, 3)), normal(1, (2, 3))
    zeros = np.zeros((2, 3))
    np.testing.assert_array_equal(ddpm_step(x, eps, [1, 1], S), ddpm_step(x, eps, [1, 1], S, zeros))
    np.testing.assert_array_equal(ddpm_step(x, eps, [5, 9], S, None, "none"),
                                  ddpm_step(x, eps, [5, 9], S, zeros, "none"))
    np.testing.assert_array_equal(ddim_step(x, eps, [5, 9], [0, 0], S, eta=1.0),
                                  ddim_step(x, eps, [5, 9], [0, 0], S, 1.0, zeros))
    schedule = minidiff.make_schedule()
    xt, epst = torch.from_numpy(x), torch.from_numpy(eps)
    assert_close(minidiff.ddim_step(xt, epst, torch.tensor([5, 9]), 0, schedule, eta=1.0),
                 ddim_step(x, eps, [5, 9], [0, 0], S, eta=1.0), torch.float64)
    for call in (lambda: ddim_step(x, eps, [5, 9], [0, 1], S, eta=1.0),
                 lambda: minidiff.ddim_step(xt, epst, 9, torch.tensor([0, 1]), schedule, eta=1.0),
                 lambda: minidiff.ddpm_step(xt, epst, torch.tensor([1, 2]), schedule)):
        with pytest.raises(ValueError, match="needs fresh noise z where sigma > 0"):
            call()


# --- bad input -----------------------------------------------------------------------------------

S = make_schedule()
X = np.zeros((2, 3))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ddpm_step(X, X, [0, 1], S, X), r"t=0 is outside the valid range \[1, 500\]"),
        (lambda: ddpm_step(X, X, [1, 1], S, X, "sigma"), "variance='sigma'"),
        (lambda: ddpm_step(X, np.zeros((2, 4)), [1, 1], S, X), r"eps_theta has shape \(2, 4\)"),
        (lambda: ddpm_step(X, X, [1, 2], S), "ddpm_step needs fresh noise z"),
        (lambda: ddim_step(X, X, [5, 5], [5, 1], S), "s=5 must be earlier than t"),
        (lambda: ddim_step(X, X, [5, 5], [1, 1], S, eta=1.5), r"eta=1.5 is outside .*\[0, 1\]"),
        (lambda: ddim_step(X, X, [5, 5], [1, 1], S, eta=0.5), "needs fresh noise z"),
        (lambda: ddim_timesteps(500, 0), r"n=0 steps is outside the valid range \[1, 500\]"),
        (lambda: ddim_timesteps(500, 25, "log"), "spacing='log'"),
    ],
)
def test_reference_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_torch_rejects_bad_input():
    s = minidiff.make_schedule()
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="t=501"):
        minidiff.ddpm_step(x, x, torch.tensor([1, 501]), s, x)
    with pytest.raises(ValueError, match="s=3 must be earlier"):
        minidiff.ddim_step(x, x, 3, 3, s)
    with pytest.raises(ValueError, match=r"z has shape \(2, 4\)"):
        minidiff.ddpm_step(x, x, 5, s, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="needs fresh noise"):
        minidiff.ddpm_step(x, x, 5, s, None)


PIPE = tiny_pipeline()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("sampler, steps", [("ddim", 5), ("ddpm", 25)])
def test_sample_i_does_not_depend_on_the_batch_size(sampler, steps):
    config = SamplerConfig(sampler=sampler, steps=steps, eta=1.0)
    schedule = minidiff.make_schedule(T=25) if sampler == "ddpm" else PIPE.schedule
    model = TinyDenoiser(schedule)
    small, _, _ = sample_loop(model, schedule, (2, 3, 16, 16), None, config, seed=3)
    large, _, _ = sample_loop(model, schedule, (5, 3, 16, 16), None, config, seed=3)
    assert_close(large[:2], small, atol=1e-5, what="first two samples of a batch of 5 vs 2")


def test_guidance_runs_both_halves_in_one_forward_pass():
    PIPE.model.calls.clear()
    PIPE.sample(3, steps=4, classes="hero", guidance=2.0)
    assert PIPE.model.calls == [6] * 4  # one call per step, over [conditional; null] contexts


def test_guidance_formula():
    """eps = eps_u + s (eps_c - eps_u): s = 1 is the conditional model, s = 0 the null one."""
    def run(**kw):
        return PIPE.sample(2, steps=3, seed=1, **kw)
    assert_close(run(classes="food", guidance=1.0), run(classes="food"), atol=1e-5)
    assert_close(run(classes="food", guidance=0.0), run(), atol=1e-5)
    x, t, c = torch.randn(2, 3, 16, 16), torch.full((2,), 0.5), PIPE.contexts(2, "food")
    eps_c, eps_u = PIPE.model.unet(x, t, c), PIPE.model.unet(x, t, None)
    assert_close(guided_eps(PIPE.model.unet, x, t, c, 4.0, alpha_bar_t=None),  # an eps network
                 eps_u + 4.0 * (eps_c - eps_u))


def test_intermediates_follow_the_course_rule():
    """`i % 20 == 0 or i == T or i < 8`: 32 frames for DDPM-500; DDIM keeps every step."""
    ddpm, ddim = SamplerConfig("ddpm"), SamplerConfig("ddim", steps=25)
    kept = [t for k, t in enumerate(range(500, 0, -1), 1) if ddpm.keeps_frame(t, k, 500, 500)]
    assert len(kept) == 32 and kept[:2] == [500, 480] and kept[-8:] == [20, 7, 6, 5, 4, 3, 2, 1]
    assert all(ddim.keeps_frame(t, k, 500, 25) for k, t in enumerate(range(500, 0, -20), 1))
    assert sum(SamplerConfig("ddpm", save_every=100).keeps_frame(t, 0, 500, 500)
               for t in range(500, 0, -1)) == 5 + 7
    images, frames = PIPE.sample(2, steps=10, return_intermediates=True, normalize="per-image")
    assert frames.shape == (10, 2, 16, 16, 3) and frames.dtype == torch.uint8
    assert torch.equal(frames[-1], images)
    _, frames, at = sample_loop(PIPE.model, PIPE.schedule, (1, 3, 16, 16), None,
                                SamplerConfig(steps=10, save_every=4), keep_frames=True)
    assert at == [300, 100, 0] and len(frames) == 3  # steps 4, 8 and the last


@pytest.mark.parametrize("sampler", ["ddpm", "ddpm-no-noise"])
def test_ddpm_matches_the_course_loop_written_out(sampler):
    """The course's loop, by hand: z for i > 1 (z = 0 always in its "incorrect" demonstration),
    then `denoise_add_noise`, fed minidiff's noise stream."""
    from minidiff.philox import randn_like_step

    schedule = minidiff.make_schedule(T=30)
    model = TinyDenoiser(schedule)
    b, a, ab = (v.float() for v in (schedule.beta, schedule.alpha, schedule.alpha_bar))
    samples = randn_like_step(torch.empty(2, 3, 16, 16), 5, 0)
    for k, i in enumerate(range(30, 0, -1), start=1):
        z = randn_like_step(samples, 5, k) if i > 1 and sampler == "ddpm" else 0
        eps = model(samples, torch.full((2,), i / 30))
        samples = (samples - eps * (1 - a[i]) / (1 - ab[i]).sqrt()) / a[i].sqrt() + b[i].sqrt() * z
    got, _, _ = sample_loop(model, schedule, (2, 3, 16, 16), None, SamplerConfig(sampler), seed=5)
    assert_close(got, samples, atol=1e-4, what=f"{sampler} loop vs the course's loop")


# --- fused == torch ------------------------------------------------------------------------------

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="the fused kernels need Triton")


@needs_triton
@pytest.mark.parametrize("kwargs", [
    {"sampler": "ddim", "steps": 5, "eta": 0.0},
    {"sampler": "ddim", "steps": 4, "eta": 0.7, "classes": "hero", "guidance": 2.0},
    {"sampler": "ddpm-no-noise"},
])
def test_fused_sampler_gives_the_torch_images(kwargs):
    if kwargs["sampler"] == "ddpm-no-noise":
        pipe = tiny_pipeline()
        pipe.schedule = minidiff.make_schedule(T=12)
        pipe.model.schedule = pipe.schedule
    else:
        pipe = PIPE
    torch_images = pipe.sample(3, seed=11, **kwargs)
    assert_close(pipe.sample(3, seed=11, fused=True, **kwargs), torch_images, atol=1e-4)


@needs_triton
def test_fused_ddpm_500_steps_pixels_differ_by_at_most_one():
    """The whole of issue 5's promise at full length: 500 DDPM steps with fresh noise drawn
    in-kernel, then the uint8 pixels of the torch and the fused sampler. (One sprite: the Triton
    interpreter's cost is per program launched.)"""
    torch_pixels = PIPE.sample(1, sampler="ddpm", seed=2, normalize="clip").int()
    fused_pixels = PIPE.sample(1, sampler="ddpm", seed=2, normalize="clip", fused=True).int()
    assert (torch_pixels - fused_pixels).abs().max() <= 1
    assert 20 < torch_pixels.float().std()  # not saturated: the comparison means something
