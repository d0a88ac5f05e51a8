"""What each training step draws (`minidiff.training.batches`): a pure function of (seed, step)."""

import torch

from minidiff.training.batches import Batches


def test_ranks_split_the_global_batch_of_one_process():
    images = torch.randn(40, 3, 4, 4)
    contexts = torch.eye(5)[torch.arange(40) % 5]
    kwargs = {"T": 50, "batch_size": 8, "seed": 3, "hflip": True}
    whole = Batches(images, contexts, **kwargs)(7)
    halves = [Batches(images, contexts, rank=r, world_size=2, **kwargs)(7) for r in (0, 1)]
    for field in ("x0", "t", "eps", "c"):
        joined = torch.cat([getattr(h, field) for h in halves])
        assert torch.equal(joined, getattr(whole, field)), field


def test_every_image_is_seen_once_per_epoch():
    images = torch.arange(12.0).reshape(12, 1, 1, 1).expand(12, 3, 4, 4)
    batches = Batches(images, torch.zeros(12, 0), T=10, batch_size=4, seed=0)
    seen = torch.cat([batches(step).x0[:, 0, 0, 0] for step in range(3)])
    assert sorted(seen.tolist()) == list(range(12))
    assert batches(0).c is None  # unlabelled data: no context


def test_lognormal_t_changes_t_and_nothing_else():
    """`t_of_z` draws its z after every other draw: the images, noise, contexts and flips of a
    step are those of U{1..T}, so two recipes that differ in t alone see the same batches."""
    from minidiff.noising import lognormal_t, make_schedule

    images, contexts = torch.randn(40, 3, 4, 4), torch.eye(5)[torch.arange(40) % 5]
    kwargs = {"T": 500, "batch_size": 32, "seed": 3, "hflip": True}
    t_of_z = lambda z: lognormal_t(z, make_schedule())  # noqa: E731
    uniform, lognormal = Batches(images, contexts, **kwargs)(2), Batches(
        images, contexts, t_of_z=t_of_z, **kwargs)(2)
    for field in ("x0", "eps", "c"):
        assert torch.equal(getattr(uniform, field), getattr(lognormal, field)), field
    assert not torch.equal(uniform.t, lognormal.t)
    assert lognormal.t.dtype == torch.int64 and 1 <= lognormal.t.min() <= lognormal.t.max() <= 500
