# %% [markdown]
# # Training quality on held-out real images: recipes side by side (issue 11)
#
# Each dataset is split once (seeded; `--holdout`, default 0.3 held out: emoji 1,906 -> 1,334
# training and 572 held-out images). Every recipe trains on the same training split through
# `minidiff.training.train(TrainConfig(...))`, with the same budget: `--steps S` (fixed steps,
# deterministic) or `--minutes M` (wall clock, as `train --minutes`). Then
# `minidiff.evaluation.held_out.evaluate_held_out` measures each run against the held-out images it
# never saw, with DDIM-25 (the default `SamplerConfig`) at guidance 1 (plain conditional) and at
# each `--guidance` scale, over 3 sample seeds:
#
# - FID of n samples against the whole held-out set (min and mean over the seeds), beside the
#   real-vs-real floor: FID of n random *training* images against the same set (same n);
# - conditional accuracy (the feature classifier, trained on the whole dataset and cached);
# - diversity per class: the pairwise feature spread of a class's samples over that of its real
#   held-out images (1.0 as varied as real; well below 1: collapse onto prototypes);
# - memorisation (near copies of a training image) and the median nearest-training-image RMS,
#   each beside the held-out real images' own value (the base rate);
# - texture (`minidiff.evaluation.texture`): patch SWD x 1e3 against the held-out set, overall
#   and per class (weighted by the class mix), and the high-frequency ratio (< 1: smoother than
#   real), each beside the same for the floor's training images.
#
# For every run and scale it saves a grid `<dataset>-<recipe>-g<S>.png` (in `--keep`, else in
# benchmarks/out/train_quality/): real held-out images on the left, samples on the right, one
# column per class, one row per draw (the grid rule of `minidiff.data.images`).
#
#     python benchmarks/train_quality.py --data ../shared/data/emoji_google_16x16.npy \
#         --labels ../shared/data/emoji_google_labels_16x16.npy \
#         --classes ../shared/data/emoji_classes.json --steps 2000 \
#         --recipe default= --recipe minsnr=loss_weight=min-snr --recipe course=preset=course \
#         --guidance 2 --threads 1 --keep runs/tq --json tq.json --markdown tq.md
#     python benchmarks/train_quality.py ... --keep runs/tq --only-eval   # re-measure kept runs
#
# `--recipe NAME=key=value,key=value`: any TrainConfig fields, values parsed by each field's own
# rule (`preset=course` applies the preset first).
#
# The floors at the defaults (holdout 0.3, n 1,000, seeds 0-2, the default feature classifier),
# measured before any training; a recipe whose FID is within a few times these is near the data:
#
# | data, 16x16 | train / held out | n | clf. acc. | FID floor (seeds) | div. | memo. | NN-RMS |
# | --- | --- | --- | --- | --- | --- | --- | --- |
# | emoji_google | 1,334 / 572 | 1,000 | 0.649 | 0.255 (0.26 0.27 0.24) | 0.97 | 0.011 | 0.317 |
# | emoji_twitter | 1,334 / 572 | 1,000 | 0.613 | 0.203 (0.21 0.21 0.20) | 1.00 | 0.025 | 0.332 |
# | rltiles_items | 711 / 305 | 711 | 0.716 | 0.217 (all 711 each) | 1.02 | 0.118 | 0.243 |
# | sprites | 14,000 / 6,000 | 1,000 | 1.000 | 0.041 (0.10 0.01 0.01) | 1.00 | 0.168 | 0.232 |
#
# (memorised and NN-RMS: the held-out images against the training split, the base rate the
# samples' own values stand beside.) The floors lie far below the FIDs issue 11 reports for
# 5-minute runs (4.7-15.7, measured with another classifier and split), so differences of a few
# tenths are visible; rltiles_items has 711 training images, so n is 711 there and every seed's
# floor uses all of them (its samples still differ by seed).

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from minidiff.data.datasets import Dataset, load_dataset
from minidiff.data.images import by_class, save_grid, to_uint8
from minidiff.evaluation.classifier import ClassifierConfig, cached_classifier, classify
from minidiff.evaluation.held_out import evaluate_held_out, split_dataset
from minidiff.pipeline import load
from minidiff.samplers import FEW_STEP, SamplerConfig
from minidiff.training import TrainConfig, train, with_preset
from minidiff.utils.errors import MinidiffError
from minidiff.utils.rules import rules

RULES = rules(TrainConfig)
GRID_ROWS = 8  # real and generated images per class in the side-by-side grid
RECORD = "train_quality.json"  # what a kept run folder remembers of its training
BOOLEANS = {"on": True, "true": True, "yes": True, "1": True,
            "off": False, "false": False, "no": False, "0": False}


# %% Recipes


def parse_recipe(text: str) -> tuple[str, dict]:
    """'NAME=key=value,key=value' -> (NAME, {field: value}), each value parsed by its field's
    rule; 'NAME=' is the default recipe. An argparse type: a bad word is one line."""
    name, _, rest = text.partition("=")
    if not name or not _:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=key=value,... (or NAME= for the "
                                         "default recipe)")
    return name, parse_overrides(rest, f"recipe {name}")


def parse_overrides(text: str, where: str) -> dict:
    """'key=value,key=value' -> {TrainConfig field: value}, each value parsed by its field's
    rule (also train_speed.py's --variant); `where` names the argument in the error line."""
    overrides = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        if key not in known or not _:
            raise argparse.ArgumentTypeError(f"{where}: {item!r} is not key=value with a "
                                             f"TrainConfig field ({', '.join(sorted(known))})")
        overrides[key] = field_value(key, value, where)
    return overrides


def field_value(key: str, text: str, where: str):
    """The word `text` as a value of TrainConfig field `key`, by the field's own rule."""
    rule = RULES.get(key)
    if rule is None:
        return text
    if rule.optional and text.lower() == "none":
        return None
    if rule.kind is bool and text.lower() in BOOLEANS:
        return BOOLEANS[text.lower()]
    try:
        return rule.parse(text)
    except MinidiffError as error:
        raise argparse.ArgumentTypeError(f"{where}: {key}: {error}") from None


def recipe_config(overrides: dict, budget: dict, common: dict) -> TrainConfig:
    """The recipe's TrainConfig: its preset, then the budget and the run's plumbing, then the
    recipe's own fields (so a recipe may set its own batch size, or even steps)."""
    preset = overrides.get("preset")
    fields = {**budget, **common, **overrides}
    return with_preset(preset, **fields) if preset else TrainConfig(**fields)


def describe_budget(args) -> str:
    return f"{args.steps:,} steps" if args.steps is not None else f"{args.minutes:g} minutes"


def budget_of(args) -> dict:
    if args.steps is not None:
        return {"steps": args.steps, "epochs": None, "minutes": None}
    return {"steps": None, "epochs": None, "minutes": args.minutes}


# %% The split, on disk for `train`


def write_split(train_set: Dataset, folder: Path) -> dict:
    """The training split in the course's .npy layout, with its class names beside it."""
    size = train_set.images.shape[-1]
    data, labels = folder / f"train_{size}x{size}.npy", folder / f"train_labels_{size}x{size}.npy"
    np.save(data, to_uint8(train_set.images))  # exact: the images came from uint8
    np.save(labels, train_set.contexts.numpy())
    paths = {"data": str(data), "image_size": size}
    if train_set.contexts.shape[1]:
        names = folder / "train_classes.json"
        names.write_text(json.dumps(train_set.classes))
        paths |= {"labels": str(labels), "classes": str(names)}
    return paths


# %% The side-by-side grid


def side_by_side(pipe, held_out: Dataset, sampler: SamplerConfig, classifier, path: Path,
                 rows: int = GRID_ROWS) -> None:
    """Real held-out images | samples, one column per class and one row per draw, a blank
    column between the two blocks. An unconditional run's samples go to the column of the class
    the feature classifier sees in them."""
    k = held_out.contexts.shape[1]
    labels = held_out.contexts.argmax(1)
    real = [to_uint8(held_out.images[labels == c][:rows]) for c in range(k)]
    draw = dict(sampler=sampler.sampler, steps=sampler.steps, eta=sampler.eta, seed=0,
                spacing=sampler.spacing)
    if pipe.n_cfeat:
        samples = pipe.sample(rows * k, classes=list(range(k)), guidance=sampler.guidance,
                              **draw)  # image i asks for class i mod k
        seen = torch.arange(rows * k) % k
    else:
        samples = pipe.sample(rows * k, **draw)
        seen = classify(classifier, samples)
    generated = [to_uint8(samples[seen == c][:rows]) for c in range(k)]
    gap = np.zeros((0, *real[0].shape[1:]), np.uint8)  # by_class fills it with white
    save_grid(by_class([*real, gap, *generated]), path, nrow=2 * k + 1)


# %% One recipe


def train_run(name: str, overrides: dict, config: TrainConfig) -> dict:
    """Train one recipe; returns what its row says of the training, also kept in the run."""
    start = time.perf_counter()
    trainer = train(config)
    seconds = time.perf_counter() - start
    record = {"recipe": name, "overrides": overrides, "steps": trainer.step,
              "train_seconds": round(seconds, 1),
              "steps_per_second": round(trainer.step / seconds, 2),
              "load_average": [round(x, 2) for x in os.getloadavg()],
              "config": dataclasses.asdict(config)}
    (Path(config.out) / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def measure(out: Path, record: dict, split: tuple, classifier, grids: Path, args) -> list[dict]:
    """One row per guidance scale: the held-out numbers of the run in `out`, and its grid
    (`grids/<run>-g<S>.png`)."""
    train_set, held_out = split
    pipe = load(out, device=args.device)
    rows = []
    for guidance in [None, *args.guidance]:
        sampler = SamplerConfig(sampler=args.sampler, guidance=guidance, eta=args.eta,
                                steps=args.sample_steps)
        start = time.perf_counter()
        scores = evaluate_held_out(pipe, train_set, held_out, sampler, n=args.n,
                                   seeds=tuple(args.seeds), classifier=classifier[0],
                                   classifier_info=classifier[1])
        grid = grids / f"{out.name}-{args.sampler}{args.sample_steps}-g{guidance or 1:g}.png"
        side_by_side(pipe, held_out, sampler, classifier[0], grid)
        rows.append({**{k: v for k, v in record.items() if k not in ("config", "overrides")},
                     "guidance": guidance or 1.0, "eta": args.eta,
                     "sample_steps": args.sample_steps, "grid": str(grid),
                     "sampler": args.sampler, "eval_seconds": round(time.perf_counter() - start, 1),
                     "eval_load_average": [round(x, 2) for x in os.getloadavg()], **scores})
    return rows


# %% Reporting


def show(row: dict) -> str:
    """One printed line per recipe and guidance scale."""
    accuracy = row["conditional_accuracy_mean"]
    return (f"  {row['recipe']:<10} g {row['guidance']:<4g} {row['steps']:>6} steps "
            f"{row['train_seconds']:>7.1f} s (load {row['load_average'][0]:.2f}) | FID min "
            f"{row['fid_min']:.2f} mean {row['fid_mean']:.2f} (floor {row['fid_floor_mean']:.2f})"
            f" | acc {'-' if accuracy is None else f'{accuracy:.3f}'}"
            f" | diversity {fmt(row['diversity_mean'])} (floor {fmt(row['diversity_floor_mean'])})"
            f" | memorised {row['memorisation_mean']:.3f} (real {row['memorisation_real']:.3f})"
            f" | NN-RMS {row['nearest_rms_median_mean']:.3f} "
            f"(real {row['nearest_rms_median_real']:.3f}) | " + texture(row))


def texture(row: dict) -> str:
    """Patch SWD, overall and per class, and the high-frequency ratio, each (floor)."""
    return (f"SWD {row['swd_mean']:.1f} ({row['swd_floor_mean']:.1f}) per class "
            f"{fmt(row['swd_class_mean'], 1)} ({fmt(row['swd_class_floor_mean'], 1)}) | HF ratio "
            f"{row['hf_ratio_mean']:.2f} ({row['hf_ratio_floor_mean']:.2f})")


def fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict], header: dict) -> str:
    """The table for benchmarks/RESULTS.md, with the setting it was measured in."""
    lines = [f"{header['dataset']}: {header['n_train']} training / {header['n_held_out']} "
             f"held-out images, n = {rows[0]['n_samples']} samples x {len(header['seeds'])} "
             f"seeds, {rows[0]['sampler']}-{rows[0]['sample_steps']} eta {rows[0]['eta']:g}, "
             f"feature classifier accuracy "
             f"{header['classifier_accuracy']:.3f}; per-class diversity names: "
             f"{', '.join(rows[0]['diversity_per_class'])}", "",
             "| recipe | guidance | steps | train s (load) | FID min | FID mean | floor | cond. "
             "acc. | diversity (per class) | memorised (real) | NN-RMS (real) | patch SWD "
             "(floor) | per class (floor) | HF ratio (floor) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
             "| --- |"]
    for r in rows:
        per_class = " ".join(fmt(v) for v in r["diversity_per_class"].values())
        lines.append(
            f"| {r['recipe']} | {r['guidance']:g} | {r['steps']:,} | {r['train_seconds']:.0f} "
            f"({r['load_average'][0]:.1f}) | {r['fid_min']:.2f} | {r['fid_mean']:.2f} | "
            f"{r['fid_floor_mean']:.2f} | {fmt(r['conditional_accuracy_mean'], 3)} | "
            f"{fmt(r['diversity_mean'])} ({per_class}) | {r['memorisation_mean']:.3f} "
            f"({r['memorisation_real']:.3f}) | {r['nearest_rms_median_mean']:.3f} "
            f"({r['nearest_rms_median_real']:.3f}) | {r['swd_mean']:.1f} "
            f"({r['swd_floor_mean']:.1f}) | {fmt(r['swd_class_mean'], 1)} "
            f"({fmt(r['swd_class_floor_mean'], 1)}) | {r['hf_ratio_mean']:.2f} "
            f"({r['hf_ratio_floor_mean']:.2f}) |")
    return "\n".join(lines) + "\n"


# %% The command


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train recipes on a seeded training split and "
                                     "measure them on held-out real images (issue 11).")
    add = parser.add_argument
    add("--data", default=None, help="a .npy file or image folder (default: built-in sprites)")
    add("--labels", default=None, help="one-hot labels .npy for a .npy --data")
    add("--classes", default=None, help="class names 'a,b,c' or a .json file (default: from "
        "the data, e.g. <name>_classes.json beside it)")
    add("--n-images", type=int, default=None, help="built-in sprites: how many (default 20,000)")
    add("--holdout", type=float, default=0.3, help="share of the data held out (default 0.3)")
    add("--split-seed", type=int, default=0, help="seed of the train/held-out split")
    add("--recipe", type=parse_recipe, action="append", dest="recipes",
        help="NAME=key=value,...: TrainConfig fields (repeatable; default: default= and "
             "course=preset=course)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="fixed steps per recipe")
    budget.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget per "
                        "recipe, as train --minutes (default 5; ignored with --steps)")
    add("--n", type=int, default=1000, help="samples per seed (capped at the training images)")
    add("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2],
        help="sample seeds, comma separated (default 0,1,2)")
    add("--guidance", type=lambda s: [float(x) for x in s.split(",")], default=[],
        help="guidance scales measured besides guidance 1, comma separated (e.g. 2)")
    add("--sampler", default=SamplerConfig.sampler, choices=FEW_STEP,
        help=f"the sampler of the samples (default {SamplerConfig.sampler})")
    add("--eta", type=float, default=SamplerConfig.eta, help="DDIM eta of the samples")
    add("--sample-steps", type=int, default=SamplerConfig.steps, help="sampler steps of the "
        f"samples (default {SamplerConfig.steps})")
    add("--classifier-steps", type=int, default=ClassifierConfig.steps, help="training steps of "
        "the feature classifier (cached per dataset and setting)")
    add("--threads", type=int, default=None, help="torch threads (1 on a shared machine)")
    add("--device", default="cpu", help="where to train and sample (default cpu)")
    add("--keep", default=None, help="keep the run folders (and grids) under this folder")
    add("--only-eval", action="store_true", help="measure the runs kept under --keep again, "
        "without training (default: every kept run of this dataset, else the --recipe names)")
    add("--json", default=None, help="write every row here")
    add("--markdown", default=None, help="write the table here, ready for RESULTS.md")
    args = parser.parse_args(argv)
    if args.only_eval and not args.keep:
        parser.error("--only-eval measures the runs under --keep: pass --keep DIR")
    return args


def recipes_of(args, dataset: Dataset) -> list[tuple[str, dict]]:
    """The --recipe list; with --only-eval and none given, every run kept for this dataset."""
    if args.recipes:
        return args.recipes
    if args.only_eval:
        prefix = f"{dataset.name}-"
        return [(p.parent.name[len(prefix):], json.loads(p.read_text())["overrides"])
                for p in sorted(Path(args.keep).glob(f"{prefix}*/{RECORD}"))]
    return [("default", {}), ("course", {"preset": "course"})]


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data, args.labels, args.classes, n=args.n_images)
    split = split_dataset(dataset, args.holdout, args.split_seed)
    # trained on all of the data: the feature network, not the model under test
    classifier = cached_classifier(dataset, ClassifierConfig(steps=args.classifier_steps))
    header = {"dataset": dataset.name, "n_train": len(split[0]), "n_held_out": len(split[1]),
              "seeds": args.seeds, "classifier_accuracy": classifier[1]["accuracy"]}
    print(f"{dataset.name}: {header['n_train']} training, {header['n_held_out']} held-out "
          f"images; {describe_budget(args)} per recipe; threads {torch.get_num_threads()}; "
          f"classifier accuracy {header['classifier_accuracy']:.3f}", flush=True)
    rows = []
    grids = Path(args.keep) if args.keep else Path("benchmarks/out/train_quality")
    grids.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        common = {**write_split(split[0], Path(tmp)), "progress": False, "sample_every": 0,
                  "checkpoint_every": 0, "device": args.device, "threads": args.threads}
        recipes = recipes_of(args, dataset)
        configs = [(name, overrides, recipe_config(overrides, budget_of(args), {
            **common, "out": str(root / f"{dataset.name}-{name}")}))
            for name, overrides in recipes]  # every recipe checked before the first trains
        for name, overrides, config in configs:
            out = Path(config.out)
            if args.only_eval:
                record = json.loads((out / RECORD).read_text())
            else:
                record = train_run(name, overrides, config)
            for row in measure(out, record, split, classifier, grids, args):
                rows.append(row)
                print(show(row) + f" | eval {row['eval_seconds']:.0f} s (load "
                      f"{row['eval_load_average'][0]:.2f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(rows, header))
    print(markdown(rows, header))


if __name__ == "__main__":
    main()
