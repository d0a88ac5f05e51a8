"""The sampling loop (minidiff/sampling.py): SamplerConfig's timesteps and frames, sample_loop's
determinism and batch independence, guidance (guided_eps), the course's loop written out, and the
fused kernels giving the torch images."""

import importlib.util

import pytest
import torch
from compare import assert_close
from tiny_denoiser import TinyDenoiser, tiny_pipeline

import minidiff
from minidiff.sampling import SamplerConfig, guided_eps, sample_loop

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
    assert_close(guided_eps(PIPE.model.unet, x, t, c, 4.0), eps_u + 4.0 * (eps_c - eps_u))


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
