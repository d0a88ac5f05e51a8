"""`python -m minidiff eval`: FID, accuracy, diversity, texture, memorisation and speed of samples.

    python -m minidiff eval --run runs/NAME --data sprites --n 1000
    python -m minidiff eval --run runs/NAME --data items.npy --labels labels.npy --guidance 2
    python -m minidiff eval --run runs/NAME --seeds 3     # FID min and mean over seeds 0, 1, 2

Prints one table and writes the same numbers as JSON to `runs/<run>/eval/<sampler>-<steps>-
seed<k>.json` (or `--json`; the rules of `minidiff.cli.outputs`). With `--seeds K` the top-level
numbers are means over seeds --seed .. --seed + K - 1, beside `<key>_each` and `fid_min`.
Diversity: per class, the feature spread of the samples over that of the real images (1: as
varied as real; well below: collapse onto prototypes). Texture (`minidiff.evaluation.texture`):
patch SWD x 1e3 of 5x5 patches against the real images, overall and per class (the class mix's
weighted mean, and each class), and the high-frequency ratio (< 1: smoother than real), each
beside the same for real images (the floor). The feature classifier is trained on the
first evaluation of a dataset and cached (`minidiff.evaluation.classifier.cache_dir`:
$MINIDIFF_CACHE, else ~/.cache/minidiff); the command says where, and whether it trained it.

This measures a run against the data it was trained on. Against images it never saw (a held-out
split): `benchmarks/train_quality.py`, `minidiff.evaluation.held_out.evaluate_held_out`.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from minidiff.cli import flags
from minidiff.cli.outputs import Output, check_outputs, free_stem, made_by, write_together
from minidiff.cli.sample import (
    MAX_N,
    add_sampler_arguments,
    describe,
    fused_notice,
    load_pipeline,
    run_folder,
    run_name,
    sampler_config,
    threads,
)
from minidiff.data.datasets import load_dataset
from minidiff.evaluation.classifier import ClassifierConfig, cache_dir, cached_classifier
from minidiff.evaluation.metrics import evaluate, mean_of, summarise
from minidiff.utils.atomic import write_json

MAX_SEEDS = 100
SPREAD = ("fid", "fid_noise_floor", "conditional_accuracy", "memorisation", "diversity", "swd",
          "swd_floor", "swd_class", "swd_class_floor", "hf_ratio", "hf_ratio_floor")
PER_CLASS = ("diversity_per_class", "swd_per_class", "swd_per_class_floor")


def add_arguments(parser) -> None:
    add_sampler_arguments(parser, command="eval")
    add = parser.add_argument
    add("--data", default="sprites", help="'sprites' (built-in), a .npy file or an image folder: "
        "the data the run was trained on")
    add("--labels", help="one-hot labels .npy for a .npy --data")
    add("--classes", help="class names 'a,b,c' or a .json file, in label order, as given to "
        "train (default: from the data)")
    add("--n", type=flags.integer(low=2, high=MAX_N), default=1000, help="samples to draw")
    add("--seeds", type=flags.integer(low=1, high=MAX_SEEDS), default=1, help="sample seeds "
        "--seed, --seed + 1, ...: the table shows means, FID's min and every seed's FID")
    add("--json", help="where to write the numbers (default: runs/<run>/eval/<sampler>-<steps>-"
        "seed<k>.json)")
    add("--classifier-steps", type=flags.integer(low=1, high=1_000_000),
        default=ClassifierConfig.steps, help="training steps of the feature classifier, cached "
        f"per setting in $MINIDIFF_CACHE or ~/.cache/minidiff (here: {cache_dir()})")


def main(args) -> int:
    with threads(args.threads):
        return _evaluate(args)


def _evaluate(args) -> int:
    console = Console()
    pipe = load_pipeline(args)
    pipe.batch_size = args.batch_size  # `evaluate` samples through the pipeline
    config = sampler_config(args, pipe.schedule.T)
    classifier_config = ClassifierConfig(steps=args.classifier_steps)
    if args.json:
        output = Output("--json", Path(args.json), "json", chosen=True)
    else:
        seeds = (f"seed{args.seed}" if args.seeds == 1
                 else f"seeds{args.seed}-{args.seed + args.seeds - 1}")
        stem = made_by(config, pipe.schedule.T, seeds)
        path = free_stem(run_folder(pipe) / "eval", stem, [".json"])
        output = Output("--json", Path(f"{path}.json"), "json", chosen=False)
    inputs = [pipe.path, Path(args.data) if args.data != "sprites" else None,
              Path(args.labels) if args.labels else None,
              Path(args.classes) if args.classes and args.classes.endswith(".json") else None]
    check_outputs([output], inputs, args.overwrite)
    dataset = load_dataset(args.data, args.labels, args.classes, image_size=pipe.image_shape[1])
    print(f"run {run_name(pipe, args)}")
    notice = fused_notice(config)
    if notice:
        console.print(notice)
    with console.status(f"feature classifier for {dataset.name} (trained once, then cached in "
                        f"{cache_dir()})"):
        classifier, info = cached_classifier(dataset, classifier_config)
    how = f"trained now in {info['seconds']:.0f} s" if info["trained"] else "read from the cache"
    print(f"feature classifier: {info['path']} ({how}; held-out accuracy {info['accuracy']:.3f})")
    rows = []
    for seed in range(args.seed, args.seed + args.seeds):
        with console.status(f"sampling {args.n} images, seed {seed}: "
                            f"{describe(config, pipe.schedule.T)}"):
            rows.append(evaluate(pipe, dataset, config, n=args.n, seed=seed,
                                 classifier=classifier, classifier_info=info))
    result = over_seeds(rows)
    result.update(run=str(run_folder(pipe)), sampler=describe(config, pipe.schedule.T),
                  guidance=config.guidance, guidance_interval=config.guidance_interval,
                  steps=len(config.timesteps(pipe.schedule.T)) - 1,
                  threads=args.threads)
    write_together([(output.path, lambda tmp: write_json(tmp, result))])
    console.print(table(result))
    print(f"wrote {output.path}")
    return 0


def over_seeds(rows: list[dict]) -> dict:
    """One seed's result as it is; several: the first's fields, the numbers that vary with the
    seed replaced by their means, with `<key>_each` and `fid_min` beside them."""
    if len(rows) == 1:
        return rows[0]
    spread = summarise([{key: row[key] for key in SPREAD} for row in rows])
    seconds = sum(row["sampling_seconds"] for row in rows)
    return {**rows[0], **{key: spread[f"{key}_mean"] for key in SPREAD}, **spread,
            "seed": None, "seeds": [row["seed"] for row in rows], "sampling_seconds": seconds,
            "samples_per_second": rows[0]["n_samples"] * len(rows) / seconds,
            **{key: {name: mean_of(row[key][name] for row in rows) for name in rows[0][key]}
               for key in PER_CLASS}}


def table(r: dict) -> Table:
    seeds = r.get("seeds")
    over = f", mean of {len(seeds)} seeds" if seeds else ""
    t = Table(title=f"{r['run']}: {r['sampler']} on {r['dataset']} ({r['n_samples']} samples"
                    f"{over})")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("what it means")
    t.add_row("FID", f"{r['fid']:.2f}", f"vs {r['n_real']} real images, classifier features")
    if seeds:
        each = ", ".join(f"{v:.2f}" for v in r["fid_each"])
        t.add_row("  FID min", f"{r['fid_min']:.2f}", f"seeds {seeds[0]}..{seeds[-1]}: {each}")
    t.add_row("FID noise floor", f"{r['fid_noise_floor']:.2f}", "real vs real: a perfect sampler")
    accuracy = r["conditional_accuracy"]
    t.add_row("conditional accuracy", "-" if accuracy is None else f"{accuracy:.3f}",
              "samples classified as the class asked for")
    t.add_row("diversity", _number(r["diversity"]), "feature spread within a class, samples "
              "over real (1: as varied; << 1: collapse)")
    t.add_row("  per class", "", _per_class(r["diversity_per_class"]))
    t.add_row("  real", _number(r["diversity_floor"]), "the same, for real images")
    t.add_row("patch SWD", f"{r['swd']:.1f}", "x 1e3, 5x5 patches vs real (blur raises it)")
    t.add_row("  real", f"{r['swd_floor']:.1f}", "the same, for real images: the floor")
    t.add_row("  per class", _number(r["swd_class"], 1), "each class vs its real images, "
              "weighted by the class mix: " + _per_class(r["swd_per_class"], 1))
    t.add_row("  per class, real", _number(r["swd_class_floor"], 1),
              _per_class(r["swd_per_class_floor"], 1))
    t.add_row("high-frequency ratio", f"{r['hf_ratio']:.2f}", "mean |Laplacian|, samples over "
              "real (< 1: smoother)")
    t.add_row("  real", f"{r['hf_ratio_floor']:.2f}", "the same, for real images")
    t.add_row("memorisation", f"{r['memorisation']:.3f}",
              f"near copies of a training image (RMS <= {r['near_copy_rms'] * 127.5:.0f}/255)")
    t.add_row("  real base rate", f"{r['memorisation_real']:.3f}", "the same, for real images")
    t.add_row("samples/s", f"{r['samples_per_second']:.1f}",
              f"{r['sampling_seconds']:.1f} s for {r['n_samples'] * len(seeds or [0])}")
    t.add_row("classifier accuracy", f"{r['classifier_accuracy']:.3f}", "on held-out real images")
    return t


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _per_class(values: dict, digits: int = 2) -> str:
    return ", ".join(f"{name} {_number(v, digits)}" for name, v in values.items())
