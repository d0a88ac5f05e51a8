"""Part training: images/s of `Trainer.train_step` (the default recipe, fp32 without
channels_last, and on a GPU `--compile`) against the course's eager loop, the same network."""

from __future__ import annotations

import tempfile

from gpu_parts.record import Recorder, Sizes, seconds


def run(rec: Recorder, sizes: Sizes, device: str) -> None:
    rows = {"course loop": lambda: time_course_training(sizes, device),
            "trainer, default recipe": lambda: time_trainer(sizes, device),
            "trainer, fp32, no channels_last": lambda: time_trainer(
                sizes, device, precision="fp32", channels_last=False)}
    if device == "cuda":
        rows["trainer, --compile"] = lambda: time_trainer(sizes, device, compile=True)
    for name, measure in rows.items():
        rec.attempt({"loop": name}, lambda: {"images_per_s": round(measure(), 1)},
                    45 if "compile" in name else 8)


def time_steps(step, sizes: Sizes, device: str) -> float:
    """Images per second over sizes.steps steps, after sizes.warmup untimed ones."""
    for i in range(sizes.warmup):
        step(i)
    return sizes.steps * sizes.batch_size / seconds(
        lambda: [step(sizes.warmup + i) for i in range(sizes.steps)], device)


def time_trainer(sizes: Sizes, device: str, **overrides) -> float:
    """`Trainer.train_step`, exactly what `minidiff train` runs per step (previews aside)."""
    from minidiff.training.config import TrainConfig
    from minidiff.training.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(n_feat=sizes.n_feat, batch_size=sizes.batch_size,
                             n_images=sizes.n_images, out=f"{out}/run", progress=False,
                             device=device, **overrides)
        trainer = Trainer(config)
        trainer.model.train()
        try:
            return time_steps(trainer.train_step, sizes, device)
        finally:
            trainer.close()


def time_course_training(sizes: Sizes, device: str) -> float:
    """The course's lab loop on the GPU: per-item ToTensor/Normalize in a shuffling DataLoader,
    each batch sent to the device, Adam, eager fp32 (benchmarks/train_speed.py's, moved)."""
    import torch
    from torch.utils.data import DataLoader
    from train_speed import CourseSprites, _forever

    from minidiff.data.sprites import make_sprites
    from minidiff.noising import make_schedule, q_sample
    from minidiff.unet import UnetConfig, build_unet

    pixels, index = make_sprites(sizes.n_images, seed=0)
    labels = torch.eye(5)[torch.from_numpy(index)].numpy()
    loader = DataLoader(CourseSprites(pixels, labels), batch_size=sizes.batch_size, shuffle=True,
                        drop_last=True)
    torch.manual_seed(0)
    model = build_unet(UnetConfig(n_feat=sizes.n_feat)).to(device).train()
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = make_schedule("linear", 500, 1e-4, 0.02, device=device)
    batches = iter(_forever(loader))

    def step(_):
        x, c = (a.to(device) for a in next(batches))
        optim.zero_grad()
        noise = torch.randn_like(x)
        t = torch.randint(1, 501, (x.shape[0],), device=device)
        x_pert = q_sample(x, t, noise, schedule)
        mask = torch.bernoulli(torch.zeros(c.shape[0], device=device) + 0.9)
        pred = model(x_pert, t / 500.0, c * mask.unsqueeze(-1))
        torch.nn.functional.mse_loss(pred, noise).backward()
        optim.step()

    return time_steps(step, sizes, device)


# %% its section of gpu.md


def markdown(part) -> list[str]:
    rows = part.get("rows", [])
    base = next((r.get("images_per_s") for r in rows if r["loop"] == "course loop"), None)
    lines = ["The same network for both; steady-state steps after a warm-up.", "",
             "| loop | images/s | vs course loop |", "|---|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['loop']} | {r['status']} | |")
            continue
        ratio = f"{r['images_per_s'] / base:.2f}x" if base else ""
        lines.append(f"| {r['loop']} | {r['images_per_s']:.0f} | {ratio} |")
    return lines
