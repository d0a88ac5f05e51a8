"""DPM-Solver++(2M): the reference's properties (first order is DDIM, second order converges at
second order on a problem solved in closed form, the last step lands on x0_theta), the torch twin
against the reference, the sampling loop with its multistep state, guidance in an interval, and
`--fused` against torch to the uint8 pixel."""

import importlib.util
import inspect
import re

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from minidiff import dpm_solver, noising
from minidiff.noising import Schedule
from minidiff.reference import dpm_solver as ref_dpm
from minidiff.reference import make_schedule
from minidiff.reference import noising as ref_noising
from minidiff.reference import samplers as ref
from minidiff.samplers import SamplerConfig, sample_loop
from minidiff.utils.errors import MinidiffError

from compare import TOLERANCE, assert_close
from strategies import normal, random_t, schedules, seeds, shapes
from tiny_denoiser import tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")
COURSE = make_schedule()  # linear, T = 500


def three_timesteps(seed, batch, T):
    """(t_prev, t, s) per sample with T >= t_prev > t > s >= 0; needs T >= 2."""
    rng = np.random.default_rng(seed)
    t = rng.integers(1, T, size=batch)  # leaves room for a t_prev above
    return rng.integers(t + 1, T + 1), t, rng.integers(0, t)


def x0_scale(schedule, t):
    """1 / sqrt(alpha_bar_t): how much predict_x0 magnifies rounding errors in x_t and eps_theta."""
    return float(np.max(1.0 / np.sqrt(schedule.alpha_bar[t])))


# --- the reference -------------------------------------------------------------------------------


@given(schedules(), shapes, seeds)
@example(COURSE, (2, 3, 4, 4), 0)
def test_first_order_is_ddim_with_eta_0(s, shape, seed):
    """Algorithm 2's first update (DPM-Solver++1) is DDIM's eq. (12) with eta = 0, rewritten."""
    x_t, eps_theta = normal(seed, shape), normal(seed + 1, shape)
    t = random_t(seed, shape[0], s.T)
    s_ = np.random.default_rng(seed).integers(0, t)
    x_s, x0_theta = ref_dpm.dpm_solver_step(x_t, eps_theta, t, s_, s)
    atol = 1e-11 * x0_scale(s, t)
    np.testing.assert_allclose(x_s, ref.ddim_step(x_t, eps_theta, t, s_, s), rtol=1e-10, atol=atol)
    alpha_bar_t = s.alpha_bar[t].reshape((-1,) + (1,) * (len(shape) - 1))
    np.testing.assert_array_equal(x0_theta, ref_noising.predict_x0(x_t, eps_theta, alpha_bar_t))


@given(schedules().filter(lambda s: s.T >= 2), shapes, seeds, st.booleans())
def test_the_last_step_lands_on_x0_theta(s, shape, seed, second_order):
    """s = 0 (sigma_s = 0, h infinite): x_s is exactly the data prediction, no noise left."""
    x_t, eps_theta, x0_prev = (normal(seed + i, shape) for i in range(3))
    t_prev, t, _ = three_timesteps(seed, shape[0], s.T)
    history = (x0_prev, t_prev) if second_order else (None, None)
    x_s, x0_theta = ref_dpm.dpm_solver_step(x_t, eps_theta, t, np.zeros_like(t), s, *history)
    np.testing.assert_array_equal(x_s, x0_theta)


# A Gaussian data set x0 ~ N(MU, S0^2 I): the exact eps(x_t, t) and the exact ODE solution are in
# closed form, so the solver's own error can be measured as its step count doubles.
MU, S0 = 0.3, 0.5


def gaussian_eps(x_t, alpha_bar_t):
    """E[eps | x_t] for x0 ~ N(MU, S0^2):
    sigma_t (x_t - alpha_t MU) / (alpha_t^2 S0^2 + sigma_t^2)."""
    alpha, sigma = np.sqrt(alpha_bar_t), np.sqrt(1 - alpha_bar_t)
    return sigma * (x_t - alpha * MU) / (alpha**2 * S0**2 + sigma**2)


def ode_solution(x_start, alpha_bar_start, alpha_bar_end):
    """The probability-flow ODE keeps (x_t - alpha_t MU) / std(x_t) fixed along each path."""
    def std(ab):
        return np.sqrt(ab * S0**2 + 1 - ab)
    z = (x_start - np.sqrt(alpha_bar_start) * MU) / std(alpha_bar_start)
    return np.sqrt(alpha_bar_end) * MU + std(alpha_bar_end) * z


def solver_error(schedule, n, second_order, t_start=5000, t_end=500):
    """RMS error at t_end after n updates evenly spaced in lambda from t_start."""
    lambdas = ref_dpm.log_snr(schedule.alpha_bar)
    targets = np.linspace(lambdas[t_start], lambdas[t_end], n + 1)
    visited = [int(np.abs(lambdas[1:] - v).argmin()) + 1 for v in targets]
    x_start = np.random.default_rng(0).standard_normal((1, 256))
    x, history = x_start, (None, None)
    for t, s in zip(visited[:-1], visited[1:]):
        eps_theta = gaussian_eps(x, schedule.alpha_bar[t])
        x, x0_theta = ref_dpm.dpm_solver_step(x, eps_theta, [t], [s], schedule, *history)
        history = (x0_theta, [t]) if second_order else (None, None)
    exact = ode_solution(x_start, schedule.alpha_bar[t_start], schedule.alpha_bar[visited[-1]])
    return float(np.sqrt(np.mean((x - exact) ** 2)))


def test_error_falls_at_second_order_as_the_steps_double():
    """log(error) against log(steps): slope -2 for DPM-Solver++(2M), -1 for first order (DDIM).
    A long linear schedule (T = 20000) makes the integer timesteps nearly continuous in lambda."""
    schedule, steps = make_schedule("linear", 20000), [10, 20, 40, 80]
    slopes = {}
    for second_order in (False, True):
        errors = [solver_error(schedule, n, second_order) for n in steps]
        slopes[second_order] = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert -1.15 < slopes[False] < -0.85, slopes
    assert -2.5 < slopes[True] < -1.8, slopes


def test_dpm_solver_timesteps():
    assert ref_dpm.dpm_solver_timesteps(500, 5).tolist() == [500, 400, 300, 200, 100, 0]
    trailing = ref_dpm.dpm_solver_timesteps(500, 7)
    assert trailing[0] == 500 and trailing[-1] == 0 and len(trailing) == 8
    assert (np.diff(trailing) < 0).all()
    course = ref_dpm.dpm_solver_timesteps(500, 25, "course")
    assert course.tolist() == ref.ddim_timesteps(500, 25).tolist()
    assert ref_dpm.dpm_solver_timesteps(3, 3).tolist() == [3, 2, 1, 0]


X = np.zeros((2, 3))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ref_dpm.dpm_solver_step(X, X, [5, 5], [5, 1], COURSE), "s < t"),
        (lambda: ref_dpm.dpm_solver_step(X, X, [5, 5], [1, 1], COURSE, X), "together"),
        (lambda: ref_dpm.dpm_solver_step(X, X, [5, 5], [1, 1], COURSE, X, [5, 6]), "t_prev > t"),
        (lambda: ref_dpm.dpm_solver_step(X, X, [0, 5], [0, 1], COURSE), r"t=0 is outside"),
        (lambda: ref_dpm.dpm_solver_step(X, np.zeros((2, 4)), [5, 5], [1, 1], COURSE), "eps_theta"),
        (lambda: ref_dpm.dpm_solver_timesteps(500, 0), r"n=0 steps is outside"),
        (lambda: ref_dpm.dpm_solver_timesteps(500, 5, "leading"), "spacing='leading'"),
    ],
)
def test_reference_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --- the torch twin ------------------------------------------------------------------------------


def test_the_twins_have_the_same_names_and_parameter_order():
    from minidiff.kernels import dpm_solver as kernel  # noqa: F401 (Triton may be absent)

    for ref_module, torch_module, name in ((ref_noising, noising, "predict_x0"),
                                           (ref_dpm, dpm_solver, "log_snr"),
                                           (ref_dpm, dpm_solver, "dpm_solver_coefficients"),
                                           (ref_dpm, dpm_solver, "dpm_solver_step")):
        assert (inspect.signature(getattr(ref_module, name)).parameters.keys()
                == inspect.signature(getattr(torch_module, name)).parameters.keys()), name
    positional = [p.name for p in inspect.signature(kernel.dpm_solver_step).parameters.values()
                  if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == list(inspect.signature(ref_dpm.dpm_solver_step).parameters)


@given(schedules(max_T=1000).filter(lambda s: s.T >= 2), shapes, seeds,
       st.sampled_from([torch.float64, torch.float32]), st.booleans())
@example(COURSE, (2, 3, 16, 16), 0, torch.float32, True)
def test_torch_dpm_solver_step_matches_reference(s, shape, seed, dtype, second_order):
    x_t, eps_theta, x0_prev = (normal(seed + i, shape) for i in range(3))
    t_prev, t, s_ = three_timesteps(seed, shape[0], s.T)
    history = (x0_prev, t_prev) if second_order else (None, None)
    expected, expected_x0 = ref_dpm.dpm_solver_step(x_t, eps_theta, t, s_, s, *history)
    as_torch = [None if a is None else torch.from_numpy(a) for a in history]
    got, got_x0 = dpm_solver.dpm_solver_step(
        torch.from_numpy(x_t).to(dtype), torch.from_numpy(eps_theta).to(dtype), torch.from_numpy(t),
        torch.from_numpy(s_), Schedule.from_reference(s),
        None if as_torch[0] is None else as_torch[0].to(dtype), as_torch[1])
    _, c = ref_dpm.dpm_solver_coefficients(t, s_, s, t_prev if second_order else None)[1:]
    atol, rtol = TOLERANCE[dtype]
    atol *= x0_scale(s, t) * (1 + 2 * float(np.max(np.abs(c), initial=0)))
    assert got.dtype == dtype and got_x0.dtype == dtype
    assert_close(got_x0, expected_x0, dtype, atol=atol * 4, rtol=rtol, what="x0_theta")
    assert_close(got, expected, dtype, atol=atol * 4, rtol=rtol, what="x_s")


def test_torch_rejects_bad_input():
    s, x = Schedule.from_reference(COURSE), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="s < t"):
        dpm_solver.dpm_solver_step(x, x, 3, 3, s)
    with pytest.raises(ValueError, match="together"):
        dpm_solver.dpm_solver_step(x, x, 3, 2, s, x)
    with pytest.raises(ValueError, match="t_prev > t"):
        dpm_solver.dpm_solver_step(x, x, 3, 2, s, x, 3)
    with pytest.raises(ValueError, match=r"x0_theta_prev has shape \(2, 4\)"):
        dpm_solver.dpm_solver_step(x, x, 3, 2, s, torch.zeros(2, 4), 4)


# --- the sampling loop ---------------------------------------------------------------------------


def test_the_loop_is_algorithm_2_written_out():
    """sample_loop's dpm++2m against the reference's steps called by hand in float64, the model
    evaluated at each x: the first update first order, then multistep, the last to t = 0."""
    from minidiff.philox import randn_like_step

    pipe = tiny_pipeline()
    model, schedule = pipe.model, pipe.schedule
    got, _, _ = sample_loop(model, schedule, (2, 3, 16, 16), None,
                            SamplerConfig("dpm++2m", steps=6), seed=4)
    visited = ref_dpm.dpm_solver_timesteps(500, 6)  # the default spacing, "trailing"
    x = randn_like_step(torch.empty(2, 3, 16, 16), 4, 0).double().numpy()
    history = (None, None)
    for t, s in zip(visited[:-1], visited[1:]):
        eps_theta = model(torch.from_numpy(x).float(), torch.full((2,), t / 500)).detach()
        eps_theta = eps_theta.double().numpy()
        x, x0_theta = ref_dpm.dpm_solver_step(x, eps_theta, [t, t], [s, s], COURSE, *history)
        history = (x0_theta, [t, t])
    assert_close(got, x, atol=1e-4, what="dpm++2m loop vs Algorithm 2 by hand")


def test_guidance_interval_guides_only_inside_it():
    pipe = tiny_pipeline()
    pipe.model.calls.clear()
    # trailing timesteps 500, 400, 300, 200, 100: guided (doubled batch) where 200 <= t <= 400
    pipe.sample(3, sampler="dpm++2m", steps=5, classes="hero", guidance=2.0,
                guidance_interval=(200, 400))
    assert pipe.model.calls == [3, 6, 6, 6, 3]

    def run(**kw):
        return pipe.sample(2, sampler="dpm++2m", steps=4, seed=1, classes="food", **kw)
    assert torch.equal(run(guidance=3.0, guidance_interval=(0, 500)), run(guidance=3.0))
    assert_close(run(guidance=3.0, guidance_interval=(0, 0)), run(), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"guidance_interval": (100, 200)}, "needs a guidance scale"),
        ({"guidance": 2.0, "guidance_interval": (300, 200)}, r"0 <= lo <= hi <= 500"),
        ({"spacing": "trailing", "sampler": "ddim"}, "trailing is for dpm\\+\\+2m"),
        ({"steps": 501}, "steps=501 is too large: it must be <= 500, the run's T"),
    ],
)
def test_config_rejects_bad_settings(kwargs, message):
    config = SamplerConfig(**{"sampler": "dpm++2m", **kwargs})
    with pytest.raises(MinidiffError, match=message):
        config.check(500)


# --- fused == torch ------------------------------------------------------------------------------

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="the fused kernels need Triton")


@needs_triton
@pytest.mark.parametrize("kwargs", [
    {"steps": 10},
    {"steps": 7, "classes": "hero", "guidance": 2.0, "guidance_interval": (100, 350)},
])
def test_fused_dpm_solver_gives_the_torch_pixels(kwargs):
    """What `sample --fused --sampler dpm++2m` promises: the same uint8 pixels, max difference 1."""
    pipe = tiny_pipeline()
    torch_pixels = pipe.sample(3, sampler="dpm++2m", seed=5, normalize="clip", **kwargs).int()
    fused_pixels = pipe.sample(3, sampler="dpm++2m", seed=5, normalize="clip", fused=True,
                               **kwargs).int()
    assert (torch_pixels - fused_pixels).abs().max() <= 1
    assert 20 < torch_pixels.float().std()  # not saturated: the comparison means something



# --- the command line ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from sampling_runs import write_run

    return write_run(tmp_path_factory.mktemp("runs") / "tiny")


def cli(*argv) -> int:
    from minidiff.cli import main

    try:
        return main(list(argv))
    except SystemExit as exit_:
        return exit_.code


def test_sample_dpm_solver_with_a_guidance_interval(tiny_run, tmp_path, capsys):
    npy = tmp_path / "s.npy"
    assert cli("sample", "--run", str(tiny_run), "--device", "cpu", "--sampler", "dpm++2m",
               "--steps", "5", "--class", "hero", "--n", "2", "--guidance", "2",
               "--guidance-interval", "60,410", "--out", str(tmp_path / "g.png"),
               "--npy", str(npy)) == 0
    assert "DPM-Solver++(2M) 5 steps, guidance 2 at t in [60, 410]" in capsys.readouterr().out
    assert np.load(npy).shape == (2, 16, 16, 3)


@pytest.mark.parametrize("flags, message", [
    (["--sampler", "dpm++2m", "--eta", "1"], r"--eta is for --sampler ddim; dpm\+\+2m adds no"),
    (["--guidance-interval", "5"], "'5' is not two timesteps LO,HI"),
    (["--guidance-interval", "300,200", "--guidance", "2", "--class", "hero"],
     "error: --guidance-interval 300,200 must satisfy 0 <= lo <= hi <= 500"),
    (["--guidance-interval", "60,410"], "needs a guidance scale"),
    (["--sampler", "ddim", "--spacing", "trailing"], "trailing is for dpm\\+\\+2m"),
])
def test_sample_refuses_bad_dpm_flags(tiny_run, tmp_path, capsys, flags, message):
    code = cli("sample", "--run", str(tiny_run), "--device", "cpu", "--steps", "2",
               "--out", str(tmp_path / "x.png"), *flags)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and re.search(message, err), err
