# %% [markdown]
# # Latent diffusion against pixel diffusion at 32x32, for the same total budget (issue 14)
#
# One seeded split of the data (`minidiff.evaluation.held_out.split_dataset`, `--holdout`,
# default 0.3 held out), then two pipelines with the same wall-clock budget, `--minutes` (15):
#
# - pixel: `train --image-size 32` on the training split for the whole budget;
# - latent: `train-autoencoder` for `--ae-share` of it (default 0.5), then `train --autoencoder`
#   (the data encoded once, the network at 8x8x4, patch 1) for what is left, the encoding and
#   the autoencoder's own measurements counted against it.
#
# Both are measured by `minidiff.evaluation.held_out.evaluate_held_out` against the held-out
# images neither pipeline saw (FID in the features of a classifier trained on the same 32x32 data,
# min and mean over the sample seeds, beside the real-vs-real floor; conditional accuracy), with
# DDIM-25, at each `--guidance` scale. Also reported: the autoencoder's PSNR on those held-out
# images, its own floor (the FID of its reconstructions of the floor's training images: what a
# perfect latent sampler would score once decoded), and the training step time of both networks
# at batch 128 (forward, backward and AdamW, median of 10 after warm-up, in this process, before
# any training, with the trainer's fused AdamW), and the seconds per step each run's own loop
# took (its metrics.jsonl). `--only-eval` measures the runs kept in `--keep` again (say, at
# another scale); `--train latent` trains the latent pipeline again beside the kept pixel run.
# Grids (`--keep`, else benchmarks/out/latent/): real held-out images | samples, one column per
# class, for each pipeline and scale, and the autoencoder's reconstructions.
#
#     python benchmarks/latent.py --data ../shared/data/emoji_google_32x32.npy \
#         --labels ../shared/data/emoji_google_labels_32x32.npy \
#         --classes ../shared/data/emoji_classes.json --minutes 15 --threads 2 \
#         --keep runs/latent --json latent.json --markdown latent.md
#     python benchmarks/latent.py ...the same data... --keep runs/latent --only-eval --guidance 1,2
#
# On a busy machine, `--steps 2263,2552,4609` trains what 15 quiet minutes trained on cpu2
# (benchmarks/RESULTS.md), whatever the load: fixed steps, deterministic weights.
#
# Proof at a tiny size (built-in sprites enlarged to 32 px; numbers mean nothing):
#
#     python benchmarks/latent.py --n-images 300 --minutes 0.6 --n 24 --seeds 0 \
#         --classifier-steps 20 --n-feat 16 --ae-n-feat 8 --timing-batch 16 --threads 1

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from train_quality import side_by_side, write_split  # the split on disk, the real | samples grid

from minidiff.autoencoder import encode_latents, load_autoencoder, psnr, reconstruct
from minidiff.data.datasets import Dataset, load_dataset
from minidiff.evaluation.classifier import ClassifierConfig, cached_classifier, features
from minidiff.evaluation.held_out import evaluate_held_out, floor_rows, split_dataset
from minidiff.evaluation.metrics import fid
from minidiff.pipeline import load
from minidiff.samplers import SamplerConfig
from minidiff.training import TrainConfig, train
from minidiff.training.autoencoder import train_autoencoder
from minidiff.training.config import AutoencoderConfig
from minidiff.unet import UnetConfig, build_unet
from minidiff.utils.device import fast_bf16

IMAGE_SIZE = 32
PIPELINES = ("pixel", "latent")


def step_seconds(unet: UnetConfig, batch: int, repeats: int = 10) -> float:
    """Median seconds of one training step (forward, backward, AdamW) of `unet` at `batch`, in
    bf16 autocast where the trainer would use it, with its fused AdamW
    (`minidiff/training/trainer.py`)."""
    torch.manual_seed(0)
    net = build_unet(unet)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    x = torch.randn(batch, unet.in_channels, unet.height, unet.height)
    t, c = torch.rand(batch), torch.eye(unet.n_cfeat)[torch.arange(batch) % unet.n_cfeat]
    bf16 = fast_bf16(torch.device("cpu"))
    times = []
    for _ in range(repeats + 2):  # two warm-up steps
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss = net(x, t, c).float().square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return sorted(times[2:])[len(times[2:]) // 2]


def pixel_pipeline(common: dict, args, out: Path) -> dict:
    start = time.perf_counter()
    length = {"steps": args.steps[0]} if args.steps else {"minutes": args.minutes, "steps": None}
    trainer = train(TrainConfig(**common, n_feat=args.n_feat, **length, out=str(out)))
    return {"steps": trainer.step, "seconds": time.perf_counter() - start}


def latent_pipeline(common: dict, args, out: Path, held_out: Dataset) -> dict:
    """The autoencoder for its share of the budget, then diffusion on its latents for the rest."""
    start = time.perf_counter()
    length = ({"steps": args.steps[1]} if args.steps else
              {"steps": None, "minutes": args.minutes * args.ae_share})
    ae = train_autoencoder(AutoencoderConfig(
        data=common["data"], labels=common.get("labels"), image_size=IMAGE_SIZE,
        n_feat=args.ae_n_feat, **length,
        checkpoint_every=0, progress=False, device=args.device, threads=args.threads,
        out=str(out / "autoencoder")))
    ae_seconds = time.perf_counter() - start
    left = args.minutes * 60 - ae_seconds
    model, state, _ = load_autoencoder(out / "autoencoder")
    held_psnr = float(psnr(held_out.images, reconstruct(model, held_out.images)).mean())
    encode_start = time.perf_counter()
    encode_latents(model, held_out.images)  # the trainer's setup encodes the training split once
    encode_seconds = (time.perf_counter() - encode_start) * common_size(common) / len(held_out)
    minutes = max(0.05, (left - encode_seconds) / 60)  # what is left for the diffusion loop
    length = {"steps": args.steps[2]} if args.steps else {"minutes": minutes, "steps": None}
    trainer = train(TrainConfig(**common, n_feat=args.n_feat, patch=1, **length,
                                autoencoder=str(out / "autoencoder"),
                                out=str(out / "latent")))
    return {"steps": trainer.step, "seconds": time.perf_counter() - start,
            "autoencoder_steps": ae.step, "autoencoder_seconds": ae_seconds,
            "psnr_held_out": held_psnr, "psnr_autoencoder_split": state["psnr_db"]}


@torch.inference_mode()
def reconstruction_floor(autoencoder: Path, train_set: Dataset, held_out: Dataset, classifier,
                         n: int, seeds) -> list[float]:
    """Per seed, FID(decode(encode(x)), H) for the training images x that `evaluate_held_out`'s
    floor draws with that seed (`floor_rows`): the latent pipeline's floor."""
    model, _, _ = load_autoencoder(autoencoder)
    held = features(classifier, held_out.images)
    scores = []
    for seed in seeds:
        rows = floor_rows(train_set, n, seed)
        decoded = reconstruct(model, train_set.images[rows]).clamp(-1, 1)
        scores.append(fid(features(classifier, decoded), held))
    return scores


def loop_seconds_per_step(run: Path) -> float:
    """Seconds per step of a finished diffusion run's own loop, from its last metrics.jsonl line
    (`time_s` counts the loop only: not the setup, nor the encoding of the latents)."""
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return last["time_s"] / last["step"]


def common_size(common: dict) -> int:
    """Images in the training split written for `train` (its .npy header only)."""
    return len(np.load(common["data"], mmap_mode="r"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Latent against pixel diffusion at 32x32 for "
                                     "the same total budget (issue 14).")
    add = parser.add_argument
    add("--data", default=None, help="a 32x32 .npy file or image folder (default: built-in "
        "sprites, enlarged)")
    add("--labels", default=None, help="one-hot labels .npy for a .npy --data")
    add("--classes", default=None, help="class names 'a,b,c' or a .json file")
    add("--n-images", type=int, default=None, help="built-in sprites: how many")
    add("--holdout", type=float, default=0.3, help="share of the data held out (default 0.3)")
    add("--minutes", type=float, default=15.0, help="total budget of each pipeline (default 15)")
    add("--steps", type=lambda s: [int(x) for x in s.split(",")], default=None,
        help="PIXEL,AUTOENCODER,LATENT: fixed step counts instead of --minutes (the budget "
        "as steps measured on a quiet machine, so runs on a busy one train the same)")
    add("--ae-share", type=float, default=0.5, help="share of the latent pipeline's budget "
        "spent on the autoencoder (default 0.5)")
    add("--n-feat", type=int, default=TrainConfig.n_feat, help="diffusion network width, both "
        f"pipelines (default {TrainConfig.n_feat}, train's)")
    add("--ae-n-feat", type=int, default=AutoencoderConfig.n_feat, help="autoencoder width")
    add("--n", type=int, default=1000, help="samples per seed (capped at the training images)")
    add("--guidance", type=lambda s: [float(x) for x in s.split(",")], default=[1.0],
        help="guidance scales to measure at, comma separated (default 1: none)")
    add("--only-eval", action="store_true", help="measure the runs kept in --keep again")
    add("--train", type=pipelines, default=list(PIPELINES), help="the pipelines to "
        "train, comma separated (default pixel,latent); one alone keeps the other's run and "
        "numbers from --keep (say, the latent one again with another --ae-share); the runs "
        "trained again are moved to NAME.previous there first")
    add("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2],
        help="sample seeds, comma separated (default 0,1,2)")
    add("--classifier-steps", type=int, default=ClassifierConfig.steps, help="training steps of "
        "the feature classifier (cached per dataset and setting)")
    add("--timing-batch", type=int, default=128, help="batch of the step-time comparison")
    add("--threads", type=int, default=None, help="torch threads")
    add("--device", default="cpu", help="where to train and sample (default cpu)")
    add("--keep", default=None, help="keep the run folders and grids under this folder")
    add("--json", default=None, help="write the results here")
    add("--markdown", default=None, help="write the table here, ready for RESULTS.md")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep = Path(args.keep) if args.keep else Path("benchmarks/out/latent")
    if args.only_eval and not (keep / "training.json").is_file():
        raise SystemExit(f"--only-eval: {keep} holds no training.json; train there first")
    earlier = kept_runs(args.train, keep)  # before any work: a run to keep is there
    dataset = load_dataset(args.data, args.labels, args.classes, image_size=IMAGE_SIZE,
                           n=args.n_images)
    train_set, held_out = split_dataset(dataset, args.holdout)
    classifier = cached_classifier(dataset, ClassifierConfig(steps=args.classifier_steps))
    keep.mkdir(parents=True, exist_ok=True)
    if args.only_eval:
        trained = json.loads((keep / "training.json").read_text())
    else:
        trained = train_both(args, dataset, train_set, held_out, keep, earlier)
    results = {"dataset": dataset.name, "n_train": len(train_set), "n_held_out": len(held_out),
               "classifier_accuracy": classifier[1]["accuracy"], **trained}
    for name in ("pixel", "latent"):
        pipe = load(keep / name, device=args.device)
        results[name]["scores"] = {}
        for guidance in args.guidance:
            sampler = SamplerConfig(guidance=None if guidance == 1 else guidance)
            scores = evaluate_held_out(pipe, train_set, held_out, sampler, n=args.n,
                                       seeds=tuple(args.seeds), classifier=classifier[0],
                                       classifier_info=classifier[1])
            grid = keep / f"grid-{name}-g{guidance:g}.png"
            side_by_side(pipe, held_out, sampler, classifier[0], grid)
            results[name]["scores"][f"{guidance:g}"] = {
                k: v for k, v in scores.items() if k.startswith(("fid", "cond", "diversity_mean"))}
            print(f"  {name:6} guidance {guidance:g} | FID min {scores['fid_min']:.2f} mean "
                  f"{scores['fid_mean']:.2f} (floor {scores['fid_floor_mean']:.2f}) | acc "
                  f"{scores['conditional_accuracy_mean'] or float('nan'):.3f} | grid {grid}",
                  flush=True)
    floor = reconstruction_floor(keep / "autoencoder", train_set, held_out, classifier[0],
                                 args.n, args.seeds)
    results["latent"]["reconstruction_fid_each"] = floor
    print(f"autoencoder: PSNR {results['latent']['psnr_held_out']:.2f} dB on the held-out "
          f"images; its reconstructions score FID min {min(floor):.2f} mean "
          f"{sum(floor) / len(floor):.2f}; {keep / 'autoencoder' / 'reconstructions.png'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(results))


def pipelines(text: str) -> list[str]:
    """--train's value: pipeline names, comma separated."""
    names = text.split(",")
    if unknown := set(names) - set(PIPELINES):
        raise argparse.ArgumentTypeError(f"no pipeline called {', '.join(sorted(unknown))}; "
                                         "pass pixel, latent or both")
    return names


def kept_runs(train: list[str], keep: Path) -> dict:
    """What `keep`/training.json says of the runs kept there; one line if a pipeline that is
    not trained again has no run there."""
    kept = keep / "training.json"
    earlier = json.loads(kept.read_text()) if kept.is_file() else {}
    if missing := [name for name in PIPELINES if name not in train and name not in earlier]:
        raise SystemExit(f"--train {','.join(train)}: {keep} holds no {missing[0]} run to keep; "
                         "train both first")
    return earlier


def set_aside(keep: Path, *names: str) -> None:
    """Rename the run folders `names` under `keep` to NAME.previous (replacing an older one),
    so a pipeline trained again starts afresh and the last run is not lost."""
    for name in names:
        if (keep / name).exists():
            shutil.rmtree(keep / f"{name}.previous", ignore_errors=True)
            (keep / name).rename(keep / f"{name}.previous")


def train_both(args, dataset: Dataset, train_set: Dataset, held_out: Dataset, keep: Path,
               earlier: dict) -> dict:
    """Time one step of each network, then train the pipelines in --train (the others' runs are
    `earlier`'s, from `kept_runs`); what they did, also written to `keep`/training.json for
    `--only-eval`."""
    k = dataset.contexts.shape[1]
    timing = {name: step_seconds(UnetConfig(in_channels=c, n_feat=args.n_feat, n_cfeat=k,
                                            height=h, patch=p), args.timing_batch)
              for name, (c, h, p) in {"pixel": (3, IMAGE_SIZE, 2), "latent": (4, 8, 1)}.items()}
    print(f"{dataset.name}: {len(train_set)} training, {len(held_out)} held-out images; "
          f"{args.minutes:g} minutes per pipeline; threads {torch.get_num_threads()}; step at "
          f"batch {args.timing_batch}: pixel {timing['pixel'] * 1000:.0f} ms, latent "
          f"{timing['latent'] * 1000:.0f} ms ({timing['pixel'] / timing['latent']:.1f}x)",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        common = {**write_split(train_set, Path(tmp)), "progress": False, "sample_every": 0,
                  "checkpoint_every": 0, "device": args.device, "threads": args.threads}
        runs = {name: earlier[name] for name in PIPELINES if name not in args.train}
        if "pixel" in args.train:
            set_aside(keep, "pixel")
            runs["pixel"] = pixel_pipeline(common, args, keep / "pixel")
        if "latent" in args.train:
            set_aside(keep, "autoencoder", "latent")
            runs["latent"] = latent_pipeline(common, args, keep, held_out)
    for name, run in runs.items():
        run["loop_seconds_per_step"] = loop_seconds_per_step(keep / name)
        print(f"  {name:6} {run['steps']:>6} steps in {run['seconds']:.0f} s, its loop "
              f"{run['loop_seconds_per_step'] * 1000:.0f} ms per step", flush=True)
    trained = {"minutes": args.minutes, "fixed_steps": args.steps,
               "threads": torch.get_num_threads(),
               "n_feat": args.n_feat, "ae_share": args.ae_share,
               "timing_batch": args.timing_batch, "step_seconds": timing,
               "step_ratio": timing["pixel"] / timing["latent"],
               "loop_step_ratio": (runs["pixel"]["loop_seconds_per_step"]
                                   / runs["latent"]["loop_seconds_per_step"]),
               "pixel": runs["pixel"], "latent": runs["latent"]}
    (keep / "training.json").write_text(json.dumps(trained, indent=2, default=float) + "\n")
    return trained


def markdown(r: dict) -> str:
    p, lat = r["pixel"], r["latent"]
    floor = lat["reconstruction_fid_each"]
    rows = [(f"pixel 32x32, guidance {g}", p, x) for g, x in p["scores"].items()]
    rows += [(f"autoencoder + latent 8x8x4, guidance {g}", lat, x)
             for g, x in lat["scores"].items()]
    return "\n".join([
        f"{r['dataset']}: {r['n_train']} training / {r['n_held_out']} held-out images, "
        + (f"fixed steps {r['fixed_steps']} (pixel, autoencoder, latent)" if r.get("fixed_steps")
           else f"{r['minutes']:g} minutes per pipeline") + f" on {r['threads']} threads, n_feat "
        f"{r['n_feat']}; feature classifier accuracy {r['classifier_accuracy']:.3f}; step time "
        f"at batch {r['timing_batch']}: {r['step_ratio']:.1f}x faster on latents (in the runs' "
        f"own loops: {r.get('loop_step_ratio', float('nan')):.1f}x); autoencoder "
        f"{lat['autoencoder_steps']:,} steps in {lat['autoencoder_seconds']:.0f} s, PSNR "
        f"{lat['psnr_held_out']:.2f} dB on the held-out images; FID of its reconstructions "
        f"(the latent floor): min {min(floor):.2f} mean {sum(floor) / len(floor):.2f}", "",
        "| pipeline | steps | seconds | FID min | FID mean | floor | cond. acc. | diversity |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {name} | {run['steps']:,} | {run['seconds']:.0f} | {x['fid_min']:.2f} | "
          f"{x['fid_mean']:.2f} | {x['fid_floor_mean']:.2f} | "
          f"{x.get('conditional_accuracy_mean') or float('nan'):.3f} | "
          f"{x.get('diversity_mean') or float('nan'):.2f} |" for name, run, x in rows)]) + "\n"


if __name__ == "__main__":
    main()
