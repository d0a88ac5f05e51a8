"""Sample quality and time per sampler: the table behind issue 4's quality targets.

    python benchmarks/sample_quality.py --run runs/sprites
    python benchmarks/sample_quality.py --run runs/rltiles \
        --data ../shared/data/rltiles_items_16x16.npy \
        --labels ../shared/data/rltiles_items_labels_16x16.npy

Default rows: DDPM-500, DDPM without noise (the course's collapse demonstration), DDIM at 10,
25, 50 and 100 steps, and DDIM-25 with classifier-free guidance s = 0, 1, 2, 4 (more in
VARIANTS). Each row samples --n images with the same seed and measures them with
`minidiff.evaluation.metrics.evaluate` (FID in the dataset's own classifier features, its
real-vs-real noise floor, conditional accuracy, memorisation, and texture: patch SWD x 1e3
overall and per class, and the high-frequency ratio, each beside its real-vs-real floor;
`minidiff.evaluation.texture`). `--rows issue12`: DDPM-500, DDIM
and DPM-Solver++(2M) at 5, 10 and 25 steps, and DPM-Solver++-10 with guidance over
every timestep or only inside an interval (`ISSUE_12`). The JSON
of every row goes to benchmarks/out/ (ignored by git); the Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import torch

from minidiff.data.datasets import load_dataset
from minidiff.evaluation.classifier import ClassifierConfig, cached_classifier
from minidiff.evaluation.metrics import evaluate
from minidiff.pipeline import load
from minidiff.samplers import SamplerConfig

ROWS = {
    "DDPM-500": SamplerConfig("ddpm"),
    "DDPM-500 no noise": SamplerConfig("ddpm-no-noise"),
    **{f"DDIM-{k}": SamplerConfig("ddim", steps=k) for k in (10, 25, 50, 100)},
    **{f"DDIM-25 guidance {s}": SamplerConfig("ddim", steps=25, guidance=float(s))
       for s in (0, 1, 2, 4)},
}
# Issue 12: few-step samplers side by side, and guidance in a limited interval. Run with
# `--rows issue12` (or name rows). The interval [60, 410] in t is Kynkaanniemi et al.'s (0.28, 5.42]
# in EDM's sigma = sqrt((1 - alpha_bar) / alpha_bar) on the course's linear schedule.
INTERVAL = (60, 410)
ISSUE_12 = {
    "DDPM-500": SamplerConfig("ddpm"),
    **{f"DDIM-{k}": SamplerConfig("ddim", steps=k) for k in (5, 10, 25)},
    **{f"DPM++2M-{k}": SamplerConfig("dpm++2m", steps=k) for k in (5, 10, 25)},
    **{f"DPM++2M-{k} uniform": SamplerConfig("dpm++2m", steps=k, spacing="uniform")
       for k in (5, 10, 25)},
    **{f"DPM++2M-10 guidance {s}": SamplerConfig("dpm++2m", steps=10, guidance=float(s))
       for s in (1, 2, 4, 8)},
    **{f"DPM++2M-10 guidance {s} t {INTERVAL[0]}-{INTERVAL[1]}": SamplerConfig(
        "dpm++2m", steps=10, guidance=float(s), guidance_interval=INTERVAL) for s in (2, 4, 8)},
}
VARIANTS = {  # not run by default: DDIM-25 settings that may close the gap to DDPM
    "DDIM-25 eta 1": SamplerConfig("ddim", steps=25, eta=1.0),
    "DDIM-25 eta 0.5": SamplerConfig("ddim", steps=25, eta=0.5),
    "DDIM-25 clip x0": SamplerConfig("ddim", steps=25, clip_x0=True),
    "DDIM-25 uniform": SamplerConfig("ddim", steps=25, spacing="uniform"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", default="sprites")
    parser.add_argument("--labels")
    parser.add_argument("--n", type=int, default=300, help="samples per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma list of row names, or 'issue12' for its {len(ISSUE_12)} "
                             f"rows; from: {', '.join([*ROWS, *VARIANTS, *ISSUE_12])}")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--classifier-steps", type=int, default=ClassifierConfig.steps)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load(args.run, device="cpu")
    dataset = load_dataset(args.data, args.labels, image_size=pipe.image_shape[1])
    classifier, info = cached_classifier(dataset, ClassifierConfig(steps=args.classifier_steps))
    out = Path(__file__).parent / "out" / f"sample_quality_{dataset.name}.jsonl"
    out.parent.mkdir(exist_ok=True)
    print(f"# {args.run} on {dataset.name} ({len(dataset)} images), n={args.n}, seed {args.seed}, "
          f"{platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{datetime.date.today()}; classifier held-out accuracy {info['accuracy']:.3f}")
    print("| sampler | seconds | samples/s | FID | noise floor | cond. acc. | memorised "
          "(real) | patch SWD (floor) | per class (floor) | HF ratio (floor) | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = list(ISSUE_12) if args.rows == "issue12" else args.rows.split(",")
    for name in rows:
        config = {**ROWS, **VARIANTS, **ISSUE_12}[name]
        r = evaluate(pipe, dataset, config, n=args.n, seed=args.seed,
                     classifier=classifier, classifier_info=info)
        load_average = os.getloadavg()[0]
        with out.open("a") as f:
            f.write(json.dumps({"row": name, "run": args.run, "load": load_average, **r}) + "\n")
        accuracy = r["conditional_accuracy"]
        print(f"| {name} | {r['sampling_seconds']:.1f} | {r['samples_per_second']:.1f} | "
              f"{r['fid']:.2f} | {r['fid_noise_floor']:.2f} | "
              f"{'-' if accuracy is None else f'{accuracy:.3f}'} | "
              f"{r['memorisation']:.3f} ({r['memorisation_real']:.3f}) | {texture(r)} | "
              f"{load_average:.1f} |", flush=True)


def texture(r: dict) -> str:
    """The texture cells of a row: patch SWD, per class, HF ratio, each (its floor)."""
    return (f"{r['swd']:.1f} ({r['swd_floor']:.1f}) | {_number(r['swd_class'])} "
            f"({_number(r['swd_class_floor'])}) | {r['hf_ratio']:.2f} ({r['hf_ratio_floor']:.2f})")


def _number(value) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    main()
