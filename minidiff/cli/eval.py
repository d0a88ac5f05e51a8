"""`python -m minidiff eval`: FID, conditional accuracy, memorisation and speed of a run's samples.

    python -m minidiff eval --run runs/NAME --data sprites --n 1000
    python -m minidiff eval --run runs/NAME --data items.npy --labels labels.npy --guidance 2

Prints one table and writes the same numbers as JSON (`--json`, default eval.json). The feature
classifier is trained on the first evaluation of a dataset and cached (see `minidiff.evaluation.metrics`).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from minidiff.utils.atomic import write_json
from minidiff.data.datasets import load_dataset
from minidiff.evaluation.metrics import ClassifierConfig, cache_dir, cached_classifier, evaluate
from minidiff.cli.sample import (
    add_sampler_arguments,
    check_writable,
    describe,
    fused_notice,
    load_pipeline,
    number,
    sampler_config,
)


def add_arguments(parser) -> None:
    add_sampler_arguments(parser)
    parser.add_argument("--data", default="sprites", help="'sprites' (built-in), a .npy file or "
                        "an image folder: the data the run was trained on")
    parser.add_argument("--labels", help="one-hot labels .npy for a .npy --data")
    parser.add_argument("--n", default="1000", help="samples to draw (default 1000)")
    parser.add_argument("--json", default="eval.json", help="where to write the numbers")
    parser.add_argument("--classifier-steps", default=str(ClassifierConfig.steps),
                        help=f"training steps of the feature classifier (default "
                             f"{ClassifierConfig.steps}); each setting is cached separately")


def main(args) -> int:
    console = Console()
    pipe = load_pipeline(args)
    config = sampler_config(args, pipe.schedule.T)
    n = number(args.n, "--n", int, low=2)
    classifier_config = ClassifierConfig(
        steps=number(args.classifier_steps, "--classifier-steps", int, low=1))
    seed = number(args.seed, "--seed", int, low=0, high=2**32 - 1)
    check_writable(Path(args.json))
    dataset = load_dataset(args.data, args.labels, image_size=pipe.image_shape[1])
    notice = fused_notice(config)
    if notice:
        console.print(notice)
    with console.status(f"feature classifier for {dataset.name} (trained once, cached in "
                        f"{cache_dir()})"):
        classifier, info = cached_classifier(dataset, classifier_config)
    with console.status(f"sampling {n} images: {describe(config, pipe.schedule.T)}"):
        result = evaluate(pipe, dataset, config, n=n, seed=seed, classifier=classifier,
                          classifier_info=info)
    result.update(run=str(pipe.path), sampler=describe(config, pipe.schedule.T),
                  guidance=config.guidance, steps=len(config.timesteps(pipe.schedule.T)) - 1)
    write_json(args.json, result)
    console.print(table(result))
    console.print(f"wrote {args.json}")
    return 0


def table(r: dict) -> Table:
    t = Table(title=f"{r['run']}: {r['sampler']} on {r['dataset']} ({r['n_samples']} samples)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("what it means")
    t.add_row("FID", f"{r['fid']:.2f}", f"vs {r['n_real']} real images, classifier features")
    t.add_row("FID noise floor", f"{r['fid_noise_floor']:.2f}", "real vs real: a perfect sampler")
    accuracy = r["conditional_accuracy"]
    t.add_row("conditional accuracy", "-" if accuracy is None else f"{accuracy:.3f}",
              "samples classified as the class asked for")
    t.add_row("memorisation", f"{r['memorisation']:.3f}",
              f"near copies of a training image (RMS <= {r['near_copy_rms'] * 127.5:.0f}/255)")
    t.add_row("  real base rate", f"{r['memorisation_real']:.3f}", "the same, for real images")
    t.add_row("samples/s", f"{r['samples_per_second']:.1f}",
              f"{r['sampling_seconds']:.1f} s for {r['n_samples']}")
    t.add_row("classifier accuracy", f"{r['classifier_accuracy']:.3f}", "on held-out real images")
    return t
