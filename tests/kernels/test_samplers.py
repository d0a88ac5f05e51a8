"""The fused DDPM/DDIM step kernels against the NumPy reference, the torch sampler, and bad input.

Runs natively when CUDA is present, else in Triton's interpreter on the CPU (same tests). The
reference is fed the inputs as rounded to the kernel's dtype, and the noise from the reference
Philox stream (`minidiff.reference.philox`), so in-kernel noise is checked element by element.
"""

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from minidiff import philox, samplers
from minidiff.kernels import ddim_step, ddpm_step, runtime
from minidiff.noising import Schedule, make_schedule
from minidiff.reference import philox as ref_philox
from minidiff.reference import samplers as ref
from minidiff.reference.noising import make_schedule as make_ref_schedule

from compare import TOLERANCE, assert_close
from strategies import schedules, seeds

DEVICE = "cuda" if runtime.on_cuda() else "cpu"  # chosen in conftest.py
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# per-sample shapes: a scalar, one element, a prime, a sprite, more than one 2048-element block
SAMPLE_SHAPES = [(), (1,), (7,), (3, 5, 5), (3, 16, 16), (3, 29, 29), (0,)]
cases = st.fixed_dictionaries(
    {
        "batch": st.integers(0, 4),
        "sample_shape": st.sampled_from(SAMPLE_SHAPES),
        "dtype": st.sampled_from(DTYPES),
        "seed": seeds,
        "k": st.integers(0, 1000),
    }
)


def inputs(case, n=3):
    """n standard-normal tensors of the case's shape and dtype on DEVICE."""
    shape = (case["batch"], *case["sample_shape"])
    g = torch.Generator().manual_seed(case["seed"])
    return [torch.randn(shape, generator=g).to(DEVICE, case["dtype"]) for _ in range(n)]


def edge_t(schedule, batch, seed, low=1):
    """One timestep per sample, mixed in a batch: each is the first (t = 1), the last, or any."""
    rng = np.random.default_rng(seed)
    edge = rng.choice([low, schedule.T], size=batch)
    anywhere = rng.integers(low, schedule.T + 1, size=batch)
    return torch.from_numpy(np.where(rng.random(batch) < 0.4, edge, anywhere))


def as_ref(x: torch.Tensor) -> np.ndarray:
    return x.cpu().double().numpy()


def tolerance(dtype, *coefficients):
    """The dtype's (atol, rtol), atol scaled by the largest coefficient errors pass through."""
    atol, rtol = TOLERANCE[dtype]
    scale = max([1.0] + [float(np.max(c, initial=0.0)) for c in coefficients])
    return {"atol": atol * scale, "rtol": rtol}


def case(batch, sample_shape, dtype=torch.float32, seed=0, k=1):
    return {
        "batch": batch,
        "sample_shape": sample_shape,
        "dtype": dtype,
        "seed": seed,
        "k": k,
    }


COURSE = make_ref_schedule()  # linear, T = 500


@given(schedules(), cases, st.sampled_from(ref.VARIANCES), st.booleans())
@example(COURSE, case(3, (3, 29, 29), seed=5, k=500), "beta", True)  # several blocks, t = 1
@example(COURSE, case(0, (3, 16, 16)), "beta", True)  # empty batch
@example(make_ref_schedule("cosine"), case(2, (7,), torch.bfloat16), "beta_tilde", False)
def test_ddpm_step_matches_reference(ref_schedule, case, variance, noise_in_kernel):
    x_t, eps, z = inputs(case)
    t = edge_t(ref_schedule, case["batch"], case["seed"])
    schedule = Schedule.from_reference(ref_schedule).to(DEVICE)
    if variance == "none":
        got = ddpm_step(x_t, eps, t, schedule, variance=variance)
        z_ref = np.zeros(x_t.shape)
    elif noise_in_kernel:
        got = ddpm_step(x_t, eps, t, schedule, variance=variance, seed=case["seed"], k=case["k"])
        z_ref = ref_philox.randn_like_step(as_ref(x_t), case["seed"], case["k"])
    else:
        got = ddpm_step(x_t, eps, t, schedule, z=z, variance=variance)
        z_ref = as_ref(z)
    expected = ref.ddpm_step(as_ref(x_t), as_ref(eps), t.numpy(), ref_schedule, z_ref, variance)
    assert got.dtype == case["dtype"] and got.shape == x_t.shape
    assume(np.all(np.abs(expected) < torch.finfo(case["dtype"]).max))  # else inf: overflow
    s1, _, _ = ref.ddpm_coefficients(t.numpy(), ref_schedule, variance)
    assert_close(got, expected, case["dtype"], what="x_{t-1}", **tolerance(case["dtype"], s1))


@given(schedules(), cases, st.floats(0.0, 1.0), st.booleans(), st.booleans())
@example(COURSE, case(3, (3, 29, 29), seed=9, k=3), 1.0, True, True)
@example(COURSE, case(2, (3, 16, 16), torch.float16), 0.0, False, False)  # the course's DDIM
def test_ddim_step_matches_reference(ref_schedule, case, eta, clip_x0, noise_in_kernel):
    x_t, eps, z = inputs(case)
    t = edge_t(ref_schedule, case["batch"], case["seed"])
    s = torch.from_numpy(np.random.default_rng(case["seed"] + 1).integers(0, t.numpy()))
    schedule = Schedule.from_reference(ref_schedule).to(DEVICE)
    if eta == 0:
        got = ddim_step(x_t, eps, t, s, schedule, clip_x0=clip_x0)
        z_ref = None
    elif noise_in_kernel:
        seed, k = case["seed"], case["k"]
        got = ddim_step(x_t, eps, t, s, schedule, eta=eta, clip_x0=clip_x0, seed=seed, k=k)
        z_ref = ref_philox.randn_like_step(as_ref(x_t), seed, k)
    else:
        got = ddim_step(x_t, eps, t, s, schedule, eta=eta, clip_x0=clip_x0, z=z)
        z_ref = as_ref(z)
    args = (as_ref(x_t), as_ref(eps), t.numpy(), s.numpy(), ref_schedule)
    expected = ref.ddim_step(*args, eta=eta, z=z_ref, clip_x0=clip_x0)
    assert got.dtype == case["dtype"] and got.shape == x_t.shape
    assume(np.all(np.abs(expected) < torch.finfo(case["dtype"]).max))  # else inf: overflow
    scale = np.sqrt(ref_schedule.alpha_bar[s.numpy()] / ref_schedule.alpha_bar[t.numpy()])
    assert_close(got, expected, case["dtype"], what="x_s", **tolerance(case["dtype"], scale))


@settings(max_examples=5)
@given(seeds, st.integers(1, 500), st.integers(1, 4))
def test_fused_ddpm_equals_the_torch_sampler_for_the_same_seed(seed, k, batch):
    """What `sample --fused` relies on: the same x_{t-1} as minidiff.samplers with Philox noise."""
    x_t, eps = torch.randn(2, batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    x_t, eps = x_t.to(DEVICE), eps.to(DEVICE)
    schedule, t = make_schedule(device=DEVICE), torch.full((batch,), 501 - k, device=DEVICE)
    z = philox.randn_like_step(x_t, seed, k)
    expected = samplers.ddpm_step(x_t, eps, t, schedule, z)
    assert_close(ddpm_step(x_t, eps, t, schedule, seed=seed, k=k), expected, atol=1e-6)


def test_in_place_and_non_contiguous_inputs():
    schedule = make_schedule("cosine", device=DEVICE)
    x_t, eps = torch.randn(2, 4, 3, 8, 8, device=DEVICE)
    t = torch.tensor([1, 7, 300, 500])
    expected = ddpm_step(x_t, eps, t, schedule, seed=1, k=2)
    # a transposed view: read through a copy, same numbers
    x_view = x_t.transpose(2, 3).contiguous().transpose(2, 3)
    assert not x_view.is_contiguous()
    assert torch.equal(ddpm_step(x_view, eps, t, schedule, seed=1, k=2), expected)
    got = ddpm_step(x_t, eps, t, schedule, seed=1, k=2, out=x_t)
    assert got is x_t and torch.equal(x_t, expected)
    s = torch.tensor([0, 3, 100, 499])
    expected = ddim_step(x_t, eps, t, s, schedule, eta=0.5, seed=3, k=4)
    assert torch.equal(ddim_step(x_t, eps, t, s, schedule, eta=0.5, seed=3, k=4, out=x_t), x_t)
    assert torch.equal(x_t, expected)
    with pytest.raises(ValueError, match="contiguous"):
        ddpm_step(x_view, eps, t, schedule, seed=1, k=2, out=x_view)


def test_float16_in_float32_out():
    schedule = make_schedule(device=DEVICE)
    x_t, eps = torch.randn(2, 3, 3, 4, 4, device=DEVICE)
    t = torch.tensor([2, 250, 500])
    out = torch.empty_like(x_t)
    got = ddpm_step(x_t.half(), eps.half(), t, schedule, seed=0, k=1, out=out)
    expected = ddpm_step(x_t.half().float(), eps.half().float(), t, schedule, seed=0, k=1)
    assert got.dtype == torch.float32 and torch.equal(got, expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"variance": "beta_hat", "seed": 0, "k": 1}, "beta_hat"),
        ({"seed": 0}, "k="),
        ({}, "needs fresh noise z where sigma > 0"),
        ({"seed": 0, "k": 1, "z": "like"}, "either seed"),
        ({"seed": 2**32, "k": 1}, "seed must be"),
        ({"t": 0, "seed": 0, "k": 1}, "outside the valid range"),
        ({"z": "wrong shape"}, "shape"),
    ],
)
def test_ddpm_step_rejects_bad_arguments(kwargs, message):
    x_t = torch.zeros(2, 3, 4, 4, device=DEVICE)
    kwargs = dict(kwargs)
    t = kwargs.pop("t", 5)
    if kwargs.get("z") == "like":
        kwargs["z"] = torch.zeros_like(x_t)
    elif kwargs.get("z") == "wrong shape":
        kwargs["z"] = torch.zeros(2, 3, 4, 5, device=DEVICE)
    with pytest.raises(ValueError, match=message):
        ddpm_step(x_t, x_t, t, make_schedule(device=DEVICE), **kwargs)


def test_ddim_step_rejects_bad_arguments():
    x_t, schedule = torch.zeros(2, 3, device=DEVICE), make_schedule(device=DEVICE)
    with pytest.raises(ValueError, match="earlier than t"):
        ddim_step(x_t, x_t, 10, 10, schedule)
    with pytest.raises(ValueError, match="needs fresh noise z where sigma > 0"):
        ddim_step(x_t, x_t, 10, 5, schedule, eta=0.5)
    with pytest.raises(ValueError, match="eta"):
        ddim_step(x_t, x_t, 10, 5, schedule, eta=1.5)
    with pytest.raises(ValueError, match="dtype"):
        ddim_step(x_t.double(), x_t.double(), 10, 5, schedule)


def test_no_noise_given_means_none_where_sigma_is_zero():
    """The z=None contract of every layer (`check_z`): neither z= nor seed= is allowed where
    sigma = 0 for every sample, and gives the reference's step without noise."""
    schedule, ref_schedule = make_schedule(device=DEVICE), make_ref_schedule()
    x_t, eps = torch.randn(2, 2, 3, 4, 4, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    t, s = torch.tensor([1, 1]), torch.tensor([0, 0])
    expected = ref.ddpm_step(as_ref(x_t), as_ref(eps), t.numpy(), ref_schedule)
    assert_close(ddpm_step(x_t, eps, t, schedule), expected, atol=1e-5)
    expected = ref.ddpm_step(as_ref(x_t), as_ref(eps), [7, 9], ref_schedule, variance="none")
    got = ddpm_step(x_t, eps, torch.tensor([7, 9]), schedule, variance="none", seed=1, k=1)
    assert_close(got, expected, atol=1e-5)  # variance "none" adds nothing, whatever is given
    expected = ref.ddim_step(as_ref(x_t), as_ref(eps), [7, 9], s.numpy(), ref_schedule, eta=1.0)
    got = ddim_step(x_t, eps, torch.tensor([7, 9]), s, schedule, eta=1.0)
    assert_close(got, expected, atol=1e-5 / np.sqrt(ref_schedule.alpha_bar[7]))
