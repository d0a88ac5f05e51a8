# %% [markdown]
# # Training speed: minidiff's trainer vs a plain eager course-style loop
#
# Both train the *same network* (same arch, same n_feat) on the built-in sprites with the same
# batch size, in the same process, taking turns so that a busy machine slows both alike. What is
# timed is steady-state optimizer steps (after a warm-up), in training images per second.
#
# - **course loop**: what the course's lab does: a `Dataset` whose `__getitem__` converts one
#   uint8 sprite (ToTensor, Normalize), a shuffling `DataLoader`, `Adam`, eager fp32, torch's
#   default threads, the network's default memory layout.
# - **trainer**: `minidiff.training.trainer.Trainer.train_step` with the default `TrainConfig`
#   (AdamW, warm-up, clipping, EMA, its engine settings), i.e. exactly what
#   `python -m minidiff train` runs per step, previews and checkpoints aside.
#
#     python benchmarks/train_speed.py                 # both archs, defaults
#     python benchmarks/train_speed.py --steps 5 --rounds 1 --n-feat 16   # smoke run
#     python benchmarks/train_speed.py --variant precision=fp32 --variant threads=1
#     OMP_NUM_THREADS=1 python benchmarks/train_speed.py --clock cpu   # on a busy machine
#
# `--variant key=value[,key=value...]` times the trainer once more with those TrainConfig fields
# changed, to show where the speed comes from, or what a recipe costs per step against the
# default (`--variant patch=1,n_feat=16`, `--variant arch=course,n_feat=16`).

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset
from train_quality import parse_overrides  # beside this file: --variant reads as --recipe does

from minidiff.data.sprites import make_sprites
from minidiff.noising import make_schedule, q_sample
from minidiff.training.config import TrainConfig
from minidiff.training.trainer import Trainer
from minidiff.unet import UnetConfig, build_unet


class CourseSprites(TorchDataset):
    """The lab's dataset: one uint8 sprite at a time through ToTensor + Normalize(0.5, 0.5)."""

    def __init__(self, pixels, labels):
        self.pixels, self.labels = pixels, labels

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, i):
        image = torch.from_numpy(self.pixels[i]).permute(2, 0, 1).float() / 255  # ToTensor
        return (image - 0.5) / 0.5, torch.tensor(self.labels[i]).float()


def time_course_loop(args, arch: str) -> float:
    """Images/s of the lab's training loop on minidiff's network of `arch`."""
    pixels, index = make_sprites(args.n_images, seed=0)
    labels = torch.eye(5)[torch.from_numpy(index)].numpy()
    loader = DataLoader(CourseSprites(pixels, labels), batch_size=args.batch_size, shuffle=True,
                        drop_last=True)
    torch.manual_seed(0)
    model = build_unet(UnetConfig(arch=arch, n_feat=args.n_feat)).train()
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = make_schedule("linear", 500, 1e-4, 0.02)
    batches = iter(_forever(loader))

    def step():
        x, c = next(batches)
        optim.zero_grad()
        noise = torch.randn_like(x)
        t = torch.randint(1, 501, (x.shape[0],))
        x_pert = q_sample(x, t, noise, schedule)
        mask = torch.bernoulli(torch.zeros(c.shape[0]) + 0.9)  # keep 90% of the contexts
        pred = model(x_pert, t / 500.0, c * mask.unsqueeze(-1))
        loss = torch.nn.functional.mse_loss(pred, noise)
        loss.backward()
        optim.step()

    return _time(step, args)


def _forever(loader):
    while True:
        yield from loader


def time_trainer(args, default_arch: str, **overrides) -> float:
    """Images/s of `Trainer.train_step` with the default recipe (plus `overrides`, which may
    change the arch too)."""
    with tempfile.TemporaryDirectory() as out:
        fields = dict(arch=default_arch, n_feat=args.n_feat, batch_size=args.batch_size,
                      n_images=args.n_images, out=f"{out}/run", progress=False, device="cpu")
        config = TrainConfig(**{**fields, **overrides})  # a --variant may change any of them
        trainer = Trainer(config)
        trainer.model.train()
        counter = iter(range(10**9))
        try:
            return _time(lambda: trainer.train_step(next(counter)), args)
        finally:
            trainer.close()


def _time(step, args) -> float:
    for _ in range(args.warmup):
        step()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    start = clock()
    for _ in range(args.steps):
        step()
    return args.steps * args.batch_size / (clock() - start)


def _parse_variant(text: str) -> dict[str, object]:
    """'key=value,key=value' as TrainConfig fields, read as `train_quality.py --recipe` reads
    them (each by its field's rule)."""
    return parse_overrides(text, f"--variant {text}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", action="append", choices=("minidiff", "course"))
    parser.add_argument("--n-feat", type=int, default=TrainConfig.n_feat)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--n-images", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="alternations; the median is kept")
    parser.add_argument("--variant", action="append", default=[], type=_parse_variant)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: images per CPU-second of this process, which a busy machine "
                        "disturbs less (with 1 thread it equals the wall clock of a quiet one)")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, n_feat {args.n_feat}, "
          f"batch {args.batch_size}, {args.steps} timed steps x {args.rounds} rounds")
    for arch in args.arch or ["minidiff", "course"]:
        runs = {"course loop": lambda a=arch: time_course_loop(args, a),
                "trainer (default recipe)": lambda a=arch: time_trainer(args, a)}
        for variant in args.variant:
            name = "trainer, " + ",".join(f"{k}={v}" for k, v in variant.items())
            runs[name] = lambda a=arch, v=variant: time_trainer(args, a, **v)
        speeds = {name: [] for name in runs}
        for _ in range(args.rounds):
            for name, run in runs.items():
                speeds[name].append(run())
        base = statistics.median(speeds["course loop"])
        print(f"\narch {arch}")
        for name, values in speeds.items():
            median = statistics.median(values)
            print(f"  {name:32s} {median:8.0f} images/s  x{median / base:.2f}  "
                  f"(runs: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
