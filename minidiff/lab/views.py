"""The lab's other tabs without Gradio: forward noising, the samplers side by side, the run.

Each function takes the `Lab` and plain values and returns pictures (uint8 arrays) and text, so
tests check them without a browser; `minidiff.lab.app` only wires them to widgets.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from minidiff.data.datasets import load_dataset
from minidiff.data.images import columns, grid, to_uint8
from minidiff.lab.charts import line_chart
from minidiff.lab.settings import Request, number
from minidiff.lab.state import Lab
from minidiff.noising import Schedule, q_sample
from minidiff.philox import randn_like_step
from minidiff.samplers import SamplerConfig
from minidiff.training.runs import read_metrics
from minidiff.utils.errors import MinidiffError

__all__ = ["COMPARED", "compare", "eval_table", "forward", "previews", "loss_chart",
           "training_images"]

SHOWN_REAL = 8  # training images shown noised: one per class where the run has classes
# The three samplers of the side-by-side tab: the course's 500 steps, its DDIM demo, and the
# few-step solver (benchmarks/RESULTS.md, Sampling)
COMPARED = (("ddpm", 500), ("ddim", 25), ("dpm++2m", 10))
PREVIEW = re.compile(r"samples_(\d+)\.png$")  # the trainer's preview grids, by step


def training_images(lab: Lab) -> torch.Tensor:
    """Up to SHOWN_REAL of the run's own training images (N, C, H, W) in [-1, 1], one per class
    first; read once from the data its config records, then kept."""
    if getattr(lab, "_real", None) is None:
        train = lab._pipe.config.get("train", {})
        try:
            data = load_dataset(train.get("data"), train.get("labels"), train.get("classes"),
                                int(train.get("image_size", 16)), train.get("n_images"), seed=0)
        except (MinidiffError, OSError) as error:
            raise MinidiffError(f"the run's training data did not load: "
                                f"{str(error).splitlines()[0]}") from None
        labels = data.contexts.argmax(1) if data.contexts.shape[1] else torch.zeros(len(data))
        firsts = [int(torch.nonzero(labels == k)[0]) for k in labels.unique()]
        rest = [i for i in range(len(data)) if i not in set(firsts)]
        lab._real = data.images[(firsts + rest)[:SHOWN_REAL]]
    return lab._real


def forward(lab: Lab, t) -> tuple[np.ndarray, np.ndarray, str]:
    """q_sample of the training images at timestep t (DDPM eq. 4) with one fixed noise, the SNR
    curve with t marked, and the two coefficients."""
    schedule = lab.schedule
    t = number(t, "t", 0, schedule.T, integer=True)
    x0 = training_images(lab).double()
    eps = randn_like_step(x0, 0, 0)  # the same noise at every t: only its share grows
    x_t = q_sample(x0, t, eps, Schedule.from_reference(schedule))  # float64 tables, on the CPU
    both = np.concatenate([to_uint8(x0), to_uint8(x_t)])
    picture = grid(both, nrow=len(x0), scale=6)
    alpha_bar = schedule.alpha_bar
    snr = alpha_bar[1:] / (1 - alpha_bar[1:])
    chart = line_chart(np.arange(1, schedule.T + 1), snr, "SNR(t) = alpha_bar / (1 - alpha_bar)",
                       "t", mark=t, log_y=True)
    text = (f"x_{t} = {np.sqrt(alpha_bar[t]):.4f} * x0 + {np.sqrt(1 - alpha_bar[t]):.4f} * eps"
            f"   (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t); DDPM eq. 4)")
    if t > 0:
        text += f",   SNR = {alpha_bar[t] / (1 - alpha_bar[t]):.4g}"
    return picture, chart, text


def compare(lab: Lab, request: Request) -> list[tuple[np.ndarray, str]]:
    """The request's seed and context through each of COMPARED: (grid, caption) each."""
    results = []
    for sampler, steps in COMPARED:
        config = SamplerConfig(sampler=sampler, steps=min(steps, lab.schedule.T),
                               guidance=request.config.guidance)
        with lab.lock:
            pipe = lab.pipe
            start = time.perf_counter()
            images = pipe.sample(request.n, sampler=config.sampler, steps=config.steps,
                                 classes=request.classes, mix=request.mix,
                                 guidance=config.guidance, seed=request.seed, normalize="clip")
            seconds = time.perf_counter() - start
        updates = len(config.timesteps(lab.schedule.T)) - 1
        width = columns(request.n, len(request.classes or request.mix or []))
        caption = f"{sampler}-{updates}: {seconds:.2f} s per batch of {request.n}"
        results.append((grid(images.numpy(), nrow=width, scale=6), caption))
    return results


def eval_table(folder: Path) -> str:
    """The run's `minidiff eval` results (eval/*.json) as a Markdown table, or a line saying
    how to make them."""
    rows = []
    for path in sorted((folder / "eval").glob("*.json")):
        try:
            r = json.loads(path.read_text())
            accuracy = r.get("conditional_accuracy")
            rows.append(f"| {r['sampler']} | {r['n_samples']} | {r['fid']:.2f} | "
                        f"{'-' if accuracy is None else f'{accuracy:.3f}'} | "
                        f"{r.get('samples_per_second', float('nan')):.1f} |")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # half written or from another version: not shown
    if not rows:
        return "No `minidiff eval` results in this run yet: `python -m minidiff eval --run RUN`."
    head = "| sampler | samples | FID | accuracy | samples/s |\n|---|---|---|---|---|\n"
    return head + "\n".join(rows)


def loss_chart(folder: Path) -> np.ndarray:
    """The loss curve of the run's metrics.jsonl (a torn last line left out)."""
    path = folder / "metrics.jsonl"
    records = read_metrics(path)[0] if path.is_file() else []
    records = [r for r in records if isinstance(r.get("loss"), (int, float))]
    return line_chart([r["step"] for r in records], [r["loss"] for r in records],
                      "training loss (metrics.jsonl)", "step", log_y=True)


def previews(folder: Path, last: int = 8) -> list[tuple[np.ndarray, str]]:
    """The newest `last` preview grids the trainer wrote, oldest first, captioned by step."""
    found = sorted((int(m[1]), p) for p in folder.glob("samples_*.png")
                   if (m := PREVIEW.search(p.name)))
    shown = []
    for step, path in found[-last:]:
        try:
            with Image.open(path) as image:
                shown.append((np.asarray(image.convert("RGB")), f"step {step}"))
        except OSError:
            continue  # being written: the next refresh shows it
    return shown
