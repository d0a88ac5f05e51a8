"""minidiff's Pipeline (minidiff/pipeline.py): sample's determinism for a seed, contexts from
class names, indices and mixes, and its one-line errors for bad input."""

import pytest
import torch

from compare import assert_close
from tiny_denoiser import tiny_pipeline

PIPE = tiny_pipeline()

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sampling_is_deterministic_for_a_seed():
    a = PIPE.sample(3, steps=5, eta=0.5, seed=7)
    assert torch.equal(a, PIPE.sample(3, steps=5, eta=0.5, seed=7))
    assert not torch.allclose(a, PIPE.sample(3, steps=5, eta=0.5, seed=8))
    assert a.shape == (3, 3, 16, 16) and a.dtype == torch.float32


def test_class_and_mix_contexts():
    c = PIPE.contexts(5, classes=["hero", 2])  # names and indices, cycled over the batch
    assert c.tolist() == [[1, 0, 0, 0, 0], [0, 0, 1, 0, 0]] * 2 + [[1, 0, 0, 0, 0]]
    assert PIPE.contexts(2, classes="Side-Facing").tolist() == [[0, 0, 0, 0, 1]] * 2
    mixes = [{"hero": 1, "food": 0.6}, [1, 0, 0, 0, 1]]  # the course's hand-written vectors
    assert_close(PIPE.contexts(3, mix=mixes),
                 [[1, 0, 0.6, 0, 0], [1, 0, 0, 0, 1], [1, 0, 0.6, 0, 0]])
    assert PIPE.contexts(4) is None  # the null context
    a = PIPE.sample(2, steps=3, mix=[1.0, 0, 0.6, 0, 0])
    assert not torch.allclose(a, PIPE.sample(2, steps=3, classes="hero"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"classes": "dragon"}, "unknown class 'dragon'; this run's classes are hero, non-hero"),
        ({"classes": 5}, r"class index 5 is outside \[0, 4\]"),
        ({"mix": [1, 0]}, "a mix vector needs 5 numbers"),
        ({"mix": {"hero": float("nan")}}, r"mix weight nan is outside the valid range \[-2, 2\]"),
        ({"classes": "hero", "mix": [1, 0, 0, 0, 0]}, "not both"),
        ({"guidance": 2.0}, "guidance needs a context"),
        # SamplerConfig's own rules (minidiff/sampling.py), the ones the sample flags parse with
        ({"steps": 0}, "steps=0 is too small: it must be >= 1"),
        ({"steps": 501}, "steps=501 is too large: it must be <= 500, the run's T"),
        ({"eta": 2.0}, "eta=2 is too large: it must be <= 1"),
        ({"guidance": 1e30}, r"guidance=1e\+30 is too large: it must be <= 20 \(past about 10"),
        ({"sampler": "euler"}, "sampler='euler' is not one of ddim, ddpm, ddpm-no-noise"),
        ({"n": 0}, "n=0 must be a positive number"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*32\)"),
    ],
)
def test_sample_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PIPE.sample(**{"n": 2, "steps": 2, **kwargs})


def test_unconditional_run_refuses_classes():
    with pytest.raises(ValueError, match="trained without classes"):
        tiny_pipeline(n_cfeat=0).sample(2, steps=2, classes="hero")


def test_sample_returns_clipped_floats_unless_asked_otherwise():
    """The default a learner expects: the training data's range, [-1, 1] (issue 16, item 4)."""
    raw = PIPE.sample(3, steps=1, eta=0.0, clip=False)
    images = PIPE.sample(3, steps=1, eta=0.0)
    assert torch.equal(images, raw.clamp(-1, 1)) and images.dtype == torch.float32
    pixels = PIPE.sample(3, steps=1, eta=0.0, normalize="clip")
    assert pixels.shape == (3, 16, 16, 3) and pixels.dtype == torch.uint8


def test_batches_bound_the_network_input_and_keep_each_image():
    """Memory is bounded whatever n (issue 13, item 7), and image i depends on (seed, i,
    batch_size), not on n; n <= batch_size is one sampling loop, as before batching."""
    PIPE.model.calls.clear()
    five = PIPE.sample(5, steps=2, seed=3, batch_size=2)
    assert PIPE.model.calls == [2, 2, 2, 2, 1, 1]
    assert torch.equal(five[:4], PIPE.sample(4, steps=2, seed=3, batch_size=2))
    assert torch.equal(PIPE.sample(3, steps=2, seed=3, batch_size=3),
                       PIPE.sample(3, steps=2, seed=3))
    assert not torch.equal(five[2], five[0])  # batch 1 draws its own noise, not batch 0's again
    with pytest.raises(ValueError, match="batch_size=0 must be a positive number"):
        PIPE.sample(2, batch_size=0)


@pytest.mark.parametrize("weight", [1e30, -3, float("inf")])
def test_mix_weights_are_bounded(weight):
    """hero=1e30 made black images with exit 0 (issue 13, item 9)."""
    with pytest.raises(ValueError, match=r"is outside the valid range \[-2, 2\]"):
        PIPE.contexts(2, mix={"hero": weight})
