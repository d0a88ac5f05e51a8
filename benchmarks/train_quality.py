# %% [markdown]
# # Training quality: the course's recipe vs minidiff's default, on the same CPU budget
#
# Two recipes, each given the same wall-clock budget (`--minutes`, default 5) on the same data:
#
# - **course**: `--preset course`: the course's network, Adam at 1e-3 decayed per epoch, batch
#   100, no EMA, fp32; its step count fitted to the budget (so its learning rate still decays to
#   near 0 by the end, as in the course's 32 epochs).
# - **default**: `python -m minidiff train`'s recipe (`TrainConfig()`), its step count fitted to
#   the same budget.
#
# Each dataset is split once (90% train, 10% held out, fixed seed); both recipes train on the
# same 90%. Scores:
#
# - held-out denoising MSE: mean || eps - eps_theta(x_t, t / T, c) ||^2 over the held-out images
#   at fixed t (50, 150, 300, 450), with fixed noise: the training loss, measured where it was not
#   trained. Lower is better. Always available.
# - FID, conditional accuracy and memorisation from `minidiff.evaluation.metrics.evaluate` (DDIM-25 samples
#   against the held-out images), when that module is installed.
#
#     python benchmarks/train_quality.py                                   # sprites, 5 minutes
#     python benchmarks/train_quality.py --data ../shared/data/rltiles_items_16x16.npy \
#         --labels ../shared/data/rltiles_items_labels_16x16.npy
#     python benchmarks/train_quality.py --minutes 0.3 --n-images 2000 --n-eval 64   # smoke run
#
# On a shared machine, run the two recipes at the same time (`--recipes course` and `--recipes
# default` in two processes, `--threads 1` each) so that both see the same load.

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from minidiff.training.checkpoint import load_trained
from minidiff.data.datasets import Dataset, load_dataset
from minidiff.data.images import to_uint8
from minidiff.noising import q_sample
from minidiff.training import TrainConfig, train, with_preset

FIXED_T = (50, 150, 300, 450)


def split(dataset: Dataset, holdout: float = 0.1, seed: int = 0):
    """(train indices, held-out indices), a fixed random split."""
    order = np.random.default_rng(seed).permutation(len(dataset))
    n_held = max(1, int(len(dataset) * holdout))
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def write_npy(dataset: Dataset, rows, folder: Path) -> dict:
    """The train split in the course's .npy layout, for `--data`/`--labels`/`--classes`."""
    data, labels = folder / "train_16x16.npy", folder / "train_labels_16x16.npy"
    np.save(data, to_uint8(dataset.images[rows]))  # exact: the images came from uint8
    np.save(labels, dataset.contexts[rows].numpy())
    paths = {"data": str(data)}
    if dataset.contexts.shape[1]:
        paths |= {"labels": str(labels), "classes": ",".join(dataset.classes)}
    return paths


@torch.no_grad()
def denoising_mse(model, schedule, images, contexts, seed: int = 0) -> dict:
    """Held-out MSE of eps_theta at each fixed t (fixed noise), and their mean."""
    g = torch.Generator().manual_seed(seed)
    c = contexts if contexts.shape[1] else None
    scores = {}
    for t in FIXED_T:
        if t > schedule.T:
            continue
        eps = torch.randn(images.shape, generator=g)
        x_t = q_sample(images, t, eps, schedule).float()
        t_normalised = torch.full((len(images),), t / schedule.T)
        scores[f"mse_t{t}"] = float(((model(x_t, t_normalised, c) - eps) ** 2).mean())
    scores["mse_mean"] = float(np.mean(list(scores.values())))
    return scores


def sample_scores(run: Path, held_out: Dataset, n: int) -> dict:
    """FID etc. from minidiff.evaluation.metrics, or a note that it is not available."""
    try:
        from minidiff.evaluation.metrics import evaluate
        from minidiff.pipeline import load
        from minidiff.sampling import SamplerConfig
    except ImportError as error:
        return {"metrics": f"unavailable ({error})"}
    result = evaluate(load(run, device="cpu"), held_out, SamplerConfig(), n=n)
    keep = ("fid", "fid_noise_floor", "conditional_accuracy", "memorisation", "classifier_accuracy")
    return {k: result[k] for k in keep if k in result}


def recipe(name: str, minutes: float, paths: dict, out: Path, threads: int | None) -> TrainConfig:
    common = {"minutes": minutes, "steps": None, "epochs": None, "out": str(out),
              "progress": False, "sample_every": 0, "checkpoint_every": 0, "device": "cpu",
              "threads": threads, **paths}
    return with_preset("course", **common) if name == "course" else TrainConfig(**common)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None, help="built-in sprites unless given")
    parser.add_argument("--labels", default=None)
    parser.add_argument("--n-images", type=int, default=None, help="built-in sprites: how many")
    parser.add_argument("--minutes", type=float, default=5.0, help="budget per recipe")
    parser.add_argument("--n-eval", type=int, default=500, help="samples for FID (0: skip)")
    parser.add_argument("--recipes", default="course,default")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (1 "
                        "on a shared machine: two threads stall each other when cores are busy)")
    parser.add_argument("--keep", default=None, help="keep the run folders under this folder")
    args = parser.parse_args(argv)
    dataset = load_dataset(args.data, args.labels, n=args.n_images)
    train_rows, held_rows = split(dataset)
    held_out = Dataset(dataset.images[held_rows], dataset.contexts[held_rows], dataset.classes,
                       dataset.name)
    print(f"{dataset.name}: {len(train_rows)} training, {len(held_rows)} held-out images; "
          f"{args.minutes} min per recipe; torch threads {args.threads or torch.get_num_threads()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_npy(dataset, train_rows, Path(tmp))
        for name in args.recipes.split(","):
            out = Path(args.keep or tmp) / f"{dataset.name}-{name}"
            start = time.perf_counter()
            trainer = train(recipe(name, args.minutes, paths, out, args.threads))
            seconds = time.perf_counter() - start
            trained = load_trained(out, device="cpu")
            row = {"steps": trainer.step, "train_seconds": round(seconds, 1),
                   "images_seen": trainer.step * trainer.config.batch_size,
                   **denoising_mse(trained.model, trained.schedule, held_out.images,
                                   held_out.contexts)}
            if args.n_eval:
                row |= sample_scores(out, held_out, args.n_eval)
            results[name] = row
            print(f"  {name:8s} " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else
                                              f"{k} {v}" for k, v in row.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
